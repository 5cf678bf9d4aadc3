"""The photo bank and the camera geometry of reprojection: what a novel view may borrow from.

:class:`PhotoBank` stacks the capture's real photos (padded to one size), their rendered depths,
valid masks (the masked protocol's windows) and cameras on one device. The geometry helpers
**back-project** every pixel of a frame with its rendered z-depth (pixel centres at +0.5, OpenCV
axes, as :mod:`genfusion.data.types`) and estimate surface normals from the depth map's
neighbours. Pure tensor code; it imports nothing from ``genfusion.splat`` or ``genfusion.fusion``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genfusion.data.types import Camera
from genfusion.errors import GenFusionError
from genfusion.generation.depth import valid_depth

# ------------------------------------------------------------------------------------ cameras


def camera_matrices(
    cameras: list[Camera], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """``(camtoworld [N, 4, 4], worldtocam [N, 4, 4], K [N, 3, 3])`` float32 of ``cameras``."""
    if not cameras:
        raise GenFusionError("no cameras given")
    c2w = np.stack([c.camtoworld for c in cameras])
    K = np.stack([c.K for c in cameras])
    c2w_t = torch.as_tensor(c2w, dtype=torch.float64)
    w2c = torch.linalg.inv(c2w_t)
    return (
        c2w_t.float().to(device),
        w2c.float().to(device),
        torch.as_tensor(K, dtype=torch.float32).to(device),
    )


@dataclass
class PhotoBank:
    """The real photos a novel view may borrow from, padded to one size and stacked.

    Build it with :meth:`build`. In the masked protocol the photos are the training windows (with
    their shifted-principal-point cameras); full frames with a ``valid`` mask work too.
    """

    images: Tensor  # [N, 3, Hm, Wm] colour in [0, 1], zero-padded
    depths: Tensor  # [N, 1, Hm, Wm] the reconstruction's rendered depth of each photo; 0 = none
    valid: Tensor  # [N, 1, Hm, Wm] float 1 where the photo's pixel may be used (0 in the padding)
    worldtocam: Tensor  # [N, 4, 4]
    Ks: Tensor  # [N, 3, 3] intrinsics in pixels (pixel centres at +0.5)
    centers: Tensor  # [N, 3] camera centres, world
    sizes: Tensor  # [N, 2] (width, height) of each photo (before padding), float

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    @classmethod
    def build(
        cls,
        images: list[Any],
        cameras: list[Camera],
        depths: list[Any],
        valid: list[Any] | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> PhotoBank:
        """Stack photos [h, w, 3], their cameras, rendered depths [h, w] and optional bool masks.

        ``device`` defaults to the first image's device (numpy: CPU). Depth that is NaN, inf or
        <= 0 means "unknown": such pixels can never confirm visibility.
        """
        if not (len(images) == len(cameras) == len(depths)) or not images:
            raise GenFusionError(
                f"a photo bank needs as many images, cameras and depths (got {len(images)}, "
                f"{len(cameras)}, {len(depths)}), and at least one"
            )
        if valid is not None and len(valid) != len(images):
            raise GenFusionError(f"valid masks: {len(valid)} for {len(images)} photos")
        first = images[0]
        if device is None:
            device = first.device if isinstance(first, Tensor) else torch.device("cpu")
        device = torch.device(device)
        hm = max(c.height for c in cameras)
        wm = max(c.width for c in cameras)
        n = len(cameras)
        out_images = torch.zeros(n, 3, hm, wm, device=device)
        out_depths = torch.zeros(n, 1, hm, wm, device=device)
        out_valid = torch.zeros(n, 1, hm, wm, device=device)
        for i, camera in enumerate(cameras):
            h, w = camera.height, camera.width
            image = torch.as_tensor(np.asarray(images[i]) if not isinstance(images[i], Tensor) else images[i])
            depth = torch.as_tensor(np.asarray(depths[i]) if not isinstance(depths[i], Tensor) else depths[i])
            if image.dtype == torch.uint8:
                image = image.float() / 255.0
            image, depth = image.float().to(device), depth.float().to(device)
            if depth.ndim == 3 and depth.shape[-1] == 1:
                depth = depth[..., 0]
            if tuple(image.shape) != (h, w, 3) or tuple(depth.shape) != (h, w):
                raise GenFusionError(
                    f"photo {i} ({camera.name or 'unnamed'}): image {tuple(image.shape)} and depth "
                    f"{tuple(depth.shape)} must be ({h}, {w}, 3) and ({h}, {w}) as its camera says"
                )
            ok = torch.isfinite(image).all(dim=-1)
            if valid is not None:
                mask = torch.as_tensor(np.asarray(valid[i]) if not isinstance(valid[i], Tensor) else valid[i])
                if tuple(mask.shape) != (h, w):
                    raise GenFusionError(f"photo {i}: valid mask {tuple(mask.shape)}, expected ({h}, {w})")
                ok &= mask.to(device).bool()
            out_images[i, :, :h, :w] = torch.nan_to_num(image, nan=0.0).clamp(0, 1).permute(2, 0, 1)
            out_depths[i, 0, :h, :w] = torch.where(valid_depth(depth), depth, torch.zeros_like(depth))
            out_valid[i, 0, :h, :w] = ok.float()
        c2w, w2c, Ks = camera_matrices(cameras, device)
        sizes = torch.tensor([[c.width, c.height] for c in cameras], dtype=torch.float32, device=device)
        return cls(out_images, out_depths, out_valid, w2c, Ks, c2w[:, :3, 3].contiguous(), sizes)

    def subset(self, index: Tensor) -> PhotoBank:
        return PhotoBank(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


# ------------------------------------------------------------------------------------ geometry


def pixel_rays(K: Tensor, height: int, width: int) -> Tensor:
    """[H, W, 3] camera-frame rays with z = 1 through the pixel centres (+0.5 convention)."""
    device = K.device
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    x = (u - K[0, 2] - K[0, 1] * (v - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def backproject_depth(depth: Tensor, K: Tensor, camtoworld: Tensor) -> tuple[Tensor, Tensor]:
    """World points [H, W, 3] of a z-depth map [H, W], and bool [H, W] where the depth is valid."""
    valid = valid_depth(depth)
    safe = torch.where(valid, depth, torch.zeros_like(depth))
    cam = pixel_rays(K, *depth.shape) * safe[..., None]
    world = cam @ camtoworld[:3, :3].T + camtoworld[:3, 3]
    return world, valid


def depth_normals(points: Tensor, valid: Tensor, center: Tensor, *, max_jump: float = 0.1) -> Tensor:
    """Unit normals [H, W, 3] of back-projected ``points``, facing the camera at ``center``.

    Central differences (one-sided at borders and next to invalid pixels or depth jumps larger
    than ``max_jump`` x the distance to the camera); where no tangent pair exists the normal is
    the direction back to the camera (treated as frontal).
    """
    dist = (points - center).norm(dim=-1).clamp_min(1e-12)

    def tangent(dim: int) -> Tensor:
        n = points.shape[dim]
        if n < 2:
            return torch.zeros_like(points), torch.zeros_like(valid)
        fwd = points.narrow(dim, 1, n - 1) - points.narrow(dim, 0, n - 1)  # p[i+1] - p[i]
        ok = valid.narrow(dim, 1, n - 1) & valid.narrow(dim, 0, n - 1)
        ok &= fwd.norm(dim=-1) <= max_jump * dist.narrow(dim, 0, n - 1)
        fwd = torch.where(ok[..., None], fwd, torch.zeros_like(fwd))
        # per pixel: the sum of the valid forward and backward differences
        zeros = torch.zeros_like(points.narrow(dim, 0, 1))
        after = torch.cat([fwd, zeros], dim=dim)  # p[i+1] - p[i] at i
        before = torch.cat([zeros, fwd], dim=dim)  # p[i] - p[i-1] at i
        ok_after = torch.cat([ok, torch.zeros_like(ok.narrow(dim, 0, 1))], dim=dim)
        ok_before = torch.cat([torch.zeros_like(ok.narrow(dim, 0, 1)), ok], dim=dim)
        return after + before, ok_after | ok_before

    tx, okx = tangent(1)
    ty, oky = tangent(0)
    normal = torch.cross(tx, ty, dim=-1)
    to_camera = (center - points) / dist[..., None]
    length = normal.norm(dim=-1)
    ok = okx & oky & valid & (length > 1e-12)
    normal = torch.where(ok[..., None], normal / length.clamp_min(1e-12)[..., None], to_camera)
    flip = (normal * to_camera).sum(dim=-1) < 0
    return torch.where(flip[..., None], -normal, normal)


__all__ = ["PhotoBank", "backproject_depth", "camera_matrices", "depth_normals", "pixel_rays"]
