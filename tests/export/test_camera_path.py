"""nerfstudio camera_path.json reading and smooth trajectories through input cameras."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from genfusion.data.types import Camera
from genfusion.errors import GenFusionError
from genfusion.export.camera_path import even_size, interpolate_cameras, read_camera_path

from .helpers import intrinsics, look_at


def test_reads_nerfstudio_path(tmp_path):
    c2w_cv = look_at((1.0, 2.0, -3.0))
    c2w_gl = c2w_cv @ np.diag([1.0, -1.0, -1.0, 1.0])  # what nerfstudio stores
    data = {
        "render_width": 64, "render_height": 48, "fps": 24, "camera_type": "perspective",
        "camera_path": [{"camera_to_world": c2w_gl.reshape(-1).tolist(), "fov": 60.0, "aspect": 4 / 3}] * 3,
    }  # fmt: skip
    path = tmp_path / "camera_path.json"
    path.write_text(json.dumps(data))
    cameras, fps = read_camera_path(path)
    assert fps == 24 and len(cameras) == 3
    cam = cameras[0]
    np.testing.assert_allclose(cam.camtoworld, c2w_cv, atol=1e-12)
    assert (cam.width, cam.height) == (64, 48)
    assert cam.fy == pytest.approx(24 / math.tan(math.radians(30)))  # vertical fov
    assert (cam.cx, cam.cy) == (32, 24)


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not valid JSON"),
        (json.dumps({"camera_path": []}), "no 'camera_path'"),
        (json.dumps({"camera_type": "fisheye", "camera_path": [{}]}), "perspective"),
        (json.dumps({"camera_path": [{"camera_to_world": [1, 2], "fov": 50}]}), "malformed"),
    ],
)
def test_bad_paths(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(GenFusionError, match=message) as info:
        read_camera_path(path)
    assert str(path) in str(info.value)


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
