"""Gaussian parameters: initialisation, the gsplat-style ``ParameterDict`` and its optimizers.

Layout (what gsplat's strategies, our renderer and the exports expect)::

    means      [N, 3]      world positions
    quats      [N, 4]      rotations, wxyz, unnormalised
    scales     [N, 3]      log of the standard deviations (2DGS uses the first two)
    opacities  [N]         logit of the opacity
    sh0        [N, 1, 3]   SH degree-0 coefficients (base colour)
    shN        [N, K-1, 3] higher SH coefficients, K = (sh_degree + 1) ** 2

Initialisation follows gsplat's ``simple_trainer``: one Gaussian per sparse point (colour -> sh0),
isotropic size = mean distance to the 3 nearest neighbours, opacity 0.1, random rotation. A scene
without sparse points (LLFF, most transforms.json captures) gets ``init_random_points`` random
points instead: inside the training cameras' view frusta between the near and far bounds when the
scene has them (forward-facing captures), else uniformly in a box of ``init_extent * scene_scale``
around the cameras, like gsplat's ``init_type="random"``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from scipy.spatial import cKDTree

from genfusion.data.types import Scene
from genfusion.progress import ProgressCallback
from genfusion.splat.sh import rgb_to_sh

PARAMETER_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")


def scene_scale_of(scene: Scene) -> float:
    """gsplat/3DGS scene extent: 1.1 x the largest camera distance from the cameras' mean centre.

    A capture whose cameras barely move (or a single camera) falls back to the median near bound,
    or 1.0, so learning rates and densification thresholds never collapse to zero.
    """
    centers = scene.centers
    radius = float(np.linalg.norm(centers - centers.mean(axis=0), axis=1).max()) if len(centers) else 0.0
    if radius < 1e-6:
        if scene.near_far is not None and len(scene.near_far):
            radius = float(np.median(scene.near_far[:, 0]))
        else:
            radius = 1.0
    return 1.1 * radius


def random_points_in_frusta(
    scene: Scene, count: int, generator: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points inside the cameras' view frusta, uniform in disparity between each
    camera's near and far bound (needs ``scene.near_far``); random colours."""
    assert scene.near_far is not None
    cam_idx = generator.integers(0, len(scene), size=count)
    near = np.maximum(scene.near_far[cam_idx, 0], 1e-3)
    far = np.maximum(scene.near_far[cam_idx, 1], near * 1.01)
    disparity = generator.uniform(1.0 / far, 1.0 / near)
    depth = 1.0 / disparity
    widths = np.array([c.width for c in scene.cameras])[cam_idx]
    heights = np.array([c.height for c in scene.cameras])[cam_idx]
    u = generator.uniform(0, 1, count) * widths
    v = generator.uniform(0, 1, count) * heights
    Ks = scene.Ks[cam_idx]
    x = (u - Ks[:, 0, 2]) / Ks[:, 0, 0] * depth
    y = (v - Ks[:, 1, 2]) / Ks[:, 1, 1] * depth
    cam_points = np.stack([x, y, depth, np.ones_like(depth)], axis=1)
    world = np.einsum("nij,nj->ni", scene.camtoworlds[cam_idx], cam_points)[:, :3]
    return world, generator.uniform(0, 1, (count, 3))


def random_points_in_box(
    scene: Scene, count: int, extent: float, scene_scale: float, generator: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points uniform in a cube of half-size ``extent * scene_scale`` centred on the
    cameras' mean centre; random colours."""
    center = scene.centers.mean(axis=0)
    points = center + extent * scene_scale * generator.uniform(-1, 1, (count, 3))
    return points, generator.uniform(0, 1, (count, 3))


def initial_points(
    scene: Scene,
    *,
    random_count: int,
    max_points: int,
    extent: float,
    scene_scale: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Points and colours to start from, plus a note saying where they came from."""
    generator = np.random.default_rng(seed)
    if scene.has_points:
        points = np.asarray(scene.points, dtype=np.float64)
        if scene.point_colors is not None:
            colors = np.asarray(scene.point_colors, dtype=np.float64)
        else:
            colors = np.full_like(points, 0.5)
        finite = np.isfinite(points).all(axis=1)
        points, colors = points[finite], colors[finite]
        if len(points) > max_points:
            keep = generator.choice(len(points), max_points, replace=False)
            points, colors = points[keep], colors[keep]
        return points, colors, f"{len(points)} sparse points"
    if scene.near_far is not None and len(scene.near_far) == len(scene):
        points, colors = random_points_in_frusta(scene, random_count, generator)
        return points, colors, f"{random_count} random points in the camera frusta (no sparse points)"
    points, colors = random_points_in_box(scene, random_count, extent, scene_scale, generator)
    return points, colors, f"{random_count} random points in the scene box (no sparse points)"


def scene_to_start_from(
    scene: Scene, init_points: str, *, photos: bool = True, progress: ProgressCallback | None = None
) -> Scene:
    """The scene whose points :func:`initial_points` starts from, as ``init_points`` says: its own
    sparse points; for a capture without any (and ``photos`` on disk to match), points triangulated
    at its known poses (:func:`genfusion.data.triangulate.scene_with_points`); none for "random"."""
    if init_points == "random":
        return replace(scene, points=None, point_colors=None)
    if scene.has_points or not photos:
        return scene
    from genfusion.data.triangulate import scene_with_points

    return scene_with_points(scene, required=init_points == "triangulate", progress=progress)


def keep_points_seen_by(scene: Scene, train_ids: list[int]) -> tuple[Scene, str]:
    """``scene`` with only the sparse points its training views ``train_ids`` saw
    (:func:`genfusion.data.splits.points_seen_by`), and a note saying how many were kept. The
    sparse-view protocol's start (method.md); none seen leaves no points (random start)."""
    from genfusion.data.splits import points_seen_by

    seen = points_seen_by(scene, train_ids)
    how = "tracks" if scene.point_tracks is not None else "in view"
    note = f"{int(seen.sum())} of {len(seen)} points seen by the {len(train_ids)} training views ({how})"
    if not seen.any():
        return replace(scene, points=None, point_colors=None, point_tracks=None), note
    colors = scene.point_colors[seen] if scene.point_colors is not None else None
    tracks = scene.point_tracks.select_points(seen) if scene.point_tracks is not None else None
    return replace(scene, points=scene.points[seen], point_colors=colors, point_tracks=tracks), note


def nearest_neighbour_distance(points: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean distance of each point to its ``k`` nearest other points (never zero)."""
    if len(points) < 2:
        return np.full(len(points), 0.01)
    k = min(k, len(points) - 1)
    distances, _ = cKDTree(points).query(points, k=k + 1)
    mean = np.sqrt((distances[:, 1:] ** 2).mean(axis=1))
    positive = mean[mean > 0]
    floor = float(positive.min()) if len(positive) else 0.01
    return np.maximum(mean, floor)


def create_splats(
    points: np.ndarray,
    colors: np.ndarray,
    *,
    sh_degree: int,
    init_opacity: float,
    init_scale: float,
    seed: int,
    device: torch.device | str = "cpu",
) -> torch.nn.ParameterDict:
    """The trainable ``ParameterDict`` for Gaussians at ``points`` with base ``colors``."""
    generator = torch.Generator().manual_seed(seed)
    n = len(points)
    means = torch.as_tensor(points, dtype=torch.float32)
    distance = torch.as_tensor(nearest_neighbour_distance(points), dtype=torch.float32)
    scales = torch.log(distance * init_scale).unsqueeze(-1).repeat(1, 3)
    quats = torch.rand((n, 4), generator=generator)
    opacities = torch.logit(torch.full((n,), float(init_opacity)))
    sh = torch.zeros((n, (sh_degree + 1) ** 2, 3))
    sh[:, 0, :] = rgb_to_sh(torch.as_tensor(colors, dtype=torch.float32).clamp(0, 1))
    params = {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "sh0": sh[:, :1, :],
        "shN": sh[:, 1:, :],
    }
    return torch.nn.ParameterDict(
        {name: torch.nn.Parameter(value.contiguous()) for name, value in params.items()}
    ).to(device)


def learning_rates(config, scene_scale: float) -> dict[str, float]:
    """Initial learning rate per parameter (``config`` is a ``ReconstructConfig``)."""
    return {
        "means": config.means_lr * scene_scale,
        "quats": config.quats_lr,
        "scales": config.scales_lr,
        "opacities": config.opacities_lr,
        "sh0": config.sh0_lr,
        "shN": config.shN_lr,
    }


def create_optimizers(splats: torch.nn.ParameterDict, rates: dict[str, float]) -> dict[str, torch.optim.Adam]:
    """One Adam per parameter (what gsplat's strategies expect: one group, one tensor each)."""
    return {
        name: torch.optim.Adam([{"params": splats[name], "lr": rates[name], "name": name}], eps=1e-15)
        for name in splats.keys()
    }


def means_lr_at(step: int, initial: float, final_fraction: float, iterations: int) -> float:
    """Exponential decay of the position learning rate to ``final_fraction`` at the last step."""
    t = min(max(step / max(iterations, 1), 0.0), 1.0)
    return initial * math.exp(t * math.log(final_fraction))


def active_sh_degree(step: int, max_degree: int, interval: int) -> int:
    """The SH degree ramp: one more band every ``interval`` steps, up to ``max_degree``."""
    if interval <= 0:
        return max_degree
    return min(step // interval, max_degree)
