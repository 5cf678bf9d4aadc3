"""Tiled 3DGS rasteriser in pure torch with a hand-written backward.

Forward: bin the projected Gaussians into 16x16 tiles (``tiling.py``), then composite each group
of tiles as one padded [G, P, K] block (P = 256 pixels, K Gaussians), small enough to stay in the
CPU cache (``compositing.py``). Backward: reuse the block's weights when they fit the
``compositing.SAVE_BUDGET_BYTES`` budget (else recompute them, so memory stays bounded) and push gradients to
the 2D means, conics, opacities and features with closed-form derivatives, scattered back with
``index_add_``.

Speed: log(alpha) = log(opacity) - sigma is a quadratic in the pixel position, so it splits into a
per-row part, a per-column part and a row x column product; these [G, 16, K] parts are computed in
float64 (exact offsets from the pixel centres) and combined over the block by one float32
``addcmul``. The backward's pixel sums are moments against the monomials (1, x, y, x^2, xy, y^2)
of the pixel coordinates relative to the tile centre (small terms, so float32 sums lose no more
than float32 rendering itself): one matrix product per block, expanded around each mean in float64.
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
    with_ones,
)
from genfusion.splat.projection import Projection3DGS
from genfusion.splat.tiling import (
    PIXELS_PER_TILE,
    TILE_CENTRE,
    TileBins,
    TileGroup,
    bin_gaussians,
    map_groups,
    pixel_monomials,
    scatter_group_gradients,
    tile_axis,
    tiles_to_image,
)


def _log_alpha_parts(
    group: TileGroup, means2d: Tensor, conics: Tensor, log_opacities: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Separable parts of log(opacity) - sigma for the block: (row, column, dy, cross), [G, 16, K].

    sigma = 0.5 a dx^2 + b dx dy + 0.5 c dy^2 with (dx, dy) = pixel - mean: the dy-only terms
    (with log(opacity); -inf on padding) form the per-row part, the dx-only terms the per-column
    part, and the cross term is dy (per row) times -b dx (per column).
    """
    ids = group.gaussian_ids
    m2d = means2d[ids].double()
    a, b, c = conics[ids].double().unbind(-1)  # [G, K]
    axis = tile_axis(m2d.device)[None, :, None]  # [1, 16, 1]
    dx = axis - (m2d[..., 0] - group.origin[:, 0:1])[:, None, :]  # [G, 16, K] over columns
    dy = axis - (m2d[..., 1] - group.origin[:, 1:2])[:, None, :]  # [G, 16, K] over rows
    dtype = means2d.dtype
    row = (log_opacities[ids][:, None] - 0.5 * c[:, None] * dy * dy).to(dtype)
    row.masked_fill_(~group.valid[:, None, :], float("-inf"))
    return row, (-0.5 * a[:, None] * dx * dx).to(dtype), dy.to(dtype), (-b[:, None] * dx).to(dtype)


def _log_alpha(parts: tuple[Tensor, Tensor, Tensor, Tensor], start: int, stop: int) -> Tensor:
    """log(opacity) - sigma of the block's slots start:stop, [G, P, stop - start]."""
    row, column, dy, cross = (part[..., start:stop] for part in parts)
    log_alpha = torch.addcmul(row[:, :, None] + column[:, None], dy[:, :, None], cross[:, None])
    return log_alpha.view(row.shape[0], PIXELS_PER_TILE, stop - start)


def _composite(
    group: TileGroup, flat: tuple[Tensor, Tensor, Tensor], may_clamp: bool
) -> tuple[Composite, int]:
    """The block's compositing state over its first ``used`` slots (the rest lie behind opaque
    pixels) and ``used``."""
    parts = _log_alpha_parts(group, *flat)
    return composite_until_opaque(
        lambda start, stop: alpha_from_log(_log_alpha(parts, start, stop)), group.n_slots, may_clamp=may_clamp
    )


class _Rasterize3DGS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, bins: TileBins):
        n_features = features.shape[-1]
        flat = (means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1).log())
        flat_features = with_ones(features.reshape(-1, n_features))
        out = features.new_zeros(bins.n_tiles, PIXELS_PER_TILE, n_features)
        t_final = features.new_ones(bins.n_tiles, PIXELS_PER_TILE)
        may_clamp = can_clamp(opacities)
        budget = SaveBudget()

        def run(group: TileGroup):
            comp, used = _composite(group, flat, may_clamp)
            blended, t_group = accumulate(comp.weights, flat_features[group.gaussian_ids[:, :used]])
            return blended, t_group, (comp, used) if budget.keep(comp) else None

        results = map_groups(run, bins.groups)
        saved = []
        for group, (blended, t_group, kept) in zip(bins.groups, results, strict=True):
            out[group.tile_ids] = blended
            t_final[group.tile_ids] = t_group
            saved.append(kept)
        ctx.bins, ctx.saved_fragments, ctx.may_clamp = bins, saved, may_clamp
        ctx.save_for_backward(means2d, conics, opacities, features, t_final)
        return out, t_final

    @staticmethod
    def backward(ctx, grad_out, grad_t_final):
        means2d, conics, opacities, features, t_final = ctx.saved_tensors
        bins: TileBins = ctx.bins
        n_features = features.shape[-1]
        flat_opacities = opacities.reshape(-1)
        flat = (means2d.reshape(-1, 2), conics.reshape(-1, 3), flat_opacities.log())
        flat_features = features.reshape(-1, n_features)
        g_means2d = torch.zeros_like(flat[0], dtype=torch.float64)
        g_conics = torch.zeros_like(flat[1], dtype=torch.float64)
        g_opacities = torch.zeros_like(flat_opacities)
        g_features = torch.zeros_like(flat_features)
        monomials = pixel_monomials(means2d.device, means2d.dtype, centred=True)  # [6, P]
        tiny = torch.finfo(opacities.dtype).tiny

        def run(group: TileGroup, saved: tuple[Composite, int] | None):
            comp, used = saved if saved is not None else _composite(group, flat, ctx.may_clamp)
            ids, tiles = group.gaussian_ids[:, :used], group.tile_ids
            g_log_alpha, g_feats, _ = backward_log_alpha(
                comp, flat_features[ids], grad_out[tiles], t_final[tiles], grad_t_final[tiles]
            )
            # sums over pixels of dL/dsigma * (1, x, y, x^2, xy, y^2), then of dL/dsigma dx^k dy^l
            moments = torch.matmul(monomials, g_log_alpha).double().neg_()  # [G, 6, K]
            m0, m1, m2, m3, m4, m5 = moments.unbind(1)
            g_opac = (-m0).to(g_feats.dtype).div_(flat_opacities[ids].clamp_min(tiny))
            centre = group.origin + TILE_CENTRE  # [G, 2], the monomials' coordinate origin
            mx = means2d.reshape(-1, 2)[ids, 0].double() - centre[:, 0:1]
            my = means2d.reshape(-1, 2)[ids, 1].double() - centre[:, 1:2]
            a, b, c = conics.reshape(-1, 3)[ids].double().unbind(-1)
            sum_x = mx * m0 - m1  # sum of dL/dsigma (mean - pixel)
            sum_y = my * m0 - m2
            sum_xx = mx * mx * m0 - 2 * mx * m1 + m3
            sum_xy = mx * my * m0 - mx * m2 - my * m1 + m4
            sum_yy = my * my * m0 - 2 * my * m2 + m5
            g_m2d = torch.stack([a * sum_x + b * sum_y, c * sum_y + b * sum_x], dim=-1)
            g_conic = torch.stack([0.5 * sum_xx, sum_xy, 0.5 * sum_yy], dim=-1)
            return ids, (g_m2d, g_conic, g_opac, g_feats)

        results = map_groups(run, bins.groups, ctx.saved_fragments)
        scatter_group_gradients(results, (g_means2d, g_conics, g_opacities, g_features))
        return (
            g_means2d.to(means2d.dtype).reshape(means2d.shape),
            g_conics.to(conics.dtype).reshape(conics.shape),
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
