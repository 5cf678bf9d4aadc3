"""Reprojection repair: the capture's own photos carried into novel views before anything is invented.

Much of what a novel view needs was photographed, only from another camera (or, in the masked
protocol, through another frame's window). :class:`ReprojectionRepairer` brings those real pixels
over, and leaves invention to a second stage (the diffusion model when installed, otherwise the
push-pull fill of :class:`~genfusion.generation.fallback.FallbackRepairer`) only where no photo saw
the surface. Per clip frame:

1. **Back-project** every pixel with the frame's rendered depth and estimate its surface normal
   (:mod:`genfusion.generation.photo_bank`, which also holds the :class:`PhotoBank` of photos).
2. **Pick sources, project and test, blend consistent colours, score a confidence**
   (:func:`~genfusion.generation.reproject_frame.reproject_frame`). Pixels only the next stage
   made get that stage's fixed confidence (``fill_confidence``, ``diffusion_confidence``).
3. **Unreliable map** (what the viewer shows shrinking): low alpha or no depth, no photo sees it,
   the render disagrees with the reprojected photos, or fewer than ``min_views`` views saw it.

Settings: :class:`~genfusion.generation.reprojection_config.ReprojectionConfig`. Everything but
the per-frame loop is vectorised tensor code on whatever device the photo bank lives on (the clip
is moved there and the result back). This module sees clips, cameras and photos, never Gaussians:
it imports nothing from ``genfusion.splat`` or ``genfusion.fusion``.

Documented fallbacks:

* no photo bank, or a clip without cameras: the clip goes to the next stage unchanged (a warning
  says so); without a next stage it is returned as rendered, ``confidence`` None;
* a frame no photo sees at all is left entirely to the next stage (a warning counts them);
* NaN/inf in the render counts as unreliable and never reaches the output.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from genfusion.data.types import Camera
from genfusion.errors import GenFusionError
from genfusion.generation.depth import reliable_mask, valid_depth
from genfusion.generation.photo_bank import PhotoBank, camera_matrices
from genfusion.generation.repairer import RepairClip, Repairer, RepairResult
from genfusion.generation.reproject_frame import FrameReprojection, colour_distance, reproject_frame
from genfusion.generation.reprojection_config import ReprojectionConfig
from genfusion.progress import ProgressCallback, ProgressEvent, emit

logger = logging.getLogger(__name__)


class ReprojectionRepairer:
    """Real photos reprojected into the clip; what they do not cover goes to ``next_stage``.

    ``set_photos`` (the fusion loop calls it every round, with fresh rendered depths) fills the
    photo bank; clips must carry their ``cameras``. ``next_stage`` is any :class:`Repairer`
    (the diffusion model or the fallback), or None: uncovered pixels then keep the render.
    """

    def __init__(
        self,
        next_stage: Repairer | None = None,
        config: ReprojectionConfig | None = None,
        *,
        reason: str = "requested",
    ):
        self.config = config or ReprojectionConfig()
        self.config.validate()
        self.next_stage = next_stage
        self.reason = reason
        self.bank: PhotoBank | None = None
        self.name = "reproject" if next_stage is None else f"reproject+{next_stage.name}"
        then = (
            "pixels no photo sees keep the render"
            if next_stage is None
            else f"pixels no photo sees go to: {next_stage.description.split('; chosen because')[0]}"
        )
        self.description = (
            f"reprojection of the capture's own photos into novel views (visibility-checked, "
            f"confidence-weighted), then {then}; chosen because: {reason}"
        )

    # ---------------------------------------------------------------- photos

    def set_photos(
        self,
        images: list[Any],
        cameras: list[Camera],
        depths: list[Any],
        valid: list[Any] | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        """Replace the photo bank (see :meth:`PhotoBank.build`)."""
        self.bank = PhotoBank.build(images, cameras, depths, valid, device=device)

    def clear_photos(self) -> None:
        self.bank = None

    @property
    def _next_is_diffusion(self) -> bool:
        return self.next_stage is not None and "diffusion" in self.next_stage.name

    # ---------------------------------------------------------------- repair

    def _pass_through(self, clip: RepairClip, why: str, seed, progress) -> RepairResult:
        logger.warning("reprojection repairer: %s", why)
        if self.next_stage is not None:
            result = self.next_stage.repair(clip, seed=seed, progress=progress)
            result.warnings = [why, *result.warnings]
            result.repairer = self.name
            return result
        reliable = reliable_mask(clip.depth, clip.alpha, self.config.alpha_threshold)
        return RepairResult(
            rgb=torch.nan_to_num(clip.rgb, nan=0.0).clamp(0, 1),
            depth=torch.nan_to_num(clip.depth, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0),
            reliable=reliable,
            repairer=self.name,
            usable=bool(reliable.any()),
            warnings=[why],
            unreliable=~reliable,
        )

    def reproject(self, clip: RepairClip) -> list[FrameReprojection]:
        """The photo evidence for every frame of ``clip`` (needs the bank and the clip's cameras)."""
        if self.bank is None or clip.cameras is None:
            raise GenFusionError("reprojection needs a photo bank (set_photos) and the clip's cameras")
        bank = self.bank
        c2w, _, Ks = camera_matrices(clip.cameras, bank.device)
        depth = clip.depth.to(bank.device).float()
        return [reproject_frame(depth[j], Ks[j], c2w[j], bank, self.config) for j in range(clip.num_frames)]

    def repair(
        self, clip: RepairClip, *, seed: int | None = None, progress: ProgressCallback | None = None
    ) -> RepairResult:
        """Repair ``clip`` from the photos, then hand what they do not cover to the next stage."""
        clip.validate()
        cfg = self.config
        if self.bank is None:
            return self._pass_through(clip, "no photo bank was set: reprojection skipped", seed, progress)
        if clip.cameras is None:
            return self._pass_through(clip, "the clip has no cameras: reprojection skipped", seed, progress)
        emit(progress, ProgressEvent("repair.reproject", 0, clip.num_frames, "reprojecting photos"))
        frames = self.reproject(clip)
        out_device = clip.rgb.device

        def stack(key: str) -> Tensor:
            return torch.stack([getattr(f, key) for f in frames]).to(out_device)

        photo_rgb, covered, conf, views = stack("rgb"), stack("covered"), stack("confidence"), stack("views")
        rgb = torch.nan_to_num(clip.rgb.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
        rendered_ok = reliable_mask(clip.depth, clip.alpha, cfg.alpha_threshold) & torch.isfinite(
            clip.rgb
        ).all(-1)
        disagrees = covered & (colour_distance(rgb, photo_rgb) > cfg.disagreement)
        unreliable = ~rendered_ok | ~covered | disagrees | (views < cfg.min_views)
        warnings: list[str] = []
        blind = int((~covered.flatten(1).any(1)).sum())
        if blind:
            warnings.append(f"{blind} frame(s) had no pixel any photo sees: left to the next stage")
        emit(progress, ProgressEvent("repair.reproject", clip.num_frames, clip.num_frames, "blending"))

        staged = torch.where(covered[..., None], photo_rgb, rgb)
        depth = torch.nan_to_num(clip.depth.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
        uncovered = cfg.uncovered
        if uncovered == "auto":
            uncovered = "next" if self._next_is_diffusion else "render"
        keep_render = (rendered_ok & ~covered) if uncovered == "render" else torch.zeros_like(covered)
        if self.next_stage is None or not bool((~covered & ~keep_render).any()):
            out_rgb, out_depth = staged, depth
            fill_conf = cfg.fill_confidence
            trusted = covered | rendered_ok
            usable = bool(trusted.any())
            out_depth = torch.where(valid_depth(depth), depth, torch.zeros_like(depth))
        else:
            if self._next_is_diffusion:  # the model sees the cleaner clip; it aligns depth by alpha
                inner = RepairClip(
                    rgb=staged, depth=depth, alpha=clip.alpha, reference=clip.reference, cameras=clip.cameras
                )
            else:  # the fill keeps alpha-1 pixels bit for bit and fills the rest from them
                solid = (covered | keep_render) & valid_depth(depth)
                inner = RepairClip(
                    rgb=staged,
                    depth=torch.where(solid, depth, torch.zeros_like(depth)),
                    alpha=solid.float(),
                    reference=clip.reference,
                    cameras=clip.cameras,
                )
            result = self.next_stage.repair(inner, seed=seed, progress=progress)
            warnings += result.warnings
            made = result.rgb.to(out_device).float().clamp(0, 1)
            if self._next_is_diffusion:
                fill_conf = cfg.diffusion_confidence
                mix = conf[..., None]
                out_rgb = torch.where(covered[..., None], mix * photo_rgb + (1 - mix) * made, made)
            else:
                fill_conf = cfg.fill_confidence
                out_rgb = torch.where((covered | keep_render)[..., None], staged, made)
            made_depth = torch.nan_to_num(result.depth.to(out_device).float(), nan=0.0).clamp_min(0)
            out_depth = torch.where(valid_depth(depth), depth, made_depth)
            usable = result.usable or bool(covered.any())
        confidence = torch.where(covered, conf, torch.full_like(conf, fill_conf))
        confidence = torch.where(keep_render, torch.full_like(conf, cfg.render_confidence), confidence)
        if not torch.isfinite(out_rgb).all():
            warnings.append("non-finite colour after reprojection was replaced by the render")
            out_rgb = torch.where(torch.isfinite(out_rgb), out_rgb, rgb)
        return RepairResult(
            rgb=out_rgb.clamp(0, 1),
            depth=out_depth,
            reliable=~unreliable,
            repairer=self.name,
            usable=usable,
            warnings=warnings,
            confidence=confidence.clamp(0, 1),
            unreliable=unreliable,
        )


__all__ = ["ReprojectionRepairer"]
