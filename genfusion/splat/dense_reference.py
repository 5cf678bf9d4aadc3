"""Dense brute-force compositor: every Gaussian at every pixel, differentiated by autograd.

This is the ground truth the tiled rasterisers are tested against. It shares the projection and
the per-fragment maths (``fragments.py``) but nothing of the tiling, sorting by tile, chunking or
hand-written backward. It applies the same cut-offs as gsplat: a Gaussian only reaches pixels in
the tiles its bounding box touches, fragments below 1/255 are skipped, alpha is clamped to 0.999,
and a pixel stops (exclusively) once its transmittance would fall to 1e-4.

Memory is O(C * N * H * W) with autograd on top: only for tests and small benchmarks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genfusion.splat.fragments import fragment_alpha, ray_splat_2dgs, sigma_2dgs, sigma_3dgs
from genfusion.splat.projection import (
    TILE_SIZE,
    TRANSMITTANCE_STOP,
    Projection2DGS,
    Projection3DGS,
    tile_bounds,
)


def _pixel_grid(width: int, height: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Pixel centres and tile coordinates, flattened row-major: four [P] tensors."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    return xs.to(dtype) + 0.5, ys.to(dtype) + 0.5, xs // TILE_SIZE, ys // TILE_SIZE


def _composite(alpha: Tensor, features: Tensor, depth_channel: int | None) -> tuple[Tensor, ...]:
    """Front-to-back compositing of alpha [N, P] (depth-sorted) and features [N, F].

    Returns (accumulated features [P, F], final transmittance [P], distortion [P] or None).
    """
    t_incl = torch.cumprod(1.0 - alpha, dim=0)
    included = t_incl > TRANSMITTANCE_STOP
    t_excl = torch.cat([torch.ones_like(t_incl[:1]), t_incl[:-1]], dim=0)
    weights = alpha * t_excl * included
    accumulated = weights.transpose(0, 1) @ features
    ones = torch.ones_like(t_incl[:1])
    t_final = torch.cat([ones, torch.where(included, t_incl, torch.ones_like(t_incl))]).amin(0)
    distortion = None
    if depth_channel is not None:
        depth = features[:, depth_channel, None]
        weighted_depth = weights * depth
        before = torch.cumsum(weighted_depth, dim=0) - weighted_depth
        distortion = (2.0 * (weighted_depth * (1.0 - t_excl) - weights * before)).sum(0)
    return accumulated, t_final, distortion


def dense_rasterize_3dgs(
    proj: Projection3DGS, opacities: Tensor, features: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor]:
    """Composite [C, N, F] features: returns ([C, H, W, F] sums, [C, H, W, 1] transmittance)."""
    px, py, tx, ty = _pixel_grid(width, height, features.device, features.dtype)
    tile_lo, tile_hi = tile_bounds(proj.means2d, proj.radii, width, height)
    images, finals = [], []
    for cam in range(features.shape[0]):
        order = torch.argsort(proj.depths[cam].detach(), stable=True)
        m2d = proj.means2d[cam, order]
        conic = proj.conics[cam, order]
        lo, hi = tile_lo[cam, order], tile_hi[cam, order]
        in_tiles = (tx >= lo[:, :1]) & (tx < hi[:, :1]) & (ty >= lo[:, 1:]) & (ty < hi[:, 1:])  # [N, P]
        dx = m2d[:, :1] - px
        dy = m2d[:, 1:] - py
        sigma = sigma_3dgs(dx, dy, conic[:, :1], conic[:, 1:2], conic[:, 2:])
        alpha, _ = fragment_alpha(opacities[cam, order, None], sigma, in_tiles)
        acc, t_final, _ = _composite(alpha, features[cam, order], None)
        images.append(acc.reshape(height, width, -1))
        finals.append(t_final.reshape(height, width, 1))
    return torch.stack(images), torch.stack(finals)


def dense_rasterize_2dgs(
    proj: Projection2DGS, opacities: Tensor, features: Tensor, width: int, height: int, depth_channel: int
) -> tuple[Tensor, Tensor, Tensor]:
    """2DGS version: returns (sums [C, H, W, F], transmittance [C, H, W, 1], distortion [C, H, W, 1])."""
    px, py, tx, ty = _pixel_grid(width, height, features.device, features.dtype)
    tile_lo, tile_hi = tile_bounds(proj.means2d, proj.radii, width, height)
    images, finals, distortions = [], [], []
    for cam in range(features.shape[0]):
        order = torch.argsort(proj.depths[cam].detach(), stable=True)
        m2d = proj.means2d[cam, order]
        rows = proj.ray_transforms[cam, order]  # [N, 3, 3]
        lo, hi = tile_lo[cam, order], tile_hi[cam, order]
        in_tiles = (tx >= lo[:, :1]) & (tx < hi[:, :1]) & (ty >= lo[:, 1:]) & (ty < hi[:, 1:])
        row_u = tuple(rows[:, 0, k, None] for k in range(3))
        row_v = tuple(rows[:, 1, k, None] for k in range(3))
        row_w = tuple(rows[:, 2, k, None] for k in range(3))
        cx, cy, cz = ray_splat_2dgs(px, py, row_u, row_v, row_w)
        sigma, _ = sigma_2dgs(cx, cy, cz, m2d[:, :1] - px, m2d[:, 1:] - py)
        alpha, _ = fragment_alpha(opacities[cam, order, None], sigma, in_tiles)
        acc, t_final, distortion = _composite(alpha, features[cam, order], depth_channel)
        images.append(acc.reshape(height, width, -1))
        finals.append(t_final.reshape(height, width, 1))
        distortions.append(distortion.reshape(height, width, 1))
    return torch.stack(images), torch.stack(finals), torch.stack(distortions)
