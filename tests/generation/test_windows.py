"""Window planning, cross-fade weights and the seam metric."""

from __future__ import annotations

import pytest
import torch

from genfusion.generation.windows import (
    Window,
    blend_windows,
    crossfade_weights,
    pad_frames,
    plan_windows,
    seam_discontinuity,
    seam_pairs,
)


def test_plan_covers_everything_with_the_requested_overlap():
    assert plan_windows(10, 16, 4) == [Window(0, 10)]
    assert plan_windows(16, 16, 4) == [Window(0, 16)]
    assert plan_windows(40, 16, 4) == [Window(0, 16), Window(12, 28), Window(24, 40)]
    # when the frames do not divide evenly the windows spread out (overlap grows, never shrinks)
    assert plan_windows(30, 16, 4) == [Window(0, 16), Window(7, 23), Window(14, 30)]
    for n in range(17, 90):
        windows = plan_windows(n, 16, 4)
        assert windows[0].start == 0 and windows[-1].stop == n
        assert all(w.length == 16 for w in windows)
        assert all(b.start <= a.stop - 4 for a, b in zip(windows, windows[1:], strict=False))
    with pytest.raises(ValueError):
        plan_windows(20, 16, 16)


@pytest.mark.parametrize("n", [16, 30, 40, 85])
def test_weights_sum_to_one_and_are_smooth(n):
    windows = plan_windows(n, 16, 4)
    weights = crossfade_weights(windows, n)
    total = torch.zeros(n)
    for w, wt in zip(windows, weights, strict=True):
        total[w.start : w.stop] += wt
        assert (wt > 0).all()
    torch.testing.assert_close(total, torch.ones(n))
    if len(windows) > 1:
        # no hand-over step moves more than a third of the way (hard switch = 1.0)
        assert max((wt[1:] - wt[:-1]).abs().max().item() for wt in weights) < 0.34


def test_blend_of_identical_windows_is_identity_and_constant_offsets_ramp():
    n = 40
    windows = plan_windows(n, 16, 4)
    frames = torch.randn(n, 3, 5, 5)
    outputs = [frames[w.start : w.stop] for w in windows]
    torch.testing.assert_close(blend_windows(outputs, windows, n), frames)
    # windows disagreeing by a constant offset: the jump is spread over the overlap
    offsets = [0.0, 1.0, 2.0]
    outputs = [torch.full((w.length, 1), o) for w, o in zip(windows, offsets, strict=True)]
    blended = blend_windows(outputs, windows, n)[:, 0]
    steps = (blended[1:] - blended[:-1]).abs()
    assert steps.max() < 0.34 and blended[0] == 0 and blended[-1] == 2


def test_seam_metric_sees_a_jump():
    windows = [Window(0, 16), Window(16, 32)]
    assert seam_pairs(windows) == {15}
    assert seam_pairs(plan_windows(40, 16, 4)) == set(range(11, 16)) | set(range(23, 28))
    ramp = torch.linspace(0, 1, 32)[:, None]
    assert seam_discontinuity(ramp, windows) == pytest.approx(1.0, rel=1e-4)
    jumped = ramp.clone()
    jumped[16:] += 0.5
    assert seam_discontinuity(jumped, windows) > 10


def test_pad_frames_repeats_the_last_frame():
    clip = torch.arange(3.0).reshape(3, 1)
    padded = pad_frames(clip, 5)
    assert padded[:, 0].tolist() == [0, 1, 2, 2, 2]
    assert pad_frames(clip, 2) is clip
