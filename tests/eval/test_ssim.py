"""SSIM core: hand-computed windows, torchmetrics parity, gradients, the 3DGS zero padding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from genfusion.eval.ssim import SSIM_C1, SSIM_C2, gaussian_window, ssim, ssim_map


def _naive_ssim_valid(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """SSIM of two HxW images, one explicit window at a time (only where the window fits)."""
    coords = np.arange(size) - (size - 1) / 2
    g = np.exp(-(coords**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    out = np.zeros((x.shape[0] - size + 1, x.shape[1] - size + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            px, py = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            out[i, j] = ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / (
                (mx**2 + my**2 + SSIM_C1) * (vx + vy + SSIM_C2)
            )
    return out


def test_window_is_normalised_gaussian():
    w = gaussian_window(11, 1.5, dtype=torch.float64)
    assert w.shape == (11, 11)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    # ratio of centre to a neighbour one step away along x is exp(1 / (2 sigma^2))
    assert float(w[5, 5] / w[5, 6]) == pytest.approx(math.exp(1 / (2 * 1.5**2)), rel=1e-9)


def test_matches_explicit_windows():
    rng = np.random.default_rng(0)
    x = rng.random((20, 23))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    expected = _naive_ssim_valid(x, y)
    got = ssim_map(torch.tensor(x)[None, None], torch.tensor(y)[None, None], padding="valid")[0, 0].numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_constant_images_closed_form():
    a, b = 0.3, 0.7
    x = torch.full((1, 3, 16, 16), a, dtype=torch.float64)
    y = torch.full((1, 3, 16, 16), b, dtype=torch.float64)
    expected = (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)  # no variance: luminance term only
    assert float(ssim(x, y, padding="valid")) == pytest.approx(expected, abs=1e-12)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)


def test_matches_torchmetrics():
    gen = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 3, 48, 40, generator=gen)
    pred = (gt + 0.15 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    reference = tm_ssim(pred, gt, gaussian_kernel=True, kernel_size=11, sigma=1.5, data_range=1.0)
    # torchmetrics mirrors the border; with the same padding the two agree to float precision
    assert float(ssim(pred, gt, padding="reflect")) == pytest.approx(float(reference), abs=1e-5)
    # zero padding (3DGS) only changes the border: the interiors are the same numbers
    same = ssim_map(pred, gt)[..., 5:-5, 5:-5]
    valid = ssim_map(pred, gt, padding="valid")
    torch.testing.assert_close(same, valid, atol=1e-5, rtol=0)
    assert abs(float(ssim(pred, gt)) - float(reference)) < 0.05  # borders differ, but not by much


def test_differentiable_and_decreasing_with_noise():
    gen = torch.Generator().manual_seed(2)
    gt = torch.rand(1, 3, 32, 32, generator=gen)
    noise = torch.randn(gt.shape, generator=gen)
    values = [float(ssim((gt + s * noise).clamp(0, 1), gt)) for s in (0.0, 0.05, 0.1, 0.3)]
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert values == sorted(values, reverse=True)
    pred = (gt + 0.1 * noise).clamp(0, 1).requires_grad_(True)
    loss = 1 - ssim(pred, gt)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # a gradient step on D-SSIM raises SSIM
    with torch.no_grad():
        stepped = pred - 50.0 * pred.grad
    assert float(ssim(stepped, gt)) > float(ssim(pred.detach(), gt))


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), padding="valid")
