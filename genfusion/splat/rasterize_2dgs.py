"""Tiled 2DGS (surfel) rasteriser in pure torch with a hand-written backward.

Same structure as ``rasterize_3dgs``: tile groups composited as padded [G, K, 256] blocks,
recomputed in the backward pass. The fragment weight is gsplat's ray-splat intersection with the
screen-space low-pass fallback, sigma = 0.5 min(|(u, v)|^2, 2 |mean2d - pixel|^2). Gradients go to
the ray transforms (rows u, v, w), the 2D means (low-pass branch), opacities and features
(colour, depth, normal); the distortion term also feeds the depth feature.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genfusion.splat.compositing import accumulate, backward_alpha, composite_weights, distortion
from genfusion.splat.fragments import fragment_alpha, ray_splat_2dgs, sigma_2dgs
from genfusion.splat.projection import MAX_ALPHA, Projection2DGS
from genfusion.splat.tiling import PIXELS_PER_TILE, TileBins, TileGroup, bin_gaussians, tiles_to_image


def _fragments(group: TileGroup, means2d: Tensor, transforms: Tensor, opacities: Tensor):
    """Per-fragment quantities of one block (see ``fragments.py`` for the maths)."""
    ids = group.gaussian_ids
    rows = transforms[ids]  # [G, K, 9] rows u, v, w
    cols = [rows[..., k : k + 1] for k in range(9)]
    row_u, row_v, row_w = tuple(cols[0:3]), tuple(cols[3:6]), tuple(cols[6:9])
    px, py = group.pixel_x, group.pixel_y
    cross = ray_splat_2dgs(px, py, row_u, row_v, row_w)
    m2d = means2d[ids]
    dx = m2d[..., 0:1] - px
    dy = m2d[..., 1:2] - py
    sigma, hit, use_3d = sigma_2dgs(*cross, dx, dy)
    opacity = opacities[ids][..., None]
    alpha, exists = fragment_alpha(opacity, sigma, group.valid[..., None] & hit)
    return (row_u, row_v, row_w), cross, dx, dy, sigma, use_3d, opacity, alpha, exists


class _Rasterize2DGS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, transforms, opacities, features, bins: TileBins, depth_channel: int):
        n_features = features.shape[-1]
        flat = (means2d.reshape(-1, 2), transforms.reshape(-1, 9), opacities.reshape(-1))
        flat_features = features.reshape(-1, n_features)
        out = features.new_zeros(bins.n_tiles, PIXELS_PER_TILE, n_features)
        t_final = features.new_ones(bins.n_tiles, PIXELS_PER_TILE)
        distort = features.new_zeros(bins.n_tiles, PIXELS_PER_TILE)
        for group in bins.groups:
            *_, alpha, _ = _fragments(group, *flat)
            comp = composite_weights(alpha)
            feats = flat_features[group.gaussian_ids]
            out[group.tile_ids] = accumulate(comp, feats)
            t_final[group.tile_ids] = comp.t_final
            distort[group.tile_ids] = distortion(comp, feats[..., depth_channel : depth_channel + 1])
        ctx.bins, ctx.depth_channel = bins, depth_channel
        ctx.save_for_backward(means2d, transforms, opacities, features)
        return out, t_final, distort

    @staticmethod
    def backward(ctx, grad_out, grad_t_final, grad_distort):
        means2d, transforms, opacities, features = ctx.saved_tensors
        bins: TileBins = ctx.bins
        depth_channel = ctx.depth_channel
        n_features = features.shape[-1]
        flat = (means2d.reshape(-1, 2), transforms.reshape(-1, 9), opacities.reshape(-1))
        flat_features = features.reshape(-1, n_features)
        g_means2d = torch.zeros_like(flat[0])
        g_transforms = torch.zeros_like(flat[1])
        g_opacities = torch.zeros_like(flat[2])
        g_features = torch.zeros_like(flat_features)
        for group in bins.groups:
            rows, cross, dx, dy, sigma, use_3d, opacity, alpha, exists = _fragments(group, *flat)
            comp = composite_weights(alpha)
            feats = flat_features[group.gaussian_ids]
            g_alpha, g_feats, g_depth = backward_alpha(
                comp,
                feats,
                grad_out[group.tile_ids],
                grad_t_final[group.tile_ids],
                depth=feats[..., depth_channel : depth_channel + 1],
                grad_distortion=grad_distort[group.tile_ids],
            )
            g_feats[..., depth_channel] += g_depth
            gauss = torch.exp(-sigma)
            raw = opacity * gauss
            g_raw = torch.where(exists & (raw <= MAX_ALPHA), g_alpha, torch.zeros_like(g_alpha))
            g_sigma = -g_raw * raw
            zero = torch.zeros_like(g_sigma)
            g_sigma_3d = torch.where(use_3d, g_sigma, zero)
            g_sigma_2d = g_sigma - g_sigma_3d
            # low-pass branch: sigma = |d|^2
            g_m2d = torch.stack([(2.0 * g_sigma_2d * dx).sum(-1), (2.0 * g_sigma_2d * dy).sum(-1)], dim=-1)
            # ray-splat branch: sigma = 0.5 (s_u^2 + s_v^2), (s_u, s_v) = (cx, cy) / cz
            cx, cy, cz = cross
            cz_safe = torch.where(cz != 0, cz, torch.ones_like(cz))
            su, sv = cx / cz_safe, cy / cz_safe
            g_cx = g_sigma_3d * su / cz_safe
            g_cy = g_sigma_3d * sv / cz_safe
            g_cz = -(g_cx * su + g_cy * sv)
            row_u, row_v, row_w = rows
            px, py = group.pixel_x, group.pixel_y
            hu = [px * w - u for u, w in zip(row_u, row_w, strict=True)]
            hv = [py * w - v for v, w in zip(row_v, row_w, strict=True)]
            # cross = hu x hv  =>  d/dhu = hv x g, d/dhv = g x hu
            g_hu = [
                hv[1] * g_cz - hv[2] * g_cy,
                hv[2] * g_cx - hv[0] * g_cz,
                hv[0] * g_cy - hv[1] * g_cx,
            ]
            g_hv = [
                g_cy * hu[2] - g_cz * hu[1],
                g_cz * hu[0] - g_cx * hu[2],
                g_cx * hu[1] - g_cy * hu[0],
            ]
            g_rows = [-(g.sum(-1)) for g in g_hu] + [-(g.sum(-1)) for g in g_hv]
            g_rows += [(px * gu + py * gv).sum(-1) for gu, gv in zip(g_hu, g_hv, strict=True)]
            g_rt = torch.stack(g_rows, dim=-1)  # [G, K, 9]
            ids = group.gaussian_ids.reshape(-1)
            g_means2d.index_add_(0, ids, g_m2d.reshape(-1, 2))
            g_transforms.index_add_(0, ids, g_rt.reshape(-1, 9))
            g_opacities.index_add_(0, ids, (g_raw * gauss).sum(-1).reshape(-1))
            g_features.index_add_(0, ids, g_feats.reshape(-1, n_features))
        return (
            g_means2d.reshape(means2d.shape),
            g_transforms.reshape(transforms.shape),
            g_opacities.reshape(opacities.shape),
            g_features.reshape(features.shape),
            None,
            None,
        )


def rasterize_2dgs(
    proj: Projection2DGS, opacities: Tensor, features: Tensor, width: int, height: int, depth_channel: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite [C, N, F] features of projected surfels.

    Args:
        proj: the 2DGS projection. opacities: [C, N]. features: [C, N, F] per-camera features
        whose channel ``depth_channel`` is the fragment depth (used by the distortion term).

    Returns ([C, H, W, F] blended features, [C, H, W, 1] final transmittance,
    [C, H, W, 1] distortion).
    """
    n_cameras = features.shape[0]
    bins = bin_gaussians(proj.means2d, proj.radii, proj.depths, width, height)
    out, t_final, distort = _Rasterize2DGS.apply(
        proj.means2d,
        proj.ray_transforms.contiguous(),
        opacities.contiguous(),
        features.contiguous(),
        bins,
        depth_channel,
    )
    shape = (n_cameras, bins.tiles_x, bins.tiles_y, width, height)
    return (
        tiles_to_image(out, *shape),
        tiles_to_image(t_final[..., None], *shape),
        tiles_to_image(distort[..., None], *shape),
    )
