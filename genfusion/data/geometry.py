"""Small pose and intrinsics helpers shared by the readers and writers: quaternions, axis
conventions, pose validation, exact camera resizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genfusion.data.types import Camera
from genfusion.errors import GenFusionError

# A rotation block further than this from orthonormal (max abs entry of R^T R - I) is refused;
# closer ones are snapped to the nearest rotation (poses stored as float32 drift by ~1e-7).
ORTHONORMAL_TOLERANCE = 1e-2

# Flips camera y and z: OpenGL/Blender (x right, y up, z back) <-> OpenCV (x right, y down, z fwd).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), COLMAP's order, to a 3x3 rotation matrix."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.linalg.norm(qvec)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix to a unit quaternion (w, x, y, z) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    # Symmetric-matrix method (robust for every rotation angle): the quaternion is the
    # eigenvector of the largest eigenvalue.
    Rxx, Ryx, Rzx, Rxy, Ryy, Rzy, Rxz, Ryz, Rzz = R.ravel()  # (names as in COLMAP's scripts)
    K = (
        np.array(
            [
                [Rxx - Ryy - Rzz, 0, 0, 0],
                [Ryx + Rxy, Ryy - Rxx - Rzz, 0, 0],
                [Rzx + Rxz, Rzy + Ryz, Rzz - Rxx - Ryy, 0],
                [Ryz - Rzy, Rzx - Rxz, Rxy - Ryx, Rxx + Ryy + Rzz],
            ]
        )
        / 3.0
    )
    eigvals, eigvecs = np.linalg.eigh(K)
    qvec = eigvecs[[3, 0, 1, 2], np.argmax(eigvals)]
    return -qvec if qvec[0] < 0 else qvec


def opengl_to_opencv(camtoworld: np.ndarray) -> np.ndarray:
    """Camera-to-world in OpenGL camera axes -> OpenCV camera axes (its own inverse)."""
    with np.errstate(invalid="ignore"):  # NaN poses pass through to validate_pose's message
        return np.asarray(camtoworld, dtype=np.float64) @ _GL_TO_CV


opencv_to_opengl = opengl_to_opencv


def validate_pose(camtoworld: np.ndarray, frame: str, source: Path | str) -> np.ndarray:
    """Check a camera-to-world matrix and return it with its rotation snapped to orthonormal.

    NaN / infinite entries, a singular or mirrored rotation block, or one far from a rotation raise
    a GenFusionError naming ``frame`` and ``source`` (the pose file).
    """
    c2w = np.asarray(camtoworld, dtype=np.float64)
    hint = "Fix or remove this frame's pose in the file (or re-run pose estimation) and load again."
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    if c2w.shape != (4, 4):
        raise GenFusionError(
            f"the pose of frame '{frame}' has shape {c2w.shape}, expected 4x4.", path=source, hint=hint
        )
    if not np.all(np.isfinite(c2w)):
        raise GenFusionError(
            f"the pose of frame '{frame}' contains NaN or infinite values.", path=source, hint=hint
        )
    R = c2w[:3, :3]
    det = float(np.linalg.det(R))
    if abs(det) < 1e-6:
        raise GenFusionError(
            f"the pose of frame '{frame}' is singular (rotation determinant {det:.3g}).",
            path=source,
            hint=hint,
        )
    if det < 0:
        raise GenFusionError(
            f"the pose of frame '{frame}' is a mirror image, not a rotation (determinant {det:.3g}).",
            path=source,
            hint=hint,
        )
    deviation = float(np.abs(R.T @ R - np.eye(3)).max())
    if deviation > ORTHONORMAL_TOLERANCE:
        raise GenFusionError(
            f"the pose of frame '{frame}' is not a rotation (R^T R differs from identity by {deviation:.3g}; "
            "scaled or sheared poses are not supported).",
            path=source,
            hint=hint,
        )
    U, _, Vt = np.linalg.svd(R)
    out = c2w.copy()
    out[:3, :3] = U @ Vt
    out[3] = [0.0, 0.0, 0.0, 1.0]
    return out


def resize_camera(camera: Camera, width: int, height: int) -> Camera:
    """The same camera for its image resized to exactly ``width`` x ``height`` pixels
    (:meth:`Camera.resized`, as a function for ``map``-style use)."""
    return camera.resized(width, height)


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 K from focal lengths and principal point (all in pixels)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
