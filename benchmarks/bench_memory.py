"""Peak training memory against ``estimate_training_bytes`` -> benchmarks/results/memory.json.

Each case is a real CPU training run on fern (2DGS or 3DGS, a resolution, a random-init Gaussian
count grown to a ``max_gaussians`` cap by early, aggressive densification), run in a FRESH
subprocess so that VmHWM is the peak of that run alone. Measured = peak RSS minus the
RSS after imports and scene load (the baseline, also recorded); the estimate counts what training
adds (images, Gaussians, rasteriser, per-pixel maps), so the two compare directly.

The schedule is made for memory, not quality: densification every 3 steps from step 1 with a
vanishing gradient threshold (every visible Gaussian is split or cloned, so the cap is reached
after one or two refinements), full SH degree from step 3, and the 2DGS regularisers on from
step 0, so the steps after a refinement render the largest model with every loss active.

Run: ``python benchmarks/bench_memory.py`` (all cases, ~10 min on 2 cores), ``--quick`` for a
smaller grid, ``--fern PATH`` for another copy of the capture.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "memory.json"
DEFAULT_FERN = REPO.parent / "shared" / "data" / "fern"
MIB = 1024**2

# (method, downscale of the full 4032x3024 fern, initial random Gaussians, max_gaussians)
FULL_GRID = [
    (method, downscale, init, cap)
    for method in ("3dgs", "2dgs")
    for downscale, init, cap in (
        (32, 5_000, 10_000),
        (16, 5_000, 10_000),
        (16, 20_000, 40_000),
        (8, 20_000, 40_000),
        (8, 50_000, 100_000),
        (4, 20_000, 40_000),
    )
]
QUICK_GRID = [(m, d, i, c) for m in ("3dgs", "2dgs") for d, i, c in ((32, 2_000, 4_000), (16, 5_000, 10_000))]


def rss_bytes() -> int:
    """Current resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image so far (VmHWM; not ru_maxrss, which keeps
    the maximum across exec and so starts at the forking parent's size)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def memory_config(method: str, downscale: int, init: int, cap: int, steps: int):
    """A config whose first ``steps`` steps reach the cap and run every memory-relevant part."""
    from genfusion.splat.config import ReconstructConfig

    return ReconstructConfig(
        method=method,
        device="cpu",
        backend="torch",
        downscale=downscale,
        iterations=30_000,  # explicit schedule steps below are used as given
        init_points="random",
        init_random_points=init,
        max_gaussians=cap,
        refine_start=1,
        refine_every=3,
        grow_grad2d=1e-12,  # every Gaussian that got a gradient is split or cloned
        reset_every=100_000,
        sh_degree_interval=1,  # degree 3 (48 coefficients) from step 3 on
        normal_start=0,
        distortion_start=0,
        checkpoint_every=0,
        log_every=1_000_000,
    )


def run_case(fern: Path, method: str, downscale: int, init: int, cap: int, steps: int, threads: int) -> dict:
    """One training run in this process; the caller is a fresh subprocess."""
    import torch

    torch.set_num_threads(threads)
    from genfusion.data import load_scene
    from genfusion.splat import rasterize_2dgs, rasterize_3dgs
    from genfusion.splat.memory import estimate_training_bytes
    from genfusion.splat.trainer import Trainer

    intersections: list[int] = []
    for module in (rasterize_2dgs, rasterize_3dgs):  # count tile intersections of every render
        original = module.bin_gaussians

        def counting(*args, _original=original, **kwargs):
            bins = _original(*args, **kwargs)
            intersections.append(bins.n_intersections)
            return bins

        module.bin_gaussians = counting

    scene = load_scene(fern, downscale=downscale)
    baseline = rss_bytes()
    config = memory_config(method, downscale, init, cap, steps)
    start = time.perf_counter()
    trainer = Trainer(scene, config)
    after_init = peak_rss_bytes()
    width, height = trainer.train_views.sizes[0]
    counts, peaks = [], []
    for _ in range(steps):
        stats = trainer.train_step()
        counts.append(stats.num_gaussians)
        peaks.append(round((peak_rss_bytes() - baseline) / MIB, 1))
    seconds = time.perf_counter() - start
    estimate = estimate_training_bytes(
        num_gaussians=init,
        width=width,
        height=height,
        num_views=len(scene.cameras),
        max_gaussians=cap,
        method=method,
        threads=threads,
    )
    predicted = estimate.pop("intersections")
    measured = peak_rss_bytes() - baseline
    return {
        "method": method,
        "downscale": downscale,
        "width": width,
        "height": height,
        "num_views": len(scene.cameras),
        "init_gaussians": init,
        "max_gaussians": cap,
        "steps": steps,
        "gaussians_per_step": counts,
        "max_gaussians_reached": max(counts),
        "max_intersections": max(intersections) if intersections else None,
        "intersections_per_step": intersections,
        "predicted_intersections": predicted,
        "baseline_rss_mib": round(baseline / MIB, 1),
        "after_trainer_init_mib": round((after_init - baseline) / MIB, 1),
        "peak_after_step_mib": peaks,
        "measured_peak_mib": round(measured / MIB, 1),
        "estimate_mib": {k: round(v / MIB, 1) for k, v in estimate.items()},
        "ratio_estimate_over_measured": round(estimate["total"] / measured, 3),
        "seconds": round(seconds, 1),
    }


def run_in_subprocess(fern: Path, case: tuple, steps: int, threads: int) -> dict:
    """``run_case`` in a fresh interpreter, so the peak RSS belongs to that run alone."""
    method, downscale, init, cap = case
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        json.dumps([method, downscale, init, cap]),
        "--fern",
        str(fern),
        "--steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"case": list(case), "error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fern", type=Path, default=DEFAULT_FERN, help="the LLFF fern folder")
    parser.add_argument("--steps", type=int, default=8, help="training steps per case (refines at 3 and 6)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="the small grid only")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    args = parser.parse_args()

    if args.one:
        method, downscale, init, cap = json.loads(args.one)
        print(json.dumps(run_case(args.fern, method, downscale, init, cap, args.steps, args.threads)))
        return

    cases = []
    for case in QUICK_GRID if args.quick else FULL_GRID:
        result = run_in_subprocess(args.fern, case, args.steps, args.threads)
        cases.append(result)
        print(json.dumps(result), flush=True)
    ratios = [c["ratio_estimate_over_measured"] for c in cases if "error" not in c]
    results = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "threads": args.threads,
            "note": "2-core machine shared with other jobs; RSS peaks vary by a few percent between runs",
        },
        "command": " ".join(["python", "benchmarks/bench_memory.py", *sys.argv[1:]]),
        "cases": cases,
        "summary": {
            "min_ratio": min(ratios) if ratios else None,
            "max_ratio": max(ratios) if ratios else None,
            "never_below_measured": bool(ratios) and min(ratios) >= 1.0,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(json.dumps(results["summary"]))


if __name__ == "__main__":
    main()
