"""Differentiable SSIM (Wang et al. 2004) with a Gaussian window, as the 3DGS code computes it.

This is the core that both the evaluation metric and the trainer's D-SSIM loss use, so its
signature ``ssim(img1, img2, window_size=11)`` is kept stable. Defaults follow the 3DGS / 2DGS
reference code that produced the published numbers: an 11x11 Gaussian window with sigma 1.5,
constants C1 = 0.01^2 and C2 = 0.03^2 for a data range of 1, and ZERO padding so the SSIM map has
the image's size (``padding="same"``). ``padding="reflect"`` mirrors the border instead, which is
what torchmetrics' ``structural_similarity_index_measure`` (1.9) does, so the two agree (tests);
``padding="valid"`` evaluates only where the window lies fully inside the image.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_C1 = 0.01**2  # (K1 * data_range)^2 with K1 = 0.01, data_range = 1
SSIM_C2 = 0.03**2  # (K2 * data_range)^2 with K2 = 0.03, data_range = 1

Padding = Literal["same", "reflect", "valid"]


@functools.lru_cache(maxsize=16)
def _gaussian_1d_cached(window_size: int, sigma: float) -> Tensor:
    coords = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2.0
    weights = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def gaussian_window(
    window_size: int = 11,
    sigma: float = 1.5,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The normalised 2-D Gaussian window (outer product of two 1-D ones), [window_size]^2."""
    g = _gaussian_1d_cached(int(window_size), float(sigma))
    return torch.outer(g, g).to(dtype=dtype, device=device)


def ssim_map(
    img1: Tensor,
    img2: Tensor,
    window_size: int = 11,
    *,
    sigma: float = 1.5,
    padding: Padding = "same",
) -> Tensor:
    """Per-pixel SSIM of two image batches [B, C, H, W] in [0, 1] -> [B, C, H', W'].

    ``H' = H`` for ``padding="same"`` (zero padding, as 3DGS) and ``"reflect"`` (mirrored border,
    as torchmetrics), ``H - window_size + 1`` for ``"valid"``. Differentiable in both inputs.
    """
    if img1.shape != img2.shape or img1.ndim != 4:
        raise ValueError(f"ssim expects two [B,C,H,W] tensors of one shape, got {img1.shape}, {img2.shape}")
    channels = img1.shape[1]
    if padding not in ("same", "reflect", "valid"):
        raise ValueError(f"unknown padding {padding!r}")
    smallest = {"same": 1, "reflect": window_size // 2 + 1, "valid": window_size}[padding]
    if min(img1.shape[-2:]) < smallest:
        raise ValueError(f"images of {tuple(img1.shape[-2:])} are too small for the {window_size} window")
    dtype = torch.promote_types(img1.dtype, img2.dtype)
    img1, img2 = img1.to(dtype), img2.to(dtype)
    window = gaussian_window(window_size, sigma, dtype=dtype, device=img1.device)
    window = window.expand(channels, 1, window_size, window_size).contiguous()
    if padding != "valid":
        # padding the inputs once is cheaper than letting conv2d pad each of the five statistics
        half = window_size // 2
        mode = "constant" if padding == "same" else "reflect"
        img1 = F.pad(img1, (half, half, half, half), mode=mode)
        img2 = F.pad(img2, (half, half, half, half), mode=mode)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, window, groups=channels)

    # One grouped convolution over the five stacked statistics instead of five separate calls.
    stats = blur(torch.cat([img1, img2, img1 * img1, img2 * img2, img1 * img2], dim=0))
    mu1, mu2, e11, e22, e12 = stats.chunk(5, dim=0)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = e11 - mu1_sq
    sigma2_sq = e22 - mu2_sq
    sigma12 = e12 - mu1_mu2
    numerator = (2.0 * mu1_mu2 + SSIM_C1) * (2.0 * sigma12 + SSIM_C2)
    denominator = (mu1_sq + mu2_sq + SSIM_C1) * (sigma1_sq + sigma2_sq + SSIM_C2)
    return numerator / denominator


def ssim(
    img1: Tensor,
    img2: Tensor,
    window_size: int = 11,
    *,
    sigma: float = 1.5,
    padding: Padding = "same",
) -> Tensor:
    """Mean SSIM over everything (batch, channels, pixels) of [B, C, H, W] images in [0, 1].

    A scalar tensor, differentiable; ``1 - ssim(render, gt)`` is the D-SSIM training loss.
    """
    return ssim_map(img1, img2, window_size, sigma=sigma, padding=padding).mean()
