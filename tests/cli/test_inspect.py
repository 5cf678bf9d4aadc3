"""``genfusion inspect``: real captures, JSON output, no image decoding, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import genfusion.data.images as images_module
from genfusion.cli import main


@pytest.fixture
def small_fox(fox_dir: Path, tmp_path: Path) -> Path:
    """8 fox frames at 135x240 (a downscaled copy in tmp_path)."""
    from genfusion.data.downscale_copy import downscale_transforms_copy

    return downscale_transforms_copy(
        fox_dir, tmp_path / "fox", factor=8, frames=[0, 5, 10, 15, 20, 25, 30, 35]
    )


def _inspect_json(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main(["inspect", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_fox_json(fox_dir: Path, capsys, monkeypatch):
    def no_decoding(path):
        raise AssertionError("inspect must not decode images")

    monkeypatch.setattr(images_module, "decode_image", no_decoding)
    summary = _inspect_json(fox_dir, capsys)
    assert summary["format"] == "transforms" and summary["images"] == 67
    assert summary["resolutions"] == [{"width": 1080, "height": 1920, "images": 67}]
    assert summary["distorted"] is True and summary["camera_models"] == ["OPENCV"]
    (camera,) = summary["cameras"]
    assert camera["distortion"] == pytest.approx([0.0578421, -0.0805099, -0.000980296, 0.00015575])
    assert camera["fx"] == pytest.approx(1375.52)
    assert summary["points"] == {"present": False, "count": 0}
    assert summary["near_far"] is None and summary["aabb_scale"] == 4 and summary["missing_images"] == []
    box = summary["bounds"]["camera_centers"]
    assert all(lo < hi for lo, hi in zip(box["min"], box["max"], strict=True))


def test_fern_json(fern_dir: Path, capsys):
    summary = _inspect_json(fern_dir, capsys)
    assert summary["format"] == "llff" and summary["images"] == 20
    assert summary["resolutions"] == [{"width": 1008, "height": 756, "images": 20}]
    assert summary["distorted"] is False
    assert summary["near_far"]["near"] == pytest.approx(17.2, abs=0.5)
    assert summary["near_far"]["far"] > summary["near_far"]["near"]
    assert any("images_4" in note for note in summary["notes"])
    small = _inspect_json(fern_dir, capsys, "--downscale", "8")
    assert small["resolutions"] == [{"width": 504, "height": 378, "images": 20}]


def test_text_output_and_missing_images(small_fox: Path, capsys):
    sorted((small_fox / "images").iterdir())[1].unlink()
    assert main(["inspect", str(small_fox)]) == 0
    out = capsys.readouterr().out
    assert "format:      transforms" in out and "images:      7 (1 missing)" in out
    assert "135x240 (7)" in out and "distortion: 0.05784" in out and "missing:     images/" in out


def test_colmap_points_reported(small_fox: Path, capsys):
    import numpy as np

    from genfusion.data import load_scene
    from genfusion.data.writers import write_colmap_binary

    scene = load_scene(small_fox, undistort=False)
    scene.points = np.random.default_rng(0).normal(size=(500, 3))
    write_colmap_binary(scene, small_fox / "sparse" / "0")
    summary = _inspect_json(small_fox, capsys)
    assert summary["format"] == "colmap" and summary["points"] == {"present": True, "count": 500}
    lo, hi = summary["bounds"]["points"]["min"], summary["bounds"]["points"]["max"]
    assert all(-4 < a < -1.5 and 1.5 < b < 4 for a, b in zip(lo, hi, strict=True))  # 1%..99% of N(0, 1)


def test_bad_scene_is_one_line_and_exit_code_2(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genfusion inspect: error:") and "empty" in err and "\n" not in err


def test_cli_process_is_light(fox_dir: Path):
    """A real process: prints the summary and never imports torch (inspect must stay fast)."""
    code = (
        "import sys; from genfusion.cli import main; rc = main(['inspect', sys.argv[1], '--json']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(fox_dir)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["images"] == 67
