"""Views the trainer did not photograph: generated (repaired) renders that supervise training.

The fusion loop renders clips along novel paths, repairs them, and hands the frames back as
:class:`GeneratedView` values: an image, optionally a depth target and a per-pixel weight map
(the repairer's reliability, 0 = ignore this pixel). :class:`GeneratedViews` is the trainer's
store of them; views are added, replaced (a new round replaces the last one's by default) and
removed while training runs, and the whole store goes into the checkpoint, so a resumed run
trains on exactly the same pixels.

How much the generated views weigh at each step is a :class:`GeneratedWeight`: a constant, or
GenFusion's half-sine over a window of steps (warm-up, then annealing), both plain numbers so the
checkpoint can hold them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from genfusion.errors import GenFusionError

DepthMode = Literal["invariant", "metric"]
WeightShape = Literal["constant", "half_sine"]


@dataclass
class GeneratedView:
    """One generated training view (all tensors on one device, float32)."""

    name: str  # unique within the store; adding a view of the same name replaces it
    viewmat: Tensor  # [4, 4] world-to-camera (OpenCV axes)
    K: Tensor  # [3, 3] intrinsics in pixels
    image: Tensor  # [H, W, 3] target colour in [0, 1]
    depth: Tensor | None = None  # [H, W] target z-depth; 0 = no depth at that pixel
    weight: Tensor | None = None  # [H, W] per-pixel weight in [0, 1]; 0 = the pixel is never seen
    depth_mode: DepthMode = "invariant"  # invariant: scale and shift free (diffusion); metric: as given

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def validate(self) -> None:
        """Raise :class:`GenFusionError` naming what is wrong with this view."""
        what = f"generated view {self.name!r}"
        if self.image.ndim != 3 or self.image.shape[-1] != 3:
            raise GenFusionError(f"{what}: image must be [H, W, 3], got {tuple(self.image.shape)}")
        if tuple(self.viewmat.shape) != (4, 4) or tuple(self.K.shape) != (3, 3):
            raise GenFusionError(
                f"{what}: viewmat must be 4x4 and K 3x3, got {tuple(self.viewmat.shape)} and "
                f"{tuple(self.K.shape)}"
            )
        size = (self.height, self.width)
        for label, value in (("depth", self.depth), ("weight", self.weight)):
            if value is None:
                continue
            if tuple(value.shape) != size:
                raise GenFusionError(
                    f"{what}: the {label} map is {tuple(value.shape)} but the image is {size} (H, W); "
                    f"give one {label} value per image pixel"
                )
            if not torch.isfinite(value).all():
                bad = int((~torch.isfinite(value)).sum())
                raise GenFusionError(
                    f"{what}: the {label} map holds {bad} NaN/inf values; mark pixels without "
                    f"{label} with 0 instead"
                )
        if not torch.isfinite(self.image).all():
            raise GenFusionError(f"{what}: the image holds NaN/inf values")
        if self.depth is not None and (self.depth < 0).any():
            raise GenFusionError(f"{what}: the depth map has negative values; use 0 for no depth")
        if self.weight is not None and ((self.weight < 0) | (self.weight > 1)).any():
            raise GenFusionError(f"{what}: weights must lie in [0, 1]")
        if self.depth_mode not in ("invariant", "metric"):
            raise GenFusionError(f"{what}: depth_mode must be invariant or metric, got {self.depth_mode!r}")

    def to_state(self) -> dict[str, Any]:
        """Checkpoint form: CPU tensors and plain values."""
        state: dict[str, Any] = {"name": self.name, "depth_mode": self.depth_mode}
        for key in ("viewmat", "K", "image", "depth", "weight"):
            value = getattr(self, key)
            state[key] = None if value is None else value.detach().cpu().clone()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device | str) -> GeneratedView:
        tensors = {
            key: None if state[key] is None else state[key].to(device)
            for key in ("viewmat", "K", "image", "depth", "weight")
        }
        return cls(name=state["name"], depth_mode=state["depth_mode"], **tensors)


@dataclass
class GeneratedWeight:
    """Loss weight of the generated views at a step: ``peak`` inside [start, stop), else 0;
    ``half_sine`` scales it by sin(pi * (step - start) / (stop - start)) (GenFusion's schedule)."""

    peak: float = 1.0  # the weight (lambda_reg of method.md) at its highest
    start: int = 0  # first step the generated views count
    stop: int | None = None  # generated views stop counting here; None = never
    shape: WeightShape = "constant"  # constant, or half_sine (needs stop)

    def __post_init__(self) -> None:
        if self.shape not in ("constant", "half_sine"):
            raise GenFusionError(f"weight shape must be constant or half_sine, got {self.shape!r}")
        if self.shape == "half_sine" and self.stop is None:
            raise GenFusionError("a half_sine weight needs a stop step")
        if self.stop is not None and self.stop <= self.start:
            raise GenFusionError(f"the weight window [{self.start}, {self.stop}) is empty")
        if not math.isfinite(self.peak) or self.peak < 0:
            raise GenFusionError(f"the generated-view weight must be a finite number >= 0, got {self.peak}")

    def at(self, step: int) -> float:
        if step < self.start or (self.stop is not None and step >= self.stop):
            return 0.0
        if self.shape == "constant":
            return self.peak
        assert self.stop is not None
        return self.peak * math.sin(math.pi * (step - self.start) / (self.stop - self.start))

    def to_state(self) -> dict[str, Any]:
        return asdict(self)


class GeneratedViews:
    """The trainer's store of generated views, in insertion order."""

    def __init__(self) -> None:
        self.views: dict[str, GeneratedView] = {}
        self.weight = GeneratedWeight()

    def __len__(self) -> int:
        return len(self.views)

    def names(self) -> list[str]:
        return list(self.views)

    def add(self, views: list[GeneratedView], *, replace_all: bool = False) -> None:
        """Add views (same name = replaced); ``replace_all`` first drops every earlier view, as a
        new fusion round does. Nothing changes unless every view is valid."""
        for view in views:
            view.validate()
        names = [v.name for v in views]
        if len(set(names)) != len(names):
            raise GenFusionError(f"generated view names repeat within one call: {sorted(names)[:5]}")
        if replace_all:
            self.views.clear()
        for view in views:
            self.views[view.name] = view

    def remove(self, names: list[str]) -> None:
        missing = [n for n in names if n not in self.views]
        if missing:
            raise GenFusionError(f"no generated views named {missing[:5]}; there are {self.names()[:5]}")
        for name in names:
            del self.views[name]

    def pick(self, step: int, seed: int) -> GeneratedView | None:
        """The view trained at ``step`` (a function of seed and step only, for exact resume)."""
        if not self.views:
            return None
        generator = torch.Generator().manual_seed(seed * 9_973 + step * 31 + 17)
        index = int(torch.randint(len(self.views), (1,), generator=generator))
        return list(self.views.values())[index]

    def to_state(self) -> dict[str, Any]:
        return {"views": [v.to_state() for v in self.views.values()], "weight": self.weight.to_state()}

    def load_state(self, state: dict[str, Any], device: torch.device | str) -> None:
        self.views = {s["name"]: GeneratedView.from_state(s, device) for s in state.get("views", [])}
        self.weight = GeneratedWeight(**state.get("weight", {}))
