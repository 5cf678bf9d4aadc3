"""Sparse-aware densification: grow a Gaussian only once it has been seen often enough.

With masked input (the masked protocol shows each training view through a window of a quarter
of the frame) most Gaussians are seen by a few views only. gsplat's ``DefaultStrategy`` averages
a Gaussian's screen-space gradient over the steps it was visible and grows it when the average is
high, so a Gaussian at the rim of the windows, seen twice with a large gradient, is cloned or
split like one seen a hundred times; its children land where no window looks and keep whatever
colour they inherited (measured on the fox, masked 1/2: the colour of most out-of-window pixels
comes from Gaussians no window sees). GenFusion's reconstruction ("sparse-aware" densification,
method.md) gates growth on the visibility count instead:

- a Gaussian may be cloned or split only when its visibility count (steps in which it projected
  into the training view, accumulated across refinements) reaches a threshold that rises from
  half a refinement interval to a full one (:func:`min_visible_steps`; the reference's
  ``min(100, 50 + iteration // 100)`` at its interval of 100 steps);
- after a refinement the statistics are cleared only for the Gaussians just grown (and their
  copies) and for those seen more than ``saturation`` intervals' worth of steps; every other
  Gaussian keeps accumulating until it is seen often enough.

Pruning is gsplat's, unchanged. The strategy is pure torch (CPU and CUDA) like its parent; the
opacity reset stays with the trainer (see :mod:`genfusion.splat.densify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gsplat.strategy import DefaultStrategy

GROWN = "grown"  # extra per-Gaussian state: 1 for the Gaussians grown at this refinement (and copies)
KEPT_GRAD = "grad2d_ungated"  # the accumulated gradients while growth sees the gated ones


def min_visible_steps(step: int, refine_every: int) -> float:
    """Visibility count a Gaussian needs before it may grow at ``step``: half a refinement
    interval at the start, a full interval from step 50 x ``refine_every`` on (the reference's
    ``min(100, 50 + step // 100)`` for its interval of 100)."""
    return refine_every * min(1.0, 0.5 + step / (100.0 * refine_every))


@dataclass
class SparseAwareStrategy(DefaultStrategy):
    """gsplat's ``DefaultStrategy`` with growth gated on how often a Gaussian was seen."""

    saturation: float = 5.0  # statistics of a Gaussian seen this many intervals' worth of steps reset

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        state = super().initialize_state(scene_scale=scene_scale)
        state[GROWN] = None
        return state

    @torch.no_grad()
    def _grow_gs(self, params, optimizers, state, step: int) -> tuple[int, int]:
        """The parent's clone / split, shown only the gradients of Gaussians seen often enough."""
        count = state["count"]
        seen_enough = count >= min_visible_steps(step, self.refine_every)
        gated = torch.where(seen_enough, state["grad2d"], torch.zeros_like(state["grad2d"]))
        # the parent grows exactly where gated / count > grow_grad2d; mark those rows, which
        # duplicate and split copy to the children (every state tensor follows the Gaussians)
        state[GROWN] = (gated / count.clamp_min(1) > self.grow_grad2d).float()
        state[KEPT_GRAD], state["grad2d"] = state["grad2d"], gated
        try:
            return super()._grow_gs(params, optimizers, state, step)
        finally:
            state["grad2d"] = state.pop(KEPT_GRAD)  # the ungated sums, in the new Gaussian order

    @torch.no_grad()
    def step_post_backward(
        self, params, optimizers, state, step: int, info: dict[str, Any], packed: bool = False
    ):
        """Accumulate statistics; at refinement steps grow (gated), prune, and clear the
        statistics of the grown and the saturated Gaussians only."""
        if step >= self.refine_stop_iter:
            return
        self._update_state(params, state, info, packed=packed)
        if not (
            step > self.refine_start_iter
            and step % self.refine_every == 0
            and step % self.reset_every >= self.pause_refine_after_reset
        ):
            return
        self.refine(params, optimizers, state, step)

    @torch.no_grad()
    def refine(self, params, optimizers, state, step: int) -> tuple[int, int, int]:
        """One refinement: gated growth, gsplat's pruning, then clear the statistics of the grown
        and the saturated Gaussians; returns (duplicated, split, pruned)."""
        n_dupli, n_split = self._grow_gs(params, optimizers, state, step)
        n_prune = self._prune_gs(params, optimizers, state, step)
        clear = (state[GROWN] > 0) | (state["count"] > self.saturation * self.refine_every)
        state["grad2d"] = torch.where(clear, torch.zeros_like(state["grad2d"]), state["grad2d"])
        state["count"] = torch.where(clear, torch.zeros_like(state["count"]), state["count"])
        state[GROWN] = torch.zeros_like(state[GROWN])
        if self.refine_scale2d_stop_iter > 0:
            state["radii"].zero_()
        return n_dupli, n_split, n_prune
