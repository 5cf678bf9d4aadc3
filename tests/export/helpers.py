"""Small synthetic splats and cameras shared by the export tests."""

from __future__ import annotations

import math

import numpy as np
import torch


def random_splats(
    n: int = 64, sh_degree: int = 3, seed: int = 0, spread: float = 1.0
) -> dict[str, torch.Tensor]:
    """gsplat-style raw parameters of ``n`` Gaussians around the origin."""
    gen = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    return {
        "means": (torch.rand(n, 3, generator=gen) - 0.5) * 2 * spread,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": torch.log(torch.rand(n, 3, generator=gen) * 0.15 + 0.05),
        "opacities": torch.randn(n, generator=gen) + 1.0,
        "sh0": torch.randn(n, 1, 3, generator=gen) * 0.8,
        "shN": torch.randn(n, k - 1, 3, generator=gen) * 0.1,
    }


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """OpenCV camera-to-world (x right, y down, z forward) looking from ``eye`` at ``target``."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(up, z)
    if np.linalg.norm(x) < 1e-8:
        x = np.cross(np.array([0.0, 0.0, 1.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def intrinsics(width: int, height: int, fov_deg: float = 60.0) -> np.ndarray:
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly evenly spread unit vectors."""
    i = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * i / n)
    azimuth = math.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


def sphere_surfels(n: int = 500, sh0=(1.5, -1.0, -1.0)) -> dict[str, torch.Tensor]:
    """2DGS surfels tangent to the unit sphere (normal = radial), opaque, one colour."""
    from scipy.spatial.transform import Rotation

    normals = fibonacci_sphere(n)
    x = np.cross(normals, [0.3, 0.5, 0.8])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    frames = np.stack([x, np.cross(normals, x), normals], axis=2)  # columns: tangent, tangent, normal
    xyzw = Rotation.from_matrix(frames).as_quat()
    size = math.sqrt(4 * math.pi / n) * 0.7
    return {
        "means": torch.tensor(normals, dtype=torch.float32),
        "quats": torch.tensor(xyzw[:, [3, 0, 1, 2]], dtype=torch.float32),
        "scales": torch.full((n, 3), math.log(size)),
        "opacities": torch.full((n,), 4.0),
        "sh0": torch.tensor([[sh0]], dtype=torch.float32).repeat(n, 1, 1),
        "shN": torch.zeros(n, 0, 3),
    }


def orbit_cameras(count: int, size: int, radius: float = 3.0, fov_deg: float = 50.0):
    """Cameras around the origin (a wavy ring plus top and bottom), all looking at it."""
    from genfusion.data.types import Camera

    K = intrinsics(size, size, fov_deg)
    cameras = []
    for k in range(count):
        a = 2 * math.pi * k / count
        el = 0.6 * math.sin(3 * a)
        eye = radius * np.array([math.cos(a) * math.cos(el), math.sin(a) * math.cos(el), math.sin(el)])
        cameras.append(
            Camera(camtoworld=look_at(eye, up=(0, 0, -1)), K=K, width=size, height=size, name=f"{k}")
        )
    for z in (radius, -radius):
        cameras.append(Camera(camtoworld=look_at((0, 0, z), up=(0, -1, 0)), K=K, width=size, height=size))
    return cameras
