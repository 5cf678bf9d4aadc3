"""Front-to-back alpha compositing of padded [G, K, P] blocks, forward and hand-written backward.

Shared by the 3DGS and 2DGS tiled rasterisers. K runs over a tile's Gaussians in depth order, P
over its pixels. Semantics are gsplat's: a pixel stops *before* the fragment that would bring its
transmittance to 1e-4 or below. The backward treats the loss as a function of the weights
w_i = alpha_i T_i and of the final transmittance, so one formula serves colours, depth, normals and
the 2DGS distortion term:

    dL/dalpha_i = T_i dL/dw_i - (sum_{j>i} w_j dL/dw_j + T_final dL/dT_final) / (1 - alpha_i)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genfusion.splat.projection import TRANSMITTANCE_STOP


@dataclass
class Composite:
    """Compositing state of one block (all [G, K, P] unless noted)."""

    alpha: Tensor  # fragment opacity (0 where the fragment does not exist)
    t_before: Tensor  # transmittance in front of each fragment
    t_after: Tensor  # transmittance behind each fragment, cumprod(1 - alpha)
    included: Tensor  # bool: the fragment is composited (before the pixel stopped)
    weights: Tensor  # alpha * t_before on included fragments, else 0
    t_final: Tensor  # [G, P] transmittance behind the last included fragment


def composite_weights(alpha: Tensor) -> Composite:
    """Blending weights of depth-sorted fragment opacities ``alpha`` [G, K, P]."""
    return composite_from_transmittance(alpha, torch.cumprod(1.0 - alpha, dim=1))


def composite_from_transmittance(alpha: Tensor, t_after: Tensor) -> Composite:
    """``composite_weights`` given the inclusive transmittance cumprod(1 - alpha) [G, K, P]."""
    included = t_after > TRANSMITTANCE_STOP
    t_before = torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], dim=1)
    weights = alpha * t_before * included
    t_final = torch.where(included, t_after, torch.ones_like(t_after)).amin(dim=1)
    return Composite(
        alpha=alpha, t_before=t_before, t_after=t_after, included=included, weights=weights, t_final=t_final
    )


def accumulate(comp: Composite, features: Tensor) -> Tensor:
    """Blended features [G, P, F] of per-fragment features [G, K, F]."""
    return torch.bmm(comp.weights.transpose(1, 2), features)


def distortion(comp: Composite, depth: Tensor) -> Tensor:
    """gsplat's 2DGS distortion per pixel [G, P]: sum_i 2 w_i (z_i (1 - T_i) - sum_{j<i} w_j z_j).

    ``depth`` is [G, K, 1], the fragments' depth.
    """
    weighted = comp.weights * depth
    before = torch.cumsum(weighted, dim=1) - weighted
    return (2.0 * (weighted * (1.0 - comp.t_before) - comp.weights * before)).sum(dim=1)


def backward_alpha(
    comp: Composite,
    features: Tensor,
    grad_accumulated: Tensor,
    grad_t_final: Tensor,
    *,
    depth: Tensor | None = None,
    grad_distortion: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients of the block's outputs back to the fragments.

    Args:
        features: [G, K, F] per-fragment features. grad_accumulated: [G, P, F].
        grad_t_final: [G, P]. depth / grad_distortion: [G, K, 1] and [G, P] when the distortion
            term was rendered (2DGS).

    Returns (grad_alpha [G, K, P], grad_features [G, K, F], grad_depth [G, K] from the distortion
    term or None); the caller adds grad_depth to the depth feature.
    """
    weights = comp.weights
    grad_weights = torch.bmm(features, grad_accumulated.transpose(1, 2))  # [G, K, P]
    grad_features = torch.bmm(weights, grad_accumulated)  # [G, K, F]
    grad_depth = None
    if grad_distortion is not None and depth is not None:
        # distortion = sum_i 2 w_i (z_i W_<i - A_<i), W_<i = sum_{j<i} w_j, A_<i = sum_{j<i} w_j z_j
        g = grad_distortion[:, None, :]
        weighted = weights * depth
        total_w = weights.sum(dim=1, keepdim=True)
        total_wz = weighted.sum(dim=1, keepdim=True)
        wz_before = torch.cumsum(weighted, dim=1) - weighted
        w_before = 1.0 - comp.t_before
        grad_weights = grad_weights + 2.0 * g * (
            depth * (2.0 * w_before - total_w) + total_wz - 2.0 * wz_before
        )
        grad_depth = (2.0 * g * weights * (2.0 * w_before + weights - total_w)).sum(dim=2)
    contribution = weights * grad_weights
    later = contribution.sum(dim=1, keepdim=True) - torch.cumsum(contribution, dim=1)
    tail = later + (comp.t_final * grad_t_final)[:, None, :]
    grad_alpha = (comp.t_before * grad_weights - tail / (1.0 - comp.alpha)) * comp.included
    return grad_alpha, grad_features, grad_depth
