"""Round trips: fox and fern re-expressed as COLMAP text, COLMAP binary and transforms.json by the
writers, read back: centres, rotations and intrinsics agree to 1e-5."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from genfusion.data import Scene, load_image, load_scene
from genfusion.data.writers import export_images, write_colmap_binary, write_colmap_text, write_transforms


def _assert_same_cameras(a: Scene, b: Scene) -> None:
    assert len(a) == len(b)
    by_file = {c.image_path.resolve(): c for c in b.cameras}
    for cam in a.cameras:
        other = by_file[cam.image_path.resolve()]
        np.testing.assert_allclose(other.center, cam.center, atol=1e-5)
        np.testing.assert_allclose(other.rotation, cam.rotation, atol=1e-5)
        np.testing.assert_allclose(other.K, cam.K, atol=1e-5)
        assert (other.width, other.height) == (cam.width, cam.height)
        if cam.distortion is None:
            assert other.distortion is None
        else:
            np.testing.assert_allclose(other.distortion[: len(cam.distortion)], cam.distortion, atol=1e-12)


def _colmap_copy(scene: Scene, out: Path, writer) -> Path:
    """A COLMAP project at ``out`` whose images/ links to the scene's image folder."""
    out.mkdir()
    os.symlink(scene.cameras[0].image_path.parent, out / "images")
    writer(scene, out / "sparse" / "0")
    return out


@pytest.mark.parametrize("writer", [write_colmap_text, write_colmap_binary])
@pytest.mark.parametrize("capture", ["fox", "fern"])
def test_colmap_round_trip(capture: str, writer, fox_dir: Path, fern_dir: Path, tmp_path: Path):
    source = fox_dir if capture == "fox" else fern_dir
    scene = load_scene(source, undistort=False, downscale=1 if capture == "fox" else 4, cache_dir=tmp_path)
    folder = _colmap_copy(scene, tmp_path / "colmap", writer)
    back = load_scene(folder, undistort=False, cache_dir=tmp_path)
    assert back.format == "colmap"
    _assert_same_cameras(scene, back)


@pytest.mark.parametrize("capture", ["fox", "fern"])
def test_transforms_round_trip(capture: str, fox_dir: Path, fern_dir: Path, tmp_path: Path):
    source = fox_dir if capture == "fox" else fern_dir
    scene = load_scene(source, undistort=False, cache_dir=tmp_path)
    json_path = write_transforms(scene, tmp_path / "out" / "transforms.json")
    back = load_scene(json_path.parent, undistort=False, cache_dir=tmp_path)
    assert back.format == "transforms"
    _assert_same_cameras(scene, back)
    assert back.aabb_scale == scene.aabb_scale


def test_points_survive_every_writer(small_fox: Path, tmp_path: Path):
    scene = load_scene(small_fox, undistort=False)
    rng = np.random.default_rng(0)
    scene.points = rng.normal(size=(30, 3))
    scene.point_colors = rng.integers(0, 256, (30, 3)).astype(np.float32) / 255.0
    for writer in (write_colmap_text, write_colmap_binary):
        back = load_scene(_colmap_copy(scene, tmp_path / writer.__name__, writer), undistort=False)
        np.testing.assert_allclose(back.points, scene.points, atol=1e-12)
        np.testing.assert_allclose(back.point_colors, scene.point_colors, atol=1e-6)
    json_path = write_transforms(scene, tmp_path / "ns" / "transforms.json")
    back = load_scene(json_path, undistort=False)
    np.testing.assert_allclose(back.points, scene.points, atol=1e-12)
    np.testing.assert_allclose(back.point_colors, scene.point_colors, atol=1e-6)


def test_export_undistorted_images_then_write(small_fox: Path, tmp_path: Path):
    """An undistorted scene plus its exported images is a pinhole COLMAP scene with the same pixels."""
    scene = load_scene(small_fox, cache_dir=tmp_path / "cache")
    out = tmp_path / "undistorted"
    exported = export_images(scene, out / "images")
    write_colmap_text(exported, out / "sparse" / "0")
    back = load_scene(out, cache_dir=tmp_path / "cache")
    assert all(c.distortion is None for c in back.cameras)
    _assert_same_cameras(exported, back)
    np.testing.assert_array_equal(load_image(back.cameras[2]), load_image(scene.cameras[2]))
    assert not any(p.name.startswith(".") for p in (out / "images").iterdir())  # no temp files left
