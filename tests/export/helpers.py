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
