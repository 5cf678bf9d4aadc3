"""Densification: gsplat's strategies configured from a ``ReconstructConfig``, plus two fixes.

- ``DefaultStrategy`` (3DGS clone / split / prune) is pure torch and runs on CPU: its only CUDA
  call, ``torch.cuda.empty_cache()``, is a no-op while CUDA is uninitialised (tests check that
  CUDA is never initialised). For 2DGS the screen-space gradient is ``gradient_2dgs``, as in
  gsplat's 2DGS trainer.
- gsplat 1.5.3's opacity reset condition ``step % reset_every == 0 & step > 0`` parses as
  ``step % reset_every == (0 & step) > 0`` and is never true, so the trainer resets opacities
  itself with :func:`reset_opacities` (idempotent if a later gsplat fixes it).
- ``max_gaussians`` is enforced after each refinement by dropping the least opaque Gaussians.
- ``MCMCStrategy`` needs gsplat's CUDA relocation kernel: CUDA only.
- ``SparseAwareStrategy`` (:mod:`genfusion.splat.sparse_aware`) is the reference's densification
  for masked input, chosen automatically for masked splits.
"""

from __future__ import annotations

from typing import Any

import torch
from gsplat.strategy import DefaultStrategy, MCMCStrategy, Strategy
from gsplat.strategy.ops import remove, reset_opa

from genfusion.splat.config import ReconstructConfig, Schedule, parse_split
from genfusion.splat.sparse_aware import SparseAwareStrategy

# gsplat's prune thresholds: 2DGS surfels are pruned earlier (simple_trainer_2dgs), 3DGS later.
DEFAULT_PRUNE_OPACITY = {"2dgs": 0.05, "3dgs": 0.005}
# Without opacity resets (every run shorter than ~4k steps) 2DGS prunes at 3DGS's threshold: the
# reference's 0.05 belongs to its 30k schedule, where a reset every 3,000 steps re-opens the
# surfels; without one, 0.05 removes surfels still growing (fox 34x60, 1,000 steps: 20.04 dB at
# 0.05, 21.19 at 0.005, the textbook control 20.88; benchmarks/results/quality.json).
NO_RESET_PRUNE_OPACITY = 0.005


def prune_opacity_of(config: ReconstructConfig, schedule: Schedule | None = None) -> float:
    """The opacity below which Gaussians are pruned: as set, else the method's default (for 2DGS
    only when ``schedule`` resets opacities; see NO_RESET_PRUNE_OPACITY)."""
    if config.prune_opacity is not None:
        return config.prune_opacity
    if config.method == "2dgs" and schedule is not None and not schedule.reset_steps:
        return NO_RESET_PRUNE_OPACITY
    return DEFAULT_PRUNE_OPACITY[config.method]


# ``auto`` densification is sparse-aware on masked splits from this run length on: the reference's
# length, over which its growth threshold rises. Shorter runs refine a few times only and growth
# waits for counts they never reach (fox 68x120, masked 1/2, 1,500 steps: 15.41 dB sparse-aware
# against 15.70 dB default, inside the windows 21.53 against 22.64).
SPARSE_AWARE_MIN_ITERATIONS = 7_000


def densification_of(config: ReconstructConfig) -> str:
    """``default``, ``sparse-aware`` or ``mcmc``: as set; ``auto`` is sparse-aware on masked splits
    of at least SPARSE_AWARE_MIN_ITERATIONS steps (few views see each Gaussian there; method.md)
    and gsplat's default otherwise."""
    if config.densification != "auto":
        return config.densification
    masked = parse_split(config.split)[0] == "masked"
    return "sparse-aware" if masked and config.iterations >= SPARSE_AWARE_MIN_ITERATIONS else "default"


def build_strategy(config: ReconstructConfig, schedule: Schedule, device: torch.device) -> Strategy:
    """The densification strategy of a run."""
    kind = densification_of(config)
    if kind == "mcmc":
        return MCMCStrategy(
            cap_max=config.mcmc_cap,
            refine_start_iter=schedule.refine_start,
            refine_stop_iter=max(schedule.refine_stop, schedule.refine_start + 1),
            refine_every=schedule.refine_every,
        )
    prune_opa = prune_opacity_of(config, schedule)
    strategy = SparseAwareStrategy if kind == "sparse-aware" else DefaultStrategy
    return strategy(
        prune_opa=prune_opa,
        grow_grad2d=config.grow_grad2d,
        grow_scale3d=config.grow_scale3d,
        prune_scale3d=config.prune_scale3d,
        # gsplat refines at steps strictly after refine_start_iter; ours names the first refinement
        refine_start_iter=schedule.refine_start - 1,
        refine_stop_iter=schedule.refine_stop,
        reset_every=schedule.reset_every,
        refine_every=schedule.refine_every,
        key_for_gradient="gradient_2dgs" if config.method == "2dgs" else "means2d",
    )


@torch.no_grad()
def reset_opacities(
    splats: torch.nn.ParameterDict,
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    value: float,
) -> None:
    """Clamp every opacity to at most ``value`` and clear its Adam moments (3DGS reset)."""
    reset_opa(params=splats, optimizers=optimizers, state=state, value=value)


@torch.no_grad()
def enforce_cap(
    splats: torch.nn.ParameterDict,
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    max_gaussians: int,
) -> int:
    """Drop the least opaque Gaussians beyond ``max_gaussians``; returns how many were dropped."""
    count = int(splats["means"].shape[0])
    excess = count - max_gaussians
    if max_gaussians <= 0 or excess <= 0:
        return 0
    order = torch.argsort(splats["opacities"].flatten())
    mask = torch.zeros(count, dtype=torch.bool, device=splats["means"].device)
    mask[order[:excess]] = True
    remove(params=splats, optimizers=optimizers, state=state, mask=mask)
    return excess
