"""mp4 export: frame count, decodes back, first frame equals a direct render."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genfusion.data.camera_path import even_size, resize_camera
from genfusion.errors import GenFusionError
from genfusion.export.video import VideoConfig, export_video, write_mp4
from genfusion.splat.render import render_splats

from .helpers import orbit_cameras, sphere_surfels


def _read_frames(path) -> list[np.ndarray]:
    import imageio.v3 as iio

    return [np.asarray(f) for f in iio.imiter(path, plugin="FFMPEG")]


def test_video_along_input_trajectory(tmp_path):
    splats = sphere_surfels(300, sh0=(1.2, 0.2, -0.8))
    keys = orbit_cameras(3, 39)[:3]  # odd size: frames are scaled to an even one
    config = VideoConfig(fps=10, frames_per_view=2, max_side=64, background=(0.1, 0.2, 0.3), device="cpu")
    count = export_video(tmp_path / "v.mp4", splats, keys, method="2dgs", config=config)
    assert count == 5  # (3 - 1) * 2 + 1
    frames = _read_frames(tmp_path / "v.mp4")
    assert len(frames) == 5 and frames[0].shape == (38, 38, 3)
    width, height = even_size(39, 39)
    first = resize_camera(keys[0], width, height)
    with torch.no_grad():
        direct = render_splats(
            splats, torch.from_numpy(first.worldtocam).float()[None], torch.from_numpy(first.K).float()[None],
            width, height, sh_degree=0, mode="2dgs", background=torch.tensor(config.background),
        ).rgb[0].numpy()  # fmt: skip
    error = np.abs(frames[0].astype(np.float64) / 255.0 - direct)
    assert error.mean() < 0.03  # H.264 at quality 8
    assert not np.allclose(frames[0], frames[2], atol=10)  # the camera moves


def test_exact_camera_path_and_bad_frames(tmp_path):
    splats = sphere_surfels(200)
    cameras = orbit_cameras(4, 32)[:4]
    config = VideoConfig(fps=5, device="cpu")
    assert (
        export_video(tmp_path / "p.mp4", splats, cameras, method="2dgs", config=config, interpolate=False)
        == 4
    )
    assert len(_read_frames(tmp_path / "p.mp4")) == 4
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"earlier video")
    with pytest.raises(ValueError, match="even"):
        write_mp4(target, [np.zeros((15, 16, 3), dtype=np.uint8)])
    with pytest.raises(GenFusionError, match="no frames"):
        write_mp4(target, [])
    assert target.read_bytes() == b"earlier video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4", "p.mp4"]
