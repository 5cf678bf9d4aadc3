"""The one interface the fusion loop talks to: a clip of renders in, a repaired clip out.

Two implementations exist: the diffusion model (:class:`genfusion.generation.pipeline.DiffusionRepairer`,
needs converted weights) and the weight-free classical repairer
(:class:`genfusion.generation.fallback.FallbackRepairer`). In front of either can sit the
reprojection repairer (:class:`genfusion.generation.reprojection.ReprojectionRepairer`), which
first carries the capture's own photos into the clip (it needs the clip's ``cameras``) and hands
only what no photo saw to the next stage. :func:`make_repairer` picks one chain and says which, so
the UI and the logs can always show what produced the frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from genfusion.errors import GenFusionError
from genfusion.progress import ProgressCallback

if TYPE_CHECKING:
    from genfusion.data.types import Camera

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS_DIR = Path("checkpoints/genfusion-repair")

RepairerKind = Literal[
    "auto", "diffusion", "fallback", "reproject", "reproject+diffusion", "reproject+fallback"
]
REPAIRER_KINDS: tuple[str, ...] = (
    "auto",
    "diffusion",
    "fallback",
    "reproject",
    "reproject+diffusion",
    "reproject+fallback",
)


def _as_float_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    elif isinstance(value, torch.Tensor):
        tensor = value
    else:
        raise GenFusionError(
            f"clip {name} must be a numpy array or torch tensor, got {type(value).__name__}."
        )
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    if not tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.float()


@dataclass
class RepairClip:
    """Renders along one camera path, to be repaired together (images [0, 1], depth in scene units).

    Pixels are *unreliable* (to be repaired) where alpha is below the repairer's threshold, where
    depth is <= 0, or where depth or colour is NaN/inf; NaNs are never propagated into outputs.
    """

    rgb: torch.Tensor  # [T, H, W, 3] rendered colour in [0, 1]
    depth: torch.Tensor  # [T, H, W] rendered z-depth; <= 0 or NaN where nothing was rendered
    alpha: torch.Tensor  # [T, H, W] accumulated opacity in [0, 1]
    reference: torch.Tensor | None = None  # [h, w, 3] a real photo near the path (diffusion context)
    # one Camera per frame (genfusion.data.types, at the frames' size): the reprojection repairer
    # needs them; None = unknown (repairers that need poses then pass the clip on, with a warning)
    cameras: list[Camera] | None = None

    @classmethod
    def from_arrays(
        cls, rgb: Any, depth: Any, alpha: Any, reference: Any = None, cameras: list[Camera] | None = None
    ) -> RepairClip:
        """Build and validate a clip from numpy arrays or tensors (uint8 images are scaled to [0, 1])."""
        clip = cls(
            rgb=_as_float_tensor("rgb", rgb),
            depth=_as_float_tensor("depth", depth),
            alpha=_as_float_tensor("alpha", alpha),
            reference=None if reference is None else _as_float_tensor("reference", reference),
            cameras=None if cameras is None else list(cameras),
        )
        clip.validate()
        return clip

    @property
    def num_frames(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])

    def validate(self) -> None:
        """Raise :class:`GenFusionError` naming the offending array when shapes do not fit together."""
        if self.depth.ndim == 4 and self.depth.shape[-1] == 1:
            self.depth = self.depth[..., 0]
        if self.alpha.ndim == 4 and self.alpha.shape[-1] == 1:
            self.alpha = self.alpha[..., 0]
        if self.rgb.ndim != 4 or self.rgb.shape[-1] != 3:
            raise GenFusionError(
                f"clip rgb must have shape [T, H, W, 3], got {list(self.rgb.shape)}.",
                hint="Pass frames as a stack of HxWx3 images in [0, 1].",
            )
        t, h, w = self.rgb.shape[:3]
        if t < 1 or h < 1 or w < 1:
            raise GenFusionError(f"clip rgb is empty (shape {list(self.rgb.shape)}).")
        for name in ("depth", "alpha"):
            value = getattr(self, name)
            if tuple(value.shape) != (t, h, w):
                raise GenFusionError(
                    f"clip {name} must have shape [T, H, W] = {[t, h, w]} to match rgb, "
                    f"got {list(value.shape)}."
                )
        if self.reference is not None and (self.reference.ndim != 3 or self.reference.shape[-1] != 3):
            raise GenFusionError(
                f"clip reference must be one HxWx3 image, got shape {list(self.reference.shape)}."
            )
        if self.cameras is not None:
            if len(self.cameras) != t:
                raise GenFusionError(
                    f"clip has {t} frames but {len(self.cameras)} cameras; give one per frame."
                )
            wrong = [i for i, c in enumerate(self.cameras) if (c.height, c.width) != (h, w)]
            if wrong:
                c = self.cameras[wrong[0]]
                raise GenFusionError(
                    f"clip camera {wrong[0]} is {c.width}x{c.height} but the frames are {w}x{h}.",
                    hint="Pass the cameras the frames were rendered with (Camera.resized to match).",
                )


@dataclass
class RepairResult:
    """A repaired clip and how it was made."""

    rgb: torch.Tensor  # [T, H, W, 3] repaired colour in [0, 1]
    depth: torch.Tensor  # [T, H, W] repaired depth in the input's scene units
    reliable: torch.Tensor  # [T, H, W] bool: pixels the input already trusted
    repairer: str  # name of the repairer that produced it ("diffusion", "fallback")
    usable: bool = True  # False: nothing trustworthy could be made (e.g. all-empty alpha); skip it
    warnings: list[str] = field(default_factory=list)  # human-readable notes for logs and the UI
    # [T, H, W] in [0, 1]: how much each repaired pixel can be trusted (high: several consistent
    # real photos agree; low: they disagree or only a fill invented it); None = not estimated
    confidence: torch.Tensor | None = None
    # [T, H, W] bool: the repairer's unreliable map (the render is missing or wrong there); None =
    # not estimated (callers fall back to low alpha / no depth)
    unreliable: torch.Tensor | None = None


@runtime_checkable
class Repairer(Protocol):
    """Anything that turns a :class:`RepairClip` into a :class:`RepairResult`."""

    name: str  # short id shown in logs and the UI ("diffusion", "fallback")
    description: str  # one line: what it is and why it was chosen

    def repair(
        self, clip: RepairClip, *, seed: int | None = None, progress: ProgressCallback | None = None
    ) -> RepairResult: ...


# ------------------------------------------------------------------------- checkpoint detection
# sub-folder -> (config file, accepted weight files); one of the weight files must exist.
_DIFFUSERS_WEIGHTS = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
)
_TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
CHECKPOINT_LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "unet": ("config.json", _DIFFUSERS_WEIGHTS),
    "image_proj": ("config.json", _DIFFUSERS_WEIGHTS),
    "image_encoder": ("config.json", _TRANSFORMERS_WEIGHTS),
    "vae": ("config.json", _DIFFUSERS_WEIGHTS),
    "scheduler": ("scheduler_config.json", ()),
}


def checkpoint_problems(folder: str | Path) -> list[str]:
    """What is missing from a converted repair-model folder (empty list: complete)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"the folder {folder} does not exist"]
    problems = []
    if not (folder / "model_index.json").is_file():
        problems.append("model_index.json")
    for sub, (config, weights) in CHECKPOINT_LAYOUT.items():
        if not (folder / sub / config).is_file():
            problems.append(f"{sub}/{config}")
        if weights and not any((folder / sub / name).is_file() for name in weights):
            problems.append(f"{sub}/{weights[0]}")
    return problems


# ------------------------------------------------------------------------------------ factory
def make_repairer(
    kind: RepairerKind = "auto",
    weights_dir: str | Path = DEFAULT_WEIGHTS_DIR,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    fallback_options: dict[str, Any] | None = None,
    pipeline_options: dict[str, Any] | None = None,
    reprojection_options: dict[str, Any] | None = None,
) -> Repairer:
    """The repairer chain to use; its ``description`` says which and why (and it is logged).

    - ``"auto"``: the best available chain: reprojection of the capture's photos, then the
      diffusion model when its folder in ``weights_dir`` is complete and loads
      (``reproject+diffusion``); otherwise the weight-free fill alone (``fallback``), which
      scored at least as well as reprojection + fill on every capture measured (masked 1/2,
      ``benchmarks/bench_fusion.py``: demo fox 19.32 vs 19.31 dB, fox with COLMAP's points 19.26
      vs 19.19, fern 14.67 vs 14.20): where other windows saw a pixel, the run's own render is
      already better than their colours carried over through its depth. Without a photo bank or
      clip cameras the reprojection stage passes clips straight on, so "auto" is safe for
      callers that have neither.
    - ``"diffusion"`` / ``"fallback"``: that model alone.
    - ``"reproject"``: reprojection alone (pixels no photo sees keep the render, low confidence);
      ``"reproject+diffusion"`` / ``"reproject+fallback"``: with that second stage.

    ``"diffusion"`` and ``"reproject+diffusion"`` with a missing or partial folder raise
    :class:`GenFusionError` listing the missing parts. ``fallback_options`` are
    :class:`FallbackConfig` fields, ``reprojection_options`` :class:`ReprojectionConfig` fields;
    ``pipeline_options`` are defaults for the diffusion pipeline's call (steps, guidance, ...).
    """
    from genfusion.generation.fallback import FallbackConfig, FallbackRepairer

    if kind not in REPAIRER_KINDS:
        raise GenFusionError(f"unknown repairer {kind!r}.", hint=f"Use one of: {', '.join(REPAIRER_KINDS)}.")

    def fallback(reason: str) -> Repairer:
        return FallbackRepairer(FallbackConfig(**(fallback_options or {})), reason=reason)

    def chain(next_stage: Repairer | None, reason: str) -> Repairer:
        from genfusion.generation.reprojection import ReprojectionRepairer
        from genfusion.generation.reprojection_config import ReprojectionConfig

        config = ReprojectionConfig(**(reprojection_options or {}))
        return ReprojectionRepairer(next_stage, config, reason=reason)

    repairer: Repairer
    if kind in ("fallback", "reproject", "reproject+fallback"):
        if kind == "fallback":
            repairer = fallback("requested")
        else:
            repairer = chain(fallback("requested") if kind == "reproject+fallback" else None, "requested")
        logger.info("repairer: %s", repairer.description)
        return repairer

    strict = kind != "auto"
    diffusion, reason = _load_diffusion(weights_dir, strict, device, dtype, pipeline_options)
    if kind == "diffusion":
        repairer = diffusion
    elif kind == "reproject+diffusion":
        repairer = chain(diffusion, "requested")
    elif diffusion is not None:
        repairer = chain(
            diffusion,
            f"the repair model in {weights_dir} loaded: real photos first, the model for what no photo saw",
        )
    else:
        repairer = fallback(
            f"{reason}, so the weight-free fill repairs (without the model, reprojecting the photos "
            "first scored no better: --repairer reproject+fallback)"
        )
        logger.warning("repairer: %s", repairer.description)
        return repairer
    logger.info("repairer: %s", repairer.description)
    return repairer


def _load_diffusion(
    weights_dir: str | Path,
    strict: bool,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    pipeline_options: dict[str, Any] | None,
) -> tuple[Any, str]:
    """``(DiffusionRepairer, "")``, or ``(None, why not)``; ``strict`` raises instead of None."""
    weights_dir = Path(weights_dir)
    problems = checkpoint_problems(weights_dir)
    if problems:
        reason = f"no complete repair-model checkpoint in {weights_dir} (missing: {', '.join(problems)})"
        if strict:
            raise GenFusionError(
                f"cannot load the diffusion repairer: {reason}.",
                hint="Run `genfusion download` (or place the files by hand and run "
                "`genfusion convert-checkpoint`, see checkpoints/README.md), or use --repairer fallback.",
            )
        return None, reason
    try:
        from genfusion.generation.pipeline import DiffusionRepairer

        return (
            DiffusionRepairer.from_folder(
                weights_dir, device=device, dtype=dtype, call_options=pipeline_options
            ),
            "",
        )
    except GenFusionError:
        if strict:
            raise
        return None, f"the checkpoint in {weights_dir} did not load"
    except Exception as err:  # a corrupt folder must not stop the loop when "auto" was asked
        if strict:
            raise GenFusionError(
                f"the repair-model checkpoint in {weights_dir} failed to load ({type(err).__name__}: {err}).",
                hint="Re-run `genfusion download` or `genfusion convert-checkpoint`.",
            ) from err
        return None, f"the checkpoint in {weights_dir} failed to load ({type(err).__name__}: {err})"
