"""Surface normals from a rendered depth map (gsplat's ``depth_to_normal``, pure torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def depth_to_points(depths: Tensor, camtoworlds: Tensor, Ks: Tensor) -> Tensor:
    """World points [C, H, W, 3] of z-depth maps [C, H, W, 1] (pixel centres at +0.5)."""
    height, width = depths.shape[-3:-1]
    ys, xs = torch.meshgrid(
        torch.arange(height, device=depths.device, dtype=depths.dtype),
        torch.arange(width, device=depths.device, dtype=depths.dtype),
        indexing="ij",
    )
    fx, fy = Ks[:, 0, 0, None, None], Ks[:, 1, 1, None, None]
    cx, cy = Ks[:, 0, 2, None, None], Ks[:, 1, 2, None, None]
    cam_dirs = torch.stack(
        [(xs - cx + 0.5) / fx, (ys - cy + 0.5) / fy, torch.ones_like(xs).expand_as(cx + xs)], dim=-1
    )  # [C, H, W, 3]
    world_dirs = torch.einsum("cij,chwj->chwi", camtoworlds[:, :3, :3], cam_dirs)
    return camtoworlds[:, None, None, :3, 3] + depths * world_dirs


def depth_to_normal(depths: Tensor, camtoworlds: Tensor, Ks: Tensor) -> Tensor:
    """World-frame normals [C, H, W, 3] from central differences; the 1-pixel border is 0."""
    points = depth_to_points(depths, camtoworlds, Ks)
    d_rows = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    d_cols = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    normals = F.normalize(torch.cross(d_rows, d_cols, dim=-1), dim=-1)
    return F.pad(normals, (0, 0, 1, 1, 1, 1), value=0.0)
