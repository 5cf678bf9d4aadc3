"""The bundled demo scene: a faithful 1/4-resolution copy of fox, with its licence beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genfusion.data import load_image, load_scene
from genfusion.data.geometry import resize_camera


def test_demo_scene_matches_fox(demo_scene: Path, fox_dir: Path, tmp_path: Path):
    demo = load_scene(demo_scene, undistort=False, cache_dir=tmp_path)
    fox = load_scene(fox_dir, undistort=False, cache_dir=tmp_path)
    assert demo.format == "transforms" and len(demo) == 67 and demo.aabb_scale == 4
    np.testing.assert_allclose(demo.camtoworlds, fox.camtoworlds, atol=1e-12)
    for small, full in zip(demo.cameras[::11], fox.cameras[::11], strict=True):
        assert (small.width, small.height) == (270, 480)
        np.testing.assert_allclose(small.K, resize_camera(full, 270, 480).K, atol=1e-9)
        np.testing.assert_array_equal(small.distortion, full.distortion)
        # the pixels are fox's, downscaled: JPEG q90 costs little
        mse = np.mean((load_image(small) - load_image(resize_camera(full, 270, 480))) ** 2)
        assert 10 * np.log10(1.0 / mse) > 33.0


def test_demo_scene_files(demo_scene: Path):
    assert "NVIDIA Source Code License" in (demo_scene / "LICENSE.txt").read_text()
    source = (demo_scene / "SOURCE.txt").read_text()
    assert "instant-ngp" in source and "make_demo_scene.py" in source and "270x480" in source
    total = sum(p.stat().st_size for p in demo_scene.rglob("*") if p.is_file())
    assert total < 5e6
    assert not (demo_scene / ".genfusion_cache").exists()  # tests must never cache into the repo


def test_demo_scene_undistorts(demo_scene: Path, tmp_path: Path):
    scene = load_scene(demo_scene, cache_dir=tmp_path)
    image = load_image(scene.cameras[0])
    assert image.shape == (480, 270, 3) and scene.cameras[0].distortion is None
    assert len(list(tmp_path.iterdir())) == 1  # cached in the given folder, nowhere else
