"""nerfstudio camera_path.json reading, writing and validation; smooth trajectories through cameras."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from genfusion.data.camera_path import (
    even_size,
    interpolate_cameras,
    read_camera_path,
    vertical_fov_deg,
    write_camera_path,
)
from genfusion.data.types import Camera
from genfusion.errors import GenFusionError

GL = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV <-> OpenGL camera axes


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """OpenCV camera-to-world looking from ``eye`` at ``target`` (``up`` is the image's -y)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, np.cross(z, x), z, eye
    return c2w


def intrinsics(width: int, height: int, fov_deg: float = 60.0) -> np.ndarray:
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def _entry(c2w_cv: np.ndarray, fov: float = 60.0) -> dict:
    return {"camera_to_world": (c2w_cv @ GL).reshape(-1).tolist(), "fov": fov, "aspect": 4 / 3}


def _write(tmp_path, data) -> object:
    path = tmp_path / "camera_path.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_reads_nerfstudio_path(tmp_path):
    c2w_cv = look_at((1.0, 2.0, -3.0))
    data = {
        "render_width": 64, "render_height": 48, "fps": 24, "camera_type": "perspective",
        "camera_path": [_entry(c2w_cv)] * 3,
    }  # fmt: skip
    cameras, fps = read_camera_path(_write(tmp_path, data))
    assert fps == 24 and len(cameras) == 3
    cam = cameras[0]
    np.testing.assert_allclose(cam.camtoworld, c2w_cv, atol=1e-12)
    assert (cam.width, cam.height) == (64, 48)
    assert cam.fy == pytest.approx(24 / math.tan(math.radians(30)))  # vertical fov
    assert (cam.cx, cam.cy) == (32, 24)


def test_fps_from_seconds_when_only_seconds_is_given(tmp_path):
    data = {"render_height": 48, "seconds": 2.0, "camera_path": [_entry(look_at((0, 0, -2)))] * 6}
    _, fps = read_camera_path(_write(tmp_path, data))
    assert fps == pytest.approx(3.0)


def test_write_then_read_round_trips(tmp_path):
    K = intrinsics(80, 60, fov_deg=55.0)
    eyes = [(2.0 * math.cos(a), -0.5, 2.0 * math.sin(a)) for a in np.linspace(0, 2.5, 7)]
    cameras = [
        Camera(camtoworld=look_at(e), K=K, width=80, height=60, name=f"c{i}") for i, e in enumerate(eyes)
    ]
    path = write_camera_path(tmp_path / "out" / "camera_path.json", cameras, fps=12)
    data = json.loads(path.read_text())
    assert data["seconds"] == pytest.approx(7 / 12) and data["camera_type"] == "perspective"
    back, fps = read_camera_path(path)
    assert fps == 12 and len(back) == len(cameras)
    for a, b in zip(cameras, back, strict=True):
        np.testing.assert_allclose(b.camtoworld, a.camtoworld, atol=1e-12)
        np.testing.assert_allclose(b.K, a.K, atol=1e-9)
        assert (b.width, b.height) == (80, 60)
        assert vertical_fov_deg(b) == pytest.approx(vertical_fov_deg(a))
    assert sorted(p.name for p in path.parent.iterdir()) == ["camera_path.json"]  # atomic, no leftovers


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("not json", "not valid JSON"),
        (json.dumps([1, 2]), "no 'camera_path'"),
        (json.dumps({"camera_path": []}), "no 'camera_path'"),
        (json.dumps({"camera_type": "fisheye", "camera_path": [{}]}), "perspective"),
        (json.dumps({"camera_path": [{"camera_to_world": [1, 2], "fov": 50}]}), "malformed.*keyframe 0"),
        (json.dumps({"camera_path": [{"fov": 50}]}), "malformed.*keyframe 0"),
        (json.dumps({"camera_path": ["oops"]}), "malformed.*keyframe 0"),
        (json.dumps({"render_height": -4, "camera_path": [{}]}), "render_height"),
    ],
)
def test_bad_files(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(GenFusionError, match=message) as info:
        read_camera_path(path)
    assert str(path) in str(info.value)


def _bad_pose(kind: str) -> list:
    c2w = look_at((0.0, 0.0, -2.0)) @ GL
    if kind == "nan":
        c2w[0, 3] = np.nan
    elif kind == "scaled":
        c2w[:3, :3] *= 1.5
    elif kind == "sheared":
        c2w[0, 1] += 0.3
    elif kind == "mirror":
        c2w[:3, 0] *= -1
    return c2w.reshape(-1).tolist()


@pytest.mark.parametrize(
    "kind, message",
    [("nan", "keyframe 2 .*NaN"), ("scaled", "keyframe 2 .*not orthonormal"),
     ("sheared", "keyframe 2 .*not orthonormal"), ("mirror", "keyframe 2 .*mirror")],
)  # fmt: skip
def test_bad_poses_name_the_keyframe(tmp_path, kind, message):
    good = _entry(look_at((0.0, 0.0, -2.0)))
    bad = dict(good, camera_to_world=_bad_pose(kind))
    path = _write(tmp_path, {"render_height": 48, "camera_path": [good, good, bad, good]})
    with pytest.raises(GenFusionError, match=message) as info:
        read_camera_path(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fov", [0.0, 180.0, -10.0])
def test_bad_fov_names_the_keyframe(tmp_path, fov):
    entries = [_entry(look_at((0.0, 0.0, -2.0))), _entry(look_at((0.0, 0.0, -2.0)), fov=fov)]
    with pytest.raises(GenFusionError, match="keyframe 1 .*fov"):
        read_camera_path(_write(tmp_path, {"camera_path": entries}))


def test_float32_drift_is_snapped_to_a_rotation(tmp_path):
    c2w = look_at((1.0, 0.5, -2.0))
    noisy = (c2w @ GL).astype(np.float32).astype(np.float64) + 1e-5
    cameras, _ = read_camera_path(
        _write(tmp_path, {"camera_path": [{"camera_to_world": noisy.tolist(), "fov": 50}]})
    )
    R = cameras[0].rotation
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)


def test_writer_refuses_nothing_and_nan(tmp_path):
    with pytest.raises(GenFusionError, match="at least one camera"):
        write_camera_path(tmp_path / "p.json", [])
    c2w = look_at((0.0, 0.0, -2.0))
    c2w[1, 3] = np.nan
    with pytest.raises(GenFusionError, match="camera 0"):
        write_camera_path(
            tmp_path / "p.json", [Camera(camtoworld=c2w, K=intrinsics(8, 8), width=8, height=8)]
        )
    assert not (tmp_path / "p.json").exists()


def test_interpolation_passes_through_keyframes_smoothly():
    K = intrinsics(40, 30)
    eyes = [(2.0 * math.cos(a), 0.3 * math.sin(3 * a), 2.0 * math.sin(a)) for a in np.linspace(0, 1.5, 5)]
    keys = [Camera(camtoworld=look_at(e), K=K, width=40, height=30) for e in eyes]
    frames = interpolate_cameras(keys, 41, width=80, height=60)
    assert len(frames) == 41 and all((f.width, f.height) == (80, 60) for f in frames)
    np.testing.assert_allclose(frames[0].camtoworld, keys[0].camtoworld, atol=1e-9)
    np.testing.assert_allclose(frames[-1].camtoworld, keys[-1].camtoworld, atol=1e-9)
    np.testing.assert_allclose(frames[0].K[0, 0], 2 * K[0, 0])  # intrinsics follow the new size
    for f in frames:  # rotations stay orthonormal
        np.testing.assert_allclose(f.rotation @ f.rotation.T, np.eye(3), atol=1e-9)
    centres = np.stack([f.center for f in frames])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 2.0 * steps.mean()  # even speed, no jumps
    # every keyframe centre is (nearly) visited
    for key in keys:
        assert np.linalg.norm(centres - key.center, axis=1).min() < steps.max()


def test_even_size():
    assert even_size(1920, 1080, 960) == (960, 540)
    assert even_size(33, 17) == (32, 16)
    assert even_size(1081, 1921, 500) == (280, 500)
