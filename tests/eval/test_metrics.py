"""PSNR / SSIM / compute_metrics on the layouts reports use."""

from __future__ import annotations

import math

import pytest
import torch

from genfusion.eval.metrics import compute_metrics, mean_metrics, psnr, psnr_per_image, ssim, to_bchw


def test_psnr_known_values():
    gt = torch.zeros(8, 8, 3)
    pred = torch.full((8, 8, 3), 0.1)  # mse = 0.01 -> 20 dB
    assert float(psnr(pred, gt)) == pytest.approx(20.0, abs=1e-4)
    batch_pred = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.01)])
    per_image = psnr_per_image(batch_pred, torch.zeros(2, 3, 4, 4))
    torch.testing.assert_close(per_image, torch.tensor([20.0, 40.0]), atol=1e-3, rtol=0)
    # mean of per-image PSNR, not PSNR of the mean MSE
    assert float(psnr(batch_pred, torch.zeros(2, 3, 4, 4))) == pytest.approx(30.0, abs=1e-3)
    assert math.isinf(float(psnr(gt, gt)))


def test_layouts_agree():
    gen = torch.Generator().manual_seed(0)
    hwc = torch.rand(24, 20, 3, generator=gen)
    other = torch.rand(24, 20, 3, generator=gen)
    assert to_bchw(hwc).shape == (1, 3, 24, 20)
    chw_value = float(ssim(hwc.permute(2, 0, 1), other.permute(2, 0, 1)))
    assert float(ssim(hwc, other)) == pytest.approx(chw_value, abs=1e-7)
    with pytest.raises(ValueError):
        psnr(hwc, other[:10])


def test_compute_metrics_reports_lpips_as_unavailable(monkeypatch, tmp_path):
    monkeypatch.delenv("GENFUSION_VGG16_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    gen = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 3, 32, 32, generator=gen)
    pred = gt + 0.05 * torch.randn(gt.shape, generator=gen)  # out of [0,1]: clamped first
    result = compute_metrics(pred, gt)
    assert set(result) == {"psnr", "ssim", "lpips", "lpips_note"}
    assert result["psnr"] == pytest.approx(float(psnr(pred.clamp(0, 1), gt)), abs=1e-5)
    assert 0.5 < result["ssim"] < 1.0
    assert result["lpips"] is None and "vgg16" in result["lpips_note"].lower()
    averaged = mean_metrics([result, compute_metrics(gt, gt, with_lpips=False)])
    assert averaged["psnr"] == pytest.approx(result["psnr"])  # the inf of identical images is skipped
    assert averaged["ssim"] == pytest.approx((result["ssim"] + 1.0) / 2, abs=1e-6)
    assert averaged["lpips"] is None and averaged["num_views"] == 2
