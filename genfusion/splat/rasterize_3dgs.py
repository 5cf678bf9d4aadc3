"""Tiled 3DGS rasteriser in pure torch with a hand-written backward.

Forward: bin the projected Gaussians into 16x16 tiles (``tiling.py``), then composite each group
of tiles as one padded [G, K, 256] block. Backward: recompute each block (nothing per-fragment is
kept between the passes, so memory is bounded by one block) and push gradients to the 2D means,
conics, opacities and features with closed-form derivatives, scattered back with ``index_add_``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genfusion.splat.compositing import accumulate, backward_alpha, composite_weights
from genfusion.splat.fragments import fragment_alpha, sigma_3dgs
from genfusion.splat.projection import MAX_ALPHA, Projection3DGS
from genfusion.splat.tiling import PIXELS_PER_TILE, TileBins, TileGroup, bin_gaussians, tiles_to_image


def _fragments(group: TileGroup, means2d: Tensor, conics: Tensor, opacities: Tensor):
    """Per-fragment quantities of one block: offsets, conic, sigma, raw and clamped alpha."""
    ids = group.gaussian_ids
    m2d = means2d[ids]  # [G, K, 2]
    conic = conics[ids]  # [G, K, 3]
    dx = m2d[..., 0:1] - group.pixel_x  # [G, K, P]
    dy = m2d[..., 1:2] - group.pixel_y
    a, b, c = conic[..., 0:1], conic[..., 1:2], conic[..., 2:3]
    sigma = sigma_3dgs(dx, dy, a, b, c)
    opacity = opacities[ids][..., None]
    alpha, exists = fragment_alpha(opacity, sigma, group.valid[..., None])
    return dx, dy, (a, b, c), sigma, opacity, alpha, exists


class _Rasterize3DGS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, bins: TileBins):
        # Flat [C * N, ...] views so one gather serves every camera.
        n_features = features.shape[-1]
        flat = (means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1))
        flat_features = features.reshape(-1, n_features)
        out = features.new_zeros(bins.n_tiles, PIXELS_PER_TILE, n_features)
        t_final = features.new_ones(bins.n_tiles, PIXELS_PER_TILE)
        for group in bins.groups:
            *_, alpha, _ = _fragments(group, *flat)
            comp = composite_weights(alpha)
            out[group.tile_ids] = accumulate(comp, flat_features[group.gaussian_ids])
            t_final[group.tile_ids] = comp.t_final
        ctx.bins = bins
        ctx.save_for_backward(means2d, conics, opacities, features)
        return out, t_final

    @staticmethod
    def backward(ctx, grad_out, grad_t_final):
        means2d, conics, opacities, features = ctx.saved_tensors
        bins: TileBins = ctx.bins
        n_features = features.shape[-1]
        flat = (means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1))
        flat_features = features.reshape(-1, n_features)
        g_means2d = torch.zeros_like(flat[0])
        g_conics = torch.zeros_like(flat[1])
        g_opacities = torch.zeros_like(flat[2])
        g_features = torch.zeros_like(flat_features)
        for group in bins.groups:
            dx, dy, (a, b, c), sigma, opacity, alpha, exists = _fragments(group, *flat)
            comp = composite_weights(alpha)
            feats = flat_features[group.gaussian_ids]
            g_alpha, g_feats, _ = backward_alpha(
                comp, feats, grad_out[group.tile_ids], grad_t_final[group.tile_ids]
            )
            gauss = torch.exp(-sigma)
            raw = opacity * gauss
            g_raw = torch.where(exists & (raw <= MAX_ALPHA), g_alpha, torch.zeros_like(g_alpha))
            g_sigma = -g_raw * raw
            sx, sy = g_sigma * dx, g_sigma * dy
            sum_x, sum_y = sx.sum(-1), sy.sum(-1)  # [G, K]
            sum_xx, sum_xy, sum_yy = (sx * dx).sum(-1), (sx * dy).sum(-1), (sy * dy).sum(-1)
            a, b, c = a[..., 0], b[..., 0], c[..., 0]
            g_m2d = torch.stack([a * sum_x + b * sum_y, c * sum_y + b * sum_x], dim=-1)
            g_conic = torch.stack([0.5 * sum_xx, sum_xy, 0.5 * sum_yy], dim=-1)
            ids = group.gaussian_ids.reshape(-1)
            g_means2d.index_add_(0, ids, g_m2d.reshape(-1, 2))
            g_conics.index_add_(0, ids, g_conic.reshape(-1, 3))
            g_opacities.index_add_(0, ids, (g_raw * gauss).sum(-1).reshape(-1))
            g_features.index_add_(0, ids, g_feats.reshape(-1, n_features))
        return (
            g_means2d.reshape(means2d.shape),
            g_conics.reshape(conics.shape),
            g_opacities.reshape(opacities.shape),
            g_features.reshape(features.shape),
            None,
        )


def rasterize_3dgs(
    proj: Projection3DGS, opacities: Tensor, features: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor]:
    """Composite [C, N, F] features of projected 3D Gaussians.

    Args:
        proj: the projection (means2d, conics, depths, radii). opacities: [C, N].
        features: [C, N, F] per-camera features (colour, depth, ...).

    Returns ([C, H, W, F] blended features, [C, H, W, 1] final transmittance).
    """
    n_cameras = features.shape[0]
    bins = bin_gaussians(proj.means2d, proj.radii, proj.depths, width, height)
    out, t_final = _Rasterize3DGS.apply(
        proj.means2d, proj.conics, opacities.contiguous(), features.contiguous(), bins
    )
    shape = (n_cameras, bins.tiles_x, bins.tiles_y, width, height)
    return tiles_to_image(out, *shape), tiles_to_image(t_final[..., None], *shape)
