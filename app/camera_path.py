"""Viewer keyframes <-> nerfstudio ``camera_path.json`` (the library reads and writes the file).

The editor's keyframes are interpolated into frames with
:func:`genfusion.data.camera_path.interpolate_cameras` and written with
:func:`genfusion.data.camera_path.write_camera_path` as ``camera_path.json`` (what ``genfusion
export --format video --path`` and nerfstudio load). The keyframes themselves are kept beside it
as ``camera_path.keyframes.json`` (the same format, one entry per keyframe), so the editor can
load a path back and keep editing it; a path without that file loads its frames as keyframes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genfusion.data.camera_path import interpolate_cameras, read_camera_path, write_camera_path
from genfusion.data.types import Camera
from genfusion.errors import GenFusionError

KEYFRAMES_SUFFIX = ".keyframes.json"
SECONDS_PER_SEGMENT = 2.0  # flight time between two keyframes
PATH_FPS = 24.0


@dataclass(frozen=True)
class Keyframe:
    """One camera of the path: camera-to-world in OpenCV axes, vertical fov in radians."""

    camtoworld: np.ndarray  # (4, 4)
    fov: float  # vertical field of view, radians
    aspect: float  # width / height

    def camera(self, height: int) -> Camera:
        """A pinhole camera of this pose, ``height`` pixels high, square pixels, centred."""
        width = max(2, int(round(height * self.aspect)))
        focal = 0.5 * height / math.tan(self.fov / 2.0)
        K = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
        return Camera(camtoworld=self.camtoworld, K=K, width=width, height=height)

    @classmethod
    def of_camera(cls, camera: Camera) -> Keyframe:
        fov = 2.0 * math.atan(0.5 * camera.height / camera.fy)
        return cls(np.asarray(camera.camtoworld, dtype=np.float64), fov, camera.width / camera.height)


def keyframe_from_viser(wxyz: np.ndarray, position: np.ndarray, fov: float, aspect: float) -> Keyframe:
    """A keyframe from a viser camera (viser's camera frame is OpenCV's: +z forward, +y down)."""
    import viser.transforms as vtf

    c2w = np.eye(4)
    c2w[:3, :3] = vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    return Keyframe(camtoworld=c2w, fov=float(fov), aspect=float(aspect))


def keyframes_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + KEYFRAMES_SUFFIX)


def path_frames(keyframes: list[Keyframe], *, height: int = 480, fps: float = PATH_FPS) -> list[Camera]:
    """The frames of the flight through ``keyframes`` (``SECONDS_PER_SEGMENT`` between two)."""
    if not keyframes:
        raise GenFusionError("the camera path has no keyframes.", hint="Add keyframes in the viewer first.")
    width = max(2, int(round(height * keyframes[0].aspect)))
    seconds = max(1.0, SECONDS_PER_SEGMENT * (len(keyframes) - 1))
    count = max(1, int(round(seconds * fps)))
    return interpolate_cameras([k.camera(height) for k in keyframes], count, width=width, height=height)


def save_keyframes(
    path: str | Path, keyframes: list[Keyframe], *, height: int = 480, fps: float = PATH_FPS
) -> Path:
    """Write ``camera_path.json`` (the interpolated frames) and its keyframes file."""
    path = Path(path)
    frames = path_frames(keyframes, height=height, fps=fps)
    write_camera_path(keyframes_path(path), [k.camera(height) for k in keyframes], fps=fps)
    write_camera_path(path, frames, fps=fps)
    return path


def load_keyframes(path: str | Path) -> list[Keyframe]:
    """The keyframes saved beside ``path``, else the frames of ``path`` itself; a malformed file
    is the library reader's GenFusionError (naming the file and the entry)."""
    path = Path(path)
    source = keyframes_path(path) if keyframes_path(path).is_file() else path
    cameras, _ = read_camera_path(source)
    return [Keyframe.of_camera(camera) for camera in cameras]


__all__ = [
    "Keyframe",
    "keyframe_from_viser",
    "keyframes_path",
    "load_keyframes",
    "path_frames",
    "save_keyframes",
]
