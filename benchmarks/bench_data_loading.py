"""Data-loading benchmark: scene loading (headers only) and per-image load_image cost, uncached vs
cached, as ratios to plain decoding of the same file in the same run; and our COLMAP binary
parser against pycolmap on the same model.

    .venv/bin/python benchmarks/bench_data_loading.py   # writes benchmarks/results/data_loading.json
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genfusion.data import load_image, load_scene  # noqa: E402
from genfusion.data.colmap import read_model  # noqa: E402
from genfusion.data.images import decode_image  # noqa: E402
from genfusion.data.writers import write_colmap_binary  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "data_loading.json"
SHARED = Path(os.environ.get("GENFUSION_SHARED", REPO.parent / "shared"))
IMAGES = 8  # images timed per setting


def _best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_load_image(scene_dir: Path, downscale: int, undistort: bool, cache: Path) -> dict:
    scene = load_scene(scene_dir, downscale=downscale, undistort=undistort, cache_dir=cache)
    cameras = scene.cameras[:IMAGES]
    decode = _best_of(lambda: [decode_image(c.image_path) for c in cameras]) / len(cameras)
    start = time.perf_counter()
    for camera in cameras:
        load_image(camera)  # first load: decode, undistort / resize, write the cache entry
    first = (time.perf_counter() - start) / len(cameras)
    cached = _best_of(lambda: [load_image(c) for c in cameras]) / len(cameras)
    return {
        "scene": scene_dir.name,
        "downscale": downscale,
        "undistort": undistort,
        "size": f"{cameras[0].width}x{cameras[0].height}",
        "ms_decode_only": round(decode * 1e3, 2),
        "ms_first_load": round(first * 1e3, 2),
        "ms_cached_load": round(cached * 1e3, 2),
        "first_load_vs_decode": round(first / decode, 3),
        "cached_load_vs_decode": round(cached / decode, 3),
    }


def bench_colmap_parser(work: Path) -> dict:
    """Our parser vs pycolmap on a fox-based model with 100k synthetic coloured points."""
    import pycolmap

    scene = load_scene(SHARED / "data" / "fox", undistort=False, cache_dir=work / "cache")
    rng = np.random.default_rng(0)
    scene.points = rng.normal(size=(100_000, 3))
    scene.point_colors = rng.random((100_000, 3)).astype(np.float32)
    model = write_colmap_binary(scene, work / "model")
    ours = _best_of(lambda: read_model(model))
    theirs = _best_of(lambda: pycolmap.Reconstruction(str(model)))
    return {
        "images": len(scene),
        "points": 100_000,
        "ms_ours": round(ours * 1e3, 1),
        "ms_pycolmap": round(theirs * 1e3, 1),
        "ours_vs_pycolmap": round(ours / theirs, 2),
    }


def main() -> None:
    fox, fern = SHARED / "data" / "fox", SHARED / "data" / "fern"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scene_load = {
            name: round(_best_of(lambda d=d: load_scene(d, cache_dir=work / "c")) * 1e3, 1)
            for name, d in (("fox_67_images", fox), ("fern_20_images", fern))
        }
        settings = [
            bench_load_image(fox, 1, True, work / "c1"),
            bench_load_image(fox, 4, True, work / "c2"),
            bench_load_image(fox, 4, False, work / "c3"),
            bench_load_image(fern, 8, True, work / "c4"),
        ]
        parser = bench_colmap_parser(work)
    result = {
        "benchmark": "data_loading",
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs (shared), no GPU",
        "note": "load_scene reads image headers only; load_image = decode + undistort (fox) + INTER_AREA "
        "resize, then a raw .npy cache entry; ratios are against plain PIL decoding of the same files.",
        "load_scene_ms": scene_load,
        "load_image": settings,
        "colmap_binary_parser": parser,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
