"""make_repairer: which repairer is chosen, and why, for every state of the checkpoint folder."""

from __future__ import annotations

import json
import logging

import pytest

from genfusion.errors import GenFusionError
from genfusion.generation.fallback import FallbackRepairer
from genfusion.generation.repairer import checkpoint_problems, make_repairer


def test_fallback_when_asked():
    repairer = make_repairer("fallback")
    assert isinstance(repairer, FallbackRepairer) and repairer.name == "fallback"
    assert "requested" in repairer.description


def test_auto_without_weights_falls_back_and_says_why(tmp_path, caplog):
    missing = tmp_path / "nothing-here"
    with caplog.at_level(logging.WARNING):
        repairer = make_repairer("auto", weights_dir=missing)
    assert repairer.name == "fallback"  # the best chain without weights (bench_fusion.py)
    assert str(missing) in repairer.description and "does not exist" in repairer.description
    assert any("fallback" in r.getMessage() or "weight-free" in r.getMessage() for r in caplog.records)


def test_diffusion_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(GenFusionError, match="genfusion download"):
        make_repairer("diffusion", weights_dir=tmp_path / "absent")


def test_partial_folder_lists_the_missing_parts(tmp_path):
    folder = tmp_path / "genfusion-repair"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "GenFusionRepairPipeline"}))
    problems = checkpoint_problems(folder)
    assert "unet/config.json" not in problems and "model_index.json" not in problems
    for part in ("vae/config.json", "image_encoder/model.safetensors", "scheduler/scheduler_config.json"):
        assert part in problems
    with pytest.raises(GenFusionError) as err:
        make_repairer("diffusion", weights_dir=folder)
    assert "vae/config.json" in str(err.value) and "image_proj/config.json" in str(err.value)
    auto = make_repairer("auto", weights_dir=folder)
    assert auto.name == "fallback" and "vae/config.json" in auto.description


def test_complete_but_corrupt_folder(tmp_path):
    folder = tmp_path / "broken"
    for sub, files in {
        "unet": ["config.json", "diffusion_pytorch_model.safetensors"],
        "image_proj": ["config.json", "diffusion_pytorch_model.safetensors"],
        "image_encoder": ["config.json", "model.safetensors"],
        "vae": ["config.json", "diffusion_pytorch_model.safetensors"],
        "scheduler": ["scheduler_config.json"],
    }.items():
        (folder / sub).mkdir(parents=True)
        for name in files:
            (folder / sub / name).write_text("not a real file")
    (folder / "model_index.json").write_text("{broken json")
    assert checkpoint_problems(folder) == []
    auto = make_repairer("auto", weights_dir=folder)
    assert auto.name == "fallback" and "failed to load" in auto.description
    with pytest.raises(GenFusionError, match="failed to load"):
        make_repairer("diffusion", weights_dir=folder)


def test_unknown_kind():
    with pytest.raises(GenFusionError, match="unknown repairer"):
        make_repairer("magic")  # type: ignore[arg-type]
