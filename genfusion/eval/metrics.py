"""Image-quality metrics for reports: PSNR, SSIM (11x11 Gaussian window) and LPIPS-VGG.

Every function takes images as HxWx3 (the project's I/O layout), 3xHxW, or batches [B,3,H,W],
float in [0, 1]. Per-image values are averaged over the batch, as the 3DGS evaluation scripts do
(PSNR per image, then the mean). LPIPS is ``None`` plus a one-line reason when the VGG16
backbone weights are not on disk.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genfusion.eval.lpips import LpipsConfig
from genfusion.eval.lpips import lpips as _lpips
from genfusion.eval.ssim import ssim as _ssim


def to_bchw(image: Tensor) -> Tensor:
    """HxWx3 / 3xHxW / [B,3,H,W] / [B,H,W,3] -> [B, 3, H, W] float."""
    image = torch.as_tensor(image)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4:
        raise ValueError(f"expected an image or a batch of images, got shape {tuple(image.shape)}")
    if image.shape[1] != 3 and image.shape[-1] == 3:
        image = image.permute(0, 3, 1, 2)
    if image.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got shape {tuple(image.shape)}")
    return image if image.is_floating_point() else image.float()


def _pair(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    pred, gt = to_bchw(pred), to_bchw(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    return pred, gt.to(pred.device, pred.dtype)


def psnr_per_image(pred: Tensor, gt: Tensor) -> Tensor:
    """PSNR in dB of each image of the batch, [B] (inf where the images are identical)."""
    pred, gt = _pair(pred, gt)
    mse = ((pred - gt) ** 2).flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse)


def psnr(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean over the batch of per-image PSNR (dB), a scalar tensor. Differentiable."""
    return psnr_per_image(pred, gt).mean()


def ssim(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean SSIM (11x11 Gaussian window, sigma 1.5, zero padding as 3DGS), a scalar tensor."""
    pred, gt = _pair(pred, gt)
    return _ssim(pred, gt, 11)


def lpips(pred: Tensor, gt: Tensor, *, config: LpipsConfig | None = None) -> tuple[Tensor | None, str | None]:
    """Mean LPIPS-VGG: ``(value, None)``, or ``(None, reason)`` without the backbone weights."""
    pred, gt = _pair(pred, gt)
    return _lpips(pred, gt, config=config)


def compute_metrics(
    pred: Tensor,
    gt: Tensor,
    *,
    with_lpips: bool = True,
    lpips_config: LpipsConfig | None = None,
) -> dict[str, float | str | None]:
    """``{"psnr", "ssim", "lpips", "lpips_note"}`` for one image or a batch (batch means).

    Predictions are clamped to [0, 1] first, as renders are before saving. ``lpips`` is ``None``
    when it could not be computed (or ``with_lpips`` is False) and ``lpips_note`` then says why;
    it is ``None`` when LPIPS is present. PSNR of identical images is ``inf``.
    """
    pred, gt = _pair(pred, gt)
    with torch.no_grad():
        pred = pred.clamp(0.0, 1.0)
        result: dict[str, float | str | None] = {
            "psnr": float(psnr(pred, gt)),
            "ssim": float(ssim(pred, gt)),
            "lpips": None,
            "lpips_note": "LPIPS not requested",
        }
        if with_lpips:
            value, reason = lpips(pred, gt, config=lpips_config)
            result["lpips"] = None if value is None else float(value)
            result["lpips_note"] = reason
    return result


def mean_metrics(per_view: list[dict[str, float | str | None]]) -> dict[str, float | str | None]:
    """Average a list of :func:`compute_metrics` results (per view -> per scene).

    Numeric keys are averaged (LPIPS stays ``None`` if any view lacked it); PSNR averages finite
    values only, so one identical view does not make the scene ``inf``.
    """
    if not per_view:
        raise ValueError("no metrics to average")
    out: dict[str, float | str | None] = {}
    for key in per_view[0]:
        values = [m.get(key) for m in per_view]
        if key == "lpips_note":
            out[key] = next((v for v in values if v), None)
        elif any(v is None for v in values):
            out[key] = None
        else:
            numbers = [float(v) for v in values]  # type: ignore[arg-type]
            if key == "psnr":
                numbers = [v for v in numbers if math.isfinite(v)] or [math.inf]
            out[key] = sum(numbers) / len(numbers)
    out["num_views"] = len(per_view)
    return out
