"""Train/test splits every experiment uses.

- :func:`holdout_split`: every ``every``-th image is a test view (0, 8, 16, ...), the rest train.
- :func:`sparse_split`: N training views. ReconFusion's ``train_test_split_{N}.json`` (keys
  ``train_ids``, ``test_ids``, indices into the name-sorted images) when the scene folder has one;
  otherwise the hold-out test views, and N training views picked from the remaining ones by
  farthest-point sampling of camera centres, seeded with the first remaining camera
  (deterministic: same scene, same split).
- :func:`masked_split`: the masked-input protocol of method.md: every 2nd (or 4th) frame trains,
  seen only through a half-width x half-height window (25% of the area) that moves diagonally,
  bouncing at the borders, one fixed trajectory per scene; every other frame is a full-frame test
  view. Training cameras become cropped cameras (principal point shifted by the window offset).
  Test frames get the window the trajectory passes through between its neighbouring training
  frames (``Split.test_windows``), so metrics can be split into inside (seen nearby) and outside
  (extrapolated) the window.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace

import numpy as np

from genfusion.data.types import Camera, Scene
from genfusion.errors import GenFusionError

HOLDOUT_EVERY = 8  # the usual LLFF / Mip-NeRF 360 convention
MASK_REFERENCE_SIZE = (960, 540)  # resolution at which the window speed is specified
MASK_SPEED_PX = 5.0  # window step per training frame at MASK_REFERENCE_SIZE, along x and along y


@dataclass(frozen=True)
class CropWindow:
    """A rectangle of a full image, in pixels."""

    x0: int  # left column (inclusive)
    y0: int  # top row (inclusive)
    width: int  # columns in the window
    height: int  # rows in the window

    def camera(self, camera: Camera) -> Camera:
        """The camera that sees exactly this window: same pose, principal point shifted."""
        K = camera.K.copy()
        K[0, 2] -= self.x0
        K[1, 2] -= self.y0
        return replace(camera, K=K, width=self.width, height=self.height)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The window of an (H, W, ...) image."""
        return image[self.y0 : self.y0 + self.height, self.x0 : self.x0 + self.width]

    def mask(self, width: int, height: int) -> np.ndarray:
        """(height, width) bool, True inside the window."""
        out = np.zeros((height, width), dtype=bool)
        out[self.y0 : self.y0 + self.height, self.x0 : self.x0 + self.width] = True
        return out


@dataclass
class Split:
    """Which cameras train and which test, and (masked protocol) what each training view sees."""

    train: list[int]  # indices into scene.cameras used for training, ascending
    test: list[int]  # indices into scene.cameras held out for evaluation, ascending
    method: str  # how it was made: "holdout", "reconfusion", "farthest-point" or "masked"
    windows: dict[int, CropWindow] = field(default_factory=dict)  # train index -> visible window
    test_windows: dict[int, CropWindow] = field(default_factory=dict)  # test index -> trajectory window

    def train_cameras(self, scene: Scene) -> list[Camera]:
        """Training cameras, cropped to their window where one is set."""
        return [
            self.windows[i].camera(scene.cameras[i]) if i in self.windows else scene.cameras[i]
            for i in self.train
        ]

    def test_cameras(self, scene: Scene) -> list[Camera]:
        return [scene.cameras[i] for i in self.test]


def holdout_split(n: int | Scene, every: int = HOLDOUT_EVERY) -> Split:
    """Test views 0, every, 2*every, ...; the rest train (``n``: image count, or the scene)."""
    n = n if isinstance(n, int) else len(n)
    if every < 2:
        raise GenFusionError(
            f"hold-out spacing must be 2 or more (got {every}).", hint="Use 8, the usual choice."
        )
    test = list(range(0, n, every))
    return Split(train=[i for i in range(n) if i % every], test=test, method="holdout")


def farthest_point_order(points: np.ndarray, count: int, seed_index: int = 0) -> list[int]:
    """``count`` indices of ``points`` (N, D), greedily each farthest from those already chosen,
    starting at ``seed_index``; ties go to the lowest index (deterministic)."""
    chosen = [seed_index]
    distance = np.linalg.norm(points - points[seed_index], axis=1)
    while len(chosen) < count:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return chosen


def _reconfusion_split(scene: Scene, n_views: int) -> Split | None:
    path = scene.root / f"train_test_split_{n_views}.json"
    if not path.is_file():
        return None
    hint = 'It needs "train_ids" and "test_ids": lists of indices into the name-sorted images.'
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        train = sorted(int(i) for i in data["train_ids"])
        test = sorted(int(i) for i in data["test_ids"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise GenFusionError(f"cannot read this split file ({err}).", path=path, hint=hint) from None
    bad = [i for i in train + test if not 0 <= i < len(scene)]
    if bad:
        raise GenFusionError(
            f"indices {bad[:5]} are outside the scene's {len(scene)} images.",
            path=path,
            hint="The split was made for another version of this scene; regenerate it or delete it.",
        )
    return Split(train=train, test=test, method="reconfusion")


def sparse_split(scene: Scene, n_views: int, *, every: int = HOLDOUT_EVERY) -> Split:
    """``n_views`` training views (see the module docstring for how they are chosen)."""
    if n_views < 1:
        raise GenFusionError(f"n_views must be at least 1 (got {n_views}).", hint="Use 3, 6 or 9.")
    split = _reconfusion_split(scene, n_views)
    if split is not None:
        return split
    test = holdout_split(len(scene), every).test
    candidates = [i for i in range(len(scene)) if i not in set(test)]
    if n_views > len(candidates):
        raise GenFusionError(
            f"asked for {n_views} training views but only {len(candidates)} images are not held out.",
            path=scene.root,
            hint="Ask for fewer views or use a larger capture.",
        )
    order = farthest_point_order(scene.centers[candidates], n_views)
    return Split(train=sorted(candidates[i] for i in order), test=test, method="farthest-point")


def points_seen_by(scene: Scene, indices: list[int]) -> np.ndarray:
    """(P,) bool: which of ``scene``'s sparse points the cameras ``indices`` saw.

    The sparse-view protocol starts only from points its training views saw (method.md: points
    triangulated with the test views would hand the run their geometry). With COLMAP's tracks a
    point is seen when one of those cameras observed it; without tracks (triangulated
    ``sparse_pc.ply``, formats that store none) when it lies in front of one of them and projects
    inside its image, the closest test possible without the photos' matches.
    """
    if not scene.has_points:
        return np.zeros(0, bool)
    if scene.point_tracks is not None and len(scene.point_tracks) == len(scene.points):
        return scene.point_tracks.seen_count(indices) > 0
    points = np.asarray(scene.points, np.float64)
    seen = np.zeros(len(points), bool)
    for i in indices:
        camera = scene.cameras[i]
        world_to_camera = camera.worldtocam
        local = points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
        z = local[:, 2]
        front = z > 1e-9
        pixels = (local[:, :2] / np.where(front, z, 1.0)[:, None]) @ camera.K[:2, :2].T + camera.K[:2, 2]
        inside = (pixels[:, 0] >= 0) & (pixels[:, 0] <= camera.width) & (pixels[:, 1] >= 0)
        seen |= front & inside & (pixels[:, 1] <= camera.height)
    return seen


def _bounce(position: float, span: int) -> float:
    """Fold an unbounded coordinate into [0, span], reflecting at both ends (a triangle wave)."""
    if span <= 0:
        return 0.0
    phase = position % (2 * span)
    return phase if phase <= span else 2 * span - phase


def masked_windows(
    width: int,
    height: int,
    frames: int | list[float],
    *,
    start: tuple[float, float] = (0.5, 0.5),
    speed: float = MASK_SPEED_PX,
) -> list[CropWindow]:
    """The window trajectory for ``frames`` consecutive training frames of a width x height video
    (or at the given fractional frame positions, e.g. 2.5 = halfway between training frames 2 and 3).

    The window is half the width and half the height (25% of the area). It starts at ``start``
    (fractions of the free range; (0.5, 0.5) = centred) and moves ``speed`` pixels per frame along
    x and y at 960x540, scaled by sqrt(area / (960 * 540)) for other resolutions, reflecting at
    the borders.
    """
    win_w, win_h = width // 2, height // 2
    span_x, span_y = width - win_w, height - win_h
    step = speed * math.sqrt(width * height / (MASK_REFERENCE_SIZE[0] * MASK_REFERENCE_SIZE[1]))
    positions = range(frames) if isinstance(frames, int) else frames
    windows = []
    for t in positions:
        x = _bounce(start[0] * span_x + step * t, span_x)
        y = _bounce(start[1] * span_y + step * t, span_y)
        windows.append(CropWindow(int(round(x)), int(round(y)), win_w, win_h))
    return windows


def masked_split(
    scene: Scene,
    fraction: float = 0.5,
    *,
    start: tuple[float, float] = (0.5, 0.5),
    speed: float = MASK_SPEED_PX,
) -> Split:
    """Masked-input protocol: frames 0, k, 2k, ... train (k = 1/fraction: 2 for 1/2, 4 for 1/4)
    through a moving window; every other frame is a full-frame test view."""
    every = round(1.0 / fraction) if fraction > 0 else 0
    if every < 2 or not math.isclose(every * fraction, 1.0, rel_tol=1e-6):
        raise GenFusionError(
            f"fraction must be 1/k for an integer k >= 2 (got {fraction}).", hint="Use 1/2 or 1/4."
        )
    train = list(range(0, len(scene), every))
    test = [i for i in range(len(scene)) if i % every]
    windows: dict[int, CropWindow] = {}
    test_windows: dict[int, CropWindow] = {}
    by_size: dict[tuple[int, int], list[int]] = {}
    for i in range(len(scene)):  # one trajectory per image size (normally one for the whole scene)
        by_size.setdefault((scene.cameras[i].width, scene.cameras[i].height), []).append(i)
    for (width, height), indices in by_size.items():
        trained = [i for i in indices if i % every == 0]
        tested = [i for i in indices if i % every]
        for i, window in zip(
            trained, masked_windows(width, height, len(trained), start=start, speed=speed), strict=True
        ):
            windows[i] = window
        # a test frame sits between training frames: its position on their trajectory, fractional
        positions = [float(np.interp(i, trained, range(len(trained)))) for i in tested] if trained else []
        for i, window in zip(
            tested, masked_windows(width, height, positions, start=start, speed=speed), strict=True
        ):
            test_windows[i] = window
    return Split(train=train, test=test, method="masked", windows=windows, test_windows=test_windows)
