"""Training views: the split of a Scene into train / test cameras and their images as tensors.

Images are decoded once and kept in memory as float32 ``[H, W, 3]`` tensors (a 20-view fern at
504x378 is 46 MB). Images come from :func:`genfusion.data.load_image` (undistorted and resized to
each camera), splits from :mod:`genfusion.data.splits`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genfusion.data.images import load_image
from genfusion.data.splits import holdout_split, sparse_split
from genfusion.data.types import Camera, Scene
from genfusion.errors import GenFusionError
from genfusion.splat.config import parse_split


@dataclass
class Views:
    """A set of posed images ready for the renderer (all on one device)."""

    names: list[str]  # camera names, for file names of renders and per-view metrics
    images: list[torch.Tensor]  # [H, W, 3] float32 in [0, 1], one per view
    viewmats: torch.Tensor  # [V, 4, 4] world-to-camera
    Ks: torch.Tensor  # [V, 3, 3] intrinsics in pixels
    sizes: list[tuple[int, int]]  # (width, height) per view

    def __len__(self) -> int:
        return len(self.names)


def split_indices(scene: Scene, split: str) -> tuple[list[int], list[int]]:
    """(train, test) camera indices for a split string (see ``ReconstructConfig.split``)."""
    kind, number = parse_split(split)
    n = len(scene)
    if kind == "all":
        return list(range(n)), []
    if kind == "holdout":
        if n < 2:
            raise GenFusionError(
                f"{scene.root}: a hold-out split needs at least 2 images, the scene has {n}; use --split all"
            )
        result = holdout_split(scene, every=number)
    else:
        if number >= n:
            raise GenFusionError(
                f"{scene.root}: --split sparse{number} needs more than {number} images, the scene has {n}"
            )
        result = sparse_split(scene, number)
    train, test = [int(i) for i in result.train], [int(i) for i in result.test]
    if not train:
        raise GenFusionError(f"{scene.root}: split {split!r} leaves no training views; use --split all")
    return train, test


def make_views(
    cameras: list[Camera],
    device: torch.device | str,
    images: list[np.ndarray | torch.Tensor] | None = None,
) -> Views:
    """Views for ``cameras``; ``images`` given in memory skip reading the files."""
    if images is None:
        images = [load_image(c) for c in cameras]
    tensors = [torch.as_tensor(np.asarray(im, dtype=np.float32)).to(device) for im in images]
    for camera, image in zip(cameras, tensors, strict=True):
        if tuple(image.shape) != (camera.height, camera.width, 3):
            raise GenFusionError(
                f"image of camera {camera.name!r} is {tuple(image.shape)}, expected "
                f"({camera.height}, {camera.width}, 3)"
            )
    if cameras:
        viewmats = torch.as_tensor(np.stack([c.worldtocam for c in cameras]), dtype=torch.float32)
        Ks = torch.as_tensor(np.stack([c.K for c in cameras]), dtype=torch.float32)
    else:
        viewmats, Ks = torch.zeros(0, 4, 4), torch.zeros(0, 3, 3)
    return Views(
        names=[c.name or f"view{i:03d}" for i, c in enumerate(cameras)],
        images=tensors,
        viewmats=viewmats.to(device),
        Ks=Ks.to(device),
        sizes=[(c.width, c.height) for c in cameras],
    )


def view_order(num_views: int, step: int, seed: int) -> int:
    """The view trained at ``step``: a fresh random permutation every epoch, derived from
    (seed, epoch) only, so a resumed run visits the same views as an uninterrupted one."""
    epoch, position = divmod(step, num_views)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randperm(num_views, generator=generator)[position])
