"""Sparse-aware densification: growth gated on the visibility count, statistics carried over."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gsplat.strategy import DefaultStrategy

from genfusion.splat import checkpoint as ckpt
from genfusion.splat.config import ReconstructConfig, schedule_for
from genfusion.splat.densify import build_strategy, densification_of
from genfusion.splat.gaussians import create_optimizers, create_splats
from genfusion.splat.sparse_aware import SparseAwareStrategy, min_visible_steps
from genfusion.splat.trainer import Trainer
from splat.test_trainer import synthetic, tiny_config  # noqa: F401  (pytest puts tests/ on sys.path)


def test_threshold_rises_from_half_an_interval_to_a_full_one_as_in_the_reference():
    # the reference: min(100, 50 + iteration // 100) with its interval of 100 steps
    for step in (0, 700, 2_500, 4_999, 5_000, 9_000):
        assert min_visible_steps(step, 100) == pytest.approx(min(100, 50 + step / 100))
    assert min_visible_steps(0, 40) == 20 and min_visible_steps(10_000, 40) == 40


def _scene(n: int = 8):
    # small Gaussians (clone, not split) far apart; opacity well above the prune threshold
    points = np.stack([np.arange(n, dtype=np.float32), np.zeros(n), np.zeros(n)], axis=1)
    splats = create_splats(
        points, np.full((n, 3), 0.5), sh_degree=0, init_opacity=0.5, init_scale=0.01, seed=0
    )
    splats["scales"].data.fill_(np.log(1e-3))
    optimizers = create_optimizers(splats, {name: 1e-3 for name in splats.keys()})
    return splats, optimizers


def _state(strategy, count: list[float], grad: float) -> dict:
    state = strategy.initialize_state(scene_scale=1.0)
    state["count"] = torch.tensor(count)
    state["grad2d"] = torch.tensor(count) * grad  # average gradient `grad` where seen
    return state


def test_only_gaussians_seen_often_enough_grow_and_the_rest_keep_accumulating():
    kwargs = dict(refine_every=100, grow_grad2d=2e-4, grow_scale3d=0.01, prune_opa=0.005)
    count = [2.0, 10.0, 49.0, 50.0, 80.0, 120.0, 600.0, 3.0]  # threshold at step 0: 50
    sparse = SparseAwareStrategy(**kwargs)
    splats, optimizers = _scene()
    state = _state(sparse, count, grad=1e-3)  # every average gradient is high
    n_dupli, n_split, n_prune = sparse.refine(splats, optimizers, state, step=0)
    assert (n_dupli, n_split, n_prune) == (4, 0, 0)  # counts 50, 80, 120, 600 only
    assert len(splats["means"]) == 12
    # the four rarely seen keep their statistics; the grown ones and their clones start again
    assert state["count"][:8].tolist() == [2.0, 10.0, 49.0, 0.0, 0.0, 0.0, 0.0, 3.0]
    assert state["count"][8:].tolist() == [0.0] * 4
    assert torch.allclose(state["grad2d"][:3], torch.tensor([2.0, 10.0, 49.0]) * 1e-3)

    # gsplat's default grows all eight from the same statistics
    default = DefaultStrategy(**kwargs)
    splats, optimizers = _scene()
    state = _state(default, count, grad=1e-3)
    assert default._grow_gs(splats, optimizers, state, step=0) == (8, 0)


def test_a_saturated_gaussian_with_a_low_gradient_starts_counting_again():
    sparse = SparseAwareStrategy(refine_every=100, grow_grad2d=2e-4, prune_opa=0.005)
    splats, optimizers = _scene(3)
    state = _state(sparse, [30.0, 400.0, 600.0], grad=1e-5)  # low gradients: nothing grows
    assert sparse.refine(splats, optimizers, state, step=0)[:2] == (0, 0)
    assert state["count"].tolist() == [30.0, 400.0, 0.0]  # > 5 intervals' worth: cleared


def test_auto_picks_sparse_aware_for_masked_splits_of_the_reference_length():
    assert densification_of(ReconstructConfig(split="masked2", iterations=7_000)) == "sparse-aware"
    assert densification_of(ReconstructConfig(split="masked2", iterations=1_500)) == "default"
    assert densification_of(ReconstructConfig(split="holdout8", iterations=7_000)) == "default"
    assert densification_of(ReconstructConfig(split="masked2", densification="default")) == "default"
    config = ReconstructConfig(split="masked4", iterations=1_000, densification="sparse-aware")
    assert isinstance(build_strategy(config, schedule_for(config), torch.device("cpu")), SparseAwareStrategy)
    config = ReconstructConfig(split="sparse3", iterations=1_000)
    strategy = build_strategy(config, schedule_for(config), torch.device("cpu"))
    assert type(strategy) is DefaultStrategy


def test_a_masked_run_densifies_sparse_aware_and_resumes_exactly(synthetic, tmp_path):  # noqa: F811
    """Real training on the synthetic scene: the gate holds growth back against gsplat's default
    (same seed), the carried statistics survive a checkpoint, and the resumed run matches."""
    scene, images = synthetic
    settings = dict(split="masked2", iterations=40, refine_start=10, refine_stop=35, refine_every=10)
    counts = {}
    for kind in ("default", "sparse-aware"):
        trainer = Trainer(scene, tiny_config(densification=kind, **settings), images=images)
        trainer.train(until=25)
        counts[kind] = trainer.num_gaussians
    assert counts["sparse-aware"] < counts["default"]
    assert "grown" in trainer.strategy_state and bool(trainer.strategy_state["count"].gt(0).any())
    path = trainer.save_checkpoint(tmp_path / "at25.pt")
    trainer.train()
    resumed = Trainer(scene, trainer.config, images=images)
    resumed.load_state(ckpt.load_checkpoint(path, expected_method=trainer.config.method))
    resumed.train()
    assert resumed.num_gaussians == trainer.num_gaussians
    for name in trainer.splats.keys():
        torch.testing.assert_close(resumed.splats[name], trainer.splats[name], rtol=0, atol=1e-6)
