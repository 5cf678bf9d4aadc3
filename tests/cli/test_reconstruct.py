"""``genfusion reconstruct`` end to end on a heavily downscaled fern, plus its bad-input cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genfusion.cli import main

FAST = ["--downscale", "64", "--method", "3dgs", "--init-random-points", "300", "--sh-degree", "1",
        "--quiet", "--device", "cpu"]  # fmt: skip


def test_reconstruct_fern_outputs_resume_and_refusals(fern_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reconstruct", str(fern_dir), "--out", str(out), "--iterations", "30", *FAST]) == 0
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "splats.ply", "metrics.json", "renders",
                                                "config.json"}  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 30 and metrics["method"] == "3dgs" and metrics["device"] == "cpu"
    assert metrics["backend"] == "torch" and metrics["num_test_views"] == 3  # views 0, 8, 16 of 20
    assert metrics["num_train_views"] == 17 and metrics["resolution"] == [63, 47]
    assert 8.0 < metrics["psnr"] < 40.0 and 0.0 < metrics["ssim"] <= 1.0
    assert metrics["psnr"] == pytest.approx(np.mean([v["psnr"] for v in metrics["views"]]))
    assert metrics["num_gaussians"] > 0 and metrics["time_s"] > 0
    renders = sorted((out / "renders").iterdir())
    assert [p.name for p in renders] == ["image000.png", "image008.png", "image016.png"]
    import imageio.v3 as iio

    assert iio.imread(renders[0]).shape == (47, 126, 3)  # render | ground truth
    assert json.loads((out / "config.json").read_text())["iterations"] == 30

    from genfusion.export.ply import read_ply
    from genfusion.splat.checkpoint import load_run

    run = load_run(out)
    assert run.step == 30 and run.method == "3dgs" and run.scene["downscale"] == 64
    assert read_ply(out / "splats.ply")["means"].shape[0] == run.num_gaussians

    # a second run into the same folder without --resume is refused and changes nothing
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["reconstruct", str(fern_dir), "--out", str(out), "--iterations", "30", *FAST]) == 2
    assert "--resume" in capsys.readouterr().err
    # resuming with another method is refused with what the checkpoint holds
    assert main(["reconstruct", str(fern_dir), "--out", str(out), "--resume", "--method", "2dgs"]) == 2
    err = capsys.readouterr().err
    assert "holds a 3dgs reconstruction but 2dgs was asked for" in err and "Traceback" not in err
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    # --resume continues from step 30 to 36
    assert (
        main(["reconstruct", str(fern_dir), "--out", str(out), "--resume", "--iterations", "36", "--quiet"])
        == 0
    )
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 36
    assert load_run(out).step == 36


def test_not_a_scene_is_a_clean_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    out = tmp_path / "run"
    assert main(["reconstruct", str(empty), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genfusion reconstruct: error:") and str(empty) in err and "Traceback" not in err
    assert not out.exists()


def test_resolution_too_big_is_refused_before_writing(fern_dir, tmp_path, capsys):
    out = tmp_path / "run"
    # random points: the estimate scales with the Gaussians to start from (20,000 here)
    args = ["reconstruct", str(fern_dir), "--out", str(out), "--downscale", "8", "--memory-limit-gb", "4",
            "--init-points", "random", "--quiet"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "needs about 6.7 GiB" in err and "only 4.00 GiB" in err and "--downscale 16" in err, err
    assert not out.exists()  # refused before anything was written


def test_resume_without_a_run_is_a_clean_error(fern_dir, tmp_path, capsys):
    assert main(["reconstruct", str(fern_dir), "--out", str(tmp_path / "none"), "--resume", "--quiet"]) == 2
    assert "no checkpoint here" in capsys.readouterr().err


def test_masked_split_reports_inside_and_outside_psnr(fern_dir, tmp_path, capsys):
    out = tmp_path / "masked"
    fast = [a for a in FAST if a != "--quiet"]
    assert main(["reconstruct", str(fern_dir), "--out", str(out), "--iterations", "20", "--split", "masked2",
                 *fast]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_train_views"] == 10 and metrics["num_test_views"] == 10  # frames 0, 2, ... train
    assert metrics["resolution"] == [31, 23]  # training views are the 25%-area windows of 63x47
    for view in metrics["views"]:
        assert view["psnr_inside"] is not None and view["psnr_outside"] is not None
    assert metrics["psnr_inside"] == pytest.approx(np.mean([v["psnr_inside"] for v in metrics["views"]]))
    shown = capsys.readouterr().out
    assert f"inside windows {metrics['psnr_inside']:.2f}, outside {metrics['psnr_outside']:.2f}" in shown


def test_masked_split_too_small_is_refused_before_writing(fern_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reconstruct", str(fern_dir), "--out", str(out), "--split", "masked2", "--downscale", "512",
                 "--quiet"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "crops each training photo to half its width and height" in err and "smaller --downscale" in err
    assert not out.exists()
    assert main(["reconstruct", str(fern_dir), "--out", str(out), "--split", "masked1", "--quiet"]) == 2
    assert "needs a number >= 2 for holdout and masked" in capsys.readouterr().err
