"""Camera paths: nerfstudio ``camera_path.json`` files (read and written) and smooth paths through
the input cameras, plus the frame-size helpers every renderer of a path needs.

This sits in ``data/`` (the ground of the package) so that fusion, export and the app can all use
one reader: a path drawn in the viewer, in nerfstudio or by hand works everywhere.

nerfstudio's file (what its viewer's render panel saves)::

    {"render_width": 640, "render_height": 480, "fps": 24, "seconds": 2.0,
     "camera_type": "perspective",
     "camera_path": [{"camera_to_world": [16 floats, 4x4 row-major, OpenGL axes],
                      "fov": 50.0, "aspect": 1.333}, ...]}

``fov`` is the vertical field of view in degrees and the principal point is the image centre,
as nerfstudio's ``get_path_from_json`` reads them. Poses are taken in this scene's world frame
(the frame the splats live in) and converted from OpenGL (y up, z backward) to OpenCV axes.
Because the format stores one vertical fov per frame and centres the principal point, a camera
written by :func:`write_camera_path` reads back with square pixels (fx = fy) and a centred
principal point; pose, size and vertical fov round-trip exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation, Slerp

from genfusion.atomic import write_json_atomic
from genfusion.data.geometry import ORTHONORMAL_TOLERANCE, resize_camera
from genfusion.data.types import Camera
from genfusion.errors import GenFusionError

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # flips y and z of the camera axes (its own inverse)
DEFAULT_FPS = 30.0  # what a path is played at when its file names no fps
_FILE_HINT = "Pass a nerfstudio camera_path.json (as its viewer's render panel saves it)."


def even_size(width: float, height: float, max_side: int | None = None) -> tuple[int, int]:
    """A video frame size: scaled so the longer side is at most ``max_side``, both sides even
    (H.264 with yuv420p needs even dimensions), at least 2."""
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _where(index: int) -> str:
    """How a message names one frame: nerfstudio's own word, and where it sits in the file."""
    return f"keyframe {index} (camera_path[{index}])"


def _pose_of(entry: Any, index: int, path: Path) -> np.ndarray:
    """The OpenCV camera-to-world of one ``camera_path`` entry, rotation snapped to orthonormal.

    Everything a pose can get wrong is named with the keyframe index: a wrong number of values,
    NaN / infinite values, a singular or mirrored rotation, a scaled or sheared one. The bottom row
    is ignored (nerfstudio reads only the top 3x4 too)."""
    hint = "Fix that entry (or remove it) and try again."
    values = np.asarray(entry["camera_to_world"], dtype=np.float64).ravel()
    if values.size not in (12, 16):
        raise GenFusionError(
            f"has a malformed camera entry: {_where(index)} has {values.size} camera_to_world values, "
            "expected 16 (a row-major 4x4).",
            path=path,
            hint=hint,
        )
    c2w = np.eye(4)
    c2w[:3] = values[:12].reshape(3, 4)
    if not np.all(np.isfinite(c2w)):
        raise GenFusionError(
            f"{_where(index)}: the pose contains NaN or infinite values.", path=path, hint=hint
        )
    R = c2w[:3, :3]
    det = float(np.linalg.det(R))
    if det <= 1e-6:
        problem = "singular" if abs(det) <= 1e-6 else "a mirror image, not a rotation"
        raise GenFusionError(
            f"{_where(index)}: the rotation is {problem} (determinant {det:.3g}).", path=path, hint=hint
        )
    deviation = float(np.abs(R.T @ R - np.eye(3)).max())
    if deviation > ORTHONORMAL_TOLERANCE:
        raise GenFusionError(
            f"{_where(index)}: the rotation is not orthonormal (R^T R differs from the identity by "
            f"{deviation:.3g}; scaled or sheared poses are not supported).",
            path=path,
            hint=hint,
        )
    U, _, Vt = np.linalg.svd(R)  # JSON rounding leaves ~1e-7 of drift: snap to the nearest rotation
    c2w[:3, :3] = U @ Vt
    return c2w @ OPENGL_TO_OPENCV


def _positive(data: dict, key: str, default: float | None, path: Path) -> float | None:
    value = data.get(key, default)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise GenFusionError(
            f"has {key} {value!r}; it must be a positive number.", path=path, hint=_FILE_HINT
        )
    return float(value)


def read_camera_path(path: str | Path) -> tuple[list[Camera], float | None]:
    """Cameras of a nerfstudio ``camera_path.json`` (OpenCV axes) and its fps (None if absent;
    derived from ``seconds`` when only that is given).

    Raises :class:`GenFusionError` naming the file, and the keyframe for a bad entry, for anything
    it cannot use: a missing, empty or non-JSON file, no cameras, a non-perspective path, a
    malformed entry, NaN poses, non-orthonormal rotations, a field of view outside (0, 180).
    """
    path = Path(path)
    if not path.is_file():
        raise GenFusionError("no such camera path file", path=path, hint=_FILE_HINT)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise GenFusionError(f"cannot be read as text ({err}).", path=path, hint=_FILE_HINT) from None
    if not text.strip():
        raise GenFusionError("is empty.", path=path, hint=_FILE_HINT)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise GenFusionError(f"is not valid JSON ({err}).", path=path, hint=_FILE_HINT) from None
    entries = data.get("camera_path") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise GenFusionError("has no 'camera_path' list of cameras; expected nerfstudio's format.", path=path)
    camera_type = data.get("camera_type", "perspective")
    if camera_type != "perspective":
        raise GenFusionError(
            f"uses camera_type {camera_type!r}; only 'perspective' paths can be rendered.", path=path
        )
    height = int(_positive(data, "render_height", 480, path))  # type: ignore[arg-type]
    width_value = _positive(data, "render_width", None, path)
    width = int(width_value) if width_value else None
    cameras = []
    for index, entry in enumerate(entries):
        try:
            c2w = _pose_of(entry, index, path)
            fov = float(entry["fov"])
            aspect = float(entry.get("aspect", (width or height) / height))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise GenFusionError(
                f"has a malformed camera entry: {_where(index)} ({type(err).__name__}: {err}).",
                path=path,
                hint="Each entry needs camera_to_world (16 numbers) and fov (degrees).",
            ) from None
        if not 0.0 < fov < 180.0:
            raise GenFusionError(f"{_where(index)}: fov {fov} is not in (0, 180) degrees.", path=path)
        if not (math.isfinite(aspect) and aspect > 0):
            raise GenFusionError(f"{_where(index)}: aspect {aspect} is not a positive number.", path=path)
        w = width if width is not None else max(2, int(round(height * aspect)))
        focal = 0.5 * height / math.tan(math.radians(fov) / 2.0)
        K = np.array([[focal, 0.0, w / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
        cameras.append(Camera(camtoworld=c2w, K=K, width=w, height=height, name=f"{index:05d}"))
    fps = _positive(data, "fps", None, path) if "fps" in data else None
    if fps is None and "seconds" in data:
        seconds = _positive(data, "seconds", None, path)
        fps = len(cameras) / seconds if seconds else None
    return cameras, fps


def vertical_fov_deg(camera: Camera) -> float:
    """The camera's vertical field of view in degrees (what nerfstudio's ``fov`` holds)."""
    return math.degrees(2.0 * math.atan(0.5 * camera.height / camera.fy))


def write_camera_path(
    path: str | Path,
    cameras: list[Camera],
    fps: float = DEFAULT_FPS,
    *,
    width: int | None = None,
    height: int | None = None,
) -> Path:
    """Write ``cameras`` (OpenCV axes, this scene's world frame) as a nerfstudio
    ``camera_path.json`` that :func:`read_camera_path`, nerfstudio's viewer and ``ns-render`` load.

    The render size is ``width`` x ``height`` (default: the first camera's); each frame keeps its
    own vertical fov. ``seconds`` is written too (``ns-render`` needs it). Written atomically.
    """
    if not cameras:
        raise GenFusionError("a camera path needs at least one camera.", path=path)
    if not (math.isfinite(fps) and fps > 0):
        raise GenFusionError(f"fps must be a positive number (got {fps}).", path=path)
    width = int(width or cameras[0].width)
    height = int(height or cameras[0].height)
    entries = []
    for index, camera in enumerate(cameras):
        if not np.all(np.isfinite(camera.camtoworld)) or not np.all(np.isfinite(camera.K)):
            raise GenFusionError(f"camera {index} ({camera.name!r}) has NaN or infinite values.", path=path)
        c2w_gl = camera.camtoworld @ OPENGL_TO_OPENCV
        entries.append(
            {
                "camera_to_world": [float(v) for v in c2w_gl.reshape(-1)],
                "fov": vertical_fov_deg(camera),
                "aspect": width / height,
            }
        )
    data = {
        "camera_type": "perspective",
        "render_width": width,
        "render_height": height,
        "fps": float(fps),
        "seconds": len(entries) / float(fps),
        "camera_path": entries,
    }
    return write_json_atomic(path, data)


def interpolate_cameras(keyframes: list[Camera], num_frames: int, *, width: int, height: int) -> list[Camera]:
    """``num_frames`` cameras moving smoothly through ``keyframes`` in order, rendering at
    ``width`` x ``height``: rotations by slerp, centres by a cubic spline (linear for two
    keyframes), intrinsics (normalised by image size) linearly. Key times are spaced by the
    distance travelled, so the speed is even where the input cameras are unevenly spaced."""
    if not keyframes:
        raise GenFusionError("no cameras to build a trajectory from.")
    if num_frames < 1:
        raise GenFusionError(f"a video needs at least one frame (got {num_frames}).")
    sized = [resize_camera(c, width, height) for c in keyframes]
    if len(sized) == 1:
        return [sized[0]] * num_frames
    centres = np.stack([c.center for c in sized])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    # distance-based key times, with a floor so a camera that only turns still gets time
    steps = np.maximum(steps, 1e-3 * max(float(steps.max()), 1e-9) + 1e-12)
    times = np.concatenate([[0.0], np.cumsum(steps)])
    times /= times[-1]
    query = np.linspace(0.0, 1.0, num_frames)
    rotations = Slerp(times, Rotation.from_matrix(np.stack([c.rotation for c in sized])))(query).as_matrix()
    if len(sized) >= 3:
        positions = CubicSpline(times, centres, axis=0, bc_type="natural")(query)
    else:
        positions = np.stack([np.interp(query, times, centres[:, k]) for k in range(3)], axis=1)
    Ks = np.stack([c.K for c in sized])
    K_frames = np.stack([[np.interp(query, times, Ks[:, i, j]) for j in range(3)] for i in range(3)])
    K_frames = K_frames.transpose(2, 0, 1)
    cameras = []
    for i in range(num_frames):
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = rotations[i], positions[i]
        cameras.append(Camera(camtoworld=c2w, K=K_frames[i], width=width, height=height, name=f"{i:05d}"))
    return cameras


__all__ = [
    "DEFAULT_FPS",
    "OPENGL_TO_OPENCV",
    "even_size",
    "interpolate_cameras",
    "read_camera_path",
    "resize_camera",
    "vertical_fov_deg",
    "write_camera_path",
]
