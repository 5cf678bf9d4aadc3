"""COLMAP parsing: camera models against pycolmap's own projection, binary/text models written by
pycolmap parsed by ours, and ours read by pycolmap."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from genfusion.data import load_scene
from genfusion.data.colmap import colmap_to_opencv, read_model
from genfusion.data.writers import write_colmap_binary
from genfusion.errors import GenFusionError

# model -> parameters (focal(s), principal point, then distortion) for a 120x90 image
MODEL_PARAMS = {
    "SIMPLE_PINHOLE": [100.0, 59.0, 46.0],
    "PINHOLE": [100.0, 104.0, 59.0, 46.0],
    "SIMPLE_RADIAL": [100.0, 59.0, 46.0, 0.08],
    "RADIAL": [100.0, 59.0, 46.0, 0.08, -0.03],
    "OPENCV": [100.0, 104.0, 59.0, 46.0, 0.08, -0.03, 0.002, -0.001],
    "FULL_OPENCV": [100.0, 104.0, 59.0, 46.0, 0.08, -0.03, 0.002, -0.001, 0.01, 0.02, -0.01, 0.005],
}


@pytest.mark.parametrize("model", list(MODEL_PARAMS))
def test_camera_model_matches_pycolmap_projection(model: str):
    """The OpenCV (K, distortion) we map each model to projects points where COLMAP does
    (cv2 puts the centre of pixel (0, 0) at (0, 0), COLMAP and the project at (0.5, 0.5))."""
    params = np.array(MODEL_PARAMS[model])
    colmap_camera = pycolmap.Camera(model=model, width=120, height=90, params=params)
    K, distortion = colmap_to_opencv(model, params)
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-0.5, 0.5, (50, 2)), np.ones(50)] * rng.uniform(1, 5, (50, 1))
    expected = colmap_camera.img_from_cam(points)
    K_opencv = K.copy()
    K_opencv[:2, 2] -= 0.5
    projected, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K_opencv, distortion)
    np.testing.assert_allclose(projected[:, 0] + 0.5, expected, atol=1e-9)
    assert (distortion is None) == (model in ("SIMPLE_PINHOLE", "PINHOLE"))


@pytest.mark.parametrize("model", ["OPENCV_FISHEYE", "FOV", "SIMPLE_RADIAL_FISHEYE", "THIN_PRISM_FISHEYE"])
def test_fisheye_models_are_refused(model: str):
    with pytest.raises(GenFusionError, match=f"camera model {model} is not supported.*undistort"):
        colmap_to_opencv(model, np.zeros(12), "cameras.bin")


def _pycolmap_model(folder: Path) -> pycolmap.Reconstruction:
    """A reconstruction with one camera per supported model, 6 images, 40 coloured points,
    with matching little image files under ``folder/images``."""
    rng = np.random.default_rng(1)
    rec = pycolmap.Reconstruction()
    (folder / "images").mkdir(parents=True)
    for camera_id, (model, params) in enumerate(MODEL_PARAMS.items(), start=1):
        rec.add_camera_with_trivial_rig(
            pycolmap.Camera(model=model, width=120, height=90, params=params, camera_id=camera_id)
        )
        rotation = Rotation.random(random_state=camera_id).as_quat()  # x, y, z, w
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(rotation), rng.normal(size=3))
        keypoints = pycolmap.Point2DList([pycolmap.Point2D(rng.uniform(0, 90, 2)) for _ in range(80)])
        image = pycolmap.Image(
            name=f"view_{camera_id:02d}.png", camera_id=camera_id, image_id=camera_id * 10, points2D=keypoints
        )
        rec.add_image_with_trivial_frame(image, pose)
        cv2.imwrite(str(folder / "images" / image.name), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    image_ids = sorted(rec.images)
    free = dict.fromkeys(image_ids, 0)  # next unused keypoint of each image
    for _ in range(40):
        track = pycolmap.Track()  # 1-3 images (image id, keypoint index), the first one twice
        chosen = [int(i) for i in rng.choice(image_ids, size=int(rng.integers(1, 4)), replace=False)]
        for image_id in [*chosen, chosen[0]]:
            track.add_element(image_id, free[image_id])
            free[image_id] += 1
        rec.add_point3D(rng.normal(size=3), track, rng.integers(0, 255, 3).astype(np.uint8))
    return rec


@pytest.mark.parametrize("kind", ["binary", "text"])
def test_parser_agrees_with_pycolmap(tmp_path: Path, kind: str):
    rec = _pycolmap_model(tmp_path)
    model_dir = tmp_path / "sparse" / "0"
    model_dir.mkdir(parents=True)
    (rec.write_binary if kind == "binary" else rec.write_text)(str(model_dir))
    ours = read_model(model_dir)
    assert set(ours.cameras) == set(rec.cameras)
    for camera_id, camera in rec.cameras.items():
        assert ours.cameras[camera_id].model == camera.model.name
        assert (ours.cameras[camera_id].width, ours.cameras[camera_id].height) == (
            camera.width,
            camera.height,
        )
        np.testing.assert_allclose(ours.cameras[camera_id].params, camera.params, atol=1e-12)
    assert set(ours.images) == set(rec.images)
    for image_id, image in rec.images.items():
        mine = ours.images[image_id]
        assert mine.name == image.name and mine.camera_id == image.camera_id
        np.testing.assert_allclose(mine.tvec, image.cam_from_world().translation, atol=1e-12)
        R = image.cam_from_world().rotation.matrix()
        from genfusion.data.geometry import qvec_to_rotmat

        np.testing.assert_allclose(qvec_to_rotmat(mine.qvec), R, atol=1e-12)
    order = np.argsort(ours.point_ids)
    ids = sorted(rec.points3D)
    np.testing.assert_allclose(ours.points[order], [rec.points3D[i].xyz for i in ids], atol=1e-12)
    np.testing.assert_array_equal(ours.colors[order], [rec.points3D[i].color for i in ids])
    for k, point_id in zip(order, ids, strict=True):  # tracks: the image ids that saw each point
        expected = sorted({e.image_id for e in rec.points3D[point_id].track.elements})
        assert ours.tracks[k].tolist() == expected

    scene = load_scene(tmp_path, undistort=False, cache_dir=tmp_path / "cache")
    assert scene.format == "colmap" and len(scene) == 6 and len(scene.points) == 40
    # tracks as indices of the name-sorted cameras (view_01 .. view_06 have image ids 10 .. 60)
    tracks = scene.point_tracks
    for k in range(len(scene.points)):
        cameras = tracks.cameras[tracks.offsets[k] : tracks.offsets[k + 1]]
        assert [int(scene.cameras[c].name[5:7]) * 10 for c in cameras] == ours.tracks[k].tolist()
    for cam in scene.cameras:  # camtoworld is the inverse of COLMAP's cam_from_world
        image = rec.find_image_with_name(cam.name)
        world_from_cam = image.cam_from_world().inverse()
        np.testing.assert_allclose(cam.rotation, world_from_cam.rotation.matrix(), atol=1e-10)
        np.testing.assert_allclose(cam.center, image.projection_center(), atol=1e-10)


def test_pycolmap_reads_our_binary(tmp_path: Path):
    rec = _pycolmap_model(tmp_path)
    model_dir = tmp_path / "sparse" / "0"
    model_dir.mkdir(parents=True)
    rec.write_text(str(model_dir))
    scene = load_scene(tmp_path, undistort=False, cache_dir=tmp_path / "cache")
    ours_dir = tmp_path / "ours"
    write_colmap_binary(scene, ours_dir)
    back = pycolmap.Reconstruction(str(ours_dir))
    assert back.num_images() == 6 and back.num_points3D() == 40
    for cam in scene.cameras:
        image = back.find_image_with_name(cam.name)
        np.testing.assert_allclose(image.projection_center(), cam.center, atol=1e-10)
        original = rec.cameras[rec.find_image_with_name(cam.name).camera_id]
        written = back.cameras[image.camera_id]
        # pinhole-family models come back as PINHOLE/OPENCV/FULL_OPENCV with equal projection
        points = np.array([[0.1, -0.2, 1.0], [-0.3, 0.25, 2.0], [0.4, 0.3, 1.5]])
        np.testing.assert_allclose(written.img_from_cam(points), original.img_from_cam(points), atol=1e-9)


@pytest.mark.parametrize("name", ["cameras.bin", "images.bin", "points3D.bin"])
def test_truncated_binary_model_is_a_clear_error(tmp_path: Path, name: str):
    rec = _pycolmap_model(tmp_path)
    model_dir = tmp_path / "sparse" / "0"
    model_dir.mkdir(parents=True)
    rec.write_binary(str(model_dir))
    data = (model_dir / name).read_bytes()
    (model_dir / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(GenFusionError, match=f"{name}.*ends early.*Re-export"):
        load_scene(tmp_path)
