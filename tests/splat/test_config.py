"""The automatic schedule at every length, explicit steps used as given, and the generated flags."""

from __future__ import annotations

import argparse

import pytest
import torch

from genfusion.errors import GenFusionError
from genfusion.splat.config import (
    ReconstructConfig,
    add_config_arguments,
    config_from_args,
    parse_split,
    schedule_for,
)
from genfusion.splat.gaussians import active_sh_degree


def refinements(iterations: int, **overrides) -> list[int]:
    """The steps at which densification refines (gsplat: step > start - 1, every k, below stop)."""
    s = schedule_for(ReconstructConfig(iterations=iterations, **overrides))
    return [t for t in range(s.refine_start, s.refine_stop) if t % s.refine_every == 0]


@pytest.mark.parametrize("method", ["2dgs", "3dgs"])
@pytest.mark.parametrize("iterations", [300, 500, 1_000, 2_000, 7_000, 15_000, 30_000])
def test_automatic_schedule_holds_at_every_length(iterations, method):
    s = schedule_for(ReconstructConfig(iterations=iterations, method=method))
    steps = refinements(iterations, method=method)
    # gradient statistics over enough steps: 100 from 1,000 steps on, never under 10 (or 1/10 of a run)
    assert s.refine_every == (100 if iterations >= 1_000 else max(10, iterations // 10))
    # a handful of refinements in a short run, never one every few steps
    assert 2 <= len(steps) <= iterations / s.refine_every
    assert steps[0] >= min(500, 0.3 * iterations) - 1
    # at least 30% of any run (15k steps of a long one) is left to optimise what was added last
    assert steps[-1] <= min({"3dgs": 0.7, "2dgs": 0.5}[method] * iterations, 15_000)
    # every reset is followed by reset_recovery densification steps: none in short runs
    assert all(r + 1_000 <= s.refine_stop for r in s.reset_steps)
    if iterations < {"3dgs": 5_700, "2dgs": 8_000}[method]:
        assert s.reset_steps == ()
    # the 2DGS regularisers start at the reference's steps, in any run long enough to reach them
    assert (s.distortion_start, s.normal_start) == (3_000, 7_000)
    # the SH ramp reaches degree 3 by the middle of the run
    assert active_sh_degree(iterations // 2, 3, s.sh_degree_interval) == 3


@pytest.mark.parametrize("method", ["2dgs", "3dgs"])
def test_reference_run_keeps_the_papers_schedule(method):
    s = schedule_for(ReconstructConfig(iterations=30_000, method=method))
    assert (s.refine_start, s.refine_stop, s.refine_every) == (500, 15_000, 100)
    assert s.reset_steps == (3_000, 6_000, 9_000, 12_000)
    assert (s.sh_degree_interval, s.normal_start, s.distortion_start) == (1_000, 7_000, 3_000)


def test_the_thousand_step_run_of_the_issue():
    """The 3DGS calibration that reached 28.15 dB densified at 300..700 without resets."""
    assert refinements(1_000, method="3dgs") == [300, 400, 500, 600, 700]
    assert refinements(1_000, method="2dgs") == [300, 400, 500]
    assert schedule_for(ReconstructConfig(iterations=1_000, method="3dgs")).reset_steps == ()


def test_explicit_steps_are_used_as_given():
    cfg = ReconstructConfig(
        iterations=1_000, refine_start=50, refine_stop=900, refine_every=25, reset_every=300,
        reset_recovery=100, sh_degree_interval=7, normal_start=1, distortion_start=2,
    )  # fmt: skip
    s = schedule_for(cfg)
    assert (s.refine_start, s.refine_stop, s.refine_every, s.sh_degree_interval) == (50, 900, 25, 7)
    assert s.reset_steps == (300, 600) and (s.normal_start, s.distortion_start) == (1, 2)


def test_flags_take_explicit_steps_and_leave_the_rest_automatic():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert "(default: automatic)" in parser.format_help()
    cfg = config_from_args(parser.parse_args(["--refine-start", "300", "--prune-opacity", "0.01"]))
    assert cfg.refine_start == 300 and cfg.refine_every is None and cfg.prune_opacity == 0.01
    with pytest.raises(SystemExit):
        parser.parse_args(["--refine-every", "often"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"refine_every": 0}, "--refine-every must be positive, got 0"),
        ({"refine_start": -5}, "--refine-start must be non-negative, got -5"),
        ({"prune_opacity": 1.5}, r"--prune-opacity must be in \[0, 1\)"),
    ],
)
def test_bad_schedule_values_are_named(values, message):
    with pytest.raises(GenFusionError, match=message):
        ReconstructConfig(**values)


def test_masked_splits_parse():
    assert parse_split("masked2") == ("masked", 2) and parse_split("masked4") == ("masked", 4)
    assert parse_split("unmasked2") == ("unmasked", 2)
    with pytest.raises(GenFusionError, match="masked2 / masked4"):
        parse_split("mask2")


def test_prune_threshold_follows_the_method_and_whether_the_run_resets_opacities():
    from genfusion.splat.densify import build_strategy, prune_opacity_of

    short, long = (
        ReconstructConfig(method="2dgs", iterations=1_000),
        ReconstructConfig(method="2dgs", iterations=30_000),
    )
    assert not schedule_for(short).reset_steps and schedule_for(long).reset_steps
    assert prune_opacity_of(short, schedule_for(short)) == 0.005  # no reset: gsplat's threshold
    assert prune_opacity_of(long, schedule_for(long)) == 0.05  # the 2DGS reference's, with its resets
    assert prune_opacity_of(ReconstructConfig(method="3dgs"), schedule_for(ReconstructConfig())) == 0.005
    mine = ReconstructConfig(method="2dgs", iterations=1_000, prune_opacity=0.2)
    assert prune_opacity_of(mine, schedule_for(mine)) == 0.2  # a value given is used as given
    strategy = build_strategy(short, schedule_for(short), torch.device("cpu"))
    assert strategy.prune_opa == 0.005
