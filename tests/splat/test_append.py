"""Appending Gaussians mid-training: parameters, Adam moments and strategy statistics all grow, the
old rows' state is untouched and the next steps run as if nothing happened to them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gsplat.strategy import DefaultStrategy

from genfusion.fusion.expansion import new_gaussians
from genfusion.splat.append import append_gaussians
from genfusion.splat.gaussians import create_optimizers, create_splats

N, SH_DEGREE = 20, 1


def _setup(seed: int = 0):
    gen = np.random.default_rng(seed)
    splats = create_splats(gen.random((N, 3)), gen.random((N, 3)), sh_degree=SH_DEGREE, init_opacity=0.1,
                           init_scale=1.0, seed=seed)  # fmt: skip
    rates = {"means": 1e-2, "quats": 1e-2, "scales": 1e-2, "opacities": 5e-2, "sh0": 1e-2, "shN": 1e-3}
    optimizers = create_optimizers(splats, rates)
    strategy = DefaultStrategy()
    state = strategy.initialize_state(scene_scale=1.0)
    state.update(grad2d=torch.rand(N), count=torch.arange(N, dtype=torch.float32), radii=torch.rand(N))
    return splats, optimizers, strategy, state


def _weights(splats, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(p.shape, generator=gen) for name, p in splats.items()}


def _step(splats, optimizers, weights) -> None:
    """One optimisation step of a loss whose gradient for each row depends only on that row."""
    for opt in optimizers.values():
        opt.zero_grad()
    loss = sum(((p * weights[name][: p.shape[0]]) ** 2).sum() + (p * weights[name][: p.shape[0]]).sum()
                for name, p in splats.items())  # fmt: skip
    loss.backward()
    for opt in optimizers.values():
        opt.step()


def _new(splats, count: int = 5) -> dict[str, torch.Tensor]:
    points = torch.rand(count, 3) + 2.0
    return new_gaussians(points, torch.rand(count, 3), splats["means"].detach(), SH_DEGREE)


def test_append_extends_everything_and_keeps_old_rows():
    splats, optimizers, strategy, state = _setup()
    weights = _weights(splats)
    for _ in range(3):
        _step(splats, optimizers, weights)
    before = {name: copy.deepcopy(opt.state[splats[name]]) for name, opt in optimizers.items()}
    old_params = {name: p.detach().clone() for name, p in splats.items()}
    old_state = {k: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    new = _new(splats)

    assert append_gaussians(splats, optimizers, state, new) == 5
    strategy.check_sanity(splats, optimizers)  # one param group, pointing at the new Parameter
    for name, param in splats.items():
        assert param.shape[0] == N + 5 and param.requires_grad and param.is_leaf
        torch.testing.assert_close(param[:N].detach(), old_params[name])
        torch.testing.assert_close(param[N:].detach(), new[name])
        assert optimizers[name].param_groups[0]["params"][0] is param
        adam = optimizers[name].state[param]
        assert torch.equal(adam["step"], before[name]["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(adam[key][:N], before[name][key])  # old rows' moments unchanged
            assert torch.all(adam[key][N:] == 0)  # new rows start fresh, like gsplat's duplicates
    for key, value in old_state.items():
        assert torch.equal(state[key][:N], value) and torch.all(state[key][N:] == 0)
    assert state["scene_scale"] == 1.0


def test_training_continues_seamlessly_after_append():
    """Old rows take exactly the steps they would have taken without the new Gaussians."""
    plain, plain_opts, _, _ = _setup()
    grown, grown_opts, _, grown_state = _setup()
    weights = _weights(plain)
    for _ in range(2):
        _step(plain, plain_opts, weights)
        _step(grown, grown_opts, weights)
    added = _new(grown, 7)
    append_gaussians(grown, grown_opts, grown_state, added)
    wide = {name: torch.cat([w, torch.randn(7, *w.shape[1:])]) for name, w in weights.items()}
    for _ in range(2):
        _step(plain, plain_opts, weights)
        _step(grown, grown_opts, wide)
    for name in plain.keys():
        torch.testing.assert_close(grown[name][:N], plain[name], rtol=0, atol=0)
        assert torch.isfinite(grown[name]).all()
    assert not torch.equal(grown["means"][N:].detach(), added["means"])  # the new rows train too


def test_lazy_and_shared_strategy_state_is_left_alone():
    splats, optimizers, _, _ = _setup()
    state = {"grad2d": None, "count": None, "scene_scale": 2.0, "binoms": torch.zeros(N, N)}
    append_gaussians(splats, optimizers, state, _new(splats, 3))
    assert state["grad2d"] is None and state["count"] is None and state["binoms"].shape == (N, N)


def test_append_nothing_and_mismatched_layouts():
    splats, optimizers, _, state = _setup()
    empty = {name: p.detach()[:0] for name, p in splats.items()}
    assert append_gaussians(splats, optimizers, state, empty) == 0 and splats["means"].shape[0] == N
    bad = _new(splats)
    bad["shN"] = torch.zeros(5, 8, 3)  # SH degree 2 rows into degree-1 splats
    with pytest.raises(ValueError, match="shN"):
        append_gaussians(splats, optimizers, state, bad)
    missing = _new(splats)
    del missing["sh0"]
    with pytest.raises(ValueError, match="missing"):
        append_gaussians(splats, optimizers, state, missing)
    assert splats["means"].shape[0] == N  # a refused append changes nothing
