"""Undistortion: a synthetic photo of known 3D points taken through a distorted lens, undistorted
by load_image, shows each point where the pinhole camera projects it; no black border; cache."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import genfusion.data.images as images_module
from genfusion.data import load_image, load_scene
from genfusion.data.undistort import _maps

WIDTH, HEIGHT = 320, 240
K_CORNER = np.array([[250.0, 0, 163.0], [0, 252.0, 118.0], [0, 0, 1]])  # json and stored K
DISTORTION = np.array([-0.28, 0.09, 0.0015, -0.002, -0.01])  # k1, k2, p1, p2, k3 (strong barrel)


def _opencv_K(K: np.ndarray) -> np.ndarray:
    """K in OpenCV's pixel convention (centre of pixel (0, 0) at (0, 0), not (0.5, 0.5))."""
    K = K.copy()
    K[:2, 2] -= 0.5
    return K


def _points_grid() -> np.ndarray:
    """3D points in the camera frame, spread over the field of view at depths 2 to 3."""
    u, v = np.meshgrid(np.linspace(-0.6, 0.6, 9), np.linspace(-0.45, 0.45, 7))
    depth = 2.0 + 0.5 * (u + 0.6)
    return np.stack([u.ravel() * depth.ravel(), v.ravel() * depth.ravel(), depth.ravel()], axis=1)


def _blob_image(centres: np.ndarray, sigma: float = 1.2) -> np.ndarray:
    """Gaussian dots at sub-pixel ``centres`` (pixel-centre convention) on a grey background."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    image = np.full((HEIGHT, WIDTH), 40.0)
    for cx, cy in centres:
        image += 200.0 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return np.repeat(np.clip(image, 0, 255).round().astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture
def distorted_scene(tmp_path: Path) -> Path:
    """A one-photo transforms.json scene whose photo was 'taken' through DISTORTION."""
    projected, _ = cv2.projectPoints(
        _points_grid(), np.zeros(3), np.zeros(3), _opencv_K(K_CORNER), DISTORTION
    )
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    cv2.imwrite(str(scene / "images" / "dots.png"), _blob_image(projected[:, 0]))
    k1, k2, p1, p2, k3 = DISTORTION
    meta = {
        "fl_x": K_CORNER[0, 0],
        "fl_y": K_CORNER[1, 1],
        "cx": K_CORNER[0, 2],
        "cy": K_CORNER[1, 2],
        "w": WIDTH,
        "h": HEIGHT,
        **dict(k1=k1, k2=k2, p1=p1, p2=p2, k3=k3),
        "frames": [{"file_path": "images/dots.png", "transform_matrix": np.diag([1.0, -1, -1, 1]).tolist()}],
    }
    (scene / "transforms.json").write_text(json.dumps(meta))
    return scene


def _centroid(image: np.ndarray, x: float, y: float, radius: int = 3) -> np.ndarray:
    xi, yi = int(round(x)), int(round(y))
    patch = image[yi - radius : yi + radius + 1, xi - radius : xi + radius + 1, 0].astype(np.float64)
    weights = np.clip(patch - np.median(image[..., 0]), 0, None)
    if weights.sum() == 0:
        return np.array([np.nan, np.nan])  # no dot near (x, y)
    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return np.array([xi + (weights * xs).sum() / weights.sum(), yi + (weights * ys).sum() / weights.sum()])


@pytest.mark.parametrize("downscale", [1, 2])
def test_undistorted_image_matches_pinhole_projection(distorted_scene: Path, tmp_path: Path, downscale: int):
    scene = load_scene(distorted_scene, downscale=downscale, cache_dir=tmp_path / "cache")
    cam = scene.cameras[0]
    assert cam.distortion is None and (cam.width, cam.height) == (WIDTH // downscale, HEIGHT // downscale)
    image = load_image(cam)
    expected, _ = cv2.projectPoints(_points_grid(), np.zeros(3), np.zeros(3), _opencv_K(cam.K), None)
    expected = expected[:, 0]
    margin = 6 / downscale + 2
    inside = (
        (expected[:, 0] > margin)
        & (expected[:, 0] < cam.width - 1 - margin)
        & (expected[:, 1] > margin)
        & (expected[:, 1] < cam.height - 1 - margin)
    )
    assert inside.sum() >= 30
    found = np.array(
        [_centroid(image * 255, x, y, radius=max(2, 4 // downscale)) for x, y in expected[inside]]
    )
    errors = np.linalg.norm(found - expected[inside], axis=1)
    assert errors.max() < 0.35 * max(1, 2 / downscale), errors.max()

    # the same points seen through the *distorted* image with a pinhole model are far off:
    raw = load_image(load_scene(distorted_scene, undistort=False, downscale=downscale).cameras[0])
    naive = np.array([_centroid(raw * 255, x, y, radius=max(2, 4 // downscale)) for x, y in expected[inside]])
    naive_errors = np.nan_to_num(np.linalg.norm(naive - expected[inside], axis=1), nan=np.inf)
    assert naive_errors.max() > 3 / downscale


def test_no_black_border(distorted_scene: Path, tmp_path: Path):
    """alpha=0: every output pixel samples inside the distorted photo."""
    cam = load_scene(distorted_scene, cache_dir=tmp_path).cameras[0]
    map_x, map_y = _maps(
        tuple(cam.source_K.ravel()), tuple(cam.source_distortion), tuple(cam.K.ravel()), WIDTH, HEIGHT
    )
    assert map_x.min() >= -0.5 and map_x.max() <= WIDTH - 0.5
    assert map_y.min() >= -0.5 and map_y.max() <= HEIGHT - 0.5
    # ...while not throwing away much: the valid area still spans most of the photo
    assert map_x.max() - map_x.min() > 0.85 * WIDTH and map_y.max() - map_y.min() > 0.85 * HEIGHT


def test_cache_is_used_on_second_load(distorted_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cache = tmp_path / "cache"
    cam = load_scene(distorted_scene, cache_dir=cache).cameras[0]
    first = load_image(cam)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npy"

    def no_decoding(path):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(images_module, "decode_image", no_decoding)
    np.testing.assert_array_equal(load_image(cam), first)
    # different intrinsics (another downscale) are a different cache entry
    monkeypatch.undo()
    load_image(load_scene(distorted_scene, downscale=2, cache_dir=cache).cameras[0])
    assert len(list(cache.iterdir())) == 2


def test_default_cache_lives_inside_the_scene(distorted_scene: Path):
    cam = load_scene(distorted_scene).cameras[0]
    assert cam.cache_dir == distorted_scene / ".genfusion_cache"
    load_image(cam)
    assert len(list((distorted_scene / ".genfusion_cache").iterdir())) == 1


def test_fox_undistortion_keeps_the_principal_ray(fox_dir: Path, tmp_path: Path):
    """On the real fox camera: a point on the optical axis stays at the principal point, and the
    new pinhole K magnifies slightly (fox's k1 > 0 pincushion is cropped away)."""
    raw = load_scene(fox_dir, undistort=False, downscale=8, cache_dir=tmp_path).cameras[0]
    pinhole = load_scene(fox_dir, downscale=8, cache_dir=tmp_path).cameras[0]
    point = np.array([[0.05, -0.08, 1.0]])
    a, _ = cv2.projectPoints(point, np.zeros(3), np.zeros(3), raw.K, raw.distortion)
    b, _ = cv2.projectPoints(point, np.zeros(3), np.zeros(3), pinhole.K, None)
    assert np.linalg.norm(a - b) < 3.0  # near the centre, distortion and re-framing are small
    assert 0.9 < pinhole.fx / raw.fx < 1.15
