"""The reprojection repairer's settings, :class:`ReprojectionConfig`.

Its own module so that the per-frame evidence (:mod:`genfusion.generation.reproject_frame`) and
the repairer (:mod:`genfusion.generation.reprojection`) both read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from genfusion.errors import GenFusionError

Uncovered = Literal["auto", "next", "render"]


@dataclass
class ReprojectionConfig:
    """Settings of the reprojection repairer (distances in scene units, angles in degrees)."""

    depth_tolerance: float = 0.05  # a source sees a point when |z - its depth| <= this x its depth
    max_angle_deg: float = 50.0  # rays point->novel camera and point->source further apart: ignored
    angle_sigma_deg: float = 20.0  # Gaussian fall-off of a source's weight with that angle
    min_frontality: float = 0.1  # |cos| surface normal / source ray below this (grazing): ignored
    frontal_cos: float = 0.5  # ... and from this cos on (60 deg) the view counts as fully frontal
    resolution_sigma: float = 0.7  # fall-off with |log| of the source/novel pixel-footprint ratio
    colour_sigma: float = 0.08  # RGB distance (RMS over channels, [0, 1]) at which views disagree
    max_sources: int = 16  # photos used per frame (best by a strided pre-pass)
    selection_stride: int = 4  # pixel stride of that pre-pass
    min_weight: float = 0.05  # summed agreeing weight for a pixel to count as seen by the photos
    min_views: int = 1  # fewer agreeing photos than this: the pixel is marked unreliable
    support_scale: float = 0.5  # confidence = (1 - exp(-weight / support_scale)) * agreement
    disagreement: float = 0.1  # render vs reprojected colour (RMS) above this: unreliable
    alpha_threshold: float = 0.5  # rendered alpha below this (or no depth): unreliable
    # pixels no photo sees but the render covers (alpha, depth): "next" stage repaints them, or keep
    # the "render"; "auto": next for the diffusion model, render for the fill (measured on the fox,
    # masked 1/2: the push-pull fill over them scored 12.8 dB against the hidden photos where the
    # render scored 13.4; pixels the render misses always go to the next stage)
    uncovered: Uncovered = "auto"
    render_confidence: float = 0.0  # confidence of kept render pixels (0: a render teaching itself)
    fill_confidence: float = 0.15  # confidence of pixels only the fill made
    diffusion_confidence: float = 0.5  # confidence of pixels only the diffusion model made
    depth_search_steps: int = 1  # depths tried per pixel around the rendered one (1: trust the render)
    depth_search_range: float = 0.2  # ... within +- this relative change of disparity
    disagreement_penalty: float = 1.0  # search score: agreeing weight - this x disagreeing weight
    prior_bonus: float = 0.05  # search score bonus of the rendered depth (it wins ties)
    max_pairs: int = 1 << 22  # source x pixel x 4 entries per chunk (bounds memory)

    def validate(self) -> None:
        for name in ("depth_tolerance", "angle_sigma_deg", "resolution_sigma", "colour_sigma"):
            if not getattr(self, name) > 0:
                raise GenFusionError(f"reprojection {name} must be > 0, got {getattr(self, name)}")
        for name in (
            "min_frontality",
            "render_confidence",
            "fill_confidence",
            "diffusion_confidence",
            "alpha_threshold",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise GenFusionError(f"reprojection {name} must lie in [0, 1], got {getattr(self, name)}")
        if self.max_sources < 1 or self.selection_stride < 1 or self.min_views < 0:
            raise GenFusionError("reprojection max_sources and selection_stride must be >= 1")
        if self.uncovered not in ("auto", "next", "render"):
            raise GenFusionError(
                f"reprojection uncovered must be auto, next or render, got {self.uncovered!r}"
            )


__all__ = ["ReprojectionConfig", "Uncovered"]
