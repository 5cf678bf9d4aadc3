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

from genfusion.splat.compositing import (
    accumulate,
    backward_alpha,
    composite_from_transmittance,
    composite_weights,
    distortion,
)
from genfusion.splat.fragments import FILTER_INV_SQUARE_2DGS
from genfusion.splat.projection import ALPHA_THRESHOLD, MAX_ALPHA, Projection2DGS
from genfusion.splat.tiling import (
    PIXELS_PER_TILE,
    TileBins,
    TileGroup,
    bin_gaussians,
    map_groups,
    pixel_monomials,
    scatter_group_gradients,
    tile_axis,
    tiles_to_image,
)

SAVE_BUDGET_BYTES = 768 * 1024**2  # keep forward fragments for the backward up to this size


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return torch.linalg.cross(a, b, dim=-1)


def _geometry(group: TileGroup, means2d: Tensor, transforms: Tensor):
    """Ray-splat intersections and low-pass distances of one block, from separable float64 parts.

    With tile-local pixel coordinates (lx, ly) and the tile origin (ox, oy), the planes through a
    pixel's ray are h_u = hu0 + lx w and h_v = hv0 + ly w (hu0 = ox w - u, hv0 = oy w - v), so
    their cross product is affine in the pixel: A + lx B + ly C with A = hu0 x hv0,
    B = w x hv0, C = hu0 x w. The squared distance to the centre is (lx - mx)^2 + (ly - my)^2.
    Both are a per-row part (ly) plus a per-column part (lx) of the 16 x 16 tile, so one
    broadcast float64 addition evaluates a whole block (cheaper than a K=6 matrix product).
    float64 keeps the affine form free of cancellation error.

    Returns ((cx, cy, cz, dist2) float [G, K, P] tensors, per-(g, k) float64 terms for the
    backward).
    """
    ids = group.gaussian_ids
    rows = transforms[ids].double()  # [G, K, 9]
    u, v, w = rows[..., 0:3], rows[..., 3:6], rows[..., 6:9]
    ox = group.origin[:, 0, None, None]
    oy = group.origin[:, 1, None, None]
    hu0 = ox * w - u
    hv0 = oy * w - v
    a, b, c = _cross(hu0, hv0), _cross(w, hv0), _cross(hu0, w)  # [G, K, 3]
    m2d = means2d[ids].double()
    mx = m2d[..., 0] - group.origin[:, 0:1]
    my = m2d[..., 1] - group.origin[:, 1:2]
    axis = tile_axis(rows.device)  # [16] tile-local pixel centres
    # [4, G, K, 16] parts over the tile's rows (ly) and columns (lx): cx, cy, cz, |d|^2
    row_part = torch.cat(
        [
            a.permute(2, 0, 1)[..., None] + c.permute(2, 0, 1)[..., None] * axis,
            ((axis - my[..., None]) ** 2)[None],
        ]
    )
    col_part = torch.cat([b.permute(2, 0, 1)[..., None] * axis, ((axis - mx[..., None]) ** 2)[None]])
    values = (row_part[..., :, None] + col_part[..., None, :]).to(transforms.dtype)  # [4, G, K, 16, 16]
    return values.flatten(-2).unbind(0), (u, v, w, hu0, hv0, mx, my)


def _intersections(values: tuple[Tensor, ...]):
    """(su, sv, cz_safe, hit, use_3d, sigma) [G, K, P] from ``_geometry``'s (cx, cy, cz, dist2):
    the splat-space intersection, which branch of gsplat's min() was taken, and sigma.
    ``dist2`` is overwritten."""
    cx, cy, cz, dist2 = values
    hit = cz != 0
    cz_safe = torch.where(hit, cz, torch.ones_like(cz))
    su, sv = cx / cz_safe, cy / cz_safe
    weight_3d = su * su + sv * sv
    weight_2d = dist2.mul_(FILTER_INV_SQUARE_2DGS)
    use_3d = weight_3d <= weight_2d
    sigma = torch.where(use_3d, weight_3d, weight_2d).mul_(0.5)
    return su, sv, cz_safe, hit, use_3d, sigma


def _alpha(group: TileGroup, means2d: Tensor, transforms: Tensor, opacities: Tensor):
    """(alpha, gauss, use_3d, (su, sv, cz), terms): fragment opacity (0 = no fragment),
    exp(-sigma), which branch of gsplat's min() was taken, the splat-space intersection and
    ``_geometry``'s per-(g, k) terms."""
    values, terms = _geometry(group, means2d, transforms)
    su, sv, cz_safe, hit, use_3d, sigma = _intersections(values)
    exists = sigma >= 0
    exists &= hit
    exists &= group.valid[..., None]
    gauss = sigma.neg_().exp_()
    alpha = gauss * opacities[group.gaussian_ids][..., None]
    alpha.clamp_(max=MAX_ALPHA)
    exists &= alpha >= ALPHA_THRESHOLD
    alpha.mul_(exists)
    return alpha, gauss, use_3d, (su, sv, cz_safe), terms


class _Rasterize2DGS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, transforms, opacities, features, bins: TileBins, depth_channel: int):
        n_features = features.shape[-1]
        flat = (means2d.reshape(-1, 2), transforms.reshape(-1, 9), opacities.reshape(-1))
        flat_features = features.reshape(-1, n_features)
        out = features.new_zeros(bins.n_tiles, PIXELS_PER_TILE, n_features)
        t_final = features.new_ones(bins.n_tiles, PIXELS_PER_TILE)
        distort = features.new_zeros(bins.n_tiles, PIXELS_PER_TILE)
        save = 3 * 4 * PIXELS_PER_TILE * bins.n_intersections <= SAVE_BUDGET_BYTES

        def run(group: TileGroup):
            alpha, gauss, _, _, _ = _alpha(group, *flat)
            comp = composite_weights(alpha)
            feats = flat_features[group.gaussian_ids]
            blended = accumulate(comp, feats)
            distorted = distortion(comp, feats[..., depth_channel : depth_channel + 1])
            return blended, comp.t_final, distorted, (alpha, gauss, comp.t_after) if save else None

        results = map_groups(run, bins.groups)
        saved = []
        for group, (blended, t_group, distorted, kept) in zip(bins.groups, results, strict=True):
            out[group.tile_ids] = blended
            t_final[group.tile_ids] = t_group
            distort[group.tile_ids] = distorted
            saved.append(kept)
        ctx.bins, ctx.depth_channel, ctx.saved_fragments = bins, depth_channel, saved
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
        g_means2d = torch.zeros_like(flat[0], dtype=torch.float64)
        g_transforms = torch.zeros_like(flat[1], dtype=torch.float64)
        g_opacities = torch.zeros_like(flat[2])
        g_features = torch.zeros_like(flat_features)
        monomials_t = pixel_monomials(means2d.device)[:3].transpose(0, 1)  # [P, 3]: 1, x, y

        def run(group: TileGroup, saved):
            if saved is None:
                alpha, gauss, use_3d, (su, sv, cz), terms = _alpha(group, *flat)
                comp = composite_weights(alpha)
            else:  # the forward's alpha and exp(-sigma); only the geometry is recomputed
                alpha, gauss, t_after = saved
                values, terms = _geometry(group, *flat[:2])
                su, sv, cz, _, use_3d, _ = _intersections(values)
                comp = composite_from_transmittance(alpha, t_after)
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
            raw = gauss * flat[2][group.gaussian_ids][..., None]
            unclamped = (alpha > 0) & (raw <= MAX_ALPHA)
            g_raw = g_alpha.mul_(unclamped)
            g_opac = torch.linalg.vecdot(g_raw, gauss)
            g_sigma = g_raw.mul_(raw).neg_()
            g_sigma_3d = torch.where(use_3d, g_sigma, torch.zeros_like(g_sigma))
            g_sigma_2d = g_sigma.sub_(g_sigma_3d)
            # sigma_3d = 0.5 (su^2 + sv^2), (su, sv) = (cx, cy) / cz
            g_cx = g_sigma_3d * su / cz
            g_cy = g_sigma_3d * sv / cz
            g_cz = -(g_cx * su + g_cy * sv)
            stacked = torch.stack([g_cx, g_cy, g_cz, g_sigma_2d], dim=2).double()  # [G, K, 4, P]
            moments = torch.matmul(stacked, monomials_t)  # [G, K, 4, 3]: sums of g * (1, x, y)
            u, v, w, hu0, hv0, mx, my = terms
            g_a, g_b, g_c = moments[:, :, :3, 0], moments[:, :, :3, 1], moments[:, :, :3, 2]
            # a = hu0 x hv0, b = w x hv0, c = hu0 x w; for p = q x r: dq = r x g, dr = g x q
            g_hu0 = _cross(hv0, g_a) + _cross(w, g_c)
            g_hv0 = _cross(g_a, hu0) + _cross(g_b, w)
            g_w = _cross(hv0, g_b) + _cross(g_c, hu0)
            g_w = g_w + group.origin[:, 0, None, None] * g_hu0 + group.origin[:, 1, None, None] * g_hv0
            g_rt = torch.cat([-g_hu0, -g_hv0, g_w], dim=-1)  # [G, K, 9]
            # low-pass branch: sigma_2d = |mean2d - pixel|^2
            s0, s1, s2 = moments[:, :, 3].unbind(-1)
            g_m2d = torch.stack([2 * (mx * s0 - s1), 2 * (my * s0 - s2)], dim=-1)
            return g_m2d, g_rt, g_opac, g_feats

        results = map_groups(run, bins.groups, ctx.saved_fragments)
        scatter_group_gradients(bins.groups, results, (g_means2d, g_transforms, g_opacities, g_features))
        return (
            g_means2d.to(means2d.dtype).reshape(means2d.shape),
            g_transforms.to(transforms.dtype).reshape(transforms.shape),
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
