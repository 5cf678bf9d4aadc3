"""Reconstruction losses, as pure tensor functions.

- photometric: ``(1 - w) * L1 + w * (1 - SSIM)`` (3DGS), SSIM from :mod:`genfusion.eval.metrics`
  (the same 11x11 Gaussian-window SSIM that is reported, and differentiable);
- 2DGS normal consistency: ``1 - <rendered normal, normal of the rendered depth>`` per pixel, the
  depth normals weighted by the (detached) alpha so empty pixels pull nothing (2DGS paper, eq. 14);
- 2DGS depth distortion: the mean of the rasteriser's per-pixel distortion map (eq. 13), which
  concentrates the weights along each ray;
- generated views: the colour loss with a per-pixel weight map, and depth against a target that is
  either known only up to scale and shift (diffusion output: GenFusion's invariant disparity
  loss) or metric.

Images are ``[..., H, W, 3]`` in [0, 1]; normals ``[..., H, W, 3]``; alpha / distortion
``[..., H, W, 1]``.
"""

from __future__ import annotations

import torch

from genfusion.eval.metrics import ssim
from genfusion.eval.ssim import ssim_map


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


# ---------------------------------------------------------------------------------------------
# Generated views: per-pixel weights, depth targets


def weighted_photometric_terms(
    rendered: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1, D-SSIM) of ``[H, W, 3]`` images with a ``[H, W]`` weight map in [0, 1], both averaged
    over all pixels (a view that is mostly unreliable teaches less than a reliable one).

    A zero-weight pixel never reaches the loss, neither its rendered nor its target value: L1
    multiplies it by 0, and before SSIM (whose 11x11 windows would otherwise read it from its
    neighbours) both images are set to 0 there, exactly as SSIM's zero padding treats the pixels
    beyond the image border.
    """
    if weight is None:
        return l1_loss(rendered, target), dssim_loss(rendered, target)
    w = weight[..., None]
    l1 = (w * (rendered - target).abs()).mean()
    seen = w > 0
    rendered_seen = torch.where(seen, rendered, torch.zeros_like(rendered))
    target_seen = torch.where(seen, target, torch.zeros_like(target))
    ssim_values = ssim_map(rendered_seen.permute(2, 0, 1)[None], target_seen.permute(2, 0, 1)[None])[0]
    dssim = (weight[None] * (1.0 - ssim_values)).mean()
    return l1, dssim


def _depth_valid(rendered: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    valid = (target > 0) & (rendered > 1e-6)
    return valid if weight is None else valid & (weight > 0)


def invariant_depth_loss(
    rendered: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    chunks: int = 4,
    gradient_weight: float = 0.5,
) -> torch.Tensor:
    """Scale-and-shift-invariant depth loss in disparity (GenFusion, method.md), ``[H, W]`` maps.

    Generated depth is only known up to scale and shift, so in each of ``chunks`` bands of rows the
    target disparity is aligned to the (detached) rendered one by weighted least squares; the loss
    is the weighted MSE of the residual plus ``gradient_weight`` x the mean absolute difference of
    its horizontal and vertical gradients (which keeps edges where the fit leaves an offset).
    Disparities are divided by the median rendered disparity, so the value is free of scene scale.
    ``target`` 0 (or ``weight`` 0) marks pixels without depth.
    """
    valid = _depth_valid(rendered, target, weight)
    if int(valid.sum()) < 2:
        return rendered.sum() * 0.0
    w = valid.to(rendered.dtype) if weight is None else weight * valid
    disparity = 1.0 / rendered.clamp_min(1e-6)
    scale = disparity.detach()[valid].median().clamp_min(1e-12)
    disparity = disparity / scale
    target_disparity = torch.where(valid, 1.0 / target.clamp_min(1e-12), torch.zeros_like(target))
    aligned = torch.zeros_like(target_disparity)
    reference = disparity.detach()
    for rows in torch.arange(rendered.shape[0], device=rendered.device).chunk(max(1, chunks)):
        wb, tb, rb = w[rows], target_disparity[rows], reference[rows]
        total = wb.sum()
        if total <= 0:
            continue
        # closed-form weighted least squares for s, b in  s * t + b ~ r
        mt, mr = (wb * tb).sum() / total, (wb * rb).sum() / total
        var = (wb * (tb - mt) ** 2).sum() / total
        s = (wb * (tb - mt) * (rb - mr)).sum() / total / var if var > 1e-12 else torch.zeros_like(var)
        aligned[rows] = s * tb + (mr - s * mt)
    residual = (disparity - aligned) * (w > 0)
    mse = (w * residual**2).mean()
    both_x = (w[:, 1:] > 0) & (w[:, :-1] > 0)
    both_y = (w[1:] > 0) & (w[:-1] > 0)
    grad_x = ((residual[:, 1:] - residual[:, :-1]).abs() * both_x).mean()
    grad_y = ((residual[1:] - residual[:-1]).abs() * both_y).mean()
    return mse + gradient_weight * (grad_x + grad_y)


def metric_depth_loss(
    rendered: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Relative L1 of z-depth for targets in scene units (e.g. reprojected real geometry)."""
    valid = _depth_valid(rendered, target, weight)
    w = valid.to(rendered.dtype) if weight is None else weight * valid
    relative = (rendered - target).abs() / target.clamp_min(1e-6)
    return (w * torch.where(valid, relative, torch.zeros_like(relative))).mean()
