"""Gaussian initialisation, learning rates, position decay and the SH ramp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genfusion.data.types import Camera, Scene
from genfusion.splat.config import ReconstructConfig
from genfusion.splat.gaussians import (
    active_sh_degree,
    create_optimizers,
    create_splats,
    initial_points,
    learning_rates,
    means_lr_at,
    nearest_neighbour_distance,
    scene_scale_of,
)
from genfusion.splat.sh import rgb_to_sh, sh_to_rgb


def ring_scene(n: int = 6, radius: float = 2.0, near_far: bool = False, points: bool = False) -> Scene:
    """Cameras on a circle at height 0 looking at the origin (OpenCV axes)."""
    cams = []
    for i in range(n):
        angle = 2 * np.pi * i / n
        center = np.array([radius * np.cos(angle), radius * np.sin(angle), 0.0])
        forward = -center / np.linalg.norm(center)
        down = np.array([0.0, 0.0, -1.0])
        right = np.cross(down, forward)
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([right, down, forward], axis=1)
        c2w[:3, 3] = center
        K = np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]])
        cams.append(Camera(camtoworld=c2w, K=K, width=64, height=48, name=f"c{i}"))
    scene = Scene(cameras=cams, root=Path("."), format="synthetic")
    if near_far:
        scene.near_far = np.tile([[1.0, 3.0]], (n, 1))
    if points:
        rng = np.random.default_rng(0)
        scene.points = rng.uniform(-0.5, 0.5, (100, 3))
        scene.point_colors = rng.uniform(0, 1, (100, 3)).astype(np.float32)
    return scene


def test_sh_colour_round_trip():
    rgb = torch.rand(10, 3)
    assert torch.allclose(sh_to_rgb(rgb_to_sh(rgb)), rgb, atol=1e-6)


def test_scene_scale_is_1p1_times_camera_radius():
    assert scene_scale_of(ring_scene(radius=2.0)) == pytest.approx(2.2)
    single = ring_scene(n=1)
    assert scene_scale_of(single) == pytest.approx(1.1)  # falls back to 1.0 x 1.1


def test_initial_points_prefer_sparse_points():
    scene = ring_scene(points=True)
    pts, cols, note = initial_points(
        scene, random_count=50, max_points=1000, extent=3, scene_scale=2.2, seed=0
    )
    assert np.array_equal(pts, scene.points) and "100 sparse" in note
    pts, _, _ = initial_points(scene, random_count=50, max_points=40, extent=3, scene_scale=2.2, seed=0)
    assert len(pts) == 40


def test_random_points_lie_in_frusta_between_near_and_far():
    scene = ring_scene(near_far=True)
    pts, cols, note = initial_points(
        scene, random_count=500, max_points=10, extent=3, scene_scale=2.2, seed=1
    )
    assert pts.shape == (500, 3) and cols.shape == (500, 3) and "frusta" in note
    # every point projects inside the image of at least one camera at a depth in [near, far]
    inside_any = np.zeros(500, dtype=bool)
    for cam in scene.cameras:
        local = (cam.worldtocam @ np.c_[pts, np.ones(500)].T).T[:, :3]
        z = local[:, 2]
        uv = (cam.K @ local.T).T
        u, v = uv[:, 0] / z, uv[:, 1] / z
        ok = (z >= 1.0 - 1e-6) & (z <= 3.0 + 1e-6) & (u >= 0) & (u <= 64) & (v >= 0) & (v <= 48)
        inside_any |= ok
    assert inside_any.all()


def test_random_points_in_box_without_bounds():
    scene = ring_scene()
    pts, _, note = initial_points(scene, random_count=300, max_points=10, extent=3, scene_scale=2.2, seed=0)
    assert "box" in note and np.abs(pts).max() <= 3 * 2.2 + 1e-9


def test_create_splats_layout_and_sizes():
    grid = np.stack(np.meshgrid(*[np.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    splats = create_splats(
        grid, np.full((64, 3), 0.25), sh_degree=3, init_opacity=0.1, init_scale=1.0, seed=0
    )
    assert splats["means"].shape == (64, 3) and splats["quats"].shape == (64, 4)
    assert splats["sh0"].shape == (64, 1, 3) and splats["shN"].shape == (64, 15, 3)
    assert torch.allclose(torch.sigmoid(splats["opacities"]), torch.tensor(0.1))
    assert torch.allclose(sh_to_rgb(splats["sh0"]), torch.tensor(0.25))
    assert (splats["shN"] == 0).all()
    # unit grid: the three nearest neighbours are at distance 1 for most points
    assert torch.median(splats["scales"]).item() == pytest.approx(0.0, abs=1e-6)
    assert np.all(nearest_neighbour_distance(np.zeros((3, 3))) > 0)  # duplicates never give log(0)


def test_optimizers_have_per_parameter_learning_rates():
    cfg = ReconstructConfig()
    splats = create_splats(
        np.random.rand(10, 3), np.random.rand(10, 3), sh_degree=1, init_opacity=0.1, init_scale=1.0, seed=0
    )
    rates = learning_rates(cfg, scene_scale=2.0)
    opts = create_optimizers(splats, rates)
    assert opts["means"].param_groups[0]["lr"] == pytest.approx(1.6e-4 * 2.0)
    assert opts["shN"].param_groups[0]["lr"] == pytest.approx(2.5e-3 / 20)
    assert opts["opacities"].param_groups[0]["params"][0] is splats["opacities"]


def test_position_lr_decays_exponentially_to_one_percent():
    assert means_lr_at(0, 1.0, 0.01, 100) == pytest.approx(1.0)
    assert means_lr_at(50, 1.0, 0.01, 100) == pytest.approx(0.1)
    assert means_lr_at(100, 1.0, 0.01, 100) == pytest.approx(0.01)


def test_sh_degree_ramp():
    degrees = [active_sh_degree(s, 3, 1000) for s in (0, 999, 1000, 2500, 3000, 9000)]
    assert degrees == [0, 0, 1, 2, 3, 3]
