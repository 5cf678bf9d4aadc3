"""Checkpoint format: round trip, atomic writes, and clear errors for foreign checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genfusion.errors import GenFusionError
from genfusion.splat import checkpoint as ckpt
from genfusion.splat.config import ReconstructConfig
from genfusion.splat.gaussians import create_optimizers, create_splats, learning_rates


def make_contents(method: str = "2dgs", n: int = 20) -> dict:
    cfg = ReconstructConfig(method=method, sh_degree=1)
    splats = create_splats(
        np.random.rand(n, 3), np.random.rand(n, 3), sh_degree=1, init_opacity=0.1, init_scale=1.0, seed=0
    )
    opts = create_optimizers(splats, learning_rates(cfg, 1.0))
    loss = sum(p.sum() for p in splats.values())
    loss.backward()
    for o in opts.values():
        o.step()
    state = {"grad2d": torch.rand(n), "count": torch.ones(n), "scene_scale": 1.5}
    return ckpt.checkpoint_dict(
        method=method,
        step=42,
        sh_degree=1,
        splats=splats,
        optimizers=opts,
        strategy_state=state,
        config=cfg,
        scene={"path": "/x", "downscale": 2, "format": "llff"},
    )


def test_round_trip_and_load_run(tmp_path):
    contents = make_contents()
    path = ckpt.save_checkpoint(tmp_path / "checkpoint.pt", contents)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp file left
    loaded = ckpt.load_checkpoint(path, expected_method="2dgs")
    assert loaded["format_version"] == 1 and loaded["step"] == 42 and loaded["method"] == "2dgs"
    for name, value in contents["splats"].items():
        assert torch.equal(loaded["splats"][name], value)
    assert torch.equal(loaded["strategy_state"]["grad2d"], contents["strategy_state"]["grad2d"])
    assert loaded["optimizers"]["means"]["state"][0]["exp_avg"].shape == (20, 3)
    run = ckpt.load_run(tmp_path)
    assert run.method == "2dgs" and run.sh_degree == 1 and run.step == 42 and run.num_gaussians == 20
    assert run.config.sh_degree == 1 and run.scene["format"] == "llff"


def test_wrong_method_version_and_garbage_are_clear_errors(tmp_path):
    path = ckpt.save_checkpoint(tmp_path / "checkpoint.pt", make_contents("3dgs"))
    with pytest.raises(
        GenFusionError, match=r"holds a 3dgs reconstruction but 2dgs was asked for.*--method 3dgs"
    ):
        ckpt.load_checkpoint(path, expected_method="2dgs")

    future = make_contents()
    future["format_version"] = 7
    ckpt.save_checkpoint(tmp_path / "future.pt", future)
    with pytest.raises(GenFusionError, match=r"format version 7.*reads format version 1"):
        ckpt.load_checkpoint(tmp_path / "future.pt")

    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(GenFusionError, match="not a GenFusion checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")

    (tmp_path / "junk.pt").write_bytes(b"not a zip at all")
    with pytest.raises(GenFusionError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")

    with pytest.raises(GenFusionError, match="no checkpoint here"):
        ckpt.load_checkpoint(tmp_path / "missing")
    with pytest.raises(GenFusionError, match="no such run folder"):
        ckpt.load_run(tmp_path / "nope")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = ckpt.save_checkpoint(tmp_path / "checkpoint.pt", make_contents())
    before = path.read_bytes()

    def boom(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(path, make_contents())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_empty_run_is_an_error(tmp_path):
    contents = make_contents()
    contents["splats"] = {k: v[:0] for k, v in contents["splats"].items()}
    ckpt.save_checkpoint(tmp_path / "checkpoint.pt", contents)
    with pytest.raises(GenFusionError, match="no Gaussians"):
        ckpt.load_run(tmp_path)
