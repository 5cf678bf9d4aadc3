"""Triangulation at known poses: points land on the known geometry, the readers pick them up, and
a capture it cannot help falls back to random points with a note (or an error when required)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from genfusion.data import load_scene
from genfusion.data.transforms import POINTS_NAME
from genfusion.data.triangulate import TriangulateConfig, scene_with_points, triangulate_points
from genfusion.data.types import Camera, Scene
from genfusion.data.writers import write_points_ply
from genfusion.errors import GenFusionError

WIDTH, HEIGHT = 320, 240


def _look_at(center: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world looking from ``center`` at ``target`` (y roughly down)."""
    forward = (target - center) / np.linalg.norm(target - center)
    right = np.cross(forward, [0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, forward], axis=1)
    c2w[:3, 3] = center
    return c2w


def _plane_photos(folder: Path, texture: np.ndarray, count: int = 6) -> Scene:
    """Photos of the textured plane z = 0 (texture over x, y in [-2, 2]) from cameras 3 units away,
    each rendered exactly by intersecting its pixel rays with the plane."""
    folder.mkdir(parents=True)
    K = np.array([[260.0, 0, WIDTH / 2], [0, 260.0, HEIGHT / 2], [0, 0, 1]])
    u, v = np.meshgrid(np.arange(WIDTH) + 0.5, np.arange(HEIGHT) + 0.5)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    size = texture.shape[0]
    cameras = []
    for i in range(count):
        angle = 2 * np.pi * i / count
        center = np.array([0.6 * np.cos(angle), 0.6 * np.sin(angle), -3.0])
        c2w = _look_at(center, np.array([0.1 * np.sin(angle), 0.0, 0.0]))
        world = rays @ c2w[:3, :3].T
        t = -center[2] / world[..., 2]
        hit = center[:2] + t[..., None] * world[..., :2]
        map_x = ((hit[..., 0] + 2) / 4 * size - 0.5).astype(np.float32)
        map_y = ((hit[..., 1] + 2) / 4 * size - 0.5).astype(np.float32)
        image = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        path = folder / f"{i:03d}.png"
        cv2.imwrite(str(path), image)
        cache = folder / "cache"
        cameras.append(Camera(c2w, K, WIDTH, HEIGHT, image_path=path, name=path.name, cache_dir=cache))
    return Scene(cameras=cameras, root=folder, format="transforms")


@pytest.fixture(scope="module")
def textured_plane(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (128, 128, 3)).astype(np.uint8)
    texture = cv2.resize(cv2.GaussianBlur(noise, (0, 0), 1.0), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    return _plane_photos(tmp_path_factory.mktemp("plane") / "photos", texture)


def test_points_land_on_the_known_plane_with_its_colours(textured_plane: Scene):
    found = triangulate_points(textured_plane, config=TriangulateConfig(num_threads=2))
    assert len(found.points) > 300
    assert found.num_images == 6 and found.mean_track_length >= 2.0
    assert found.mean_reprojection_error < 1.0
    # every kept point is on z = 0 (the scene is 3 units deep, so 1% of the depth is 0.03)
    assert np.percentile(np.abs(found.points[:, 2]), 95) < 0.03
    assert np.abs(found.points[:, :2]).max() < 2.5  # and where the photos look
    # colours are the photos' own (the texture is mid-grey on average)
    assert found.colors.shape == found.points.shape
    assert 0.3 < float(found.colors.mean()) < 0.7


def test_points_are_cached_by_content_and_picked_up_by_the_readers(textured_plane: Scene, tmp_path: Path):
    scene = scene_with_points(textured_plane, config=TriangulateConfig(num_threads=2))
    assert scene.has_points and "triangulated at the known poses from 6 photos" in scene.notes[-1]
    again = scene_with_points(textured_plane, config=TriangulateConfig(num_threads=2))
    assert "(cached)" in again.notes[-1]
    np.testing.assert_allclose(again.points, scene.points, atol=1e-5)
    # a moved camera is another capture: the cache key changes
    moved = Scene(cameras=[*textured_plane.cameras], root=textured_plane.root, format="transforms")
    shifted = moved.cameras[0].camtoworld.copy()
    shifted[0, 3] += 0.01
    moved.cameras[0] = Camera(**{**vars(moved.cameras[0]), "camtoworld": shifted})
    assert "(cached)" not in scene_with_points(moved, config=TriangulateConfig(num_threads=2)).notes[-1]


def test_the_transforms_and_llff_readers_load_sparse_pc_ply(small_fox: Path, fern_dir: Path, tmp_path: Path):
    points = np.array([[0.0, 0.0, 1.0], [1.0, 2.0, 3.0]])
    colors = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]])
    write_points_ply(small_fox / POINTS_NAME, points, colors)
    fox = load_scene(small_fox, cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(fox.points, points)
    np.testing.assert_allclose(fox.point_colors, colors, atol=1 / 255)
    assert any(POINTS_NAME in note for note in fox.notes)
    fern = tmp_path / "fern"
    shutil.copytree(fern_dir, fern)
    assert not load_scene(fern, cache_dir=tmp_path / "c2").has_points
    write_points_ply(fern / POINTS_NAME, points, None)
    np.testing.assert_allclose(load_scene(fern, cache_dir=tmp_path / "c3").points, points)


def test_featureless_photos_fall_back_to_random_points_with_a_note(tmp_path: Path):
    flat = _plane_photos(tmp_path / "flat", np.full((64, 64, 3), 128, np.uint8), count=3)
    with pytest.raises(GenFusionError, match="only 0 points could be triangulated"):
        scene_with_points(flat, required=True)
    scene = scene_with_points(flat)
    assert not scene.has_points and "triangulation at the known poses failed" in scene.notes[-1]
    # the failure is remembered, so the next run does not pay for it again
    assert list((tmp_path / "flat" / "cache" / "points").glob("*.failed"))
    assert scene_with_points(flat).notes[-1] == scene.notes[-1]


def test_the_trainer_starts_from_triangulated_points(textured_plane: Scene):
    from genfusion.splat.config import ReconstructConfig
    from genfusion.splat.trainer import Trainer

    config = ReconstructConfig(method="3dgs", iterations=1, split="all", device="cpu")
    trainer = Trainer(textured_plane, config)
    assert "triangulated at the known poses" in trainer.init_note
    means = trainer.splats["means"].detach().numpy()
    assert np.percentile(np.abs(means[:, 2]), 95) < 0.03  # on the plane, not in a random box
    config = ReconstructConfig(method="3dgs", iterations=1, split="all", init_points="random")
    random = Trainer(textured_plane, config)
    assert "random points" in random.init_note
