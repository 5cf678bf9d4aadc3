"""Moved to :mod:`genfusion.data.camera_path` (fusion must not import ``export``, and one reader
serves fusion, export and the app). This alias keeps old imports (``app/camera_path.py``,
``app/tasks.py``) working until they switch; new code imports from ``genfusion.data``."""

from genfusion.data.camera_path import (
    DEFAULT_FPS,
    OPENGL_TO_OPENCV,
    even_size,
    interpolate_cameras,
    read_camera_path,
    resize_camera,
    vertical_fov_deg,
    write_camera_path,
)

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
