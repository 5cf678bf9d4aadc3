"""The one interface the fusion loop talks to: a clip of renders in, a repaired clip out.

Two implementations exist: the diffusion model (:class:`genfusion.generation.pipeline.DiffusionRepairer`,
needs converted weights) and the weight-free classical repairer
(:class:`genfusion.generation.fallback.FallbackRepairer`). :func:`make_repairer` picks one and
says which, so the UI and the logs can always show what produced the frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from genfusion.errors import GenFusionError
from genfusion.progress import ProgressCallback

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS_DIR = Path("checkpoints/genfusion-repair")

RepairerKind = Literal["auto", "diffusion", "fallback"]


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

    @classmethod
    def from_arrays(cls, rgb: Any, depth: Any, alpha: Any, reference: Any = None) -> RepairClip:
        """Build and validate a clip from numpy arrays or tensors (uint8 images are scaled to [0, 1])."""
        clip = cls(
            rgb=_as_float_tensor("rgb", rgb),
            depth=_as_float_tensor("depth", depth),
            alpha=_as_float_tensor("alpha", alpha),
            reference=None if reference is None else _as_float_tensor("reference", reference),
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


@dataclass
class RepairResult:
    """A repaired clip and how it was made."""

    rgb: torch.Tensor  # [T, H, W, 3] repaired colour in [0, 1]
    depth: torch.Tensor  # [T, H, W] repaired depth in the input's scene units
    reliable: torch.Tensor  # [T, H, W] bool: pixels the input already trusted
    repairer: str  # name of the repairer that produced it ("diffusion", "fallback")
    usable: bool = True  # False: nothing trustworthy could be made (e.g. all-empty alpha); skip it
    warnings: list[str] = field(default_factory=list)  # human-readable notes for logs and the UI


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
) -> Repairer:
    """The repairer to use: ``"diffusion"`` (needs ``weights_dir``), ``"fallback"`` or ``"auto"``.

    ``"auto"`` loads the diffusion model when its folder is complete and loads, otherwise the
    weight-free repairer; the returned object's ``description`` says which and why, and the choice
    is logged. ``"diffusion"`` with a missing or partial folder raises :class:`GenFusionError`
    listing the missing parts. ``fallback_options`` are :class:`FallbackConfig` fields;
    ``pipeline_options`` are defaults for the diffusion pipeline's call (steps, guidance, ...).
    """
    from genfusion.generation.fallback import FallbackConfig, FallbackRepairer

    if kind not in ("auto", "diffusion", "fallback"):
        raise GenFusionError(f"unknown repairer {kind!r}.", hint="Use 'auto', 'diffusion' or 'fallback'.")
    if kind == "fallback":
        repairer: Repairer = FallbackRepairer(FallbackConfig(**(fallback_options or {})), reason="requested")
        logger.info("repairer: %s", repairer.description)
        return repairer

    weights_dir = Path(weights_dir)
    problems = checkpoint_problems(weights_dir)
    if problems:
        reason = f"no complete repair-model checkpoint in {weights_dir} (missing: {', '.join(problems)})"
        if kind == "diffusion":
            raise GenFusionError(
                f"cannot load the diffusion repairer: {reason}.",
                hint="Run `genfusion download` (or place the files by hand and run "
                "`genfusion convert-checkpoint`, see checkpoints/README.md), or use --repairer fallback.",
            )
        return _fallback_because(reason, fallback_options)
    try:
        from genfusion.generation.pipeline import DiffusionRepairer

        repairer = DiffusionRepairer.from_folder(
            weights_dir, device=device, dtype=dtype, call_options=pipeline_options
        )
    except GenFusionError:
        if kind == "diffusion":
            raise
        return _fallback_because(f"the checkpoint in {weights_dir} did not load", fallback_options)
    except Exception as err:  # a corrupt folder must not stop the loop when "auto" was asked
        if kind == "diffusion":
            raise GenFusionError(
                f"the repair-model checkpoint in {weights_dir} failed to load ({type(err).__name__}: {err}).",
                hint="Re-run `genfusion download` or `genfusion convert-checkpoint`.",
            ) from err
        return _fallback_because(
            f"the checkpoint in {weights_dir} failed to load ({type(err).__name__}: {err})", fallback_options
        )
    logger.info("repairer: %s", repairer.description)
    return repairer


def _fallback_because(reason: str, options: dict[str, Any] | None) -> Repairer:
    from genfusion.generation.fallback import FallbackConfig, FallbackRepairer

    repairer = FallbackRepairer(FallbackConfig(**(options or {})), reason=reason)
    logger.warning("repairer: %s", repairer.description)
    return repairer
