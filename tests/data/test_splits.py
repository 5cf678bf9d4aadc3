"""Splits: hold-out, sparse (ReconFusion json or farthest-point sampling), masked window protocol."""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from genfusion.data import Camera, Scene, load_image, load_scene
from genfusion.data.splits import holdout_split, masked_split, masked_windows, sparse_split
from genfusion.errors import GenFusionError


def test_holdout_every_eighth():
    split = holdout_split(20)
    assert split.test == [0, 8, 16]
    assert split.train == [i for i in range(20) if i not in (0, 8, 16)]
    assert holdout_split(9, every=4).test == [0, 4, 8]
    assert holdout_split(_synthetic_scene(20, 8, 6)) == split  # a scene counts as its length


def _min_pairwise(points: np.ndarray) -> float:
    return min(np.linalg.norm(a - b) for a, b in combinations(points, 2))


@pytest.mark.parametrize("n_views", [3, 6, 9])
def test_farthest_point_sparse_split(fox_dir: Path, tmp_path: Path, n_views: int):
    scene = load_scene(fox_dir, undistort=False, cache_dir=tmp_path)
    split = sparse_split(scene, n_views)
    assert split.method == "farthest-point" and len(split.train) == n_views
    assert split.test == holdout_split(len(scene)).test and not set(split.train) & set(split.test)
    assert split == sparse_split(scene, n_views)  # deterministic
    # spread: farther apart than almost every random choice of the same size
    candidates = [i for i in range(len(scene)) if i % 8]
    chosen = _min_pairwise(scene.centers[split.train])
    rng = np.random.default_rng(0)
    randoms = [
        _min_pairwise(scene.centers[rng.choice(candidates, n_views, replace=False)]) for _ in range(200)
    ]
    assert chosen >= np.percentile(randoms, 95)
    # seeded by the first non-test camera
    assert candidates[0] in split.train


def test_reconfusion_json_is_honoured(small_fox: Path):
    (small_fox / "train_test_split_3.json").write_text(
        json.dumps({"train_ids": [5, 1, 3], "test_ids": [0, 7]})
    )
    scene = load_scene(small_fox, undistort=False)
    split = sparse_split(scene, 3)
    assert split.method == "reconfusion" and split.train == [1, 3, 5] and split.test == [0, 7]
    assert sparse_split(scene, 6).method == "farthest-point"  # no json for 6 views
    (small_fox / "train_test_split_3.json").write_text(json.dumps({"train_ids": [1, 30], "test_ids": [0]}))
    with pytest.raises(GenFusionError, match=r"train_test_split_3.json.*outside the scene's 8 images"):
        sparse_split(scene, 3)


def test_too_many_sparse_views(small_fox: Path):
    scene = load_scene(small_fox, undistort=False)
    with pytest.raises(GenFusionError, match="only 7 images"):
        sparse_split(scene, 8)


def _synthetic_scene(n: int, width: int, height: int) -> Scene:
    K = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1.0]])
    cameras = [
        Camera(camtoworld=np.eye(4), K=K, width=width, height=height, name=f"{i:03d}") for i in range(n)
    ]
    return Scene(cameras=cameras, root=Path("."), format="synthetic")


@pytest.mark.parametrize("fraction, every", [(1 / 2, 2), (1 / 4, 4)])
def test_masked_split_frames(fraction: float, every: int):
    scene = _synthetic_scene(50, 960, 540)
    split = masked_split(scene, fraction)
    assert split.train == list(range(0, 50, every))
    assert split.test == [i for i in range(50) if i % every]
    assert set(split.windows) == set(split.train)
    # same trajectory for both variants: the k-th training view gets the k-th window
    assert [split.windows[i] for i in split.train] == masked_windows(960, 540, len(split.train))


@pytest.mark.parametrize("size", [(960, 540), (1080, 1920), (270, 480)])
def test_window_inside_moves_smoothly_and_bounces(size: tuple[int, int]):
    width, height = size
    windows = masked_windows(width, height, 400)
    scale = math.sqrt(width * height / (960 * 540))
    xs = np.array([w.x0 for w in windows])
    ys = np.array([w.y0 for w in windows])
    for w in windows:  # a quarter of the area, always fully inside the image
        assert (w.width, w.height) == (width // 2, height // 2)
        assert 0 <= w.x0 <= width - w.width and 0 <= w.y0 <= height - w.height
    assert np.abs(np.diff(xs)).max() <= 5 * scale + 1 and np.abs(np.diff(ys)).max() <= 5 * scale + 1
    assert np.abs(np.diff(xs)).max() >= 5 * scale - 1  # it really moves ~5 px (scaled) per frame
    # diagonal: both coordinates move every frame (away from the turning points)
    assert np.mean(np.diff(xs) != 0) > 0.9 and np.mean(np.diff(ys) != 0) > 0.9
    # bounces: reaches both borders on both axes and turns around
    assert xs.min() <= 5 * scale and xs.max() >= width - width // 2 - 5 * scale
    assert ys.min() <= 5 * scale and ys.max() >= height - height // 2 - 5 * scale
    assert np.any(np.diff(np.sign(np.diff(xs))) != 0) and np.any(np.diff(np.sign(np.diff(ys))) != 0)
    assert masked_windows(width, height, 400) == windows  # one fixed trajectory


def test_cropped_camera_shifts_principal_point(small_fox: Path):
    scene = load_scene(small_fox, cache_dir=small_fox.parent / "cache")
    split = masked_split(scene, 1 / 2)
    index = split.train[3]
    window = split.windows[index]
    full = scene.cameras[index]
    cropped = split.train_cameras(scene)[3]
    assert (
        (cropped.width, cropped.height)
        == (window.width, window.height)
        == (full.width // 2, full.height // 2)
    )
    np.testing.assert_allclose(cropped.K[:2, 2], full.K[:2, 2] - [window.x0, window.y0])
    np.testing.assert_array_equal(cropped.camtoworld, full.camtoworld)
    # a world point lands at the same photo pixel through both cameras (offset by the window)
    point = full.camtoworld @ np.array([0.1, -0.2, 3.0, 1.0])

    def project(cam: Camera) -> np.ndarray:
        p = cam.worldtocam @ point
        return (cam.K @ (p[:3] / p[2]))[:2]

    np.testing.assert_allclose(project(cropped), project(full) - [window.x0, window.y0], atol=1e-9)
    crop = window.crop(load_image(full))
    assert crop.shape == (cropped.height, cropped.width, 3)
    assert window.mask(full.width, full.height).sum() == window.width * window.height
    assert split.test_cameras(scene)[0] is scene.cameras[split.test[0]]


def test_masked_split_rejects_odd_fractions():
    scene = _synthetic_scene(10, 96, 54)
    with pytest.raises(GenFusionError, match="1/2 or 1/4"):
        masked_split(scene, 0.3)


def _facing(direction: float) -> Camera:
    """A 100x80 camera at the origin looking along +z (1) or -z (-1)."""
    pose = np.eye(4)
    if direction < 0:
        pose[:3, :3] = np.diag([-1.0, 1.0, -1.0])  # turned half a circle about y
    K = np.array([[50.0, 0, 50.0], [0, 50.0, 40.0], [0, 0, 1]])
    return Camera(camtoworld=pose, K=K, width=100, height=80, image_path=Path("x.png"), name="x.png")


def test_point_tracks_count_select_and_renumber():
    from genfusion.data.types import PointTracks

    tracks = PointTracks.from_lists([[0, 2], [1], [3, 4], []])
    assert tracks.seen_count([0, 1]).tolist() == [1, 1, 0, 0]
    assert tracks.seen_count([2, 3, 4]).tolist() == [1, 0, 2, 0]
    picked = tracks.select_points(np.array([True, False, True, True]))
    assert picked.seen_count([0]).tolist() == [1, 0, 0] and picked.seen_count([4]).tolist() == [0, 1, 0]
    scene = Scene(cameras=[_facing(1)] * 5, root=Path("."), format="colmap",
                  points=np.zeros((4, 3)), point_tracks=tracks)  # fmt: skip
    renumbered = scene.subset([4, 0, 2]).point_tracks  # camera 4 -> 0, 0 -> 1, 2 -> 2; 1, 3 dropped
    rows = [renumbered.cameras[renumbered.offsets[p] : renumbered.offsets[p + 1]].tolist() for p in range(4)]
    assert rows == [[1, 2], [], [0], []]


def test_sparse_start_keeps_the_points_the_training_views_saw():
    """Without tracks a point counts as seen when it lies in front of a training camera and inside
    its image; with COLMAP's tracks only observations count (a point in view but never matched is
    dropped). The Trainer's helper drops the rest and says how many it kept."""
    from genfusion.data.splits import points_seen_by
    from genfusion.data.types import PointTracks
    from genfusion.splat.gaussians import keep_points_seen_by

    ahead = np.array([[0.0, 0.0, 5.0], [1.0, -0.5, 4.0], [30.0, 0.0, 5.0]])  # the last is off-image
    behind = ahead * np.array([1.0, 1.0, -1.0])
    points = np.concatenate([ahead, behind])
    scene = Scene(cameras=[_facing(1), _facing(-1)], root=Path("."), format="transforms", points=points,
                  point_colors=np.linspace(0, 1, 18).reshape(6, 3).astype(np.float32))  # fmt: skip
    assert points_seen_by(scene, [0]).tolist() == [True, True, False, False, False, False]
    assert points_seen_by(scene, [1]).tolist() == [False, False, False, True, True, False]
    assert points_seen_by(scene, [0, 1]).sum() == 4
    kept, note = keep_points_seen_by(scene, [1])
    np.testing.assert_array_equal(kept.points, behind[:2])
    np.testing.assert_array_equal(kept.point_colors, scene.point_colors[3:5])
    assert note == "2 of 6 points seen by the 1 training views (in view)"
    tracked = Scene(cameras=scene.cameras, root=Path("."), format="colmap", points=points,
                    point_tracks=PointTracks.from_lists([[0], [1], [0], [1], [1], [0, 1]]))  # fmt: skip
    assert points_seen_by(tracked, [0]).tolist() == [True, False, True, False, False, True]
    kept, note = keep_points_seen_by(tracked, [0])
    assert len(kept.points) == 3 and kept.point_tracks.seen_count([0]).tolist() == [1, 1, 1]
    unseen, note = keep_points_seen_by(tracked, [])
    assert unseen.points is None and note.startswith("0 of 6")
