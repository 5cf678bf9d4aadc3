"""What a repairer is shown: the clips the fusion loop renders, and its map of unreliable pixels.

:class:`ClipRenderer` renders RGB-D clips from the trainer's current splats, with

- the *seen alpha* of each frame: the opacity of the Gaussians the real training views saw
  (:mod:`genfusion.splat.observation`). The map of unreliable pixels is built on it (fog no photo
  looked at renders solid yet shows nothing real), and repairers get it as the clip's alpha when
  they can repaint such holes (``observed_alpha``; automatic: with the diffusion model);
- the nearest real training photo (the diffusion model's image context);
- for a repairer that reprojects photos (``set_photos``), a photo bank refreshed once a round
  with the training photos as the trainer sees them and their rendered depth.

It caches what is computed once per training step (seen weights, the photo bank) and imports
nothing from the loop, so the loop stays about the rounds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from genfusion.data.types import Camera, Scene
from genfusion.fusion.config import FusionConfig
from genfusion.generation.repairer import RepairClip, Repairer
from genfusion.splat.trainer import Trainer


def surface_colour(
    rgb: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor, min_alpha: float = 1e-3
) -> torch.Tensor:
    """[H, W, 3] the colour of what renders, without the background: ``rgb`` was composited as
    ``surface * alpha + background * (1 - alpha)``, so ``surface = (rgb - background * (1 - alpha))
    / alpha``. Splats trained on a few windows stay partly transparent outside them, and the black
    background darkens the render there (fox 68x120, masked 1/2: un-premultiplying the plain run's
    test renders alone lifts them from 18.53 to 18.99 dB). Pixels with ``alpha`` below
    ``min_alpha`` keep ``rgb`` (nothing renders there: they are holes for the repairer)."""
    a = alpha[..., None]
    surface = (rgb - background * (1 - a)) / a.clamp_min(min_alpha)
    return torch.where(a >= min_alpha, surface, rgb).clamp(0, 1)


class RenderedClip(NamedTuple):
    """A rendered clip and what the map of unreliable pixels needs besides it."""

    clip: RepairClip  # what the repairer gets
    seen_alpha: torch.Tensor  # [T, H, W] opacity of the Gaussians the photos saw, per frame
    rendered_alpha: torch.Tensor  # [T, H, W] the render's own opacity


class ClipRenderer:
    """Renders the clips of one fusion run (see the module docstring)."""

    def __init__(self, trainer: Trainer, scene: Scene, config: FusionConfig, repairer: Repairer):
        self.trainer = trainer
        self.scene = scene
        self.config = config
        self.repairer = repairer
        self._photo_bank_step: int | None = None  # training step of the photo bank last given
        self._seen_step: tuple[int, int] | None = None  # (step, count) the seen weights belong to
        self._seen: torch.Tensor | None = None  # [N] seen weight per Gaussian

    @property
    def _diffusion_repairs(self) -> bool:
        """Whether the diffusion model is in the repairer chain (the automatic choices below)."""
        return "diffusion" in getattr(self.repairer, "name", "")

    @property
    def repairs_unseen(self) -> bool:
        """Whether repairers get the seen alpha (unseen fog as a hole): as ``observed_alpha`` says;
        automatic (None): only when the diffusion model repairs. The weight-free fill over unseen
        fog scores below the fog itself (fox 68x120, masked 1/2, 1,500 steps: reprojection + fill
        15.05 dB with it, 15.72 dB without; the fill alone 15.63 against 15.70)."""
        if self.config.observed_alpha is not None:
            return self.config.observed_alpha
        return self._diffusion_repairs

    @property
    def removes_background(self) -> bool:
        """Whether clips show the surface without the background (``remove_background``;
        automatic: unless the diffusion model repairs, which was fine-tuned on raw renders)."""
        if self.config.remove_background is not None:
            return self.config.remove_background
        return not self._diffusion_repairs

    def render(self, cameras: list[Camera]) -> RenderedClip:
        """The clip the repairer gets for ``cameras`` (colour, depth 0 where nothing renders, alpha,
        the nearest training photo, the cameras) and the seen alpha of each frame for the map."""
        self._refresh_photo_bank()
        rgb, depth, alpha, seen, full = [], [], [], [], []
        for camera in cameras:
            out = self.trainer.render(camera)
            rendered_alpha = out.alpha[0, ..., 0]
            rgb.append(self.shown_colour(out.rgb[0], rendered_alpha))
            depth.append(
                torch.where(rendered_alpha > 0, out.depth[0, ..., 0], torch.zeros_like(rendered_alpha))
            )
            seen_alpha = self.seen_alpha(camera, rendered_alpha)
            seen.append(seen_alpha)
            full.append(rendered_alpha)
            alpha.append(seen_alpha if self.repairs_unseen else rendered_alpha)
        reference = self._reference_photo(cameras[len(cameras) // 2])
        clip = RepairClip(
            rgb=torch.stack(rgb).cpu(),
            depth=torch.stack(depth).cpu(),
            alpha=torch.stack(alpha).cpu(),
            reference=reference,
            cameras=list(cameras),
        )
        return RenderedClip(clip, torch.stack(seen).cpu(), torch.stack(full).cpu())

    def shown_colour(self, rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """[H, W, 3] the colour a repairer is shown: with ``remove_background``, the colour of the
        surface itself, the run's background taken out where the splats let it through."""
        if not self.removes_background:
            return rgb.clamp(0, 1)
        background = self.trainer.background.to(rgb.device)
        return surface_colour(rgb, alpha, background)

    def _refresh_photo_bank(self) -> None:
        """Give a repairer that reprojects photos (``set_photos``) the training photos as the
        trainer sees them (masked protocol: the windows, with their cropped cameras) and their
        depth rendered by the current splats; once per training step (i.e. once per round)."""
        set_photos = getattr(self.repairer, "set_photos", None)
        if set_photos is None or self._photo_bank_step == self.trainer.step:
            return
        split = self.trainer.split
        cameras = split.train_cameras(self.scene)
        depths = []
        for i in split.train:
            # a window's depth is cut from its full frame's render: the projection clamps each
            # Gaussian's Jacobian to the image's field of view (as gsplat does), so a crop renders
            # Gaussians beside it differently (measured: depth 8% off on the synthetic scene), and
            # the visibility test compares against full-frame renders of the novel views
            out = self.trainer.render(self.scene.cameras[i])
            d, a = out.depth[0, ..., 0], out.alpha[0, ..., 0]
            d = torch.where(a > 0, d, torch.zeros_like(d))
            depths.append(split.windows[i].crop(d) if i in split.windows else d)
        set_photos(self.trainer.train_views.images, cameras, depths)
        self._photo_bank_step = self.trainer.step

    def unreliable_map(self, rendered: RenderedClip, result) -> torch.Tensor:
        """[T, H, W] bool, the map users watch shrink (round events, viewer): low seen alpha (no
        photo saw what renders there) or no depth, or the repairer's own map when it makes one
        (unseen by the photos, disagreeing with them)."""

        clip = rendered.clip
        mask = self._unreliable(rendered.seen_alpha, rendered.rendered_alpha, clip.depth)
        own = getattr(result, "unreliable", None)
        if own is not None and tuple(own.shape) == tuple(mask.shape):
            mask = mask | own.to(mask.device).bool()
        return mask

    def _reference_photo(self, camera: Camera) -> torch.Tensor:
        """The real training photo whose camera is nearest (diffusion's image context)."""
        views = self.trainer.train_views
        centers = torch.linalg.inv(views.viewmats)[:, :3, 3].cpu().numpy()
        nearest = int(np.argmin(np.linalg.norm(centers - camera.camtoworld[:3, 3], axis=1)))
        return views.images[nearest].cpu()

    def _unreliable(self, seen: torch.Tensor, rendered: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Nothing renders (alpha below ``unreliable_alpha``, no depth), or less than
        ``min_seen_share`` of what renders comes from Gaussians the photos saw."""
        from genfusion.fusion.expansion import unreliable_mask

        empty = unreliable_mask(seen, depth, self.config.unreliable_alpha)
        return empty | (seen < self.config.min_seen_share * rendered)

    def seen_alpha(self, camera: Camera, rendered_alpha: torch.Tensor) -> torch.Tensor:
        """[H, W] the opacity of the Gaussians the real training views saw
        (:mod:`genfusion.splat.observation`; their weights computed once a training step), at most
        ``rendered_alpha``; the rendered alpha itself when ``observed_alpha`` is False."""
        if self.config.observed_alpha is False:
            return rendered_alpha
        from genfusion.splat.cameras import camera_tensors
        from genfusion.splat.observation import observed_alpha, seen_weights

        trainer, cfg = self.trainer, self.config.reconstruct
        options = dict(
            mode=cfg.method, backend=cfg.backend, near_plane=cfg.near_plane, far_plane=cfg.far_plane
        )
        if self._seen_step != (trainer.step, trainer.num_gaussians):
            views = trainer.train_views
            self._seen = seen_weights(trainer.splats, views.viewmats, views.Ks, views.sizes, **options)
            self._seen_step = (trainer.step, trainer.num_gaussians)
        viewmats, Ks = camera_tensors([camera], trainer.device)
        seen = observed_alpha(
            trainer.splats, self._seen, viewmats[0], Ks[0], camera.width, camera.height, **options
        )
        return torch.minimum(seen, rendered_alpha)

    def unreliable_fraction(self, cameras: list[Camera]) -> float:
        """Share of unreliable pixels over renders of ``cameras`` now."""

        fractions = []
        for camera in cameras:
            out = self.trainer.render(camera)
            rendered_alpha = out.alpha[0, ..., 0]
            seen = self.seen_alpha(camera, rendered_alpha)
            mask = self._unreliable(seen, rendered_alpha, out.depth[0, ..., 0])
            fractions.append(float(mask.float().mean()))
        return float(np.mean(fractions)) if fractions else 0.0
