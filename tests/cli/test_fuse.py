"""``genfusion fuse`` end to end on a heavily downscaled fern (masked protocol, weight-free
repairer), resume after a finished run is refused cleanly, bad flags are named."""

from __future__ import annotations

import json

from genfusion.cli import main

FAST = ["--downscale", "64", "--method", "3dgs", "--init-random-points", "300", "--sh-degree", "1",
        "--device", "cpu", "--repairer", "fallback", "--budget", "paper"]  # fmt: skip


def test_fuse_masked_fern_writes_rounds_and_metrics(fern_dir, tmp_path, capsys):
    out = tmp_path / "fused"
    # the photos carried into the path (reproject) fill what they see, the weight-free fill the rest
    args = ["fuse", str(fern_dir), "--out", str(out), "--iterations", "40", "--clip-length", "4", *FAST,
            "--repairer", "reproject+fallback"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "weight-free" in printed.lower() or "fallback" in printed.lower()  # the repairer is named
    assert "round 4/4 at step 34" in printed and "inside windows" in printed
    summary = json.loads((out / "fusion.json").read_text())
    assert [r["step"] for r in summary["rounds"]] == [17, 23, 29, 34]
    assert summary["config"]["reconstruct"]["split"] == "masked2"  # the mode's protocol
    assert summary["config"]["reconstruct"]["generated_dssim"] == 0.8  # the mode's published weight
    assert all(r["used_views"] == 10 for r in summary["rounds"])  # the 10 training poses, full frame
    assert all(0.3 < r["unreliable_before"] < 1.0 for r in summary["rounds"])  # outside the windows
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 40 and metrics["psnr_outside"] is not None
    assert {"checkpoint.pt", "splats.ply", "rounds", "events.jsonl", "fusion_state.json"} <= {
        p.name for p in out.iterdir()
    }
    # a second start into the same folder is refused and changes nothing
    before = (out / "metrics.json").read_bytes()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before


def test_fuse_bad_rounds_and_missing_resume_are_named(fern_dir, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["fuse", str(fern_dir), "--out", str(out), "--iterations", "40", "--rounds", "30", "20",
                 *FAST]) == 2  # fmt: skip
    assert "--rounds must increase, got [30, 20]" in capsys.readouterr().err
    assert main(["fuse", str(fern_dir), "--out", str(out), "--iterations", "40", "--rounds", "50",
                 *FAST]) == 2  # fmt: skip
    assert "lie outside the run" in capsys.readouterr().err
    assert main(["fuse", str(fern_dir), "--out", str(out), "--resume", *FAST]) == 2
    assert "no fusion run to resume" in capsys.readouterr().err
    assert not out.exists()
