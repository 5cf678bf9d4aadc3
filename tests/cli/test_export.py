"""``genfusion export``: every format from a run folder, and the bad-input cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from export.helpers import orbit_cameras, sphere_surfels  # tests/ is on sys.path (rootdir of the packages)

from genfusion.cli import main
from genfusion.export.ply import read_ply, read_ply_info, write_ply
from genfusion.export.splat_format import read_splat


def _camera_path_json(path, cameras, fov=50.0):
    entries = []
    for cam in cameras:
        c2w_gl = cam.camtoworld @ np.diag([1.0, -1.0, -1.0, 1.0])
        entries.append({"camera_to_world": c2w_gl.reshape(-1).tolist(), "fov": fov, "aspect": 1.0})
    path.write_text(json.dumps({"render_width": 32, "render_height": 32, "fps": 12, "camera_path": entries}))
    return path


@pytest.fixture()
def ply_run(tmp_path):
    """A run folder holding only splats.ply (what every run folder has)."""
    run = tmp_path / "run"
    write_ply(run / "splats.ply", sphere_surfels(300), method="2dgs")
    return run


def test_ply_and_splat(ply_run, capsys):
    assert main(["export", str(ply_run), "--format", "ply"]) == 0
    out = ply_run / "exports" / "splats.ply"
    assert read_ply_info(out).method == "2dgs"
    assert torch.equal(read_ply(out)["means"], read_ply(ply_run / "splats.ply")["means"])
    assert "300 Gaussians" in capsys.readouterr().out
    assert main(["export", str(ply_run), "--format", "splat", "--out", str(ply_run / "s.splat")]) == 0
    assert read_splat(ply_run / "s.splat")["means"].shape == (300, 3)


def test_mesh_and_video_along_a_camera_path(ply_run, tmp_path):
    path = _camera_path_json(tmp_path / "camera_path.json", orbit_cameras(4, 32))
    assert main(["export", str(ply_run), "--format", "video", "--path", str(path), "--device", "cpu"]) == 0
    import imageio.v3 as iio

    frames = list(iio.imiter(ply_run / "exports" / "video.mp4", plugin="FFMPEG"))
    assert len(frames) == 6 and frames[0].shape == (32, 32, 3)
    code = main(["export", str(ply_run), "--format", "mesh", "--path", str(path), "--mesh-resolution", "24",
                 "--out", str(ply_run / "m.obj"), "--device", "cpu"])  # fmt: skip
    assert code == 0
    import trimesh

    mesh = trimesh.load(ply_run / "m.obj", force="mesh")
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert len(mesh.faces) > 100 and abs(np.median(radius) - 1.0) < 0.15


def test_bad_runs_are_clear_errors_and_keep_earlier_outputs(tmp_path, ply_run, capsys):
    assert main(["export", str(tmp_path / "nope"), "--format", "ply"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "bare").mkdir()
    assert main(["export", str(tmp_path / "bare"), "--format", "splat"]) == 2
    assert "no checkpoint.pt or splats.ply" in capsys.readouterr().err
    # an empty run: the earlier export stays as it was
    empty = tmp_path / "empty"
    (empty / "exports").mkdir(parents=True)
    (empty / "exports" / "splats.ply").write_bytes(b"earlier export")
    header = b"ply\nformat binary_little_endian 1.0\nelement vertex 0\n" + b"".join(
        f"property float {n}\n".encode()
        for n in ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                  "rot_0", "rot_1", "rot_2", "rot_3"]
    ) + b"end_header\n"  # fmt: skip
    (empty / "splats.ply").write_bytes(header)
    assert main(["export", str(empty), "--format", "ply"]) == 2
    assert "no Gaussians" in capsys.readouterr().err
    assert (empty / "exports" / "splats.ply").read_bytes() == b"earlier export"
    # a mesh of a bare ply needs cameras: say how to give them
    assert main(["export", str(ply_run), "--format", "mesh"]) == 2
    assert "--scene" in capsys.readouterr().err
    assert sorted(p.name for p in (empty / "exports").iterdir()) == ["splats.ply"]


def test_checkpoint_run_along_its_scene(tmp_path, fern_dir):
    checkpoint = pytest.importorskip("genfusion.splat.checkpoint")
    from genfusion.splat.config import ReconstructConfig

    splats = sphere_surfels(50)
    run = tmp_path / "ckpt_run"
    run.mkdir()
    contents = {
        "format_version": checkpoint.FORMAT_VERSION, "genfusion_version": "test", "method": "3dgs",
        "step": 1, "sh_degree": 0, "splats": splats, "config": ReconstructConfig(method="3dgs").to_dict(),
        "scene": {"path": str(fern_dir), "downscale": 8, "format": "llff"},
    }  # fmt: skip
    torch.save(contents, run / "checkpoint.pt")
    assert main(["export", str(run), "--format", "ply"]) == 0
    assert read_ply_info(run / "exports" / "splats.ply").method == "3dgs"
    code = main(["export", str(run), "--format", "video", "--frames-per-view", "1", "--max-side", "32",
                 "--device", "cpu"])  # fmt: skip
    assert code == 0
    import imageio.v3 as iio

    assert len(list(iio.imiter(run / "exports" / "video.mp4", plugin="FFMPEG"))) == 20  # fern's 20 views
    contents["splats"] = {k: v[:0] for k, v in splats.items()}
    torch.save(contents, run / "checkpoint.pt")
    before = (run / "exports" / "splats.ply").read_bytes()
    assert main(["export", str(run), "--format", "ply"]) == 2
    assert (run / "exports" / "splats.ply").read_bytes() == before
