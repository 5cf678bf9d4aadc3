"""``transforms.json`` reader: nerfstudio and instant-ngp flavours.

Both store camera-to-world matrices in OpenGL/Blender camera axes (x right, y up, z back); they are
converted to OpenCV axes here, once. Intrinsics come from the top level (shared) or from each
frame (per-frame keys win): ``fl_x``/``fl_y`` or ``camera_angle_x``/``camera_angle_y``, ``cx``/
``cy`` (default: image centre), ``w``/``h``, OpenCV distortion ``k1, k2, k3, p1, p2`` and a
``k4`` that must be zero (nerfstudio's perspective ``k4`` is an r^8 term OpenCV lacks).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from genfusion.data.geometry import intrinsics_matrix, opengl_to_opencv, validate_pose
from genfusion.data.images import IMAGE_EXTENSIONS, read_image_size
from genfusion.data.types import Camera, Scene
from genfusion.errors import GenFusionError

TRANSFORMS_NAME = "transforms.json"
# Sparse points beside a pose file that has none of its own (nerfstudio's name; what
# ``genfusion triangulate`` writes): picked up by the transforms and LLFF readers.
POINTS_NAME = "sparse_pc.ply"
_INTRINSIC_KEYS = ("fl_x", "fl_y", "camera_angle_x", "camera_angle_y", "cx", "cy", "w", "h")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_FISHEYE_MODELS = ("OPENCV_FISHEYE", "FISHEYE", "EQUIRECTANGULAR", "FISHEYE624")


def resolve_frame_path(json_dir: Path, file_path: str) -> Path:
    """A frame's image file: relative to the json, Windows separators accepted, and (as
    instant-ngp sometimes writes) without an extension. Returns the literal path when nothing
    matches, so the caller reports it as missing."""
    literal = json_dir / file_path.replace("\\", "/")
    if literal.is_file():
        return literal
    if literal.suffix.lower() not in IMAGE_EXTENSIONS:
        for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
            candidate = literal.with_name(literal.name + ext)
            if candidate.is_file():
                return candidate
    return literal


def _frame_intrinsics(
    meta: dict[str, Any], frame: dict[str, Any], image_path: Path, source: Path
) -> tuple[np.ndarray, int, int, np.ndarray | None, str]:
    """(K in pixel-corner convention, width, height, distortion, model) for one frame."""
    get = {key: frame.get(key, meta.get(key)) for key in _INTRINSIC_KEYS + _DISTORTION_KEYS}
    model = str(frame.get("camera_model", meta.get("camera_model", "OPENCV"))).upper()
    if model in _FISHEYE_MODELS or frame.get("is_fisheye", meta.get("is_fisheye", False)):
        raise GenFusionError(
            f"camera model {model if model in _FISHEYE_MODELS else 'fisheye'} is not supported.",
            path=source,
            hint="Undistort the images to a pinhole model first (e.g. with COLMAP's image_undistorter).",
        )
    width, height = get["w"], get["h"]
    if width is None or height is None:
        if not image_path.is_file():
            raise GenFusionError(
                f"no w/h given and the image {image_path.name} is missing, so its size is unknown.",
                path=source,
                hint='Add "w" and "h" to transforms.json or restore the image.',
            )
        width, height = read_image_size(image_path)
    width, height = int(round(float(width))), int(round(float(height)))
    fx, fy = get["fl_x"], get["fl_y"]
    if fx is None and get["camera_angle_x"] is not None:
        fx = 0.5 * width / math.tan(0.5 * float(get["camera_angle_x"]))
    if fy is None and get["camera_angle_y"] is not None:
        fy = 0.5 * height / math.tan(0.5 * float(get["camera_angle_y"]))
    if fx is None and fy is None:
        raise GenFusionError(
            f"no focal length (fl_x/fl_y or camera_angle_x) for frame '{frame.get('file_path')}'.",
            path=source,
            hint="Add fl_x (pixels) or camera_angle_x (radians) to the file.",
        )
    fx = float(fx if fx is not None else fy)
    fy = float(fy if fy is not None else fx)
    cx = float(get["cx"]) if get["cx"] is not None else width / 2.0
    cy = float(get["cy"]) if get["cy"] is not None else height / 2.0
    coeffs = {key: float(get[key] or 0.0) for key in _DISTORTION_KEYS}
    if coeffs["k4"] != 0.0:
        raise GenFusionError(
            "a non-zero k4 on a perspective camera (nerfstudio's r^8 term) has no OpenCV equivalent.",
            path=source,
            hint="Undistort the images first, or set k4 to 0 if it is negligible.",
        )
    distortion = np.array([coeffs["k1"], coeffs["k2"], coeffs["p1"], coeffs["p2"], coeffs["k3"]])
    if not np.any(distortion):
        distortion = None
    elif coeffs["k3"] == 0.0:
        distortion = distortion[:4]
    return (
        intrinsics_matrix(fx, fy, cx, cy),
        width,
        height,
        distortion,
        "OPENCV" if distortion is not None else "PINHOLE",
    )


def read_ply_points(path: Path, source: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """xyz (P, 3) and RGB in [0, 1] (or None) from a point-cloud .ply (nerfstudio's ply_file_path);
    errors name ``source``, the pose file the points belong to."""
    from plyfile import PlyData

    try:
        vertex = PlyData.read(str(path))["vertex"]
    except Exception as err:  # plyfile raises several types for bad files
        raise GenFusionError(
            f"cannot read the point cloud {path.name} ({err}).",
            path=source,
            hint=f"Fix or delete {path.name} (genfusion triangulate writes a new one).",
        ) from None
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
    names = vertex.data.dtype.names
    colors = None
    if all(c in names for c in ("red", "green", "blue")):
        colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(np.float32) / 255.0
    return xyz, colors


def read_transforms_scene(root: Path, json_path: Path | None = None) -> Scene:
    """Cameras at the declared resolution with image paths as the json names them (missing files
    kept: the loader decides what to do with them), points from ``ply_file_path`` when present."""
    json_path = json_path or root / TRANSFORMS_NAME
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GenFusionError(
            f"cannot read this transforms.json ({err}).", path=json_path, hint="Check it is valid JSON."
        ) from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not frames:
        raise GenFusionError("transforms.json lists no frames.", path=json_path, hint='Add a "frames" list.')
    json_dir = json_path.parent
    cameras = []
    intrinsic_ids: dict[tuple, int] = {}
    for index, frame in enumerate(frames):
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise GenFusionError(
                f"frame {index} lacks file_path or transform_matrix.",
                path=json_path,
                hint="Every frame needs both keys.",
            )
        image_path = resolve_frame_path(json_dir, str(frame["file_path"]))
        name = str(frame["file_path"]).replace("\\", "/")
        try:
            matrix = np.array(frame["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            matrix = np.full((4, 4), np.nan)
        if matrix.shape == (3, 4):
            matrix = np.vstack([matrix, [0.0, 0.0, 0.0, 1.0]])
        camtoworld = validate_pose(
            opengl_to_opencv(matrix) if matrix.shape == (4, 4) else matrix, name, json_path
        )
        K, width, height, distortion, model = _frame_intrinsics(meta, frame, image_path, json_path)
        key = (width, height, *K.ravel().round(9), *(() if distortion is None else distortion.round(12)))
        camera_id = intrinsic_ids.setdefault(key, len(intrinsic_ids) + 1)
        cameras.append(
            Camera(
                camtoworld=camtoworld,
                K=K,
                width=width,
                height=height,
                image_path=image_path,
                distortion=distortion,
                model=model,
                name=name,
                camera_id=camera_id,
            )
        )
    cameras.sort(key=lambda c: c.name)
    points = colors = None
    notes = []
    if meta.get("ply_file_path"):
        ply = json_dir / str(meta["ply_file_path"])
        if ply.is_file():
            points, colors = read_ply_points(ply, json_path)
        else:
            notes.append(f"ply_file_path names {ply}, which does not exist; loaded without sparse points.")
    elif (json_dir / POINTS_NAME).is_file():
        points, colors = read_ply_points(json_dir / POINTS_NAME, json_path)
        notes.append(f"sparse points from {POINTS_NAME} (genfusion triangulate).")
    aabb_scale = meta.get("aabb_scale")
    return Scene(
        cameras=cameras,
        root=root,
        format="transforms",
        points=points,
        point_colors=colors,
        aabb_scale=float(aabb_scale) if aabb_scale is not None else None,
        notes=notes,
    )
