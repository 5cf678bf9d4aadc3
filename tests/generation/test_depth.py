"""Clip-normalised disparity in, quirk-13 depth out, least-squares alignment back to the scene."""

from __future__ import annotations

import math

import pytest
import torch

from genfusion.generation.depth import (
    DisparityRange,
    align_depth,
    clip_disparity_to_depth,
    depth_to_clip_disparity,
    fit_scale_shift,
    reliable_mask,
    resize_nearest,
)


def test_disparity_is_min_max_over_the_whole_clip():
    depth = torch.tensor([[[1.0, 2.0], [4.0, 0.0]], [[0.5, -1.0], [float("nan"), 1.0]]])
    normalised, rng = depth_to_clip_disparity(depth)
    assert rng == DisparityRange(0.25, 2.0)  # 1/4 .. 1/0.5 across both frames
    expected = torch.tensor(
        [[[(1 - 0.25) / 1.75, (0.5 - 0.25) / 1.75], [0.0, 0.0]], [[1.0, 0.0], [0.0, (1 - 0.25) / 1.75]]]
    )
    expected = (expected - 0.5) * 2
    torch.testing.assert_close(normalised, expected)
    # invalid pixels (0, negative, NaN) become -1 exactly
    assert normalised[0, 1, 1] == -1 and normalised[1, 0, 1] == -1 and normalised[1, 1, 0] == -1
    assert torch.isfinite(normalised).all()


def test_forced_range_is_shared_and_clamped():
    depth = torch.tensor([[[1.0, 10.0]]])
    normalised, rng = depth_to_clip_disparity(depth, DisparityRange(0.2, 0.5))
    assert rng == DisparityRange(0.2, 0.5)
    torch.testing.assert_close(normalised, torch.tensor([[[1.0, -1.0]]]))


def test_empty_clip_maps_to_minus_one():
    normalised, _ = depth_to_clip_disparity(torch.zeros(2, 3, 3))
    assert torch.equal(normalised, torch.full((2, 3, 3), -1.0))


def test_output_mapping_matches_the_original_formula():
    d = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    out = clip_disparity_to_depth(d)
    expected = [1 / 1e-6, 1 / 1e-6, 1 / (0.5 + 1e-6), 1 / (1 + 1e-6), 1 / (1 + 1e-6)]
    for got, want in zip(out.tolist(), expected, strict=True):
        assert math.isclose(got, want, rel_tol=1e-6)


def test_round_trip_then_alignment_recovers_depth():
    """Normalise, map back as the model would, align: the scene depth comes back."""
    torch.manual_seed(0)
    depth = 1.0 + 3.0 * torch.rand(4, 8, 8)
    normalised, _ = depth_to_clip_disparity(depth)
    depth_like = clip_disparity_to_depth(normalised)
    # 1/((x+1)/2) is an affine function of depth only when disparity range starts at 0;
    # fit on the exact relation in disparity instead: target disparity vs predicted disparity.
    aligned_disp, fit = align_depth(1.0 / depth_like, 1.0 / depth, torch.ones_like(depth, dtype=torch.bool))
    torch.testing.assert_close(aligned_disp, 1.0 / depth, rtol=1e-4, atol=1e-5)
    assert fit.pixels == depth.numel()


def test_fit_scale_shift_ignores_unreliable_pixels():
    torch.manual_seed(1)
    pred = torch.rand(2, 16, 16) + 0.5
    target = 2.5 * pred + 0.75
    mask = torch.rand(2, 16, 16) > 0.3
    target[~mask] = 1000.0  # garbage where unreliable
    fit = fit_scale_shift(pred, target, mask)
    assert fit.scale == pytest.approx(2.5, abs=1e-6) and fit.shift == pytest.approx(0.75, abs=1e-6)
    aligned, _ = align_depth(pred, target, mask)
    torch.testing.assert_close(aligned[mask], target[mask])


def test_fit_degenerate_cases():
    assert fit_scale_shift(torch.ones(4), torch.ones(4), torch.zeros(4, dtype=torch.bool)).pixels == 0
    flat = fit_scale_shift(torch.ones(4), torch.full((4,), 3.0), torch.ones(4, dtype=torch.bool))
    assert flat.scale == 1.0 and flat.shift == pytest.approx(2.0)
    aligned, _ = align_depth(
        torch.tensor([1.0, 2.0, -5.0]), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 1, 0]).bool()
    )
    assert (aligned > 0).all()  # negative fitted depths are floored


def test_reliable_mask_and_nearest_resize():
    depth = torch.tensor([[1.0, 0.0], [float("nan"), 2.0]])
    alpha = torch.tensor([[0.9, 0.9], [0.9, 0.2]])
    assert reliable_mask(depth, alpha, 0.5).tolist() == [[True, False], [False, False]]
    values = torch.arange(4.0).reshape(1, 2, 2)
    up = resize_nearest(values, (4, 4))
    assert set(up.unique().tolist()) == {0.0, 1.0, 2.0, 3.0} and up.shape == (1, 4, 4)
