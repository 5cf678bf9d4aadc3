"""``FusionConfig``: every setting of a cyclic-fusion run, the reconstruction's nested inside.

Fields left at ``None`` take the mode's published value (method.md, Stage 2):

| mode | protocol | split | novel views per round | lambda_reg / generated_dssim | expansion |
|---|---|---|---|---|---|
| masked | view extrapolation | masked2 | the training poses, full frame | 0.5 / 0.8 | off |
| sparse | 3/6/9 input views | sparse3 | an 85-pose ellipse, new tilt each round | 1.0 / 0.5 | off |
| complete | scene completion | holdout8 | 48 poses on a camera path or an ellipse | 1.0 / 0.2 | on |

Rounds: :func:`genfusion.fusion.schedule.round_steps`. ``budget`` picks the size of the run:
``paper`` keeps the published iterations (7,000 / 7,000 / 26,000) at the scene's resolution;
``preview`` is a CPU-sized run (1,500 iterations of 3DGS, photos downscaled to about 120 pixels
on the long side) that shows the loop working in minutes (2DGS, the paper's choice, needs the long
run to pay off: at 1,000 steps on fern it scored 20.4 dB against 3DGS's 28.2); ``auto`` is
``paper`` on a CUDA GPU and ``preview`` elsewhere. An explicit ``--iterations``, ``--method`` or
``--downscale`` always wins.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from genfusion.errors import GenFusionError
from genfusion.flags import FLAT
from genfusion.splat.config import ReconstructConfig

Mode = Literal["masked", "sparse", "complete"]
PathKind = Literal["auto", "training", "ellipse", "orbit", "interpolate", "file"]
Budget = Literal["auto", "paper", "preview"]
RepairerKind = Literal[
    "auto", "diffusion", "fallback", "reproject", "reproject+diffusion", "reproject+fallback"
]


@dataclass(frozen=True)
class ModePreset:
    """The published settings of one mode."""

    iterations: int  # optimisation steps of the published run
    split: str  # training / test views of the protocol
    path: PathKind  # where the novel views come from
    views: int | None  # novel views per round (None: one per training pose)
    lambda_reg: float  # peak weight of the generated views
    lambda_dssim: float  # D-SSIM weight in their colour loss
    expansion: bool  # content expansion on


PRESETS: dict[str, ModePreset] = {
    "masked": ModePreset(7_000, "masked2", "training", None, 0.5, 0.8, False),
    "sparse": ModePreset(7_000, "sparse3", "ellipse", 85, 1.0, 0.5, False),
    "complete": ModePreset(26_000, "holdout8", "ellipse", 48, 1.0, 0.2, True),  # or the user's path
}
PREVIEW_ITERATIONS = 1_500
PREVIEW_LONG_SIDE = 120  # pixels: a preview downscales photos to about this size
PREVIEW_METHOD = "3dgs"  # a preview's reconstruction (the faster one on CPU, and the better short one)


@dataclass
class FusionConfig:
    """Settings of one fusion run (``genfusion fuse`` flags are generated from these fields)."""

    mode: Mode = (
        "masked"  # masked (view extrapolation), sparse (few input views) or complete (fill the scene)
    )
    budget: Budget = "auto"  # paper (published lengths), preview (CPU-sized) or auto (paper on CUDA)
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig, metadata=FLAT)  # reconstruction
    rounds: tuple[int, ...] | None = None  # steps of the generation rounds; None = the mode's, scaled
    path: PathKind = "auto"  # novel views: training, ellipse, orbit, interpolate, file; auto: file if given
    camera_path: str | None = None  # nerfstudio camera_path.json to generate along (implies path file)
    views_per_round: int | None = None  # novel views rendered per round; None = the mode's
    clip_length: int = 16  # consecutive novel views repaired together (the repair model's clip)
    tilt_deg: float = 10.0  # ellipse paths tilt by this many more degrees each round
    lambda_reg: float | None = None  # peak weight of the generated views in the loss; None = the mode's
    keep_previous: bool = False  # keep earlier rounds' views (weights x previous_decay per round) too
    previous_decay: float = 0.5  # with keep_previous: weight factor per round of age
    # auto: the capture's photos reprojected first, then the diffusion model when installed
    # (reproject+diffusion), else the weight-free fill alone (fallback: it scored at least as well as
    # reproject+fallback on every capture measured); reproject: photos only (unseen pixels keep the
    # render); diffusion / fallback: that model alone, on the raw renders
    repairer: RepairerKind = "auto"  # auto: photos reprojected, then diffusion if installed; else the fill
    weights_dir: str = "checkpoints/genfusion-repair"  # folder of the converted repair model
    generated_depth: bool = True  # supervise the generated views' depth (scale-and-shift invariant)
    expansion: bool | None = None  # add Gaussians where renders are unreliable; None = the mode's
    expansion_fraction: float = 0.1  # share of unreliable pixels back-projected as new Gaussians
    unreliable_alpha: float = 0.1  # rendered alpha below this (or no depth) marks a pixel unreliable
    # fog no photo looked at (random initialisation, children of splits) renders solid, shows nothing
    # real: the unreliable map always counts it; repairers get it as holes when this is on
    observed_alpha: bool | None = None  # None: on for the diffusion model, off for the fill
    min_seen_share: float = 0.5  # less of a pixel's opacity than this from seen Gaussians: unreliable
    # a real scene has no empty pixel: where partly transparent splats let the background through,
    # clips show the surface's own colour (un-premultiplied) and each generated pixel weighs at
    # least the background's share of it (1 - alpha). Off for captures whose background is empty
    # (objects on a blank backdrop); None: on for the weight-free repairers, off for the diffusion
    # model (it was fine-tuned on raw renders, background included)
    remove_background: bool | None = None  # repair the background showing through splats too
    align_alpha: float = 0.4  # generated depth is aligned to the rendered one where alpha exceeds this
    event_image_size: int = 96  # long side (pixels) of the frames sent with round events
    snapshot_every_s: float = 2.0  # at most one splat snapshot event per this many seconds (viewer)

    def __post_init__(self) -> None:
        if isinstance(self.reconstruct, dict):
            self.reconstruct = ReconstructConfig.from_dict(self.reconstruct)
        if self.rounds is not None:
            self.rounds = tuple(int(r) for r in self.rounds)
        self.validate()

    def validate(self) -> None:
        if self.mode not in PRESETS:
            raise GenFusionError(f"unknown --mode {self.mode!r}; use masked, sparse or complete")
        if self.budget not in ("auto", "paper", "preview"):
            raise GenFusionError(f"unknown --budget {self.budget!r}; use auto, paper or preview")
        if self.clip_length < 2:
            raise GenFusionError(f"--clip-length must be at least 2, got {self.clip_length}")
        if self.views_per_round is not None and self.views_per_round < 1:
            raise GenFusionError(f"--views-per-round must be at least 1, got {self.views_per_round}")
        for name in (
            "expansion_fraction",
            "unreliable_alpha",
            "align_alpha",
            "previous_decay",
            "min_seen_share",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise GenFusionError(f"--{name.replace('_', '-')} must lie in [0, 1], got {value}")
        if self.lambda_reg is not None and (not math.isfinite(self.lambda_reg) or self.lambda_reg < 0):
            raise GenFusionError(f"--lambda-reg must be a finite number >= 0, got {self.lambda_reg}")
        if self.path == "file" and not self.camera_path:
            raise GenFusionError("--path file needs --camera-path camera_path.json")

    @property
    def preset(self) -> ModePreset:
        return PRESETS[self.mode]

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["reconstruct"] = self.reconstruct.to_dict()
        values["rounds"] = None if self.rounds is None else list(self.rounds)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FusionConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def uses_preview(config: FusionConfig) -> bool:
    """Whether the run is CPU-sized (``budget`` preview, or auto without CUDA)."""
    if config.budget == "auto":
        wants_cuda = config.reconstruct.device == "cuda" or (
            config.reconstruct.device == "auto" and torch.cuda.is_available()
        )
        return not wants_cuda
    return config.budget == "preview"


def resolve(
    config: FusionConfig, *, explicit: set[str] = frozenset(), long_side: int | None = None
) -> FusionConfig:
    """A copy with every None / automatic choice made: the mode's preset, the budget.

    ``explicit`` names the ReconstructConfig fields the user set (they are never overridden);
    ``long_side`` is the capture's long image side at downscale 1, for the preview's downscale.
    """
    preset = config.preset
    reconstruct = dataclasses.replace(config.reconstruct)
    preview = uses_preview(config)
    if "iterations" not in explicit:
        reconstruct.iterations = PREVIEW_ITERATIONS if preview else preset.iterations
    if "split" not in explicit:
        reconstruct.split = preset.split
    if preview and "method" not in explicit:
        reconstruct.method = PREVIEW_METHOD
    if preview and "downscale" not in explicit and long_side is not None:
        reconstruct.downscale = max(1, round(long_side / PREVIEW_LONG_SIDE))
    if "generated_dssim" not in explicit:  # the mode's D-SSIM weight for generated views
        reconstruct.generated_dssim = preset.lambda_dssim
    reconstruct.validate()
    from genfusion.fusion.schedule import check_rounds, round_steps

    rounds = (
        check_rounds(config.rounds, reconstruct.iterations)
        if config.rounds is not None
        else round_steps(config.mode, reconstruct.iterations)
    )
    return dataclasses.replace(
        config,
        reconstruct=reconstruct,
        rounds=rounds,
        path=config.path if config.path != "auto" else ("file" if config.camera_path else preset.path),
        lambda_reg=preset.lambda_reg if config.lambda_reg is None else config.lambda_reg,
        expansion=preset.expansion if config.expansion is None else config.expansion,
        views_per_round=config.views_per_round if config.views_per_round is not None else preset.views,
    )
