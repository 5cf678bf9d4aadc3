"""Umeyama similarity alignment and pose error measures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from genfusion.data.align import align_similarity, pose_errors, rotation_angle_deg


def _random_poses(rng: np.random.Generator, count: int) -> np.ndarray:
    poses = np.tile(np.eye(4), (count, 1, 1))
    poses[:, :3, :3] = Rotation.random(count, random_state=rng.integers(1 << 31)).as_matrix()
    poses[:, :3, 3] = rng.normal(size=(count, 3))
    return poses


def test_recovers_a_known_similarity():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(20, 3))
    R = Rotation.from_euler("xyz", [30, -50, 120], degrees=True).as_matrix()
    dst = 2.5 * src @ R.T + np.array([1.0, -2.0, 0.5])
    sim = align_similarity(src, dst)
    assert sim.scale == pytest.approx(2.5, rel=1e-12)
    np.testing.assert_allclose(sim.R, R, atol=1e-12)
    np.testing.assert_allclose(sim.t, [1.0, -2.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(sim.apply_points(src), dst, atol=1e-12)


def test_never_returns_a_reflection():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(10, 3))
    dst = src * np.array([1.0, 1.0, -1.0])  # a mirror image: best proper rotation only
    sim = align_similarity(src, dst)
    assert np.linalg.det(sim.R) == pytest.approx(1.0)


def test_pose_errors_zero_for_similar_poses_and_exact_for_a_perturbation():
    rng = np.random.default_rng(1)
    reference = _random_poses(rng, 8)
    R = Rotation.from_euler("z", 70, degrees=True).as_matrix()
    estimated = reference.copy()
    estimated[:, :3, :3] = R.T @ reference[:, :3, :3]
    estimated[:, :3, 3] = (reference[:, :3, 3] - 0.3) @ R / 4.0  # inverse of scale 4, R, shift
    errors = pose_errors(estimated, reference)
    assert errors.rotation_deg.max() < 1e-4 and errors.center_relative.max() < 1e-9
    assert errors.similarity.scale == pytest.approx(4.0)

    tilted = estimated.copy()
    tilted[0, :3, :3] = tilted[0, :3, :3] @ Rotation.from_euler("x", 5, degrees=True).as_matrix()
    assert pose_errors(tilted, reference).rotation_deg[0] == pytest.approx(5.0, abs=1e-4)


def test_rotation_angle_batched():
    a = Rotation.from_euler("y", [[0], [10], [90]], degrees=True).as_matrix()
    np.testing.assert_allclose(rotation_angle_deg(np.eye(3)[None].repeat(3, 0), a), [0, 10, 90], atol=1e-9)


def test_rejects_degenerate_input():
    with pytest.raises(ValueError):
        align_similarity(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        align_similarity(np.ones((4, 3)), np.zeros((4, 3)))
