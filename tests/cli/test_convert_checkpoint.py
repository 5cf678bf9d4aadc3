"""``genfusion convert-checkpoint`` on a tiny fake release checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict

from genfusion.cli import main
from genfusion.generation.tiny_models import tiny_component_configs, write_tiny_lvdm_checkpoint


def test_convert_then_refuse_overwrite_and_bad_files(lvdm_fixtures, tmp_path, capsys):
    ckpt = write_tiny_lvdm_checkpoint(lvdm_fixtures, tmp_path / "epoch=59-step=34000.ckpt")
    configs = tmp_path / "tiny_configs.json"
    configs.write_text(json.dumps(asdict(tiny_component_configs(lvdm_fixtures))))
    out = tmp_path / "checkpoints" / "genfusion-repair"
    args = ["convert-checkpoint", str(ckpt), "--out", str(out), "--configs", str(configs)]

    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "tensors converted" in printed and "OpenCLIP text encoder" in printed
    assert (out / "unet" / "config.json").exists() and (out / "model_index.json").exists()

    assert main(args) == 2  # the folder exists: kept, with a one-line error
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert main([*args, "--overwrite", "--dtype", "float16"]) == 0
    capsys.readouterr()

    # the full-size default architecture does not fit the tiny checkpoint: refused, nothing written
    other = tmp_path / "other"
    assert main(["convert-checkpoint", str(ckpt), "--out", str(other)]) == 2
    assert "expects" in capsys.readouterr().err
    assert not other.exists()
    assert main(["convert-checkpoint", str(tmp_path / "nope.ckpt"), "--out", str(other)]) == 2
    assert "not found" in capsys.readouterr().err
    configs.write_text("{}")
    assert main([*args, "--overwrite"]) == 2
    assert "component configs" in capsys.readouterr().err
