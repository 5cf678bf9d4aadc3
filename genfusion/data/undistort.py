"""Undistortion to a pinhole camera with OpenCV.

The new pinhole K comes from ``cv2.getOptimalNewCameraMatrix`` with ``alpha = 0``: it keeps only
pixels that are valid in the distorted photo, so the undistorted image has no black border (it
loses a sliver of the field of view at the edges instead); the image size stays the same.
Undistortion is lazy: :func:`undistort_camera` only changes the camera, and
:func:`genfusion.data.images.load_image` warps pixels when asked (and caches the result).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import cv2
import numpy as np

from genfusion.data.types import Camera

# 0 = only valid pixels in the output (no black border); 1 = keep every source pixel (borders).
UNDISTORT_ALPHA = 0.0


def _shift_principal_point(K: np.ndarray, offset: float) -> np.ndarray:
    """K with its principal point moved by ``offset`` pixels. The project puts the centre of pixel
    (0, 0) at (0.5, 0.5) (as COLMAP and gsplat); OpenCV puts it at (0, 0): -0.5 goes into
    OpenCV's convention, +0.5 comes back."""
    K = np.array(K, dtype=np.float64).reshape(3, 3)
    K[:2, 2] += offset
    return K


def undistorted_intrinsics(K: np.ndarray, distortion: np.ndarray, width: int, height: int) -> np.ndarray:
    """The pinhole K (same image size) that the undistorted image uses."""
    new_K, _ = cv2.getOptimalNewCameraMatrix(
        _shift_principal_point(K, -0.5),
        np.asarray(distortion, np.float64),
        (width, height),
        UNDISTORT_ALPHA,
        (width, height),
    )
    return _shift_principal_point(new_K, 0.5)


def undistort_camera(camera: Camera) -> Camera:
    """The pinhole camera whose image ``load_image`` will produce by undistorting the file.

    ``camera`` must describe the file as stored (K at the file's resolution); a camera without
    distortion is returned unchanged.
    """
    if camera.distortion is None:
        return camera
    new_K = undistorted_intrinsics(camera.K, camera.distortion, camera.width, camera.height)
    return replace(
        camera,
        K=new_K,
        distortion=None,
        source_K=camera.K.copy(),
        source_distortion=camera.distortion.copy(),
        model="PINHOLE",
    )


@lru_cache(maxsize=8)
def _maps(
    src_K: tuple, distortion: tuple, dst_K: tuple, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remap tables (memoised: every photo of one camera shares them)."""
    return cv2.initUndistortRectifyMap(
        np.array(src_K).reshape(3, 3),
        np.array(distortion),
        None,
        np.array(dst_K).reshape(3, 3),
        (width, height),
        cv2.CV_32FC1,
    )


def undistort_pixels(
    image: np.ndarray, src_K: np.ndarray, distortion: np.ndarray, dst_K: np.ndarray
) -> np.ndarray:
    """Warp a distorted image (H, W[, C], any dtype cv2 remaps) into the pinhole ``dst_K`` at the
    same size. Bilinear; edge pixels are replicated so rounding at the border never adds black."""
    height, width = image.shape[:2]
    map_x, map_y = _maps(
        tuple(_shift_principal_point(src_K, -0.5).ravel()),
        tuple(np.asarray(distortion, np.float64).ravel()),
        tuple(_shift_principal_point(dst_K, -0.5).ravel()),
        width,
        height,
    )
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
