"""Front-to-back alpha compositing of padded [G, P, K] blocks, forward and hand-written backward.

Shared by the 3DGS and 2DGS tiled rasterisers. P runs over a tile's pixels, K over its Gaussians
in depth order, innermost, so that the scans along K (cumprod, cumsum) run over contiguous memory
(twice as fast on CPU as scanning an outer dimension). Semantics are gsplat's: a pixel stops
*before* the fragment that would bring its transmittance to 1e-4 or below, and alpha is clamped to
0.999 (no gradient through a clamped alpha).

Every step is a plain float pass over the block, without boolean masks (which cost several times
more on CPU): the stop rule is ``threshold`` on the transmittance, the weights are
w_i = alpha_i T_i = r_i T_{i+1} with r_i = alpha_i / (1 - alpha_i), and T_final = 1 - sum_i w_i
comes out of the feature product as one more column of ones.

The backward treats the loss as a function of the weights w_i and of T_final, so one formula serves
colours, depth, normals and the 2DGS distortion term. With the unclamped alpha_i = exp(log alpha_i):

    dL/dlog(alpha_i) = w_i dL/dw_i - r_i (sum_{j>i} w_j dL/dw_j + T_final dL/dT_final)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor
from torch.nn.functional import threshold_

from genfusion.splat.projection import ALPHA_THRESHOLD, MAX_ALPHA, TRANSMITTANCE_STOP

LOG_ALPHA_FLOOR = -20.0  # exp(-20) = 2e-9, far below the 1/255 cut-off
CHUNK_SLOTS = 128  # fragments per pixel composited between two checks for an all-opaque block
SAVE_BUDGET_BYTES = 1536 * 1024**2  # forward block state kept for the backward, per render


@dataclass
class Composite:
    """Compositing state of one block ([G, P, K] unless noted), all the backward needs."""

    weights: Tensor  # alpha_i T_i on composited fragments, else 0
    ratio: Tensor  # alpha_i / (1 - alpha_i) on composited fragments, else 0
    unclamped: Tensor | None  # bool, False where alpha hit the 0.999 clamp; None: none did

    def slots(self, start: int, stop: int) -> Composite:
        """Views of the fragments start:stop (along K)."""
        return Composite(
            weights=self.weights[..., start:stop],
            ratio=self.ratio[..., start:stop],
            unclamped=None if self.unclamped is None else self.unclamped[..., start:stop],
        )


class SaveBudget:
    """A thread-safe allowance of bytes for block state kept from the forward for the backward.

    Blocks are kept first come, first served until the allowance runs out; the backward
    recomputes the others, so memory stays bounded whatever the scene.
    """

    def __init__(self, limit_bytes: int | None = None):
        self._left = SAVE_BUDGET_BYTES if limit_bytes is None else limit_bytes
        self._lock = threading.Lock()

    def keep(self, comp: Composite) -> bool:
        """Whether ``comp`` fits (its tensors' whole storage counts); if so, it is charged."""
        parts = (comp.weights, comp.ratio, comp.unclamped)
        size = sum(part.untyped_storage().nbytes() for part in parts if part is not None)
        with self._lock:
            if size > self._left:
                return False
            self._left -= size
            return True


def can_clamp(opacities: Tensor) -> bool:
    """Whether some fragment alpha (at most its Gaussian's opacity) can reach the 0.999 clamp."""
    return bool(opacities.numel()) and float(opacities.max()) >= MAX_ALPHA - 1e-6


def alpha_from_log(log_alpha: Tensor) -> Tensor:
    """Fragment opacity from log(opacity) - sigma, in place: clamped to 0.999, and 0 where it is
    below 1/255 (the fragment does not exist, as in gsplat)."""
    # exp() of a large negative number takes a slow path (~12x); below the floor alpha is 0 anyway
    alpha = log_alpha.clamp_(min=LOG_ALPHA_FLOOR).exp_().clamp_(max=MAX_ALPHA)
    return threshold_(alpha, _below(ALPHA_THRESHOLD, alpha.dtype), 0.0)


def composite(
    alpha: Tensor, *, may_clamp: bool = True, t_start: Tensor | None = None, out: Composite | None = None
) -> tuple[Composite, Tensor]:
    """Blending weights of depth-sorted fragment opacities ``alpha`` [G, P, K].

    ``may_clamp=False`` promises that no alpha reached the 0.999 clamp (every opacity of the block
    is below it), which skips the mask that stops gradients through clamped fragments.
    ``t_start`` [G, P] is the transmittance in front of these fragments (None: 1), 0 where the
    pixel has already stopped. ``out`` receives the result (else new tensors). Returns the state
    and the transmittance behind the block (0 where the pixel stopped), the next ``t_start``.
    """
    one_minus = torch.rsub(alpha, 1.0)
    transmittance = torch.cumprod(one_minus, dim=-1)
    if t_start is not None:
        transmittance.mul_(t_start[..., None])
    transmittance = threshold_(transmittance, TRANSMITTANCE_STOP, 0.0)
    t_end = transmittance[..., -1].clone()
    ratio = torch.div(alpha, one_minus, out=one_minus if out is None else out.ratio)
    weights = torch.mul(ratio, transmittance, out=None if out is None else out.weights)
    ratio.mul_(transmittance.sign_())  # composited fragments only; weights: alpha_i T_i there
    unclamped = None
    if may_clamp:
        unclamped = torch.lt(alpha, MAX_ALPHA, out=None if out is None else out.unclamped)
    return Composite(weights=weights, ratio=ratio, unclamped=unclamped), t_end


def composite_until_opaque(
    alpha_of_slots: Callable[[int, int], Tensor], n_slots: int, *, may_clamp: bool, chunk: int | None = None
) -> tuple[Composite, int]:
    """``composite`` over the K = ``n_slots`` depth-ordered fragments in chunks, stopping once
    every pixel of the block has stopped, as gsplat's tiles do: behind an opaque surface most of a
    tile's Gaussians are never evaluated.

    Chunks start at ``chunk`` slots (default ``CHUNK_SLOTS``) and double; when the most
    transparent pixel, extrapolated at its rate so far, would still be open after all K slots,
    the rest is done in one chunk, so a block that does not turn opaque pays for one extra
    chunk at most.

    ``alpha_of_slots(start, stop)`` gives the alpha [G, P, stop - start] of slots start:stop.
    Returns the state over the first ``used`` slots and ``used``; later slots have no weight.
    """
    chunk = chunk or CHUNK_SLOTS
    first = alpha_of_slots(0, min(chunk, n_slots))
    if first.shape[-1] == n_slots:
        return composite(first, may_clamp=may_clamp)[0], n_slots
    shape = (*first.shape[:-1], n_slots)
    full = Composite(
        weights=first.new_empty(shape),
        ratio=first.new_empty(shape),
        unclamped=torch.empty(shape, dtype=torch.bool, device=first.device) if may_clamp else None,
    )
    t_start, used, alpha = None, 0, first
    while True:
        stop = used + alpha.shape[-1]
        _, t_start = composite(alpha, may_clamp=may_clamp, t_start=t_start, out=full.slots(used, stop))
        used, chunk = stop, 2 * chunk
        brightest = float(t_start.amax())
        if used == n_slots or brightest == 0.0:
            return full.slots(0, used), used
        if brightest ** (n_slots / used) > TRANSMITTANCE_STOP:
            chunk = n_slots  # at this rate some pixel stays open to the end: finish in one go
        alpha = alpha_of_slots(used, min(used + chunk, n_slots))


def with_ones(features: Tensor) -> Tensor:
    """[..., F] features with a column of ones appended, so ``accumulate`` also sums the weights."""
    return torch.cat([features, features.new_ones(*features.shape[:-1], 1)], dim=-1)


def accumulate(weights: Tensor, features_ones: Tensor) -> tuple[Tensor, Tensor]:
    """Blended features [G, P, F] and final transmittance [G, P] from weights [G, P, K] and
    per-fragment features [G, K, F + 1] whose last column is ones (``with_ones``)."""
    # as [F + 1, K] x [K, P]: several times faster on CPU than [P, K] x [K, F + 1] for small F
    blended = torch.bmm(features_ones.transpose(1, 2), weights.transpose(1, 2)).transpose(1, 2)
    return blended[..., :-1], torch.rsub(blended[..., -1], 1.0)


def exclusive_cumsum(values: Tensor) -> Tensor:
    """sum_{j<i} values_j along the last dimension."""
    return torch.cumsum(values, dim=-1).sub_(values)


def distortion(weights: Tensor, depth: Tensor) -> Tensor:
    """gsplat's 2DGS distortion per pixel [G, P]: sum_i 2 w_i (z_i W_<i - A_<i), with
    W_<i = sum_{j<i} w_j and A_<i = sum_{j<i} w_j z_j. ``depth`` is [G, 1, K]."""
    weighted = weights * depth
    inner = exclusive_cumsum(weights).mul_(weighted).sub_(exclusive_cumsum(weighted).mul_(weights))
    return 2.0 * inner.sum(dim=-1)


def backward_log_alpha(
    comp: Composite,
    features: Tensor,
    grad_blended: Tensor,
    t_final: Tensor,
    grad_t_final: Tensor,
    *,
    depth: Tensor | None = None,
    grad_distortion: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients of the block's outputs back to the fragments.

    Args:
        features: [G, K, F] per-fragment features. grad_blended: [G, P, F]. t_final and
            grad_t_final: [G, P]. depth / grad_distortion: [G, 1, K] and [G, P] when the
            distortion term was rendered (2DGS).

    Returns (dL/dlog(alpha) [G, P, K], dL/dfeatures [G, K, F], dL/ddepth [G, K] from the
    distortion term or None; the caller adds it to the depth feature).
    """
    weights = comp.weights
    grad_weights = torch.bmm(grad_blended, features.transpose(1, 2))  # [G, P, K]
    grad_features = torch.bmm(grad_blended.transpose(1, 2), weights).transpose(1, 2)  # [G, K, F]
    grad_depth = None
    if grad_distortion is not None and depth is not None:
        # distortion = sum_i 2 w_i (z_i W_<i - A_<i): d/dw_i and d/dz_i, with W = sum_j w_j
        g = 2.0 * grad_distortion[..., None]
        weighted = weights * depth
        w_before = exclusive_cumsum(weights)
        total_w = torch.rsub(t_final, 1.0)[..., None]
        total_wz = weighted.sum(dim=-1, keepdim=True)
        term = (2.0 * w_before - total_w).mul_(depth).add_(total_wz).sub_(2.0 * exclusive_cumsum(weighted))
        grad_weights.addcmul_(g, term)
        grad_depth = (g * weights * (2.0 * w_before + weights - total_w)).sum(dim=1)
    contribution = grad_weights.mul_(weights)
    tail = contribution.sum(dim=-1, keepdim=True).addcmul_(t_final[..., None], grad_t_final[..., None])
    tail = torch.sub(tail, torch.cumsum(contribution, dim=-1))  # sum_{j>i} + T_final dL/dT_final
    grad_log_alpha = contribution.addcmul_(comp.ratio, tail, value=-1.0)
    if comp.unclamped is not None:
        grad_log_alpha.mul_(comp.unclamped)
    return grad_log_alpha, grad_features, grad_depth


@cache  # called per chunk: computed once per dtype
def _below(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number below ``value``: ``threshold`` keeps x > t, gsplat x >= value."""
    exact = torch.tensor(value, dtype=dtype)
    return float(torch.nextafter(exact, torch.zeros((), dtype=dtype)))
