"""``genfusion poses``: a zip of full-size phone photos in, a loadable COLMAP folder out."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genfusion.cli import build_parser, main
from genfusion.cli.poses import config_from_args
from genfusion.data import load_scene


@pytest.fixture
def fox_zip(fox_dir: Path, tmp_path: Path) -> Path:
    """8 consecutive-ish full-resolution fox photos in a zip, as a user would upload them."""
    names = sorted(p.name for p in (fox_dir / "images").glob("*.jpg"))
    picks = [names[i] for i in np.linspace(0, 28, 8).round().astype(int)]
    archive = tmp_path / "fox.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in picks:
            zf.write(fox_dir / "images" / name, f"fox/{name}")
    return archive


def test_zip_to_colmap_folder(fox_zip: Path, tmp_path: Path, capsys):
    out = tmp_path / "scene"
    code = main(["poses", str(fox_zip), "--out", str(out), "--max-size", "480", "--max-features", "2048"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "registered" in captured.out and "exhaustive matching" in captured.out
    registered = int(captured.out.split("registered ")[1].split("/")[0])
    assert registered >= 6
    assert f"{out / 'sparse' / '0'}" in captured.out
    assert "sfm.extract" in captured.err  # the tqdm bars
    scene = load_scene(out, undistort=False)
    assert len(scene) == registered
    assert {(c.width, c.height) for c in scene.cameras} == {(270, 480)}  # --max-size applied
    with Image.open(out / "images" / scene.cameras[0].name) as image:
        assert image.size == (270, 480)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fox.zip", "scene"]

    # a second run refuses to clobber the result
    code = main(["poses", str(fox_zip), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--overwrite" in err


def test_bad_input_is_one_line_not_a_traceback(tmp_path: Path, capsys):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.jpg", b"x")
    code = main(["poses", str(archive), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("genfusion poses: error: ") and str(archive) in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip"]


@pytest.mark.parametrize(
    "flags, fragment",
    [(["--max-size", "0"], "--max-size"), (["--max-size", "32"], "too small"), (["--fps", "0"], "--fps")],
)
def test_bad_flags(flags: list[str], fragment: str, tmp_path: Path, capsys):
    (tmp_path / "photos").mkdir()
    code = main(["poses", str(tmp_path / "photos"), "--out", str(tmp_path / "out"), *flags])
    assert code == 2 and fragment in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_flags_map_onto_the_config():
    argv = [
        "poses", "clip.mp4", "--out", "o", "--fps", "3", "--max-frames", "40", "--max-size", "960",
        "--matcher", "sequential", "--camera-model", "OPENCV", "--per-image-cameras", "--threads", "2",
        "--max-features", "4096", "--overwrite",
    ]  # fmt: skip
    config = config_from_args(build_parser(argv).parse_args(argv))
    assert (config.ingest.fps, config.ingest.max_frames, config.ingest.max_size) == (3.0, 40, 960)
    assert (config.matcher, config.camera_model, config.single_camera) == ("sequential", "OPENCV", False)
    assert (config.num_threads, config.max_num_features, config.overwrite) == (2, 4096, True)
