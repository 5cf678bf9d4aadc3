"""Training views: the split of a Scene into train / test cameras and their images as tensors.

Images are decoded once and kept in memory as float32 ``[H, W, 3]`` tensors (a 20-view fern at
504x378 is 46 MB). Images come from :func:`genfusion.data.load_image` (undistorted and resized to
each camera), splits from :mod:`genfusion.data.splits`.

The masked-input protocol (``--split masked2`` / ``masked4``) trains on *cropped* views: each
training photo is cut to its window and its camera's principal point shifted, so a pixel outside
the window is never rendered, let alone compared. Test views are the other frames, whole, and carry
the window the trajectory passes through there, for inside / outside metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genfusion.data.images import load_image
from genfusion.data.splits import CropWindow, Split, holdout_split, masked_split, sparse_split
from genfusion.data.types import Camera, Scene
from genfusion.errors import GenFusionError
from genfusion.splat.cameras import camera_tensors
from genfusion.splat.config import parse_split


@dataclass
class Views:
    """A set of posed images ready for the renderer (all on one device)."""

    names: list[str]  # camera names, for file names of renders and per-view metrics
    images: list[torch.Tensor]  # [H, W, 3] float32 in [0, 1], one per view
    viewmats: torch.Tensor  # [V, 4, 4] world-to-camera
    Ks: torch.Tensor  # [V, 3, 3] intrinsics in pixels
    sizes: list[tuple[int, int]]  # (width, height) per view
    # per view: the masked protocol's window on this full frame (test views), for inside / outside
    # metrics; None where there is none (every view of the other splits)
    windows: list[CropWindow | None] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def window(self, index: int) -> CropWindow | None:
        return None if self.windows is None else self.windows[index]


# a masked split keeps a training frame only through a window of half its width and height
MIN_MASKED_FRAMES = 2
MIN_WINDOW_PX = 8  # a window narrower than this holds too little for SSIM's 11x11 window to mean much


def resolve_split(scene: Scene, split: str) -> Split:
    """The :class:`~genfusion.data.splits.Split` a split string names (``ReconstructConfig.split``)."""
    kind, number = parse_split(split)
    n = len(scene)
    if kind == "all":
        return Split(train=list(range(n)), test=[], method="all")
    if kind == "holdout":
        if n < 2:
            raise GenFusionError(
                f"{scene.root}: a hold-out split needs at least 2 images, the scene has {n}; use --split all"
            )
        result = holdout_split(scene, every=number)
    elif kind in ("masked", "unmasked"):
        if n < number * MIN_MASKED_FRAMES:
            raise GenFusionError(
                f"{scene.root}: --split masked{number} trains on one frame in {number} and needs at "
                f"least {number * MIN_MASKED_FRAMES} frames, the scene has {n}; use --split masked2 or "
                "a longer capture"
            )
        small = [c for c in scene.cameras if min(c.width, c.height) // 2 < MIN_WINDOW_PX]
        if small:
            raise GenFusionError(
                f"{scene.root}: --split {split} crops each training photo to half its width and height, "
                f"and {small[0].name} is only {small[0].width}x{small[0].height} at this downscale "
                f"(windows need at least {MIN_WINDOW_PX} px a side); use a smaller --downscale"
            )
        result = masked_split(scene, 1.0 / number)
        if kind == "unmasked":  # same frames, full photos; test windows kept for inside / outside
            result = Split(result.train, result.test, "unmasked", test_windows=result.test_windows)
    else:
        if number >= n:
            raise GenFusionError(
                f"{scene.root}: --split sparse{number} needs more than {number} images, the scene has {n}"
            )
        result = sparse_split(scene, number)
    if not result.train:
        raise GenFusionError(f"{scene.root}: split {split!r} leaves no training views; use --split all")
    return result


def split_indices(scene: Scene, split: str) -> tuple[list[int], list[int]]:
    """(train, test) camera indices for a split string (see ``ReconstructConfig.split``)."""
    result = resolve_split(scene, split)
    return [int(i) for i in result.train], [int(i) for i in result.test]


def split_views(
    scene: Scene,
    split: Split,
    device: torch.device | str,
    images: list[np.ndarray | torch.Tensor] | None = None,
) -> tuple[Views, Views]:
    """(train, test) views of a split: training views cropped to their windows (masked protocol),
    test views whole with their trajectory windows. ``images`` (one full-frame image per camera of
    ``scene``) skip reading the files."""

    def full_image(i: int) -> np.ndarray | torch.Tensor:
        return load_image(scene.cameras[i]) if images is None else images[i]

    train_images = []
    for i in split.train:
        image = full_image(i)
        window = split.windows.get(i)
        train_images.append(image if window is None else window.crop(image))
    train = make_views(split.train_cameras(scene), device, train_images)
    test = make_views(
        split.test_cameras(scene),
        device,
        [full_image(i) for i in split.test],
        windows=[split.test_windows.get(i) for i in split.test] if split.test_windows else None,
    )
    return train, test


def make_views(
    cameras: list[Camera],
    device: torch.device | str,
    images: list[np.ndarray | torch.Tensor] | None = None,
    *,
    windows: list[CropWindow | None] | None = None,
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
    viewmats, Ks = camera_tensors(cameras, device)
    return Views(
        names=[c.name or f"view{i:03d}" for i, c in enumerate(cameras)],
        images=tensors,
        viewmats=viewmats,
        Ks=Ks,
        sizes=[(c.width, c.height) for c in cameras],
        windows=windows,
    )


def view_order(num_views: int, step: int, seed: int) -> int:
    """The view trained at ``step``: a fresh random permutation every epoch, derived from
    (seed, epoch) only, so a resumed run visits the same views as an uninterrupted one."""
    epoch, position = divmod(step, num_views)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randperm(num_views, generator=generator)[position])
