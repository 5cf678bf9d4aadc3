"""Tiled 2DGS (surfel) rasteriser in pure torch with a hand-written backward.

Same structure as ``rasterize_3dgs``: tile groups composited as padded [G, P, K] blocks
(``compositing.py``). The fragment weight is gsplat's ray-splat intersection with the screen-space
low-pass fallback, sigma = 0.5 min(|(u, v)|^2, 2 |mean2d - pixel|^2). Gradients go to the ray
transforms (rows u, v, w), the 2D means (low-pass branch), opacities and features (colour, depth,
normal); the distortion term also feeds the depth feature. The backward keeps the forward's
weights (within ``compositing.SAVE_BUDGET_BYTES``) and recomputes the cheap per-pixel geometry.

One deliberate difference from gsplat: where a pixel's ray is exactly parallel to a surfel
(cz == 0) gsplat skips the fragment; here |(u, v)| is infinite there, so the min() takes the
low-pass branch, which is also the limit as cz -> 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genfusion.splat.compositing import (
    Composite,
    SaveBudget,
    accumulate,
    alpha_from_log,
    backward_log_alpha,
    can_clamp,
    composite_until_opaque,
    distortion,
    with_ones,
)
from genfusion.splat.fragments import FILTER_INV_SQUARE_2DGS
from genfusion.splat.projection import Projection2DGS
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

UNREACHABLE_WEIGHT = 1e30  # |(u, v)|^2 where the ray never meets the surfel's plane in a point


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return torch.linalg.cross(a, b, dim=-1)


def _plane_products(transforms: Tensor) -> Tensor:
    """[N, 9] float64 (u x v, v x w, w x u) of the ray transforms' rows u, v, w ([N, 9])."""
    rows = transforms.double()
    u, v, w = rows[:, 0:3], rows[:, 3:6], rows[:, 6:9]
    return torch.cat([_cross(u, v), _cross(v, w), _cross(w, u)], dim=-1)


def _transform_gradients(transforms: Tensor, g_products: Tensor) -> Tensor:
    """Gradients [N, 9] of the rows u, v, w from those of ``_plane_products`` ([N, 9])."""
    rows = transforms.double()
    u, v, w = rows[:, 0:3], rows[:, 3:6], rows[:, 6:9]
    g_uv, g_vw, g_wu = g_products[:, 0:3], g_products[:, 3:6], g_products[:, 6:9]
    # for p = q x r: dL/dq = r x g, dL/dr = g x q
    g_u = _cross(v, g_uv) + _cross(g_wu, w)
    g_v = _cross(g_uv, u) + _cross(w, g_vw)
    g_w = _cross(g_vw, v) + _cross(u, g_wu)
    return torch.cat([g_u, g_v, g_w], dim=-1)


class _Geometry:
    """Separable parts of one block's ray-splat intersections and low-pass distances.

    The planes through the ray of pixel (px, py) are h_u = px w - u and h_v = py w - v, so their
    cross product (cx, cy, cz) is affine in the pixel: u x v + px (v x w) + py (w x u), with the
    three products per Gaussian from ``_plane_products``. In tile-local coordinates
    (px, py) = (ox + lx, oy + ly) it is A + lx B + ly C with A = u x v + ox B + oy C, B = v x w,
    C = w x u: a per-row part (A + ly C) plus a per-column part (lx B), and the low-pass weight
    2 |pixel - mean|^2 splits likewise. The [G, 16, K] parts are formed in float64 (tile-local, so
    no cancellation between large terms) and combined over the block in the working precision.
    """

    def __init__(self, group: TileGroup, means2d: Tensor, products: Tensor):
        ids = group.gaussian_ids
        gathered = products[ids]  # [G, K, 9]
        b, c = gathered[..., 3:6], gathered[..., 6:9]
        a = gathered[..., 0:3] + group.origin[:, 0, None, None] * b + group.origin[:, 1, None, None] * c
        m2d = means2d[ids].double()
        self.mx = m2d[..., 0] - group.origin[:, 0:1]
        self.my = m2d[..., 1] - group.origin[:, 1:2]
        axis = tile_axis(ids.device)[None, :, None]  # [1, 16, 1]
        dtype = means2d.dtype
        # [4, G, 16, K]: cx, cy, cz and the low-pass weight, over rows (ly) and columns (lx)
        self.row_parts = torch.stack(
            [a[..., i][:, None] + c[..., i][:, None] * axis for i in range(3)]
            + [FILTER_INV_SQUARE_2DGS * (axis - self.my[:, None]) ** 2]
        ).to(dtype)
        self.column_parts = torch.stack(
            [b[..., i][:, None] * axis for i in range(3)]
            + [FILTER_INV_SQUARE_2DGS * (axis - self.mx[:, None]) ** 2]
        ).to(dtype)

    def evaluate(
        self, start: int = 0, stop: int | None = None, *, finite: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(su, sv, 1 / cz, |(su, sv)|^2, low-pass weight) of slots start:stop, all [G, P, K'].

        Where cz == 0 (the ray is parallel to the surfel, or lies in its plane when cx = cy = 0
        too) |(su, sv)|^2 becomes ``UNREACHABLE_WEIGHT``, so the low-pass branch wins the min();
        ``finite=True`` also zeroes su, sv and 1 / cz there, for the backward's products.
        """
        stop = self.row_parts.shape[-1] if stop is None else stop
        rows, columns = self.row_parts[..., start:stop], self.column_parts[..., start:stop]
        shape = (rows.shape[1], PIXELS_PER_TILE, stop - start)
        cx, cy, cz, weight_2d = (
            torch.add(row[:, :, None], column[:, None]).view(shape)
            for row, column in zip(rows, columns, strict=True)
        )
        inv_cz = torch.reciprocal(cz, out=cz)
        su, sv = cx.mul_(inv_cz), cy.mul_(inv_cz)
        weight_3d = torch.mul(su, su).addcmul_(sv, sv)
        weight_3d.nan_to_num_(nan=UNREACHABLE_WEIGHT, posinf=UNREACHABLE_WEIGHT)
        if finite:
            for value in (su, sv, inv_cz):
                value.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        return su, sv, inv_cz, weight_3d, weight_2d


def _log_alpha(geometry: _Geometry, log_opacity: Tensor, start: int, stop: int) -> Tensor:
    """log(opacity) - sigma of slots start:stop, [G, P, stop - start]; ``log_opacity`` is the
    block's [G, K] log-opacities (-inf on padding)."""
    _, _, _, weight_3d, weight_2d = geometry.evaluate(start, stop)
    sigma2 = torch.minimum(weight_3d, weight_2d, out=weight_3d)
    return torch.add(log_opacity[:, None, start:stop], sigma2, alpha=-0.5, out=sigma2)


def _composite(
    group: TileGroup, means2d: Tensor, products: Tensor, log_opacities: Tensor, may_clamp: bool
) -> tuple[Composite, int]:
    """The block's compositing state over its first ``used`` slots (the rest lie behind opaque
    pixels) and ``used``."""
    geometry = _Geometry(group, means2d, products)
    log_opacity = log_opacities[group.gaussian_ids].masked_fill(~group.valid, float("-inf"))
    return composite_until_opaque(
        lambda start, stop: alpha_from_log(_log_alpha(geometry, log_opacity, start, stop)),
        group.n_slots,
        may_clamp=may_clamp,
    )


class _Rasterize2DGS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, transforms, opacities, features, bins: TileBins, depth_channel: int):
        n_features = features.shape[-1]
        flat_means, products = means2d.reshape(-1, 2), _plane_products(transforms.reshape(-1, 9))
        log_opacities = opacities.reshape(-1).log()
        flat_features = with_ones(features.reshape(-1, n_features))
        out = features.new_zeros(bins.n_tiles, PIXELS_PER_TILE, n_features)
        t_final = features.new_ones(bins.n_tiles, PIXELS_PER_TILE)
        distort = features.new_zeros(bins.n_tiles, PIXELS_PER_TILE)
        may_clamp = can_clamp(opacities)
        budget = SaveBudget()

        def run(group: TileGroup):
            comp, used = _composite(group, flat_means, products, log_opacities, may_clamp)
            feats = flat_features[group.gaussian_ids[:, :used]]
            blended, t_group = accumulate(comp.weights, feats)
            distorted = distortion(comp.weights, feats[..., depth_channel].unsqueeze(1))
            return blended, t_group, distorted, (comp, used) if budget.keep(comp) else None

        results = map_groups(run, bins.groups)
        saved = []
        for group, (blended, t_group, distorted, kept) in zip(bins.groups, results, strict=True):
            out[group.tile_ids] = blended
            t_final[group.tile_ids] = t_group
            distort[group.tile_ids] = distorted
            saved.append(kept)
        ctx.bins, ctx.depth_channel, ctx.saved_fragments, ctx.may_clamp = (
            bins,
            depth_channel,
            saved,
            may_clamp,
        )
        ctx.save_for_backward(means2d, transforms, opacities, features, t_final)
        return out, t_final, distort

    @staticmethod
    def backward(ctx, grad_out, grad_t_final, grad_distort):
        means2d, transforms, opacities, features, t_final = ctx.saved_tensors
        bins: TileBins = ctx.bins
        depth_channel = ctx.depth_channel
        n_features = features.shape[-1]
        flat_means, flat_transforms = means2d.reshape(-1, 2), transforms.reshape(-1, 9)
        products = _plane_products(flat_transforms)
        flat_opacities = opacities.reshape(-1)
        log_opacities = flat_opacities.log()
        flat_features = features.reshape(-1, n_features)
        g_means2d = torch.zeros_like(flat_means, dtype=torch.float64)
        g_products = torch.zeros_like(products)
        g_opacities = torch.zeros_like(flat_opacities)
        g_features = torch.zeros_like(flat_features)
        monomials = pixel_monomials(means2d.device, means2d.dtype)[:3]  # [3, P]: 1, x, y
        tiny = torch.finfo(opacities.dtype).tiny

        def run(group: TileGroup, saved: tuple[Composite, int] | None):
            if saved is None:
                saved = _composite(group, flat_means, products, log_opacities, ctx.may_clamp)
            comp, used = saved
            head = group.slots(0, used)
            ids, tiles = head.gaussian_ids, group.tile_ids
            geometry = _Geometry(head, flat_means, products)
            feats = flat_features[ids]
            g_log_alpha, g_feats, g_depth = backward_log_alpha(
                comp, feats, grad_out[tiles], t_final[tiles], grad_t_final[tiles],
                depth=feats[..., depth_channel].unsqueeze(1),
                grad_distortion=grad_distort[tiles],
            )  # fmt: skip
            g_feats[..., depth_channel] += g_depth
            g_opac = g_log_alpha.sum(dim=1).div_(flat_opacities[ids].clamp_min(tiny))
            # dL/dsigma = -dL/dlog(alpha), split between the two branches of the min()
            su, sv, inv_cz, weight_3d, weight_2d = geometry.evaluate(finite=True)
            takes_3d = weight_2d.sub_(weight_3d).sign_().clamp_min_(0.0)  # 1 where |(u, v)|^2 < low-pass
            neg_g_3d = takes_3d.mul_(g_log_alpha)
            neg_g_2d = g_log_alpha.sub_(neg_g_3d)
            # sigma_3d = 0.5 (su^2 + sv^2), (su, sv) = (cx, cy) / cz
            neg_q = neg_g_3d.mul_(inv_cz)
            moments_in = neg_q.new_empty((4, *neg_q.shape))  # -dL/d(cx, cy, cz), -dL/dsigma_2d
            neg_g_cx, neg_g_cy = (
                torch.mul(neg_q, su, out=moments_in[0]),
                torch.mul(neg_q, sv, out=moments_in[1]),
            )
            torch.mul(neg_g_cx, su, out=moments_in[2]).addcmul_(neg_g_cy, sv).neg_()
            moments_in[3].copy_(neg_g_2d)
            # sums over pixels of the gradients times (1, x, y): [G, K, 4, 3]
            moments = torch.matmul(monomials, moments_in).double().neg_().permute(1, 3, 0, 2)
            g_a, g_b, g_c = moments[:, :, :3, 0], moments[:, :, :3, 1], moments[:, :, :3, 2]
            # (cx, cy, cz) = A + lx B + ly C with A = u x v + ox B + oy C, B = v x w, C = w x u
            origin_x, origin_y = group.origin[:, 0, None, None], group.origin[:, 1, None, None]
            g_prod = torch.cat([g_a, g_b + origin_x * g_a, g_c + origin_y * g_a], dim=-1)  # [G, K, 9]
            # low-pass branch: sigma_2d = |mean2d - pixel|^2
            s0, s1, s2 = moments[:, :, 3].unbind(-1)
            g_m2d = torch.stack([2 * (geometry.mx * s0 - s1), 2 * (geometry.my * s0 - s2)], dim=-1)
            return ids, (g_m2d, g_prod, g_opac, g_feats)

        results = map_groups(run, bins.groups, ctx.saved_fragments)
        scatter_group_gradients(results, (g_means2d, g_products, g_opacities, g_features))
        g_transforms = _transform_gradients(flat_transforms, g_products)
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
