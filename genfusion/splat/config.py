"""``ReconstructConfig``: every setting of a 2DGS/3DGS reconstruction, in one dataclass.

The dataclass is the one source for the CLI: :func:`add_config_arguments` turns each field into a
``--flag`` whose help text is the comment written beside the field below (read from this file's
source), so a new setting is documented once and shows up in ``genfusion reconstruct --help``.

Schedules (densification, opacity reset, regulariser starts) are written for the 2DGS/3DGS papers'
30,000-iteration reference run and scaled to ``iterations`` by :func:`schedule_for` (as gsplat's
``steps_scaler``), so a 300-iteration test run densifies and resets at the same *fractions* of the
run as a full one.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import textwrap
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from genfusion.errors import GenFusionError

Method = Literal["2dgs", "3dgs"]
Device = Literal["auto", "cpu", "cuda"]
Densification = Literal["default", "mcmc"]
Backend = Literal["auto", "gsplat", "torch", "dense"]

# Length of the reference run the schedule fields below are written for (2DGS / 3DGS papers).
REFERENCE_ITERATIONS = 30_000


@dataclass
class ReconstructConfig:
    """Settings of one reconstruction run (the CLI flags are generated from these fields)."""

    # --- what to train ---
    method: Method = "2dgs"  # 2dgs (surfels, the paper's default) or 3dgs
    iterations: int = 7_000  # optimisation steps (the paper's sparse / masked protocols use 7,000)
    split: str = "holdout8"  # training views: holdoutK (every K-th view is a test view), all, or sparseN
    downscale: int = 1  # divide the image resolution by this integer on load (2 halves width and height)
    device: Device = "auto"  # auto (CUDA when present, else CPU), cpu or cuda
    seed: int = 0  # seeds initialisation, view order, random backgrounds and densification noise

    # --- initialisation ---
    init_random_points: int = 20_000  # Gaussians placed at random when the scene has no sparse points
    init_extent: float = 3.0  # random init box half-size as a multiple of scene_scale (no near/far)
    init_opacity: float = 0.1  # initial opacity of every Gaussian (post-sigmoid)
    init_scale: float = 1.0  # initial size as a multiple of the mean distance to 3 nearest neighbours
    max_init_points: int = 200_000  # sparse points beyond this are randomly subsampled
    sh_degree: int = 3  # highest spherical-harmonics degree of the colours
    sh_degree_interval: int = 1_000  # raise the active SH degree by one every this many steps

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
    normal_start: int = 7_000  # normal consistency starts here in the 30k reference run (scaled)
    distortion_lambda: float = 100.0  # 2DGS depth-distortion weight (2DGS paper, unbounded; NDC depth units)
    distortion_start: int = 3_000  # distortion loss starts here in the 30k reference run (scaled)

    # --- densification (gsplat DefaultStrategy; steps in the 30k reference run, scaled) ---
    densification: Densification = "default"  # default (3DGS split/clone/prune, CPU+CUDA) or mcmc (CUDA)
    refine_start: int = 500  # first densification step
    refine_stop: int = 15_000  # no densification (and no opacity reset) from this step on
    refine_every: int = 100  # densify every this many steps
    min_refine_every: int = 10  # scaled refine_every never drops below this (gradient statistics)
    reset_every: int = 3_000  # reset opacities every this many steps while densifying
    min_reset_every: int = 500  # scaled reset interval never drops below this (recovery takes hundreds)
    grow_grad2d: float = 2e-4  # screen-space gradient above which Gaussians are split or cloned
    grow_scale3d: float = 0.01  # clone below / split above this size (fraction of scene_scale)
    prune_scale3d: float = 0.1  # prune Gaussians larger than this (fraction of scene_scale)
    prune_opacity: float = 0.0  # prune below this opacity; 0 = method default (2DGS 0.05, 3DGS 0.005)
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
        if self.densification not in ("default", "mcmc"):
            raise GenFusionError(f"unknown densification {self.densification!r}; use default or mcmc")
        if self.iterations < 1:
            raise GenFusionError(f"--iterations must be at least 1, got {self.iterations}")
        if self.downscale < 1:
            raise GenFusionError(f"--downscale must be a positive integer, got {self.downscale}")
        if not 0 <= self.sh_degree <= 3:
            raise GenFusionError(f"--sh-degree must be 0..3, got {self.sh_degree}")
        parse_split(self.split)
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
    """``"holdout8"`` -> ("holdout", 8); ``"all"`` -> ("all", 0); ``"sparse3"`` -> ("sparse", 3)."""
    match = re.fullmatch(r"(holdout|sparse)(\d+)|all", split)
    if not match:
        raise GenFusionError(
            f"unknown split {split!r}; use holdoutK (every K-th view held out, e.g. holdout8), "
            "all (train on every view, no test views) or sparseN (N training views, e.g. sparse3)"
        )
    if split == "all":
        return "all", 0
    kind, number = match.group(1), int(match.group(2))
    if (kind == "holdout" and number < 2) or number < 1:
        raise GenFusionError(f"split {split!r} needs a number >= 2 for holdout and >= 1 for sparse")
    return kind, number


@dataclass(frozen=True)
class Schedule:
    """The concrete step numbers of one run, after scaling the reference schedule."""

    refine_start: int  # first densification step
    refine_stop: int  # densification and opacity resets stop here
    refine_every: int  # densification interval
    reset_every: int  # opacity reset interval
    normal_start: int  # normal consistency turns on here (2DGS)
    distortion_start: int  # depth distortion turns on here (2DGS)


def schedule_for(config: ReconstructConfig) -> Schedule:
    """Scale the 30k-reference schedule to ``config.iterations`` (gsplat's ``steps_scaler``)."""
    factor = config.iterations / REFERENCE_ITERATIONS
    refine_every = max(config.min_refine_every, round(config.refine_every * factor))
    return Schedule(
        refine_start=round(config.refine_start * factor),
        refine_stop=round(config.refine_stop * factor),
        refine_every=refine_every,
        # opacities need hundreds of steps to recover from a reset: short runs reset rarely or never
        reset_every=max(round(config.reset_every * factor), 3 * refine_every, config.min_reset_every),
        normal_start=round(config.normal_start * factor),
        distortion_start=round(config.distortion_start * factor),
    )


# ---------------------------------------------------------------------------------------------
# CLI flags generated from the dataclass


@cache
def field_comments() -> dict[str, str]:
    """Field name -> the comment written beside it in :class:`ReconstructConfig`'s source."""
    source = textwrap.dedent(inspect.getsource(ReconstructConfig))
    lines = source.splitlines()
    comments: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = lines[node.end_lineno - 1]
            if "#" in line:
                comments[node.target.id] = line.split("#", 1)[1].strip()
    return comments


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per config field (defaults left as None so only given flags apply)."""
    hints = typing.get_type_hints(ReconstructConfig)
    comments = field_comments()
    group = parser.add_argument_group("reconstruction settings")
    for f in dataclasses.fields(ReconstructConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f"{comments.get(f.name, '')} (default: {f.default})".replace("%", "%%")
        origin = typing.get_origin(kind)
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        elif origin is Literal:
            group.add_argument(flag, dest=f.name, choices=typing.get_args(kind), help=help_text)
        elif origin is tuple:
            item = typing.get_args(kind)[0]
            nargs = len(typing.get_args(kind))
            group.add_argument(flag, dest=f.name, type=item, nargs=nargs, metavar="X", help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, help=help_text)
    parser.set_defaults(**{f.name: None for f in dataclasses.fields(ReconstructConfig) if f.name not in skip})


def config_from_args(args: argparse.Namespace, base: ReconstructConfig | None = None) -> ReconstructConfig:
    """A config with every flag the user gave applied over ``base`` (or the defaults)."""
    values = dataclasses.asdict(base) if base is not None else {}
    for f in dataclasses.fields(ReconstructConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = tuple(given) if isinstance(given, list) else given
    return ReconstructConfig(**values)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Only the fields given on the command line."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ReconstructConfig)
        if getattr(args, f.name, None) is not None
    }


__all__ = [
    "REFERENCE_ITERATIONS",
    "ReconstructConfig",
    "Schedule",
    "add_config_arguments",
    "config_from_args",
    "config_overrides",
    "parse_split",
    "schedule_for",
]
