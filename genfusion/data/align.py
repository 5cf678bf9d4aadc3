"""Similarity alignment of two sets of camera poses (pure numpy).

SfM recovers poses only up to a similarity (scale, rotation, translation), so comparing an SfM
result with reference poses first aligns camera centres with Umeyama's closed form, then
measures what is left: per-camera rotation angle and centre distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Similarity:
    """x -> scale * R @ x + t."""

    scale: float  # uniform scale factor
    R: np.ndarray  # (3, 3) rotation
    t: np.ndarray  # (3,) translation

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) points."""
        return self.scale * np.asarray(points) @ self.R.T + self.t

    def apply_camtoworlds(self, camtoworlds: np.ndarray) -> np.ndarray:
        """Map (N, 4, 4) camera-to-world poses: centres move, orientations rotate, no scaling of
        the rotation block."""
        out = np.array(camtoworlds, dtype=np.float64, copy=True)
        out[:, :3, :3] = self.R @ out[:, :3, :3]
        out[:, :3, 3] = self.apply_points(out[:, :3, 3])
        return out


def align_similarity(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """The similarity minimising sum |scale * R @ src_i + t - dst_i|^2 (Umeyama 1991).

    ``src`` and ``dst`` are (N, 3) corresponding points, N >= 3 and not all collinear.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"need two (N>=3, 3) arrays of equal shape, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    U, singular, Vt = np.linalg.svd(covariance)
    sign = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:  # a reflection would fit better: forbid it
        sign[2, 2] = -1.0
    R = U @ sign @ Vt
    src_variance = (src_c**2).sum() / len(src)
    if src_variance <= 0:
        raise ValueError("source points are all identical")
    scale = float(np.trace(np.diag(singular) @ sign) / src_variance)
    t = dst_mean - scale * R @ src_mean
    return Similarity(scale=scale, R=R, t=t)


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Angle (degrees) of the relative rotation R_a^T R_b, batched over leading dimensions."""
    relative = np.swapaxes(R_a, -1, -2) @ R_b
    cos = (np.trace(relative, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@dataclass(frozen=True)
class PoseErrors:
    """How far aligned poses are from reference poses."""

    rotation_deg: np.ndarray  # (N,) angle between aligned and reference orientations
    center: np.ndarray  # (N,) centre distance in reference units
    center_relative: np.ndarray  # (N,) centre distance / mean reference distance to centroid
    similarity: Similarity  # the alignment that was applied to the estimated poses


def pose_errors(estimated: np.ndarray, reference: np.ndarray) -> PoseErrors:
    """Align (N, 4, 4) estimated camera-to-world poses onto reference ones by their centres and
    measure the remaining per-camera rotation and centre errors."""
    estimated = np.asarray(estimated, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    similarity = align_similarity(estimated[:, :3, 3], reference[:, :3, 3])
    aligned = similarity.apply_camtoworlds(estimated)
    centers = reference[:, :3, 3]
    spread = float(np.linalg.norm(centers - centers.mean(axis=0), axis=1).mean())
    center_error = np.linalg.norm(aligned[:, :3, 3] - centers, axis=1)
    return PoseErrors(
        rotation_deg=rotation_angle_deg(aligned[:, :3, :3], reference[:, :3, :3]),
        center=center_error,
        center_relative=center_error / spread,
        similarity=similarity,
    )
