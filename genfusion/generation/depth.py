"""Depth in and out of the repair model: clip-normalised disparity and scale/shift alignment.

The model sees depth as *clip-normalised disparity* (fixtures README, quirk 13): 1/depth on valid
pixels (depth > 0), min-max normalised over the whole clip, invalid pixels 0, then mapped to
[-1, 1] (so invalid pixels become -1). Its depth channel comes back as
``1 / ((clamp(d, -1, 1) + 1) / 2 + 1e-6)``, a depth-like quantity known only up to scale and shift,
which :func:`align_depth` fits back to the rendered depth by least squares on reliable pixels.

All functions are pure tensor functions on [..., H, W] tensors (any leading shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Output depth uses 1/(x + eps) exactly as the original (quirk 13).
OUTPUT_DISPARITY_EPS = 1e-6


def valid_depth(depth: torch.Tensor) -> torch.Tensor:
    """Pixels with a usable depth: finite and > 0 (NaN and inf count as missing)."""
    return torch.isfinite(depth) & (depth > 0)


def reliable_mask(depth: torch.Tensor, alpha: torch.Tensor, alpha_threshold: float) -> torch.Tensor:
    """Pixels a repairer must trust: rendered with enough opacity and with a valid depth.

    NaN alpha counts as unreliable.
    """
    return valid_depth(depth) & torch.isfinite(alpha) & (alpha >= alpha_threshold)


@dataclass(frozen=True)
class DisparityRange:
    """The min/max disparity a clip was normalised with (to map the model's output back)."""

    low: float  # smallest valid disparity (1/depth) in the clip
    high: float  # largest valid disparity in the clip


def depth_to_clip_disparity(
    depth: torch.Tensor, disparity_range: DisparityRange | None = None
) -> tuple[torch.Tensor, DisparityRange]:
    """Depth [..., H, W] -> disparity in [-1, 1], min-max over the whole tensor (quirk 13).

    ``disparity_range`` forces a given range (used to share one normalisation across the windows
    of a long trajectory); values outside it are clamped. A clip without any valid pixel maps
    to -1 everywhere; a constant-disparity clip maps its valid pixels to -1 too (zero range).
    """
    valid = valid_depth(depth)
    safe = torch.where(valid, depth, torch.ones_like(depth))
    disparity = torch.where(valid, 1.0 / safe, torch.zeros_like(depth))
    if disparity_range is None:
        if valid.any():
            low, high = disparity[valid].min().item(), disparity[valid].max().item()
        else:
            low, high = 0.0, 1.0
        disparity_range = DisparityRange(low, high)
    span = max(disparity_range.high - disparity_range.low, 1e-12)
    normalised = ((disparity - disparity_range.low) / span).clamp(0.0, 1.0)
    normalised = torch.where(valid, normalised, torch.zeros_like(normalised))
    return (normalised - 0.5) * 2.0, disparity_range


def clip_disparity_to_depth(model_depth: torch.Tensor) -> torch.Tensor:
    """The model's depth channel -> depth-like values, exactly as the original (quirk 13)."""
    x = (model_depth.clamp(-1.0, 1.0) + 1.0) / 2.0
    return 1.0 / (x + OUTPUT_DISPARITY_EPS)


def resize_nearest(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of [..., H, W] (depth must never be blended across edges)."""
    if tuple(values.shape[-2:]) == tuple(size):
        return values
    lead = values.shape[:-2]
    flat = values.reshape(-1, 1, *values.shape[-2:])
    out = F.interpolate(flat, size=size, mode="nearest")
    return out.reshape(*lead, *size)


@dataclass(frozen=True)
class ScaleShift:
    """``target ~ scale * prediction + shift`` fitted on ``pixels`` reliable pixels."""

    scale: float  # multiplicative factor applied to the prediction
    shift: float  # added after scaling
    pixels: int  # number of pixels the fit used (0: no fit, identity returned)


def fit_scale_shift(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> ScaleShift:
    """Least-squares scale and shift from ``prediction`` to ``target`` over ``mask``.

    Falls back to the identity when fewer than 2 pixels are usable or the prediction is constant
    there (the system is singular).
    """
    usable = mask & torch.isfinite(prediction) & torch.isfinite(target)
    n = int(usable.sum())
    if n < 2:
        return ScaleShift(1.0, 0.0, 0)
    p = prediction[usable].double()
    t = target[usable].double()
    p_mean, t_mean = p.mean(), t.mean()
    var = ((p - p_mean) ** 2).sum()
    if var <= 1e-12 * max(1.0, float((p_mean**2) * n)):
        return ScaleShift(1.0, float(t_mean - p_mean), n)
    scale = ((p - p_mean) * (t - t_mean)).sum() / var
    return ScaleShift(float(scale), float(t_mean - scale * p_mean), n)


def align_depth(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, ScaleShift]:
    """Map ``prediction`` into ``target``'s scale (least-squares scale + shift on ``mask``).

    Aligned values are clamped to be positive (a depth); the fit is returned for logging.
    """
    fit = fit_scale_shift(prediction, target, mask)
    aligned = prediction * fit.scale + fit.shift
    # A negative fitted depth is meaningless; floor it at a tiny fraction of the nearest target.
    trusted = mask & valid_depth(target)
    floor = max(float(target[trusted].min()) * 1e-3, 1e-6) if trusted.any() else 1e-6
    return aligned.clamp_min(floor), fit
