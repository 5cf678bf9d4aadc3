"""Camera and Scene: every reader converts its format into these, once, at the edge.

Conventions (OpenCV): x right, y down, z forward; ``camtoworld`` is a 4x4 camera-to-world
matrix; ``K`` holds intrinsics in pixels of the image as stored on disk (after any downscale the
reader applied); distortion coefficients follow OpenCV's order ``(k1, k2, p1, p2[, k3[, k4, k5,
k6]])``. Images load as float32 HxWx3 in [0, 1].

Pixel convention (COLMAP's, nerfstudio's, instant-ngp's and gsplat's): the *centre* of pixel
(0, 0) sits at (0.5, 0.5), so a principal point in the middle of a W-pixel-wide image is at W / 2,
K passes to gsplat unchanged and resizing an image by s scales all of K's first two rows by s.
OpenCV's own functions put that centre at (0, 0): ``genfusion.data.undistort`` shifts by 0.5 on
the way into and out of cv2, and nothing else needs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np


@dataclass
class Camera:
    """One posed photograph."""

    camtoworld: np.ndarray  # (4, 4) float64 camera-to-world, OpenCV axes
    K: np.ndarray  # (3, 3) float64 intrinsics in pixels
    width: int  # image width in pixels
    height: int  # image height in pixels
    image_path: Path | None = None  # the photo on disk (None for purely virtual cameras)
    distortion: np.ndarray | None = None  # OpenCV coefficients (k1,k2,p1,p2[,k3...]); None = pinhole
    model: str = "PINHOLE"  # camera model as named by the source (COLMAP names), for reporting
    name: str = ""  # stable identifier, usually the image file name relative to the images folder
    camera_id: int = 0  # cameras sharing intrinsics share an id (COLMAP camera id)
    # How ``genfusion.data.load_image`` turns the file into this camera's pixels. The file may be
    # larger than (width, height) (it is resized with cv2.INTER_AREA) and, when source_distortion
    # is set, distorted (it is undistorted into the pinhole K above first).
    source_K: np.ndarray | None = None  # (3, 3) intrinsics of the file as stored, when distorted
    source_distortion: np.ndarray | None = None  # OpenCV coefficients load_image removes; None = none
    cache_dir: Path | None = None  # where load_image caches processed images (None = no cache)

    def __post_init__(self) -> None:
        self.camtoworld = np.asarray(self.camtoworld, dtype=np.float64).reshape(4, 4)
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        if self.distortion is not None:
            self.distortion = np.asarray(self.distortion, dtype=np.float64).ravel()
            if not np.any(self.distortion):
                self.distortion = None
        if self.image_path is not None:
            self.image_path = Path(self.image_path)
        if self.source_K is not None:
            self.source_K = np.asarray(self.source_K, dtype=np.float64).reshape(3, 3)
        if self.source_distortion is not None:
            self.source_distortion = np.asarray(self.source_distortion, dtype=np.float64).ravel()
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,)."""
        return self.camtoworld[:3, 3].copy()

    @property
    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation, (3, 3)."""
        return self.camtoworld[:3, :3].copy()

    @property
    def worldtocam(self) -> np.ndarray:
        """World-to-camera 4x4 (the "viewmat" renderers take)."""
        return np.linalg.inv(self.camtoworld)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def scaled(self, factor: float) -> Camera:
        """The same camera for an image resized by ``factor`` (0.5 halves the resolution)."""
        width = max(1, int(round(self.width * factor)))
        height = max(1, int(round(self.height * factor)))
        return self.resized(width, height)

    def resized(self, width: int, height: int) -> Camera:
        """The same camera for its image resized to exactly ``width`` x ``height`` pixels.

        With pixel centres at +0.5 (see the module docstring) the image plane just stretches, so
        focal lengths and the principal point both scale by the size ratio per axis. ``source_K``
        describes the file on disk and is left alone.
        """
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, :] *= sx
        K[1, :] *= sy
        return replace(self, K=K, width=int(width), height=int(height))


@dataclass
class PointTracks:
    """Which cameras observed each sparse point (COLMAP's tracks), as compressed rows: point ``p``
    was seen by the cameras ``cameras[offsets[p]:offsets[p + 1]]`` (indices into
    ``Scene.cameras``)."""

    offsets: np.ndarray  # (P + 1,) int64, start of each point's row in ``cameras``
    cameras: np.ndarray  # (T,) int64 camera indices, one per observation

    @classmethod
    def from_lists(cls, rows: list[np.ndarray] | list[list[int]]) -> PointTracks:
        lengths = np.array([len(r) for r in rows], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if not len(rows):
            return cls(offsets, np.zeros(0, np.int64))
        return cls(offsets, np.concatenate([np.asarray(r, np.int64) for r in rows]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def seen_count(self, camera_indices: list[int] | np.ndarray) -> np.ndarray:
        """(P,) how many of ``camera_indices`` observed each point."""
        chosen = np.isin(self.cameras, np.asarray(camera_indices, np.int64))
        counts = np.concatenate([[0], np.cumsum(chosen)])
        return counts[self.offsets[1:]] - counts[self.offsets[:-1]]

    def select_points(self, keep: np.ndarray) -> PointTracks:
        """The tracks of the points where ``keep`` (bool, (P,)) is True."""
        keep = np.asarray(keep, bool)
        lengths = np.diff(self.offsets)
        offsets = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)
        return PointTracks(offsets, self.cameras[np.repeat(keep, lengths)])

    def renumber_cameras(self, indices: list[int]) -> PointTracks:
        """The tracks after ``Scene.subset(indices)``: camera ``indices[k]`` becomes ``k`` and
        observations by cameras left out are dropped."""
        new_index = np.full(int(max(self.cameras.max(initial=-1), max(indices, default=-1))) + 1, -1)
        new_index[np.asarray(indices, np.int64)] = np.arange(len(indices))
        mapped = new_index[self.cameras]
        kept = mapped >= 0
        counts = np.concatenate([[0], np.cumsum(kept)])
        return PointTracks(counts[self.offsets].astype(np.int64), mapped[kept].astype(np.int64))


@dataclass
class Scene:
    """A set of posed cameras plus optional sparse geometry, as read from a capture."""

    cameras: list[Camera]  # every posed image, in a stable (name-sorted) order
    root: Path  # the folder the scene was read from
    format: str  # detected source format: "colmap", "transforms", "llff", ...
    points: np.ndarray | None = None  # (P, 3) float64 sparse points (SfM) in world coordinates
    point_colors: np.ndarray | None = None  # (P, 3) float32 in [0, 1], colours of ``points``
    point_tracks: PointTracks | None = None  # which cameras saw each point (COLMAP), when known
    near_far: np.ndarray | None = None  # (N, 2) per-camera depth bounds when the format has them
    aabb_scale: float | None = None  # instant-ngp's scene-extent hint, when present
    missing_images: list[str] = field(default_factory=list)  # files the pose file names but lacks
    notes: list[str] = field(default_factory=list)  # human-readable remarks made while loading

    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def camtoworlds(self) -> np.ndarray:
        """(N, 4, 4) camera-to-world matrices."""
        return np.stack([c.camtoworld for c in self.cameras])

    @property
    def centers(self) -> np.ndarray:
        """(N, 3) camera centres."""
        return np.stack([c.center for c in self.cameras])

    @property
    def Ks(self) -> np.ndarray:
        """(N, 3, 3) intrinsics."""
        return np.stack([c.K for c in self.cameras])

    @property
    def has_points(self) -> bool:
        return self.points is not None and len(self.points) > 0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box holding the camera centres and (when present) the sparse points,
        ignoring the 1% most extreme points on each side so stray SfM points do not blow it up."""
        pts = self.centers
        if self.has_points:
            lo = np.percentile(self.points, 1, axis=0)
            hi = np.percentile(self.points, 99, axis=0)
            pts = np.concatenate([pts, lo[None], hi[None]])
        return pts.min(axis=0), pts.max(axis=0)

    def subset(self, indices: list[int] | np.ndarray) -> Scene:
        """A scene with only the given cameras (points kept as they are, their tracks renumbered
        to the new camera order)."""
        idx = [int(i) for i in indices]
        near_far = self.near_far[idx] if self.near_far is not None else None
        tracks = self.point_tracks.renumber_cameras(idx) if self.point_tracks is not None else None
        return replace(self, cameras=[self.cameras[i] for i in idx], near_far=near_far, point_tracks=tracks)
