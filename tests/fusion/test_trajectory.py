"""Novel camera paths: the sparse-view ellipse (geometry, per-round tilt), orbits, look-further
paths, the masked protocol's full frames, and paths surviving a camera_path.json round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from genfusion.data.camera_path import read_camera_path, write_camera_path
from genfusion.data.splits import masked_split
from genfusion.data.types import Camera, Scene
from genfusion.errors import GenFusionError
from genfusion.fusion.trajectory import (
    camera_up,
    ellipse_path,
    frame_name,
    full_frame_path,
    interpolate_path,
    look_at,
    look_further_path,
    orbit_path,
    scene_focus,
)

UP = np.array([0.0, 0.0, 1.0])  # world up of the synthetic captures (z up, like a COLMAP scene)
TARGET = np.array([0.5, -0.2, 0.3])


def K_of(width: int = 64, height: int = 48, fov_deg: float = 60.0) -> np.ndarray:
    f = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])


def ring(
    n: int = 12, a: float = 3.0, b: float = 2.0, height: float = 1.0, phase: float = 0.3
) -> list[Camera]:
    """``n`` cameras on an ellipse (half-axes a, b) ``height`` above TARGET, all looking at it."""
    cams = []
    for i, t in enumerate(phase + 2 * math.pi * np.arange(n) / n):
        eye = TARGET + np.array([a * math.cos(t), b * math.sin(t), height])
        cams.append(Camera(camtoworld=look_at(eye, TARGET, UP), K=K_of(), width=64, height=48, name=f"in{i}"))
    return cams


def centres(cameras: list[Camera]) -> np.ndarray:
    return np.stack([c.center for c in cameras])


def plane_normal(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit normal of the best-fit plane and the largest distance of a point from it."""
    spread = points - points.mean(axis=0)
    normal = np.linalg.svd(spread)[2][2]
    return normal, float(np.abs(spread @ normal).max())


def angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    cos = abs(u @ v) / np.linalg.norm(u) / np.linalg.norm(v)
    return math.degrees(math.acos(min(1.0, cos)))


def assert_look_at(cameras: list[Camera], focus: np.ndarray) -> None:
    for cam in cameras:
        R = cam.rotation
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0)
        view = (focus - cam.center) / np.linalg.norm(focus - cam.center)
        np.testing.assert_allclose(R[:, 2], view, atol=1e-9)  # the optical axis goes through the focus


def test_look_at_is_an_upright_opencv_camera():
    c2w = look_at(np.array([0.0, -3.0, 0.0]), np.zeros(3), UP)
    np.testing.assert_allclose(c2w[:3, 2], [0, 1, 0], atol=1e-12)  # forward
    np.testing.assert_allclose(c2w[:3, 1], [0, 0, -1], atol=1e-12)  # image y points down the world
    np.testing.assert_allclose(c2w[:3, 0], [1, 0, 0], atol=1e-12)  # right-handed: x = y cross z
    straight_down = look_at(np.array([0.0, 0.0, 5.0]), np.zeros(3), UP)  # degenerate up: still a rotation
    np.testing.assert_allclose(straight_down[:3, :3].T @ straight_down[:3, :3], np.eye(3), atol=1e-12)


def test_scene_focus_is_where_the_axes_meet():
    cams = ring(7)
    np.testing.assert_allclose(scene_focus(cams), TARGET, atol=1e-9)
    assert np.linalg.norm(camera_up(cams)) == pytest.approx(1.0)
    assert camera_up(cams) @ UP > 0.8  # cameras look slightly down: their up leans towards world up


def test_scene_focus_of_parallel_cameras_falls_back_in_front():
    c2w = look_at(np.zeros(3), np.array([0.0, 1.0, 0.0]), UP)
    cams = []
    for x in (-1.0, 0.0, 1.0, 2.0):
        pose = c2w.copy()
        pose[:3, 3] = [x, 0.0, 0.0]
        cams.append(Camera(camtoworld=pose, K=K_of(), width=64, height=48))
    focus = scene_focus(cams)
    mean = centres(cams).mean(axis=0)
    median_spread = float(np.median(np.linalg.norm(centres(cams) - mean, axis=1)))
    np.testing.assert_allclose(focus, mean + median_spread * np.array([0.0, 1.0, 0.0]), atol=1e-12)
    np.testing.assert_allclose(scene_focus(cams, fallback_distance=4.0), mean + [0, 4.0, 0], atol=1e-12)


def test_ellipse_geometry():
    cams = ring(12)
    path = ellipse_path(cams, count=85)
    assert len(path) == 85 and path[17].name == "ellipse_r00_f017"
    assert all(c.image_path is None for c in path)
    np.testing.assert_allclose(path[0].K, cams[0].K)  # intrinsics of the reference camera
    assert_look_at(path, TARGET)
    points = centres(path)
    normal, off_plane = plane_normal(points)
    assert off_plane < 1e-9  # a planar curve...
    assert angle_deg(normal, UP) < 1e-6  # ...in the plane of the input centres
    centre = points.mean(axis=0)  # uniform angles: the mean of the samples is the ellipse's centre
    np.testing.assert_allclose(centre, TARGET + [0.0, 0.0, 1.0], atol=1e-9)  # focus, at camera height
    x, y = points[:, 0] - centre[0], points[:, 1] - centre[1]  # the input's axes are world x and y
    inv_sq, *_ = np.linalg.lstsq(np.stack([x**2, y**2], axis=1), np.ones(len(x)), rcond=None)
    np.testing.assert_allclose(inv_sq[0] * x**2 + inv_sq[1] * y**2, 1.0, atol=1e-9)  # an ellipse
    r1, r2 = 1 / np.sqrt(inv_sq)
    assert 2.8 < r1 <= 3.0 and 1.8 < r2 <= 2.0  # axes scaled to the centres' spread
    # the path starts at the reference camera's angle
    start = np.arctan2(y[0] / r2, x[0] / r1)
    np.testing.assert_allclose(start, 0.3, atol=1e-9)
    bigger = ellipse_path(cams, count=85, radius_scale=1.5)
    np.testing.assert_allclose(centres(bigger) - centre, 1.5 * (points - centre), atol=1e-9)


def test_tilt_changes_the_plane_each_round_and_keeps_distances():
    cams = ring(12)
    flat = centres(ellipse_path(cams, count=40))
    normals = {}
    for round_index in range(6):
        path = ellipse_path(cams, count=40, round_index=round_index)
        assert path[3].name == frame_name("ellipse", round_index, 3)
        assert_look_at(path, TARGET)
        points = centres(path)
        normal, off_plane = plane_normal(points)
        assert off_plane < 1e-9
        # a rotation about the focus: every camera keeps its distance to it
        np.testing.assert_allclose(
            np.linalg.norm(points - TARGET, axis=1), np.linalg.norm(flat - TARGET, axis=1), atol=1e-9
        )
        normals[round_index] = normal
        expected = 0.0 if round_index == 0 else 10.0
        assert angle_deg(normal, UP) == pytest.approx(expected, abs=1e-6)
    for i in range(6):
        for j in range(i + 1, 6):
            assert angle_deg(normals[i], normals[j]) > 1.0  # every round a different plane
    tilted = centres(ellipse_path(cams, count=40, tilt_deg=20.0))
    assert angle_deg(plane_normal(tilted)[0], UP) == pytest.approx(20.0, abs=1e-6)
    both = centres(ellipse_path(cams, count=40, tilt_deg=20.0, round_index=3, round_tilt_deg=5.0))
    assert angle_deg(plane_normal(both)[0], UP) <= 25.0 + 1e-6


def test_ellipse_of_three_sparse_views_and_of_one_camera():
    cams = ring(3)
    path = ellipse_path(cams, count=9)
    assert len(path) == 9
    assert_look_at(path, scene_focus(cams))
    single = [ring(5)[0]]
    path = ellipse_path(single, count=8, focus=TARGET)
    assert_look_at(path, TARGET)
    assert plane_normal(centres(path))[1] < 1e-9


def test_orbit_radius_and_elevation():
    cams = ring(8, a=3.0, b=3.0, height=1.0)
    distance = math.hypot(3.0, 1.0)
    path = orbit_path(cams, 36, elevation_deg=30.0, radius_scale=1.5)
    assert len(path) == 36 and path[5].name == "orbit_r00_f005"
    assert_look_at(path, TARGET)
    offsets = centres(path) - TARGET
    np.testing.assert_allclose(np.linalg.norm(offsets, axis=1), 1.5 * distance, atol=1e-9)
    np.testing.assert_allclose(offsets @ UP, 1.5 * distance * math.sin(math.radians(30.0)), atol=1e-9)
    # default elevation: the cameras' own
    default = centres(orbit_path(cams, 12)) - TARGET
    np.testing.assert_allclose(default @ UP, 1.0, atol=1e-9)
    # a half orbit ends opposite its start
    half = centres(orbit_path(cams, 7, arc_deg=180.0)) - TARGET
    np.testing.assert_allclose(half[-1][:2], -half[0][:2], atol=1e-9)


def test_look_further_backs_away_along_the_optical_axis():
    cams = ring(6)
    near = interpolate_path(cams, 20)
    far = look_further_path(cams, 20, distance_scale=2.0, focal_scale=0.8)
    assert [c.name for c in far][:2] == ["further_r00_f000", "further_r00_f001"]
    for a, b in zip(near, far, strict=True):
        np.testing.assert_allclose(b.rotation, a.rotation, atol=1e-12)  # same orientation
        forward = a.rotation[:, 2]
        depth_a, depth_b = (TARGET - a.center) @ forward, (TARGET - b.center) @ forward
        assert depth_b == pytest.approx(2.0 * depth_a)
        np.testing.assert_allclose(np.cross(b.center - a.center, forward), 0.0, atol=1e-9)  # a dolly
        assert b.fx == pytest.approx(0.8 * a.fx) and b.cx == a.cx
    ramp = look_further_path(cams, 20, distance_scale=2.0, ramp=True)
    np.testing.assert_allclose(ramp[0].camtoworld, near[0].camtoworld, atol=1e-12)
    np.testing.assert_allclose(ramp[-1].center, far[-1].center, atol=1e-9)


def test_full_frame_path_is_the_uncropped_training_poses(tmp_path: Path):
    cams = [
        Camera(
            camtoworld=c.camtoworld,
            K=c.K,
            width=96,
            height=54,
            image_path=tmp_path / f"{i}.png",
            name=f"{i}.png",
        )
        for i, c in enumerate(ring(8))
    ]
    scene = Scene(cameras=cams, root=tmp_path, format="test")
    split = masked_split(scene, 0.5)
    path = full_frame_path(scene, split, round_index=1)
    cropped = split.train_cameras(scene)
    assert len(path) == len(split.train) == 4 and path[2].name == "fullframe_r01_f002"
    for frame, index, crop in zip(path, split.train, cropped, strict=True):
        np.testing.assert_allclose(frame.camtoworld, scene.cameras[index].camtoworld)
        np.testing.assert_allclose(frame.K, scene.cameras[index].K)
        assert (frame.width, frame.height) == (96, 54) and (crop.width, crop.height) != (96, 54)
        assert frame.image_path is None  # the hidden full photo cannot be loaded through the path
    split.train.append(99)
    with pytest.raises(GenFusionError, match="outside"):
        full_frame_path(scene, split)


def test_paths_round_trip_through_camera_path_json(tmp_path: Path):
    path = ellipse_path(ring(12), count=85, round_index=2)
    file = write_camera_path(tmp_path / "camera_path.json", path, fps=24)
    back, fps = read_camera_path(file)
    assert fps == 24 and len(back) == 85
    for a, b in zip(path, back, strict=True):
        np.testing.assert_allclose(b.camtoworld, a.camtoworld, atol=1e-12)
        np.testing.assert_allclose(b.K, a.K, atol=1e-9)
    # and a path read from a file can seed the paths of a round
    assert len(interpolate_path(back, 30, round_index=4)) == 30


@pytest.mark.parametrize("bad", ["empty", "count"])
def test_bad_arguments_are_clear(bad):
    with pytest.raises(GenFusionError):
        if bad == "empty":
            ellipse_path([], count=10)
        else:
            orbit_path(ring(4), 0)
