"""What the live viewer draws, as pure functions of the job's data (no viewer state): the Gaussians
in viser's splat format, camera poses and fields of view for frusta, the frame a scene is viewed
in, photo thumbnails, and the server-side render modes (depth / alpha / normals / unreliable).
Also the viewer's palette and its list of render modes. :mod:`app.viewer` shows them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from genfusion.data.types import Camera
from genfusion.errors import GenFusionError

RENDER_MODES = ("RGB (splats)", "depth", "alpha", "normals", "unreliable")
UNRELIABLE_TINT = np.array([255, 0, 200], dtype=np.float32)  # what the fusion loop would repair
TRAIN_COLOR = (200, 200, 200)
TEST_COLOR = (60, 140, 255)
KEYFRAME_COLOR = (255, 150, 0)
GENERATED_COLOR = (230, 60, 200)  # the fusion round's novel views (rendered, repaired, trained on)


# ----------------------------------------------------------------------------- conversions


def viser_gaussians(
    splats: Mapping[str, torch.Tensor], method: str, max_gaussians: int | None = None
) -> dict[str, np.ndarray]:
    """Raw gsplat-style parameters -> what ``scene.add_gaussian_splats`` takes: centres (N, 3),
    covariances (N, 3, 3), base colours (N, 3) and opacities (N, 1). 2DGS surfels become flat 3D
    Gaussians (as in the .ply export); beyond ``max_gaussians`` the least visible are left out."""
    from genfusion.export.splats import prepare_splats
    from genfusion.splat.projection import quat_to_rotmat
    from genfusion.splat.sh import sh_to_rgb

    data = prepare_splats(splats, method=method)
    opacities = torch.sigmoid(data.opacities)
    means, quats, log_scales, sh0 = data.means, data.quats, data.scales, data.sh0
    if max_gaussians is not None and data.num > max_gaussians:
        importance = opacities * torch.exp(log_scales.sum(dim=1))
        keep = torch.topk(importance, max_gaussians).indices
        means, quats, log_scales, sh0, opacities = (
            t[keep] for t in (means, quats, log_scales, sh0, opacities)
        )
    rotations = quat_to_rotmat(quats)
    variances = torch.exp(2.0 * log_scales)
    covariances = (rotations * variances[:, None, :]) @ rotations.transpose(1, 2)
    return {
        "centers": means.numpy().astype(np.float32),
        "covariances": covariances.numpy().astype(np.float32),
        "rgbs": sh_to_rgb(sh0[:, 0, :]).clamp(0, 1).numpy().astype(np.float32),
        "opacities": opacities[:, None].numpy().astype(np.float32),
    }


def wxyz_of(rotation: np.ndarray) -> np.ndarray:
    import viser.transforms as vtf

    return vtf.SO3.from_matrix(np.asarray(rotation, dtype=np.float64)).wxyz


def vertical_fov(camera: Camera) -> float:
    return 2.0 * math.atan(0.5 * camera.height / camera.fy)


def scene_frame(cameras: list[Camera]) -> tuple[np.ndarray, np.ndarray, float]:
    """(up direction, a point the cameras look at, scene size) from the input cameras: up is the
    mean of the cameras' up axes (-y in OpenCV), the target the point nearest to every optical
    axis (least squares), or the centroid for nearly parallel axes."""
    rotations = np.stack([c.rotation for c in cameras])
    centres = np.stack([c.center for c in cameras])
    up = -rotations[:, :, 1].mean(axis=0)
    up = up / max(np.linalg.norm(up), 1e-9)
    forwards = rotations[:, :, 2]
    system = np.zeros((3, 3))
    rhs = np.zeros(3)
    for centre, forward in zip(centres, forwards, strict=True):
        projector = np.eye(3) - np.outer(forward, forward)
        system += projector
        rhs += projector @ centre
    size = float(np.linalg.norm(centres.max(axis=0) - centres.min(axis=0))) or 1.0
    target = centres.mean(axis=0)
    if np.linalg.cond(system) < 1e6:
        solved = np.linalg.solve(system, rhs)
        if np.linalg.norm(solved - target) < 3 * size:
            target = solved
    return up, target, size


def thumbnail(camera: Camera, max_side: int = 96) -> np.ndarray | None:
    """The camera's photo as a small uint8 image (None when it cannot be read)."""
    import cv2

    from genfusion.data.images import load_image

    try:
        image = load_image(camera)
    except GenFusionError:
        return None
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale < 1.0:
        size = (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def colorize(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A [H, W] array -> [H, W, 3] uint8, percentile-normalised through a blue-yellow ramp."""
    stops = np.array([[0.05, 0.05, 0.3], [0.1, 0.4, 0.8], [0.2, 0.8, 0.6], [0.95, 0.9, 0.25]])
    out = np.zeros((*values.shape, 3), dtype=np.float32)
    if valid.any():
        lo, hi = np.percentile(values[valid], [2, 98])
        t = np.clip((values - lo) / max(hi - lo, 1e-9), 0, 1) * (len(stops) - 1)
        index = np.minimum(t.astype(int), len(stops) - 2)
        frac = (t - index)[..., None]
        out = stops[index] * (1 - frac) + stops[index + 1] * frac
        out[~valid] = 0
    return (out * 255).astype(np.uint8)


def render_mode_image(
    splats: Mapping[str, torch.Tensor], method: str, camera: Camera, mode: str
) -> np.ndarray:
    """Depth, alpha, normals or the unreliable pixels of ``splats`` seen from ``camera``, as a uint8
    image. ``unreliable``: the colour render with the pixels the fusion loop counts as unreliable
    (:func:`genfusion.fusion.expansion.unreliable_mask`: low alpha or no depth) tinted magenta."""
    from genfusion.fusion.expansion import unreliable_mask
    from genfusion.splat.cameras import camera_tensors
    from genfusion.splat.depth_normals import depth_to_normal
    from genfusion.splat.render import render_splats

    viewmats, Ks = camera_tensors([camera], "cpu")
    degree = math.isqrt((splats["shN"].shape[1] if "shN" in splats else 0) + 1) - 1
    with torch.no_grad():
        out = render_splats(splats, viewmats, Ks, camera.width, camera.height, sh_degree=degree, mode=method)
    alpha = out.alpha[0, ..., 0].numpy()
    if mode == "unreliable":
        rgb = out.rgb[0].clamp(0, 1).numpy() * 255
        mask = unreliable_mask(out.alpha[0], out.depth[0]).numpy()
        rgb[mask] = 0.35 * rgb[mask] + 0.65 * UNRELIABLE_TINT
        return rgb.astype(np.uint8)
    if mode == "alpha":
        return (np.repeat(alpha[..., None], 3, axis=2) * 255).astype(np.uint8)
    depth = out.depth[0]
    if mode == "depth":
        return colorize(depth[..., 0].numpy(), alpha > 0.05)
    normals = (
        out.normals
        if out.normals is not None
        else depth_to_normal(depth[None], torch.linalg.inv(viewmats), Ks)
    )
    normals = normals[0].numpy()
    image = ((normals * 0.5 + 0.5) * 255).clip(0, 255).astype(np.uint8)
    image[alpha < 0.05] = 0
    return image


__all__ = [
    "GENERATED_COLOR",
    "KEYFRAME_COLOR",
    "RENDER_MODES",
    "TEST_COLOR",
    "TRAIN_COLOR",
    "UNRELIABLE_TINT",
    "colorize",
    "render_mode_image",
    "scene_frame",
    "thumbnail",
    "vertical_fov",
    "viser_gaussians",
    "wxyz_of",
]
