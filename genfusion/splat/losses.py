"""Reconstruction losses, as pure tensor functions.

- photometric: ``(1 - w) * L1 + w * (1 - SSIM)`` (3DGS), SSIM from :mod:`genfusion.eval.metrics`
  (the same 11x11 Gaussian-window SSIM that is reported, and differentiable);
- 2DGS normal consistency: ``1 - <rendered normal, normal of the rendered depth>`` per pixel, the
  depth normals weighted by the (detached) alpha so empty pixels pull nothing (2DGS paper, eq. 14);
- 2DGS depth distortion: the mean of the rasteriser's per-pixel distortion map (eq. 13), which
  concentrates the weights along each ray.

Images are ``[..., H, W, 3]`` in [0, 1]; normals ``[..., H, W, 3]``; alpha / distortion
``[..., H, W, 1]``.
"""

from __future__ import annotations

import torch

from genfusion.eval.metrics import ssim


def l1_loss(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error."""
    return (rendered - target).abs().mean()


def dssim_loss(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM`` over the batch (11x11 Gaussian window, zero padding as 3DGS)."""
    return 1.0 - ssim(rendered.reshape(-1, *rendered.shape[-3:]), target.reshape(-1, *target.shape[-3:]))


def photometric_loss(rendered: torch.Tensor, target: torch.Tensor, lambda_dssim: float) -> torch.Tensor:
    """The 3DGS colour loss ``(1 - lambda) * L1 + lambda * D-SSIM``."""
    loss = (1.0 - lambda_dssim) * l1_loss(rendered, target)
    if lambda_dssim > 0:
        loss = loss + lambda_dssim * dssim_loss(rendered, target)
    return loss


def normal_consistency_loss(
    normals: torch.Tensor, surf_normals: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """2DGS normal consistency: mean over pixels of ``1 - n_rendered . (alpha * n_depth)``."""
    weighted = surf_normals * alpha.detach()
    return (1.0 - (normals * weighted).sum(dim=-1)).mean()


# The 2DGS reference code measures distortion in NDC depth m = f/(f-n) * (1 - n/z) with n = 0.2,
# f = 100, and its lambda (100 unbounded, 1000 bounded) is for that unit. Our rasteriser (like
# gsplat) sums w_i w_j |z_i - z_j| in scene depth; dm/dz = n f / ((f - n) z^2) ~ n / z^2 converts it.
NDC_NEAR = 0.2
NDC_FAR = 100.0


def distortion_loss(distortion: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
    """2DGS depth distortion: the mean of the per-pixel distortion map, converted to first order
    from scene depth to the 2DGS paper's NDC depth at each pixel's rendered ``depth`` (so the
    paper's lambda applies); without ``depth`` the map is averaged as it is."""
    if depth is None:
        return distortion.mean()
    scale = NDC_NEAR * NDC_FAR / (NDC_FAR - NDC_NEAR) / depth.detach().clamp_min(NDC_NEAR) ** 2
    return (distortion * scale).mean()


def psnr_of_mse(mse: torch.Tensor | float) -> float:
    """PSNR in dB of images in [0, 1] with mean squared error ``mse``."""
    value = float(mse)
    return float("inf") if value <= 0 else -10.0 * torch.log10(torch.tensor(value)).item()
