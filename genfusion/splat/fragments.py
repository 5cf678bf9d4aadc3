"""Per-fragment (Gaussian x pixel) opacity, shared by the dense reference and the tiled rasterisers.

A fragment is one Gaussian seen at one pixel centre (x + 0.5, y + 0.5). These are the direct,
textbook forms that the dense reference evaluates on [N, P] grids; the tiled rasterisers compute
the same quantities by block-wise float64 matrix products (see their docstrings), and the parity
tests hold the two together. Semantics are gsplat's: sigma is half the squared Mahalanobis
(3DGS) or ray-splat (2DGS) distance, alpha = min(0.999, opacity * exp(-sigma)), and a fragment
with sigma < 0 or alpha < 1/255 does not exist.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genfusion.splat.projection import ALPHA_THRESHOLD, MAX_ALPHA

FILTER_INV_SQUARE_2DGS = 2.0  # gsplat: weight of the screen-space low-pass for 2DGS surfels


def sigma_3dgs(dx: Tensor, dy: Tensor, conic_a: Tensor, conic_b: Tensor, conic_c: Tensor) -> Tensor:
    """Half squared Mahalanobis distance of the offset (dx, dy) = mean2d - pixel."""
    return 0.5 * (conic_a * dx * dx + conic_c * dy * dy) + conic_b * dx * dy


def ray_splat_2dgs(
    px: Tensor, py: Tensor, row_u: tuple[Tensor, ...], row_v: tuple[Tensor, ...], row_w: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor, Tensor]:
    """Homogeneous intersection (cx, cy, cz) of the pixel's ray with the surfel plane.

    h_u = px * w - u and h_v = py * w - v are the two planes through the ray in splat space;
    their cross product is the intersection point (u, v) = (cx / cz, cy / cz) up to scale.
    Rows are given as tuples of their three components so any broadcast shape works.
    """
    hu = [px * w - u for u, w in zip(row_u, row_w, strict=True)]
    hv = [py * w - v for v, w in zip(row_v, row_w, strict=True)]
    cx = hu[1] * hv[2] - hu[2] * hv[1]
    cy = hu[2] * hv[0] - hu[0] * hv[2]
    cz = hu[0] * hv[1] - hu[1] * hv[0]
    return cx, cy, cz


def sigma_2dgs(cx: Tensor, cy: Tensor, cz: Tensor, dx: Tensor, dy: Tensor) -> tuple[Tensor, Tensor]:
    """gsplat's 2DGS sigma: 0.5 * min(|(u, v)|^2, 2 |mean2d - pixel|^2) (screen low-pass).

    Where the ray is parallel to the surfel (cz == 0) |(u, v)| is taken as infinite, so the
    low-pass branch applies (the limit as cz -> 0; gsplat drops such a fragment instead).
    Returns (sigma, use_3d): use_3d says which branch of the min was taken.
    """
    hit = cz != 0
    cz_safe = torch.where(hit, cz, torch.ones_like(cz))
    su, sv = cx / cz_safe, cy / cz_safe
    weight_3d = torch.where(hit, su * su + sv * sv, torch.full_like(su, float("inf")))
    weight_2d = FILTER_INV_SQUARE_2DGS * (dx * dx + dy * dy)
    use_3d = weight_3d <= weight_2d
    return 0.5 * torch.where(use_3d, weight_3d, weight_2d), use_3d


def fragment_alpha(opacity: Tensor, sigma: Tensor, exists: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha, exists): clamped fragment opacity, zero where the fragment does not exist."""
    raw = opacity * torch.exp(-sigma)
    alpha = raw.clamp(max=MAX_ALPHA)
    exists = exists & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    return torch.where(exists, alpha, torch.zeros_like(alpha)), exists
