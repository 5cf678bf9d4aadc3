"""``genfusion render``: a camera path from a run as mp4, plain and repaired side by side."""

from __future__ import annotations

import imageio.v3 as iio

from genfusion.cli import main


def test_render_path_plain_and_repaired(fern_dir, tmp_path, capsys):
    from genfusion.data import load_scene
    from genfusion.data.camera_path import write_camera_path

    run = tmp_path / "run"
    train = ["reconstruct", str(fern_dir), "--out", str(run), "--iterations", "20", "--downscale", "64",
             "--method", "3dgs", "--init-random-points", "300", "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(train) == 0
    scene = load_scene(fern_dir, downscale=64)
    path = write_camera_path(tmp_path / "path.json", scene.cameras[:5], fps=10)
    assert main(["render", str(run), "--path", str(path), "--device", "cpu"]) == 0
    plain = iio.imread(run / "exports" / "path.mp4")
    assert plain.shape[0] == 5 and plain.shape[3] == 3
    out = tmp_path / "repaired.mp4"
    args = ["render", str(run), "--path", str(path), "--repair", "--repairer", "fallback", "--side-by-side",
            "--clip-length", "3", "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "weight-free" in printed.lower() and "5 frames" in printed
    repaired = iio.imread(out)
    assert repaired.shape[0] == 5 and repaired.shape[2] == 2 * plain.shape[2]  # render | repaired
    assert main(["render", str(run), "--path", str(tmp_path / "missing.json"), "--device", "cpu"]) == 2
