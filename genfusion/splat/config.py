"""``ReconstructConfig``: every setting of a 2DGS/3DGS reconstruction, in one dataclass.

The dataclass is the one source for the CLI: :func:`add_config_arguments` turns each field into a
``--flag`` whose help text is the comment written beside the field below (read from this file's
source), so a new setting is documented once and shows up in ``genfusion reconstruct --help``.

Schedules (densification, opacity reset, SH ramp, regulariser starts) are *automatic* unless a flag
sets them: :func:`schedule_for` turns ``iterations`` into concrete steps with one rule that holds
from a 300-step preview to the 30,000-step reference run. A step given explicitly (e.g.
``--refine-start 300``) is used as it is, never scaled. The rule, and why:

- **Densify every 100 steps** (the 3DGS / gsplat interval), whatever the length; only runs under
  1,000 steps use ``iterations // 10`` (at least 10). Scaling the interval with the run (what
  gsplat's ``steps_scaler`` does) averages the screen-space gradients of a 1,000-step run over 3
  views and refines 48 times: measured, 9k SfM points grew to 160k Gaussians and lost 5 dB.
- **Densify from min(500, 30%) of the run up to min(15,000, a share) of it**: the reference's
  start (500) and stop (15,000), but a short run still starts after the first Gaussians have
  settled and keeps time to optimise what the last refinement added. The share is 70% for 3DGS
  and 50% (the reference's) for 2DGS, whose surfels need the longer tail to align their normals:
  at 1,000 steps on fern, stopping 3DGS at 50% cost 0.37 dB, continuing 2DGS to 70% cost 0.23 dB.
  The stop is inclusive: a 1,000-step 3DGS run refines at 300, 400, ..., 700.
- **Reset opacities every 3,000 steps** while densifying, but only where at least
  ``reset_recovery`` (1,000) densification steps follow the reset, so that the pruning that a
  reset is for has happened and the opacities have recovered before the run ends. 3DGS runs
  shorter than ~5,700 steps (2DGS ~8,000) never reset.
- **SH degree ramp**: one more band every min(1,000, iterations / (2 x degree)) steps, so the full
  degree is active for the second half of any run (a 1,000-step run with the fixed 1,000-step
  interval never left degree 0).
- **2DGS regularisers** start at the reference's *steps*, never scaled: depth distortion at 3,000,
  normal consistency at 7,000 (as in the 2DGS code, and so in GenFusion's 7,000-step runs, which
  never turn normals on). They act on a settled geometry; started at the same fraction of a short
  run they crushed it: on the fox, 300 2DGS steps from random points fit the training views to
  18.6 dB without distortion, 11.5 dB with it from step 30 and 14.3 dB from step 151.
- **Prune below opacity 0.005** (gsplat's default); 2DGS prunes at the reference's 0.05 only in
  runs that reset opacities, the regime that threshold was tuned in (``genfusion.splat.densify``:
  without resets 0.05 removed surfels still growing and cost the fox 1.15 dB at 1,000 steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from genfusion.errors import GenFusionError

Method = Literal["2dgs", "3dgs"]
Device = Literal["auto", "cpu", "cuda"]
Densification = Literal["auto", "default", "sparse-aware", "mcmc"]
Backend = Literal["auto", "gsplat", "torch", "dense"]
InitPoints = Literal["auto", "triangulate", "random"]


@dataclass
class ReconstructConfig:
    """Settings of one reconstruction run (the CLI flags are generated from these fields)."""

    # --- what to train ---
    method: Method = "2dgs"  # 2dgs (surfels, the paper's default) or 3dgs
    iterations: int = 7_000  # optimisation steps (the paper's sparse / masked protocols use 7,000)
    split: str = "holdout8"  # holdoutK (every K-th view tests), all, sparseN, maskedK, unmaskedK
    downscale: int = 1  # divide the image resolution by this integer on load (2 halves width and height)
    device: Device = "auto"  # auto (CUDA when present, else CPU), cpu or cuda
    seed: int = 0  # seeds initialisation, view order, random backgrounds and densification noise

    # --- initialisation ---
    # auto: a capture without sparse points gets them triangulated at its poses (cached), random
    # points only if that fails; triangulate: the same, failing is an error; random: always random
    init_points: InitPoints = "auto"  # where Gaussians start: the sparse points, triangulated, random
    init_random_points: int = 20_000  # Gaussians placed at random when the scene has no sparse points
    init_extent: float = 3.0  # random init box half-size as a multiple of scene_scale (no near/far)
    init_opacity: float = 0.1  # initial opacity of every Gaussian (post-sigmoid)
    init_scale: float = 1.0  # initial size as a multiple of the mean distance to 3 nearest neighbours
    max_init_points: int = 200_000  # sparse points beyond this are randomly subsampled
    sh_degree: int = 3  # highest spherical-harmonics degree of the colours
    sh_degree_interval: int | None = None  # one more SH band every this many steps; None = automatic

    # --- learning rates (gsplat simple_trainer / 3DGS paper) ---
    means_lr: float = 1.6e-4  # position learning rate, multiplied by scene_scale
    means_lr_final: float = 0.01  # position learning rate decays exponentially to this fraction
    scales_lr: float = 5e-3  # log-scale learning rate
    quats_lr: float = 1e-3  # rotation (quaternion) learning rate
    opacities_lr: float = 5e-2  # opacity-logit learning rate
    sh0_lr: float = 2.5e-3  # base colour (SH degree 0) learning rate
    shN_lr: float = 2.5e-3 / 20  # higher SH coefficients learning rate

    # --- losses ---
    lambda_dssim: float = 0.2  # weight of D-SSIM in (1 - w) * L1 + w * (1 - SSIM)
    normal_lambda: float = 0.05  # 2DGS normal-consistency weight (2DGS paper); 0 turns it off
    normal_start: int | None = None  # step where normal consistency starts; None = 7000
    distortion_lambda: float = 100.0  # 2DGS depth-distortion weight (2DGS paper, unbounded; NDC depth units)
    distortion_start: int | None = None  # step where the distortion loss starts; None = 3000
    generated_dssim: float = 0.2  # D-SSIM weight in the colour loss of generated views
    depth_lambda: float = 1.0  # weight of a generated view's depth term, relative to its colour loss
    generated_regularisers: bool = False  # also apply the 2DGS normal / distortion terms to generated views

    # --- densification (gsplat DefaultStrategy; None = the automatic schedule of the module docstring) ---
    # sparse-aware: split / clone only Gaussians seen often enough (the reference, for masked input)
    densification: Densification = (
        "auto"  # auto (sparse-aware on masked >= 7k steps, else default), default, sparse-aware, mcmc
    )
    refine_start: int | None = None  # first densification step; None = min(500, 30% of the run)
    refine_stop: int | None = None  # no densification or reset from this step on; None = 70% (2DGS 50%)
    refine_every: int | None = None  # densify every this many steps; None = 100 (runs < 1000: iterations/10)
    reset_every: int | None = None  # reset opacities every this many steps while densifying; None = 3000
    reset_recovery: int = 1_000  # a reset needs this many densification steps after it, or it is skipped
    grow_grad2d: float = 2e-4  # screen-space gradient above which Gaussians are split or cloned
    grow_scale3d: float = 0.01  # clone below / split above this size (fraction of scene_scale)
    prune_scale3d: float = 0.1  # prune Gaussians larger than this (fraction of scene_scale)
    prune_opacity: float | None = None  # prune below this opacity; None = 0.005 (2DGS with resets: 0.05)
    densify_on_generated: bool = False  # densification statistics from generated views too
    max_gaussians: int = 1_000_000  # hard cap: densification stops growing past this count
    mcmc_cap: int = 1_000_000  # Gaussian budget of the MCMC strategy

    # --- rendering ---
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # background colour (RGB in [0, 1])
    random_background: bool = False  # random background colour per step (discourages transparency)
    backend: Backend = "auto"  # rasteriser: auto (gsplat on CUDA, torch on CPU), gsplat, torch, dense
    near_plane: float = 0.01  # Gaussians closer than this to a camera are culled
    far_plane: float = 1e10  # Gaussians farther than this are culled

    # --- bookkeeping ---
    log_every: int = 10  # emit a progress event (loss, psnr, Gaussian count) every this many steps
    checkpoint_every: int = 1_000  # save checkpoint.pt every this many steps (and at the end)
    memory_limit_gb: float = 0.0  # refuse to start above this estimated peak; 0 = 80% of free memory

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`GenFusionError` for values no run can use."""
        if self.method not in ("2dgs", "3dgs"):
            raise GenFusionError(f"unknown method {self.method!r}; use --method 2dgs or --method 3dgs")
        if self.device not in ("auto", "cpu", "cuda"):
            raise GenFusionError(f"unknown device {self.device!r}; use auto, cpu or cuda")
        if self.densification not in ("auto", "default", "sparse-aware", "mcmc"):
            raise GenFusionError(
                f"unknown densification {self.densification!r}; use auto, default, sparse-aware or mcmc"
            )
        if self.iterations < 1:
            raise GenFusionError(f"--iterations must be at least 1, got {self.iterations}")
        if self.downscale < 1:
            raise GenFusionError(f"--downscale must be a positive integer, got {self.downscale}")
        if not 0 <= self.sh_degree <= 3:
            raise GenFusionError(f"--sh-degree must be 0..3, got {self.sh_degree}")
        parse_split(self.split)
        for name in ("refine_start", "refine_stop", "refine_every", "reset_every", "sh_degree_interval",
                     "normal_start", "distortion_start"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and (value < 0 or (value == 0 and name.endswith(("every", "interval")))):
                raise GenFusionError(
                    f"--{name.replace('_', '-')} must be {'positive' if value == 0 else 'non-negative'}, "
                    f"got {value}; leave it out for the automatic schedule"
                )
        if self.prune_opacity is not None and not 0 <= self.prune_opacity < 1:
            raise GenFusionError(f"--prune-opacity must be in [0, 1), got {self.prune_opacity}")
        self.background = tuple(float(c) for c in self.background)  # type: ignore[assignment]
        if len(self.background) != 3:
            raise GenFusionError("--background needs three numbers (R G B in [0, 1])")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ReconstructConfig:
        """Inverse of :meth:`to_dict`; unknown keys (from a newer version) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in names}
        if "background" in kept:
            kept["background"] = tuple(kept["background"])
        return cls(**kept)


def parse_split(split: str) -> tuple[str, int]:
    """``"holdout8"`` -> ("holdout", 8); ``"all"`` -> ("all", 0); ``"sparse3"`` -> ("sparse", 3);
    ``"masked2"`` -> ("masked", 2): every 2nd frame trains through a moving 25%-area window;
    ``"unmasked2"`` -> ("unmasked", 2): the same frames uncropped (the masked protocol's ceiling)."""
    match = re.fullmatch(r"(holdout|sparse|masked|unmasked)(\d+)|all", split)
    if not match:
        raise GenFusionError(
            f"unknown split {split!r}; use holdoutK (every K-th view held out, e.g. holdout8), "
            "all (train on every view, no test views), sparseN (N training views, e.g. sparse3) or "
            "masked2 / masked4 (the masked-input protocol: every 2nd / 4th frame, seen through a window), "
            "unmasked2 / unmasked4 (the same frames, full: that protocol's ceiling)"
        )
    if split == "all":
        return "all", 0
    kind, number = match.group(1), int(match.group(2))
    if (kind in ("holdout", "masked", "unmasked") and number < 2) or number < 1:
        raise GenFusionError(
            f"split {split!r} needs a number >= 2 for holdout and masked (e.g. masked2) and >= 1 for sparse"
        )
    return kind, number


@dataclass(frozen=True)
class Schedule:
    """The concrete step numbers of one run (explicit settings, or the automatic rule)."""

    refine_start: int  # first densification step (then every refine_every steps)
    refine_stop: int  # densification and opacity resets stop before this step
    refine_every: int  # densification interval
    reset_every: int  # opacity reset interval
    reset_steps: tuple[int, ...]  # the steps at which opacities are reset (may be empty)
    sh_degree_interval: int  # one more SH band every this many steps
    normal_start: int  # normal consistency turns on here (2DGS)
    distortion_start: int  # depth distortion turns on here (2DGS)


# The automatic rule's constants (module docstring): the reference values of the 3DGS / 2DGS papers.
AUTO_REFINE_EVERY = 100
AUTO_REFINE_START, AUTO_REFINE_START_FRACTION = 500, 0.3
AUTO_REFINE_STOP = 15_000
AUTO_REFINE_STOP_FRACTION = {"3dgs": 0.7, "2dgs": 0.5}  # share of the run that may densify
AUTO_RESET_EVERY = 3_000
AUTO_SH_INTERVAL = 1_000
AUTO_NORMAL_START, AUTO_DISTORTION_START = 7_000, 3_000  # 2DGS regularisers: the reference's steps
MIN_REFINE_EVERY = 10  # gradient statistics over fewer steps are noise


def schedule_for(config: ReconstructConfig, iterations: int | None = None) -> Schedule:
    """The steps of a run of ``iterations`` (default ``config.iterations``): explicit settings as
    given, the rest by the automatic rule of the module docstring."""
    n = config.iterations if iterations is None else iterations

    def pick(value: int | None, auto: int) -> int:
        return auto if value is None else int(value)

    auto_every = AUTO_REFINE_EVERY if n >= 10 * AUTO_REFINE_EVERY else max(MIN_REFINE_EVERY, n // 10)
    refine_every = pick(config.refine_every, auto_every)
    refine_start = pick(config.refine_start, min(AUTO_REFINE_START, round(AUTO_REFINE_START_FRACTION * n)))
    share = AUTO_REFINE_STOP_FRACTION[config.method]
    refine_stop = pick(config.refine_stop, min(AUTO_REFINE_STOP, round(share * n) + 1))
    reset_every = pick(config.reset_every, AUTO_RESET_EVERY)
    reset_steps = tuple(
        step
        for step in range(reset_every, refine_stop, reset_every)
        if step + config.reset_recovery <= refine_stop
    )
    degree = max(config.sh_degree, 1)
    sh_interval = pick(config.sh_degree_interval, max(1, min(AUTO_SH_INTERVAL, n // (2 * degree))))
    return Schedule(
        refine_start=refine_start,
        refine_stop=refine_stop,
        refine_every=refine_every,
        reset_every=reset_every,
        reset_steps=reset_steps,
        sh_degree_interval=sh_interval,
        normal_start=pick(config.normal_start, AUTO_NORMAL_START),
        distortion_start=pick(config.distortion_start, AUTO_DISTORTION_START),
    )


# ---------------------------------------------------------------------------------------------
# CLI flags generated from the dataclass (the rules live in genfusion.flags, for every dataclass)


@cache
def field_comments() -> dict[str, str]:
    """Field name -> the comment written beside it in :class:`ReconstructConfig`'s source."""
    from genfusion.flags import field_docs

    return field_docs(ReconstructConfig)


def _without_none(kind: Any) -> Any:
    """``int | None`` -> ``int`` (an optional field's flag takes the inner type; None = not given)."""
    from genfusion.flags import unwrap_optional

    return unwrap_optional(kind)[0]


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per config field (defaults left as None so only given flags apply)."""
    from genfusion.flags import add_dataclass_arguments

    add_dataclass_arguments(parser, ReconstructConfig, skip=skip, title="reconstruction settings")


def config_from_args(args: argparse.Namespace, base: ReconstructConfig | None = None) -> ReconstructConfig:
    """A config with every flag the user gave applied over ``base`` (or the defaults)."""
    from genfusion.flags import dataclass_from_args

    return dataclass_from_args(ReconstructConfig, args, base=base)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Only the fields given on the command line."""
    from genfusion.flags import overrides_from_args

    return overrides_from_args(ReconstructConfig, args)


__all__ = [
    "ReconstructConfig",
    "Schedule",
    "add_config_arguments",
    "config_from_args",
    "config_overrides",
    "parse_split",
    "schedule_for",
]
