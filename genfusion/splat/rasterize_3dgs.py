"""Tiled 3DGS rasteriser in pure torch with a hand-written backward.

Forward: bin the projected Gaussians into 16x16 tiles (``tiling.py``), then composite each group
of tiles as one padded [G, K, 256] block, small enough to stay in the CPU cache. Backward: reuse
the block's fragment opacities when they fit the ``SAVE_BUDGET_BYTES`` budget (else recompute
them, so memory stays bounded) and push gradients to the 2D means, conics, opacities and
features with closed-form derivatives, scattered back with ``index_add_``.

Speed: sigma, a quadratic in the pixel position, is evaluated for a whole block by one float64
matrix product with the monomials (1, x, y, x^2, xy, y^2) of the pixels' tile-local coordinates,
and the backward's pixel sums are moments against the same monomials. float64 keeps the expanded
quadratic free of cancellation error, so the result matches the direct evaluation (the dense
reference) to float32 rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genfusion.splat.compositing import (
    accumulate,
    backward_alpha,
    composite_from_transmittance,
    composite_weights,
)
from genfusion.splat.projection import ALPHA_THRESHOLD, MAX_ALPHA, Projection3DGS
from genfusion.splat.tiling import (
    PIXELS_PER_TILE,
    TileBins,
    TileGroup,
    bin_gaussians,
    map_groups,
    pixel_monomials,
    scatter_group_gradients,
    tiles_to_image,
)

SAVE_BUDGET_BYTES = 768 * 1024**2  # keep forward fragments for the backward up to this size


def _quadratic_coefficients(group: TileGroup, means2d: Tensor, conics: Tensor) -> tuple[Tensor, ...]:
    """Coefficients [G, K, 6] of sigma in the monomials of tile-local pixel coordinates.

    Also returns the tile-local centre (mx, my) and conic (a, b, c), all float64 [G, K].
    """
    ids = group.gaussian_ids
    m2d = means2d[ids].double()
    conic = conics[ids].double()
    mx = m2d[..., 0] - group.origin[:, 0:1]
    my = m2d[..., 1] - group.origin[:, 1:2]
    a, b, c = conic.unbind(-1)
    coefficients = torch.stack(
        [
            0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my,
            -(a * mx + b * my),
            -(c * my + b * mx),
            0.5 * a,
            b,
            0.5 * c,
        ],
        dim=-1,
    )
    return coefficients, mx, my, a, b, c


def _alpha(group: TileGroup, means2d: Tensor, conics: Tensor, opacities: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha, gauss) [G, K, P]: clamped fragment opacity (0 = no fragment) and exp(-sigma)."""
    coefficients = _quadratic_coefficients(group, means2d, conics)[0]
    sigma = torch.matmul(coefficients, pixel_monomials(coefficients.device)).to(means2d.dtype)
    exists = sigma >= 0
    exists &= group.valid[..., None]
    gauss = sigma.neg_().exp_()
    alpha = gauss * opacities[group.gaussian_ids][..., None]
    alpha.clamp_(max=MAX_ALPHA)
    exists &= alpha >= ALPHA_THRESHOLD
    alpha.mul_(exists)
    return alpha, gauss


class _Rasterize3DGS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, bins: TileBins):
        n_features = features.shape[-1]
        flat = (means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1))
        flat_features = features.reshape(-1, n_features)
        out = features.new_zeros(bins.n_tiles, PIXELS_PER_TILE, n_features)
        t_final = features.new_ones(bins.n_tiles, PIXELS_PER_TILE)
        save = 3 * 4 * PIXELS_PER_TILE * bins.n_intersections <= SAVE_BUDGET_BYTES

        def run(group: TileGroup):
            alpha, gauss = _alpha(group, *flat)
            comp = composite_weights(alpha)
            blended = accumulate(comp, flat_features[group.gaussian_ids])
            return blended, comp.t_final, (alpha, gauss, comp.t_after) if save else None

        results = map_groups(run, bins.groups)
        saved = []
        for group, (blended, t_group, kept) in zip(bins.groups, results, strict=True):
            out[group.tile_ids] = blended
            t_final[group.tile_ids] = t_group
            saved.append(kept)
        ctx.bins, ctx.saved_fragments = bins, saved
        ctx.save_for_backward(means2d, conics, opacities, features)
        return out, t_final

    @staticmethod
    def backward(ctx, grad_out, grad_t_final):
        means2d, conics, opacities, features = ctx.saved_tensors
        bins: TileBins = ctx.bins
        n_features = features.shape[-1]
        flat = (means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1))
        flat_features = features.reshape(-1, n_features)
        g_means2d = torch.zeros_like(flat[0], dtype=torch.float64)
        g_conics = torch.zeros_like(flat[1], dtype=torch.float64)
        g_opacities = torch.zeros_like(flat[2])
        g_features = torch.zeros_like(flat_features)
        monomials_t = pixel_monomials(means2d.device).transpose(0, 1)  # [P, 6]

        def run(group: TileGroup, saved):
            if saved is None:
                alpha, gauss = _alpha(group, *flat)
                comp = composite_weights(alpha)
            else:
                alpha, gauss, t_after = saved
                comp = composite_from_transmittance(alpha, t_after)
            feats = flat_features[group.gaussian_ids]
            g_alpha, g_feats, _ = backward_alpha(
                comp, feats, grad_out[group.tile_ids], grad_t_final[group.tile_ids]
            )
            raw = gauss * flat[2][group.gaussian_ids][..., None]
            unclamped = (alpha > 0) & (raw <= MAX_ALPHA)
            g_raw = g_alpha.mul_(unclamped)
            g_opac = torch.linalg.vecdot(g_raw, gauss)
            g_sigma = g_raw.mul_(raw).neg_()
            # sums over pixels of g_sigma * (1, x, y, x^2, xy, y^2), then of g_sigma * dx^k dy^l
            m0, m1, m2, m3, m4, m5 = torch.matmul(g_sigma.double(), monomials_t).unbind(-1)
            _, mx, my, a, b, c = _quadratic_coefficients(group, *flat[:2])
            sum_x = mx * m0 - m1
            sum_y = my * m0 - m2
            sum_xx = mx * mx * m0 - 2 * mx * m1 + m3
            sum_xy = mx * my * m0 - mx * m2 - my * m1 + m4
            sum_yy = my * my * m0 - 2 * my * m2 + m5
            g_m2d = torch.stack([a * sum_x + b * sum_y, c * sum_y + b * sum_x], dim=-1)
            g_conic = torch.stack([0.5 * sum_xx, sum_xy, 0.5 * sum_yy], dim=-1)
            return g_m2d, g_conic, g_opac, g_feats

        results = map_groups(run, bins.groups, ctx.saved_fragments)
        scatter_group_gradients(bins.groups, results, (g_means2d, g_conics, g_opacities, g_features))
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
