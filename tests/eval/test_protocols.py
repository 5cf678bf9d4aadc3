"""``genfusion eval`` on a ROOT holding the fern (LLFF, downscaled 64x) and a folder that is not a
scene: both arms of the sparse protocol, the table with the published rows, reuse on a rerun, a
setting the scene cannot give recorded as skipped, bad input named; the tables and the reuse rule
on hand-made results."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from genfusion.cli import main
from genfusion.eval.protocols import PUBLISHED, EvalConfig, arm_configs, find_scenes, finished_run
from genfusion.eval.report import results_markdown
from genfusion.splat.config import ReconstructConfig

# the repairer reproject+fallback: the fill alone has nothing to repair at this size (no used views)
FAST = ["--iterations", "30", "--downscale", "64", "--init-random-points", "300", "--method", "3dgs",
        "--sh-degree", "1", "--device", "cpu", "--repairer", "reproject+fallback", "--budget", "paper",
        "--clip-length", "4", "--views-per-round", "4", "--methods", "3dgs"]  # fmt: skip


def _root(base: Path, fern_dir: Path) -> Path:
    """ROOT with the fern (a symlink) and a subfolder of notes that is not a scene."""
    root = base / "root"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "readme.txt").write_text("not a capture")
    (root / "fern").symlink_to(fern_dir, target_is_directory=True)
    return root


def _eval(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["eval", *args])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory, fern_dir):
    """One benchmark (3 and 30 views) shared by the tests below: training is the slow part."""
    base = tmp_path_factory.mktemp("eval")
    root, out = _root(base, fern_dir), base / "out"
    args = [
        str(root),
        "--protocol",
        "sparse",
        "--out",
        str(out),
        "--views",
        "3",
        "30",
        *FAST,
        "--rounds",
        "10",
        "20",
    ]
    code, printed = _eval(args)
    assert code == 0, printed
    return args, out, printed


def test_sparse_protocol_writes_both_arms_table_and_reuses(sparse_run):
    args, out, printed = sparse_run
    results = json.loads((out / "results.json").read_text())
    cells = results["scenes"]["fern"]["sparse3"]
    assert set(cells) == {"3dgs", "fusion"} and results["arms"] == ["3dgs", "fusion"]
    for arm in ("3dgs", "fusion"):
        assert math.isfinite(cells[arm]["psnr"]) and 0 < cells[arm]["ssim"] <= 1
        assert cells[arm]["num_gaussians"] > 0 and cells[arm]["iterations"] == 30
        assert (out / "fern" / "sparse3" / arm / "metrics.json").is_file()
    assert [r["step"] for r in cells["fusion"]["rounds"]] == [10, 20]  # --rounds passed through
    assert cells["fusion"]["psnr"] != cells["3dgs"]["psnr"]  # the generated views changed the training
    assert printed.count("trained") == 2 and "fern | 3 views | GenFusion: PSNR" in printed
    table = (out / "results.md").read_text()
    assert "| sparse views (PSNR/SSIM/LPIPS) | 3 views | 30 views |" in table
    assert "| GenFusion, published (Mip-NeRF 360) | 15.29/0.369/0.585 | — |" in table
    assert "| fern / 3DGS |" in table
    from PIL import Image  # the plot: matplotlib is a dependency, so it is always drawn

    with Image.open(out / "psnr_per_round.png") as plot:
        assert plot.format == "PNG" and min(plot.size) > 200
        assert np.asarray(plot.convert("L")).std() > 5  # lines and labels, not a blank canvas
    # the same command again: every finished run is reused, the results do not change
    before = (out / "results.json").read_bytes()
    code, again = _eval(args)
    assert code == 0 and again.count("reused") == 2 and "trained" not in again
    assert (out / "results.json").read_bytes() == before


def test_non_scene_folder_and_impossible_setting_are_skipped(sparse_run):
    _, out, printed = sparse_run
    results = json.loads((out / "results.json").read_text())
    assert "skipping notes/: not a scene" in printed and "notes" not in results["scenes"]
    for arm in ("3dgs", "fusion"):
        reason = results["scenes"]["fern"]["sparse30"][arm]["skipped"]
        assert "sparse30 needs more than 30 images, the scene has 20" in reason
    assert "fern | 30 views | 3DGS: skipped:" in printed
    assert not (out / "fern" / "sparse30").exists()
    assert "## Skipped" in (out / "results.md").read_text()


def test_masked_protocol_records_inside_and_outside(tmp_path, fern_dir):
    root, out = _root(tmp_path, fern_dir), tmp_path / "out"
    code, printed = _eval([str(root), "--protocol", "masked", "--out", str(out), "--fractions", "2",
                           "--no-fusion", *FAST, "--iterations", "10"])  # fmt: skip
    assert code == 0, printed
    cell = json.loads((out / "results.json").read_text())["scenes"]["fern"]["masked2"]["3dgs"]
    assert cell["psnr_inside"] is not None and cell["psnr_outside"] is not None
    table = (out / "results.md").read_text()
    assert "| masked input (PSNR/SSIM/LPIPS) | 1/2 |" in table
    assert "| 3DGS, published (DL3DV) | 17.22/0.740/0.314 |" in table and "Tanks and Temples" in table


def test_bad_root_unknown_scene_and_wrong_flags_exit_2(tmp_path, fern_dir, capsys):
    out = str(tmp_path / "out")
    assert main(["eval", str(tmp_path / "missing"), "--protocol", "sparse", "--out", out]) == 2
    assert "ROOT must be a folder holding one subfolder per scene" in capsys.readouterr().err
    (tmp_path / "empty" / "junk").mkdir(parents=True)
    assert main(["eval", str(tmp_path / "empty"), "--protocol", "sparse", "--out", out]) == 2
    assert "holds no scene folder (not scenes: junk)" in capsys.readouterr().err
    root = _root(tmp_path, fern_dir)
    assert main(["eval", str(root), "--protocol", "sparse", "--out", out, "--scenes", "garden"]) == 2
    assert "no scene 'garden'" in (err := capsys.readouterr().err) and "available: fern" in err
    assert main(["eval", str(root), "--protocol", "sparse", "--out", out, "--scenes", "notes"]) == 2
    assert "notes/ is not a scene" in capsys.readouterr().err
    assert main(["eval", str(root), "--protocol", "sparse", "--out", out, "--fractions", "2"]) == 2
    assert "--fractions is for the other protocol" in capsys.readouterr().err
    assert main(["eval", str(root), "--protocol", "masked", "--out", out, "--methods", "--no-fusion"]) == 2
    assert "nothing to run" in capsys.readouterr().err
    assert not Path(out).exists()


def test_finished_run_needs_metrics_and_the_same_settings(tmp_path, fern_dir):
    config = EvalConfig(root=_root(tmp_path, fern_dir), out=tmp_path / "out", methods=("3dgs",), fusion=False)
    entries, _ = find_scenes(config.root)
    settings = arm_configs(config, entries[0], "sparse3")["3dgs"]
    assert settings.split == "sparse3" and settings.method == "3dgs"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(settings.to_dict()))
    assert finished_run(run_dir, settings) is None  # no metrics.json: did not finish
    (run_dir / "metrics.json").write_text(json.dumps({"psnr": 20.0}))
    assert finished_run(run_dir, settings)["metrics"]["psnr"] == 20.0
    other = ReconstructConfig.from_dict({**settings.to_dict(), "iterations": settings.iterations + 1})
    assert finished_run(run_dir, other) is None  # other settings: it must run again


def test_table_averages_over_the_scenes_that_ran():
    cell = {"psnr": 20.0, "ssim": 0.5, "lpips": None, "psnr_inside": 21.0, "psnr_outside": 19.0}
    results = {
        "protocol": "masked",
        "settings": [{"split": "masked2", "label": "1/2"}, {"split": "masked4", "label": "1/4"}],
        "arms": ["2dgs"],
        "scenes": {
            "a": {"masked2": {"2dgs": cell}, "masked4": {"2dgs": {"skipped": "too few frames"}}},
            "b": {"masked2": {"2dgs": {**cell, "psnr": 22.0, "ssim": 0.7}}, "masked4": {"2dgs": cell}},
        },
    }
    table = results_markdown(results, PUBLISHED["masked"])
    assert "| 2DGS | 21.00/0.600/— | 20.00/0.500/— (1/2 scenes) |" in table
    assert "| 2DGS, published (Tanks and Temples) | 15.46/0.640/0.409 | 14.38/0.589/0.440 |" in table
    assert "- a, 1/4, 2DGS: too few frames" in table


def test_cancel_keeps_the_finished_runs_in_results(tmp_path, fern_dir):
    from genfusion.errors import Cancelled
    from genfusion.eval.protocols import run_protocol
    from genfusion.fusion.config import FusionConfig

    small = ReconstructConfig(iterations=10, downscale=64, init_random_points=300, method="3dgs",
                              sh_degree=1, device="cpu")  # fmt: skip
    base = FusionConfig(
        reconstruct=small, budget="paper", repairer="fallback", clip_length=4, views_per_round=4
    )
    out = tmp_path / "out"
    config = EvalConfig(root=_root(tmp_path, fern_dir), out=out, views=(3,), methods=("3dgs",), base=base,
                        explicit=frozenset({"iterations", "downscale", "method"}))  # fmt: skip
    plain_done = out / "fern" / "sparse3" / "3dgs" / "metrics.json"
    with pytest.raises(Cancelled):  # "Ctrl-C" once the plain run has finished: fusion stops at once
        run_protocol(config, echo=lambda line: None, stop_check=plain_done.is_file)
    cells = json.loads((out / "results.json").read_text())["scenes"]["fern"]["sparse3"]
    assert set(cells) == {"3dgs"} and math.isfinite(cells["3dgs"]["psnr"])
