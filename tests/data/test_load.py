"""load_scene / detect_format on the real fox (transforms.json + distortion) and fern (LLFF)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from genfusion.data import detect_format, load_image, load_scene
from genfusion.errors import GenFusionError


def test_fox_transforms_with_distortion(fox_dir: Path, tmp_path: Path):
    meta = json.loads((fox_dir / "transforms.json").read_text())
    scene = load_scene(fox_dir, undistort=False, cache_dir=tmp_path)
    assert scene.format == "transforms" and len(scene) == 67 and scene.aabb_scale == 4
    cam = scene.cameras[0]
    assert (cam.width, cam.height) == (1080, 1920)
    # instant-ngp shares the project's pixel convention: K is taken as written
    np.testing.assert_allclose(cam.K, [[1375.52, 0, 554.558], [0, 1374.49, 965.268], [0, 0, 1]], atol=1e-9)
    np.testing.assert_allclose(cam.distortion, [0.0578421, -0.0805099, -0.000980296, 0.00015575])
    # OpenGL -> OpenCV: same centre, camera y and z axes flipped
    gl = np.array(meta["frames"][0]["transform_matrix"])
    assert cam.name == meta["frames"][0]["file_path"]
    np.testing.assert_allclose(cam.center, gl[:3, 3], atol=1e-12)
    np.testing.assert_allclose(cam.rotation, gl[:3, :3] * [1, -1, -1], atol=1e-6)
    assert not scene.has_points and scene.near_far is None and scene.missing_images == []


def test_fox_downscale_and_undistort_on_load(fox_dir: Path, tmp_path: Path):
    raw = load_scene(fox_dir, undistort=False, downscale=4, cache_dir=tmp_path)
    cam = raw.cameras[3]
    assert (cam.width, cam.height) == (270, 480)
    np.testing.assert_allclose(cam.fx, 1375.52 / 4)
    np.testing.assert_allclose(cam.cx, 554.558 / 4)
    image = load_image(cam)
    assert image.shape == (480, 270, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05

    undistorted = load_scene(fox_dir, downscale=4, cache_dir=tmp_path)
    ucam = undistorted.cameras[3]
    assert ucam.distortion is None and ucam.source_distortion is not None
    assert (ucam.width, ucam.height) == (270, 480)
    assert not np.allclose(ucam.K, cam.K)  # the pinhole camera of the undistorted image differs
    uimage = load_image(ucam)
    assert uimage.shape == (480, 270, 3)
    assert np.abs(uimage - image).mean() > 0.005  # the pixels were actually warped
    as_stored = load_image(cam.image_path)  # a path: the file as it is, full size, distorted
    assert as_stored.shape == (1920, 1080, 3) and as_stored.dtype == np.float32


def test_fern_llff(fern_dir: Path, tmp_path: Path):
    raw = np.load(fern_dir / "poses_bounds.npy")
    scene = load_scene(fern_dir, downscale=8, cache_dir=tmp_path)
    assert scene.format == "llff" and len(scene) == 20
    cam = scene.cameras[0]
    assert cam.image_path.parent.name == "images_8" and (cam.width, cam.height) == (504, 378)
    focal = raw[0, 14]
    np.testing.assert_allclose(cam.K, [[focal / 8, 0, 252.0], [0, focal / 8, 189.0], [0, 0, 1]])
    np.testing.assert_allclose(scene.near_far, raw[:, 15:17])
    pose = raw[0, :15].reshape(3, 5)
    # [down, right, back] -> [right, down, forward]
    np.testing.assert_allclose(
        cam.rotation, np.stack([pose[:, 1], pose[:, 0], -pose[:, 2]], axis=1), atol=1e-6
    )
    np.testing.assert_allclose(cam.center, pose[:, 3])
    assert load_image(cam).shape == (378, 504, 3)


def test_fern_without_full_resolution_uses_largest_available(fern_dir: Path, tmp_path: Path):
    scene = load_scene(fern_dir, downscale=1, cache_dir=tmp_path)
    cam = scene.cameras[0]
    assert cam.image_path.parent.name == "images_4" and (cam.width, cam.height) == (1008, 756)
    assert any("images_4" in note for note in scene.notes)
    # downscale 16: read images_8 and halve it on load
    small = load_scene(fern_dir, downscale=16, cache_dir=tmp_path).cameras[0]
    assert small.image_path.parent.name == "images_8" and (small.width, small.height) == (252, 189)
    np.testing.assert_allclose(small.fx, cam.fx / 4)
    assert load_image(small).shape == (189, 252, 3)


def test_detect_format(fox_dir: Path, fern_dir: Path, small_fox: Path):
    assert detect_format(fox_dir) == "transforms"
    assert detect_format(fox_dir / "transforms.json") == "transforms"
    assert detect_format(fern_dir) == "llff"
    scene = load_scene(small_fox / "transforms.json", undistort=False)
    assert len(scene) == 8 and scene.root == small_fox


def test_colmap_preferred_and_images_subdir(small_fox: Path):
    from genfusion.data.writers import write_colmap_text

    scene = load_scene(small_fox, undistort=False)
    write_colmap_text(scene, small_fox / "sparse" / "0")
    assert detect_format(small_fox) == "colmap"
    shutil.copytree(small_fox / "images", small_fox / "photos")
    shutil.rmtree(small_fox / "images")
    with pytest.raises(GenFusionError, match="none of the 8 images"):
        load_scene(small_fox)
    again = load_scene(small_fox, images_subdir="photos", undistort=False)
    assert again.cameras[0].image_path.parent.name == "photos"
    np.testing.assert_allclose(again.camtoworlds, scene.camtoworlds, atol=1e-12)


def test_images_n_folder_is_used_for_colmap(small_fox: Path):
    from genfusion.data.downscale_copy import downscale_transforms_copy
    from genfusion.data.writers import write_colmap_text

    scene = load_scene(small_fox, undistort=False)
    write_colmap_text(scene, small_fox / "sparse" / "0")
    half = downscale_transforms_copy(small_fox, small_fox.parent / "half", factor=2)
    shutil.copytree(half / "images", small_fox / "images_2")
    loaded = load_scene(small_fox, downscale=2, undistort=False)
    cam = loaded.cameras[0]
    assert cam.image_path.parent.name == "images_2"
    assert (cam.width, cam.height) == (68, 120)  # 135x240 halved (rounded like the copy)
    assert load_image(cam).shape == (120, 68, 3)


def test_allow_missing_skips_and_reports(small_fox: Path):
    (small_fox / "images" / "0006.jpg").unlink()
    scene = load_scene(small_fox, undistort=False, allow_missing=True)
    assert len(scene) == 7 and scene.missing_images == ["images/0006.jpg"]
    assert any("missing" in note for note in scene.notes)


def test_extensionless_paths_and_camera_angle(small_fox: Path):
    meta = json.loads((small_fox / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame["file_path"] = frame["file_path"].removesuffix(".jpg")  # instant-ngp style
    for key in ("fl_x", "fl_y", "cx", "cy"):
        meta.pop(key)
    (small_fox / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene(small_fox, undistort=False)
    cam = scene.cameras[0]
    assert cam.image_path.suffix == ".jpg" and cam.image_path.is_file()
    np.testing.assert_allclose(cam.fx, 0.5 * 135 / np.tan(0.5 * meta["camera_angle_x"]))
    np.testing.assert_allclose([cam.cx, cam.cy], [135 / 2, 240 / 2])


def test_per_frame_intrinsics_give_separate_cameras(small_fox: Path):
    meta = json.loads((small_fox / "transforms.json").read_text())
    meta["frames"][0]["fl_x"] = 200.0  # one frame with its own focal length
    (small_fox / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene(small_fox, undistort=False)
    by_name = {c.name: c for c in scene.cameras}
    first = by_name[meta["frames"][0]["file_path"]]
    assert first.fx == 200.0
    assert len({c.camera_id for c in scene.cameras}) == 2
