"""``genfusion triangulate``: a transforms.json capture without points gets a sparse_pc.ply the
reader loads, the points sit in front of the cameras that photographed them, and nothing existing
is overwritten unasked."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from genfusion.cli import main
from genfusion.data import load_scene
from genfusion.data.downscale_copy import downscale_transforms_copy
from genfusion.data.types import Camera, Scene
from genfusion.data.writers import write_colmap_binary


def test_triangulate_a_transforms_capture(fox_dir: Path, tmp_path: Path, capsys):
    scene_dir = downscale_transforms_copy(fox_dir, tmp_path / "fox", factor=4, frames=list(range(0, 24, 3)))
    assert not load_scene(scene_dir, cache_dir=tmp_path / "c0").has_points
    assert main(["triangulate", str(scene_dir), "--num-threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "points from 8 photos" in out and "sparse_pc.ply" in out
    scene = load_scene(scene_dir, cache_dir=tmp_path / "c1")
    assert scene.has_points and len(scene.points) > 200
    # each point is in front of, and inside the frame of, at least two of the photos
    seen = np.zeros(len(scene.points), dtype=int)
    for camera in scene.cameras:
        local = (camera.worldtocam[:3, :3] @ scene.points.T).T + camera.worldtocam[:3, 3]
        pixels = (camera.K @ local.T).T
        u, v = pixels[:, 0] / pixels[:, 2], pixels[:, 1] / pixels[:, 2]
        seen += (local[:, 2] > 0) & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    assert np.mean(seen >= 2) > 0.95
    assert not list(scene_dir.glob(".genfusion_cache*"))  # the command caches nothing into the capture

    # a second run refuses to replace the points unless asked
    assert main(["triangulate", str(scene_dir)]) == 2
    assert "already exists" in capsys.readouterr().err
    before = (scene_dir / "sparse_pc.ply").stat().st_mtime_ns
    assert main(["triangulate", str(scene_dir), "--overwrite", "--num-threads", "2"]) == 0
    assert (scene_dir / "sparse_pc.ply").stat().st_mtime_ns != before


def test_triangulate_refuses_a_scene_that_has_points_and_a_bad_folder(tmp_path: Path, capsys):
    colmap = tmp_path / "colmap"
    assert main(["triangulate", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    camera = Camera(np.eye(4), np.array([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]), 64, 48, name="a.png")
    points = np.array([[0.0, 0.0, 2.0]])
    scene = Scene(cameras=[camera], root=colmap, format="colmap", points=points)
    write_colmap_binary(scene, colmap / "sparse/0")
    (colmap / "images").mkdir()
    cv2.imwrite(str(colmap / "images" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    assert main(["triangulate", str(colmap)]) == 2
    err = capsys.readouterr().err
    assert "already has 1 sparse points" in err and "Traceback" not in err
    assert not (colmap / "sparse_pc.ply").exists()
