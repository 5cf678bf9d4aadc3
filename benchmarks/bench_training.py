"""Training speed and quality of ``genfusion reconstruct`` -> benchmarks/results/training.json.

CPU (always): training iterations per second with 2 threads on fern at a small resolution, for
2DGS and 3DGS, with our tiled torch rasteriser and, as the baseline in the same run, the dense
brute-force compositor (``speedup`` = torch / dense); the same at images_8 (504x378) from 20k
random Gaussians, where the dense compositor does not fit in memory. Then a CPU fern reconstruction (hold-out
every 8th view) with as many iterations as fit in ``--cpu-fern-seconds``: PSNR / SSIM and time.

CUDA (when present, else recorded as skipped): the same iterations per second with gsplat; a
full fern reconstruction (images_8, hold-out every 8th, 7,000 iterations, 2DGS) with gsplat; and
the backend quality comparison the project targets: the same config and seed trained with the
torch rasteriser (our CPU backend, run on the GPU so it finishes) and with gsplat must end within
0.3 dB PSNR of each other. Run as is on a GPU machine: ``python benchmarks/bench_training.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genfusion.data import load_scene  # noqa: E402
from genfusion.splat.config import ReconstructConfig  # noqa: E402
from genfusion.splat.trainer import Trainer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "training.json"
DEFAULT_FERN = REPO.parent / "shared" / "data" / "fern"


def iterations_per_second(scene, config: ReconstructConfig, warmup: int, timed: int) -> dict:
    """Steps per second of ``timed`` steps after ``warmup`` (densification included as scheduled)."""
    trainer = Trainer(scene, config)
    for _ in range(warmup):
        trainer.train_step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(timed):
        trainer.train_step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    return {
        "steps": timed,
        "seconds": round(seconds, 3),
        "its_per_s": round(timed / seconds, 3),
        # CPU time of all threads: on a shared, overloaded machine wall time overstates the cost
        "cpu_seconds": round(cpu_seconds, 3),
        "its_per_cpu_s": round(timed / cpu_seconds, 3),
        "num_gaussians": trainer.num_gaussians,
        "resolution": list(trainer.train_views.sizes[0]),
    }


def full_run(scene, config: ReconstructConfig, time_limit: float | None = None) -> dict:
    """Train ``config.iterations`` steps (or until ``time_limit`` seconds) and evaluate the
    hold-out views."""
    trainer = Trainer(scene, config)
    start = time.perf_counter()
    over_time = None if time_limit is None else (lambda: time.perf_counter() - start > time_limit)
    trainer.train(stop_check=over_time)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    evaluation = trainer.evaluate(keep_renders=False)
    train_eval = trainer.evaluate(trainer.train_views, keep_renders=False)
    return {
        "method": config.method,
        "backend": config.backend,
        "device": str(trainer.device),
        "iterations": trainer.step,
        "planned_iterations": config.iterations,
        "resolution": list(trainer.train_views.sizes[0]),
        "train_views": len(trainer.train_views),
        "test_views": len(trainer.test_views),
        "seconds": round(seconds, 1),
        "test_psnr": evaluation.mean("psnr"),
        "test_ssim": evaluation.mean("ssim"),
        "test_lpips": evaluation.mean("lpips"),
        "train_psnr": train_eval.mean("psnr"),
        "num_gaussians": trainer.num_gaussians,
    }


def cpu_section(fern: Path, args) -> dict:
    torch.set_num_threads(args.threads)
    scene = load_scene(fern, downscale=args.speed_downscale)
    out: dict = {"threads": torch.get_num_threads(), "speed": {}}
    for method in ("3dgs", "2dgs"):
        for backend in ("torch", "dense"):
            cfg = ReconstructConfig(
                method=method,
                backend=backend,
                device="cpu",
                iterations=1000,
                init_points="random",
                init_random_points=args.points,
            )
            result = iterations_per_second(scene, cfg, warmup=2, timed=args.timed_steps)
            out["speed"][f"{method}_{backend}"] = result
            print(method, backend, result, flush=True)
        torch_its = out["speed"][f"{method}_torch"]["its_per_s"]
        dense_its = out["speed"][f"{method}_dense"]["its_per_s"]
        out["speed"][f"{method}_speedup_torch_vs_dense"] = round(torch_its / dense_its, 3)
    if args.full_points > 0:  # a realistic size, where the dense reference does not fit in memory
        scene = load_scene(fern, downscale=8)  # images_8, 504x378
        for method in ("3dgs", "2dgs"):
            cfg = ReconstructConfig(
                method=method,
                backend="torch",
                device="cpu",
                iterations=1000,
                init_points="random",
                init_random_points=args.full_points,
            )
            result = iterations_per_second(scene, cfg, warmup=1, timed=3)
            out["speed"][f"{method}_torch_images_8"] = result
            print(method, "images_8", result, flush=True)
    if args.cpu_fern_seconds > 0:
        scene = load_scene(fern, downscale=args.fern_downscale)
        probe = ReconstructConfig(
            method="3dgs", device="cpu", iterations=1000, init_points="random", init_random_points=args.points
        )
        rate = iterations_per_second(scene, probe, warmup=2, timed=5)["its_per_s"]
        # densification grows the Gaussians several-fold and slows the steps accordingly; the
        # time limit is a guard (the schedule then ends early, which the JSON shows)
        iterations = max(50, int(args.cpu_fern_seconds * rate * 0.3))
        cfg = ReconstructConfig(
            method="3dgs",
            device="cpu",
            iterations=iterations,
            init_points="random",
            init_random_points=args.points,
        )
        out["fern"] = full_run(scene, cfg, time_limit=1.5 * args.cpu_fern_seconds)
        out["fern"]["note"] = (
            f"as many iterations as fit in ~{args.cpu_fern_seconds} s at 1/{args.fern_downscale} resolution "
            "on this shared CPU; not comparable with the 7k-iteration GPU run"
        )
        print("cpu fern", out["fern"], flush=True)
    return out


def cuda_section(fern: Path, args) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine; run this script on one to fill this section"}
    out: dict = {"device_name": torch.cuda.get_device_name(0), "speed": {}}
    scene = load_scene(fern, downscale=args.speed_downscale)
    for method in ("3dgs", "2dgs"):
        for backend in ("gsplat", "torch"):
            cfg = ReconstructConfig(
                method=method,
                backend=backend,
                device="cuda",
                iterations=1000,
                init_points="random",
                init_random_points=args.points,
            )
            out["speed"][f"{method}_{backend}"] = iterations_per_second(scene, cfg, warmup=5, timed=50)
    scene = load_scene(fern, downscale=8)  # images_8
    runs = {}
    for backend in ("gsplat", "torch"):
        cfg = ReconstructConfig(method="2dgs", backend=backend, device="cuda", iterations=7000, seed=0)
        runs[backend] = full_run(scene, cfg)
        print("cuda fern", backend, runs[backend], flush=True)
    gap = abs(runs["gsplat"]["test_psnr"] - runs["torch"]["test_psnr"])
    out["fern_full"] = runs["gsplat"]
    out["backend_comparison"] = {
        "gsplat": runs["gsplat"],
        "torch": runs["torch"],
        "psnr_gap_db": round(gap, 3),
        "target_db": 0.3,
        "within_target": gap <= 0.3,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fern", type=Path, default=DEFAULT_FERN, help="the LLFF fern folder")
    parser.add_argument("--speed-downscale", type=int, default=32, help="resolution divisor for its/s")
    parser.add_argument("--points", type=int, default=2000, help="random initial Gaussians")
    parser.add_argument("--timed-steps", type=int, default=10, help="steps timed for its/s on CPU")
    parser.add_argument(
        "--full-points", type=int, default=20000, help="random Gaussians of the images_8 speed case (0 skips)"
    )
    parser.add_argument("--cpu-fern-seconds", type=float, default=300, help="0 skips the CPU fern run")
    parser.add_argument("--fern-downscale", type=int, default=32, help="resolution divisor of the CPU run")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--skip-cpu", action="store_true", help="only the CUDA section")
    args = parser.parse_args()

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "note": "CPU numbers measured on a 2-core machine shared with other jobs: noisy",
    }
    if not args.skip_cpu:
        results["cpu"] = cpu_section(args.fern, args)
    results["cuda"] = cuda_section(args.fern, args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
