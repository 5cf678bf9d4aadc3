"""`genfusion download` on the command line: offline failure is one clear line set, exit code 2."""

from __future__ import annotations

import socket

from genfusion.cli import main


def test_offline_download_exits_2_with_instructions(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "dl"
    code = main(["download", "--out", str(tmp_path / "model"), "--cache", str(cache)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("genfusion download: error: cannot download the repair-model weights")
    assert str(cache / "GenFusion-GenerationModel" / "epoch=59-step=34000.ckpt") in err
    assert "Traceback" not in err and not (tmp_path / "model").exists()


def test_blocked_network_with_checkpoint_only(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(*args, **kwargs):
        raise OSError("blocked")

    monkeypatch.setattr(socket, "create_connection", refuse)
    code = main(["download", "--cache", str(tmp_path), "--out", str(tmp_path / "m"), "--checkpoint-only"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach" in err and "ldm3d" not in err


def test_help_lists_the_options(capsys):
    try:
        main(["download", "--help"])
    except SystemExit as stop:
        assert stop.code == 0
    out = capsys.readouterr().out
    for flag in ("--out", "--cache", "--checkpoint-only", "--trust-checkpoint"):
        assert flag in out
