"""Unposed-path benchmark: pycolmap SfM on the fox photos against its reference poses.

For each setting, the fox photos (downscaled to a 480 px long side) go through
``genfusion.data.sfm.estimate_poses``; the recovered poses are aligned to the instant-ngp
``transforms.json`` poses with a similarity (Umeyama on camera centres) and compared: rotation
error in degrees, centre error relative to the cameras' mean distance to their centroid. Wall
time per stage is reported and, for speed, as a ratio to the baseline (COLMAP's default 8192
SIFT features, exhaustive matching) of the same photo set in the same run.

    .venv/bin/python benchmarks/bench_sfm.py           # writes benchmarks/results/sfm.json
    .venv/bin/python benchmarks/bench_sfm.py --quick   # the dozen-photo settings only, no JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genfusion.data import load_scene  # noqa: E402
from genfusion.data.align import pose_errors  # noqa: E402
from genfusion.data.sfm import SfMConfig, available_threads, estimate_poses, read_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "sfm.json"
FOX = Path(os.environ.get("GENFUSION_SHARED", REPO.parent / "shared")) / "data" / "fox"


def fox_reference() -> dict[str, np.ndarray]:
    meta = json.loads((FOX / "transforms.json").read_text())
    poses = {}
    for frame in meta["frames"]:
        camtoworld = np.array(frame["transform_matrix"], dtype=np.float64)
        camtoworld[:3, 1:3] *= -1.0  # OpenGL -> OpenCV
        poses[Path(frame["file_path"]).name] = camtoworld
    return poses


def downscaled_photos(folder: Path, count: int | None, long_side: int = 480) -> list[str]:
    folder.mkdir(parents=True)
    names = sorted(p.name for p in (FOX / "images").glob("*.jpg"))
    if count is not None:
        names = [names[i] for i in np.linspace(0, len(names) - 1, count).round().astype(int)]
    for name in names:
        with Image.open(FOX / "images" / name) as image:
            scale = long_side / max(image.size)
            size = (round(image.width * scale), round(image.height * scale))
            image.resize(size, Image.Resampling.LANCZOS).save(folder / name, quality=95)
    return names


def run_case(photos: Path, work: Path, label: str, config: SfMConfig, reference: dict) -> dict:
    start = time.perf_counter()
    out = estimate_poses(photos, work / label, config=config)
    total = time.perf_counter() - start
    report = read_report(out)
    scene = load_scene(out, undistort=False)
    names = [c.name for c in scene.cameras]
    errors = pose_errors(scene.camtoworlds, np.stack([reference[n] for n in names]))
    return {
        "label": label,
        "photos": report["num_images"],
        "registered": len(report["registered"]),
        "matcher": report["matcher"],
        "max_num_features": config.max_num_features,
        "points": report["num_points"],
        "mean_reprojection_error_px": round(report["mean_reprojection_error"], 4),
        "rotation_error_deg_mean": round(float(errors.rotation_deg.mean()), 4),
        "rotation_error_deg_max": round(float(errors.rotation_deg.max()), 4),
        "centre_error_relative_mean": round(float(errors.center_relative.mean()), 5),
        "centre_error_relative_max": round(float(errors.center_relative.max()), 5),
        "seconds_total": round(total, 3),
        "seconds": {k: round(v, 3) for k, v in report["seconds"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="dozen-photo settings only, print, no JSON")
    args = parser.parse_args()
    reference = fox_reference()
    threads = available_threads()
    sets = [("dozen", 12)] + ([] if args.quick else [("all67", None)])
    settings = [
        ("exhaustive_8192 (baseline)", SfMConfig(matcher="exhaustive", max_num_features=8192)),
        ("exhaustive_2048", SfMConfig(matcher="exhaustive", max_num_features=2048)),
        ("sequential_2048", SfMConfig(matcher="sequential", max_num_features=2048)),
    ]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for set_name, count in sets:
            photos = Path(tmp) / set_name / "photos"
            downscaled_photos(photos, count)
            baseline = None
            for label, config in settings:
                case = run_case(photos, Path(tmp) / set_name, label.split()[0], config, reference)
                case["set"] = set_name
                baseline = baseline or case["seconds_total"]
                case["speedup_vs_baseline"] = round(baseline / case["seconds_total"], 3)
                print(json.dumps(case))
                results.append(case)
    if args.quick:
        return
    payload = {
        "benchmark": "sfm",
        "machine": f"{platform.node()} {platform.machine()}, {threads} CPU threads used, no GPU",
        "note": "fox photos downscaled to 270x480; reference = instant-ngp transforms.json (COLMAP on"
        " 1080x1920, OpenCV camera). CPU shared with other jobs: timings are noisy, compare ratios.",
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
