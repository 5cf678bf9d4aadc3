"""Round steps and their half-sine weights; FusionConfig's presets, budget and explicit settings."""

from __future__ import annotations

import math

import pytest

from genfusion.errors import GenFusionError
from genfusion.fusion.config import FusionConfig, resolve
from genfusion.fusion.schedule import check_rounds, half_sine, round_steps, round_weight
from genfusion.splat.config import ReconstructConfig


def test_published_rounds_and_their_scaled_fractions():
    assert round_steps("masked", 7_000) == (3_000, 4_000, 5_000, 6_000)
    assert round_steps("sparse", 7_000) == (1_000, 2_000, 3_000, 4_000, 5_000, 6_000)
    assert round_steps("complete", 26_000) == (5_000, 9_000, 13_000, 17_000, 21_000)
    assert round_steps("masked", 1_400) == (600, 800, 1_000, 1_200)  # same fractions of a shorter run
    with pytest.raises(GenFusionError, match="use masked, sparse or complete"):
        round_steps("everything", 100)


def test_half_sine_warms_up_and_anneals_over_the_round_window():
    assert half_sine(100, 100, 200, 0.5) == 0.0  # the views arrive with no weight
    assert half_sine(150, 100, 200, 0.5) == pytest.approx(0.5)  # full weight halfway
    assert half_sine(125, 100, 200, 0.5) == pytest.approx(0.5 * math.sin(math.pi / 4))
    assert half_sine(200, 100, 200, 0.5) == 0.0 and half_sine(99, 100, 200, 0.5) == 0.0
    weight = round_weight((100, 200), 1, 300, 1.0)  # the last round runs to the end of training
    assert (weight.start, weight.stop, weight.shape) == (200, 300, "half_sine")


def test_user_rounds_are_checked():
    assert check_rounds((10, 20), 30) == (10, 20)
    with pytest.raises(GenFusionError, match="must increase"):
        check_rounds((20, 10), 30)
    with pytest.raises(GenFusionError, match=r"\[30\] lie outside the run"):
        check_rounds((10, 30), 30)


def test_presets_fill_what_was_not_given():
    paper = resolve(FusionConfig(mode="sparse", budget="paper"))
    assert paper.reconstruct.iterations == 7_000 and paper.reconstruct.split == "sparse3"
    assert (paper.lambda_reg, paper.reconstruct.generated_dssim, paper.views_per_round) == (1.0, 0.5, 85)
    assert paper.path == "ellipse" and not paper.expansion and paper.rounds == round_steps("sparse", 7_000)
    complete = resolve(FusionConfig(mode="complete", budget="paper"))
    assert complete.reconstruct.iterations == 26_000 and complete.expansion
    assert complete.reconstruct.generated_dssim == 0.2 and complete.views_per_round == 48
    assert complete.path == "ellipse"  # the mode's path without a camera path, the file with one
    assert resolve(FusionConfig(mode="complete", camera_path="path.json")).path == "file"
    assert resolve(FusionConfig(mode="complete", camera_path="path.json", path="orbit")).path == "orbit"


def test_preview_budget_sizes_a_cpu_run_but_explicit_settings_win():
    preview = resolve(FusionConfig(budget="preview"), long_side=480)
    rc = preview.reconstruct
    assert (rc.iterations, rc.method, rc.downscale, rc.split) == (1_500, "3dgs", 4, "masked2")
    assert preview.rounds == round_steps("masked", 1_500)
    mine = FusionConfig(
        budget="preview", reconstruct=ReconstructConfig(method="2dgs", iterations=900, downscale=2)
    )
    rc = resolve(mine, explicit={"method", "iterations", "downscale"}, long_side=480).reconstruct
    assert (rc.iterations, rc.method, rc.downscale) == (900, "2dgs", 2)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "fill"}, "unknown --mode 'fill'"),
        ({"clip_length": 1}, "--clip-length must be at least 2"),
        ({"expansion_fraction": 2.0}, r"--expansion-fraction must lie in \[0, 1\]"),
        ({"path": "file"}, "--path file needs --camera-path"),
        ({"lambda_reg": float("nan")}, "--lambda-reg must be a finite number"),
    ],
)
def test_bad_fusion_settings_are_named(values, message):
    with pytest.raises(GenFusionError, match=message):
        FusionConfig(**values)
