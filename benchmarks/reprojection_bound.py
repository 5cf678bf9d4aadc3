"""How much of the masked protocol's gap reprojection could close at best (a diagnostic).

At every training pose of a masked run, the other training windows are reprojected into the full
frame (:func:`~genfusion.generation.reproject_frame.reproject_frame`, the repairer's own code) twice:
with the depth of the *ceiling* run (the same frames uncropped: the geometry a full capture would
give) and with the plain run's depth (what the loop has). Recorded per geometry, over the pixels
outside the pose's own window: the share some other window sees, the PSNR of the reprojected
colour there against the hidden full photo, and the plain render's PSNR on the same pixels. A
share far below 1 bounds what any reprojection can recover; the rest needs invention.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genfusion.data.types import Scene
from genfusion.generation.photo_bank import PhotoBank
from genfusion.generation.reproject_frame import reproject_frame
from genfusion.generation.reprojection_config import ReprojectionConfig
from genfusion.splat.trainer import Trainer


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float | None:
    if not bool(mask.any()):
        return None
    mse = float(((a - b) ** 2)[mask].mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def _depth(trainer: Trainer, camera) -> torch.Tensor:
    out = trainer.render(camera)
    d = out.depth[0, ..., 0]
    return torch.where(out.alpha[0, ..., 0] > 0, d, torch.zeros_like(d)).cpu()


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 3) if kept else None


@torch.no_grad()
def reprojection_bound(scene: Scene, plain: Trainer, ceiling: Trainer) -> dict:
    """The diagnostic of the module docstring; ``plain`` trained on a masked split, ``ceiling``
    on the matching unmasked one (same training frames, full photos in ``ceiling.train_views``)."""
    split = plain.split
    if not split.windows:
        return {"skipped": "not a masked split"}
    cameras = split.train_cameras(scene)
    result = {}
    for name, geometry in (("ceiling_depth", ceiling), ("plain_depth", plain)):
        depths = [torch.as_tensor(split.windows[i].crop(_depth(geometry, scene.cameras[i]).numpy()).copy())
                  for i in split.train]  # fmt: skip
        bank = PhotoBank.build([im.cpu() for im in plain.train_views.images], cameras, depths)
        covered, reprojected, rendered = [], [], []
        for k, i in enumerate(split.train):
            others = torch.tensor([j for j in range(len(cameras)) if j != k])
            camera = scene.cameras[i]
            frame = reproject_frame(
                _depth(geometry, camera),
                torch.as_tensor(camera.K, dtype=torch.float32),
                torch.as_tensor(camera.camtoworld, dtype=torch.float32),
                bank.subset(others),
                ReprojectionConfig(),
            )
            outside = ~torch.as_tensor(split.windows[i].mask(camera.width, camera.height))
            seen = frame.covered & outside
            photo = ceiling.train_views.images[k].cpu()
            render = plain.render(camera).rgb[0].clamp(0, 1).cpu()
            covered.append(float(seen.sum()) / max(int(outside.sum()), 1))
            reprojected.append(_psnr(frame.rgb, photo, seen))
            rendered.append(_psnr(render, photo, seen))
        result[name] = {
            "outside_seen_by_other_windows": _mean(covered),
            "psnr_reprojected_there": _mean(reprojected),
            "psnr_plain_render_there": _mean(rendered),
        }
    return result
