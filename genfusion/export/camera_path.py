"""Camera trajectories for videos: nerfstudio ``camera_path.json`` files and smooth paths through
the input cameras.

nerfstudio's file (what its viewer's render panel saves)::

    {"render_width": 640, "render_height": 480, "fps": 24, "camera_type": "perspective",
     "camera_path": [{"camera_to_world": [16 floats, 4x4 row-major, OpenGL axes],
                      "fov": 50.0, "aspect": 1.333}, ...]}

``fov`` is the vertical field of view in degrees and the principal point is the image centre,
as nerfstudio's ``get_path_from_json`` reads them. Poses are taken in this scene's world frame
(the frame the splats live in) and converted from OpenGL (y up, z backward) to OpenCV axes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation, Slerp

from genfusion.data.geometry import resize_camera
from genfusion.data.types import Camera
from genfusion.errors import GenFusionError

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # flips y and z of the camera axes


def even_size(width: float, height: float, max_side: int | None = None) -> tuple[int, int]:
    """A video frame size: scaled so the longer side is at most ``max_side``, both sides even
    (H.264 with yuv420p needs even dimensions), at least 2."""
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def read_camera_path(path: str | Path) -> tuple[list[Camera], float | None]:
    """Cameras of a nerfstudio ``camera_path.json`` (OpenCV axes) and its fps (None if absent).

    Raises :class:`GenFusionError` naming the file for anything it cannot use.
    """
    path = Path(path)
    if not path.is_file():
        raise GenFusionError(
            "no such camera path file", path=path, hint="Pass a nerfstudio camera_path.json."
        )
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GenFusionError(f"is not valid JSON ({err}).", path=path) from None
    entries = data.get("camera_path") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise GenFusionError("has no 'camera_path' list of cameras; expected nerfstudio's format.", path=path)
    camera_type = data.get("camera_type", "perspective")
    if camera_type != "perspective":
        raise GenFusionError(
            f"uses camera_type {camera_type!r}; only 'perspective' paths can be rendered.", path=path
        )
    try:
        height = int(data.get("render_height", 480))
        width = int(data.get("render_width", 0)) or None
        cameras = []
        for index, entry in enumerate(entries):
            c2w = np.asarray(entry["camera_to_world"], dtype=np.float64).reshape(4, 4)
            fov = float(entry["fov"])
            aspect = float(entry.get("aspect", (width or height) / height))
            w = width if width is not None else max(2, int(round(height * aspect)))
            if not (0.0 < fov < 180.0) or not np.all(np.isfinite(c2w)):
                raise ValueError(f"entry {index}: fov {fov} or pose is not usable")
            focal = 0.5 * height / math.tan(math.radians(fov) / 2.0)
            K = np.array([[focal, 0.0, w / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
            cameras.append(
                Camera(camtoworld=c2w @ OPENGL_TO_OPENCV, K=K, width=w, height=height, name=f"{index:05d}")
            )
    except (KeyError, TypeError, ValueError) as err:
        raise GenFusionError(
            f"has a malformed camera entry ({type(err).__name__}: {err}).", path=path
        ) from None
    fps = data.get("fps")
    return cameras, (float(fps) if isinstance(fps, int | float) and fps > 0 else None)


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
