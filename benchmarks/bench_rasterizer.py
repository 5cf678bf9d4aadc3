"""Rasteriser benchmark: forward+backward time of ``genfusion.splat.render`` backends.

Scenes: N random Gaussians inside the camera frustum (depth 2..6), sized so that each covers a
few to tens of pixels at 256x192 (3-sigma radius about 1.5-7.5 px), random rotations, opacities
0.1-0.9, SH degree 3; and an opaque variant (twice the size, opacities 0.6-0.99) timed with and
without the per-tile early exit. One camera. Timed: render (SH + projection + binning + compositing) and
backward of a loss over rgb, depth, alpha (+ normals and distortion for 2DGS). Median of
``--repeats`` runs after one warm-up. The dense reference runs beside the tiled one where its
memory estimate fits (otherwise the JSON says why it was skipped), and gsplat runs when CUDA is
present.

    .venv/bin/python benchmarks/bench_rasterizer.py            # writes benchmarks/results/rasterizer.json
    .venv/bin/python benchmarks/bench_rasterizer.py --quick    # 20k at 256x192 only, no JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genfusion.splat import compositing  # noqa: E402
from genfusion.splat.render import render  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "rasterizer.json"
DENSE_MEMORY_LIMIT = 4 * 1024**3  # bytes; the dense reference keeps ~20 [N, H*W] float tensors
REFERENCE_WIDTH = 256  # Gaussian sizes are chosen in pixels at this width


def make_scene(
    n: int, width: int, height: int, seed: int = 0, device: str = "cpu", opaque: bool = False
) -> dict:
    """A random, realistic scene in front of one camera (OpenCV convention); ``opaque``: twice the
    size and opacities 0.6-0.99, so that every pixel stops after a few dozen Gaussians."""
    gen = torch.Generator().manual_seed(seed)
    focal = 0.9 * width
    depth = 2.0 + 4.0 * torch.rand(n, generator=gen)
    u = torch.rand(n, generator=gen) * width
    v = torch.rand(n, generator=gen) * height
    means = torch.stack([(u - width / 2) / focal * depth, (v - height / 2) / focal * depth, depth], -1)
    # 1-sigma radius 0.5..2.5 px at the reference width, anisotropic
    sigma_px = 0.5 + 2.0 * torch.rand(n, generator=gen)
    ref_focal = 0.9 * REFERENCE_WIDTH
    base = sigma_px * depth / ref_focal
    scales = base[:, None] * (0.5 + torch.rand(n, 3, generator=gen))
    quats = torch.randn(n, 4, generator=gen)
    opacities = 0.1 + 0.8 * torch.rand(n, generator=gen)
    if opaque:
        scales, opacities = 2.0 * scales, 0.6 + 0.39 * torch.rand(n, generator=gen)
    sh = torch.randn(n, 16, 3, generator=gen) * 0.3
    Ks = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])[None]
    viewmats = torch.eye(4)[None]
    tensors = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=sh)
    out = {k: t.to(device).requires_grad_() for k, t in tensors.items()}
    out.update(viewmats=viewmats.to(device), Ks=Ks.to(device), width=width, height=height)
    return out


def time_backend(scene: dict, mode: str, backend: str, repeats: int) -> dict:
    """Median forward and forward+backward seconds of one backend on one scene."""
    params = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors")]
    sync = torch.cuda.synchronize if scene["means"].is_cuda else (lambda: None)

    def run() -> tuple[float, float, float]:
        sync()
        start = time.perf_counter()
        cpu_start = time.process_time()
        out = render(
            *params, scene["viewmats"], scene["Ks"], scene["width"], scene["height"],
            mode=mode, sh_degree=3, background=torch.ones(3, device=scene["means"].device),
            backend=backend,
        )  # fmt: skip
        loss = out.rgb.mean() + out.depth.mean() + out.alpha.mean()
        if out.normals is not None:
            loss = loss + out.normals.mean() + out.distortion.mean()
        sync()
        forward = time.perf_counter() - start
        torch.autograd.grad(loss, params)
        sync()
        return forward, time.perf_counter() - start, time.process_time() - cpu_start

    run()  # warm-up
    runs = [run() for _ in range(repeats)]
    return {
        "forward_s": statistics.median(r[0] for r in runs),
        "forward_backward_s": statistics.median(r[1] for r in runs),
        "runs_forward_backward_s": [round(r[1], 4) for r in runs],
        # CPU time of this process (all threads): robust to other jobs on a shared machine
        "forward_backward_cpu_s": statistics.median(r[2] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20k at 256x192 only; no JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(20_000, 256, 192)] if args.quick else [
        (20_000, 256, 192), (100_000, 256, 192), (20_000, 512, 288), (100_000, 512, 288)
    ]  # fmt: skip
    has_cuda = torch.cuda.is_available()
    rows = []
    for mode in ("3dgs", "2dgs"):
        for n, width, height in cases:
            scene = make_scene(n, width, height)
            row = {"mode": mode, "n_gaussians": n, "width": width, "height": height}
            row["torch_cpu"] = time_backend(scene, mode, "torch", args.repeats)
            if n <= 20_000:  # single-threaded too: robust to other jobs on a shared machine
                torch.set_num_threads(1)
                row["torch_cpu_1thread"] = time_backend(scene, mode, "torch", args.repeats)
                torch.set_num_threads(args.threads)
            dense_bytes = 20 * 4 * n * width * height
            if dense_bytes <= DENSE_MEMORY_LIMIT:
                row["dense_cpu"] = time_backend(scene, mode, "dense", max(1, args.repeats // 2))
            else:
                row["dense_cpu"] = {
                    "skipped": f"needs ~{dense_bytes / 1024**3:.0f} GiB (20 float32 [N, H*W] tensors) "
                    f"> {DENSE_MEMORY_LIMIT / 1024**3:.0f} GiB budget; see the dense_small rows"
                }
            if has_cuda:
                gpu_scene = make_scene(n, width, height, device="cuda")
                row["gsplat_cuda"] = time_backend(gpu_scene, mode, "gsplat", args.repeats)
                row["torch_cuda"] = time_backend(gpu_scene, mode, "torch", args.repeats)
            rows.append(row)
            print(json.dumps(row), flush=True)
        # An opaque scene, where whole tiles stop early: the per-tile early exit against the same
        # rasteriser with it disabled (one chunk per block), in the same run.
        scene = make_scene(100_000, 256, 192, opaque=True)
        row = {"mode": mode, "n_gaussians": 100_000, "width": 256, "height": 192, "opaque": True}
        row["torch_cpu"] = time_backend(scene, mode, "torch", args.repeats)
        default_chunk = compositing.CHUNK_SLOTS
        compositing.CHUNK_SLOTS = 1 << 30
        row["torch_cpu_no_early_exit"] = time_backend(scene, mode, "torch", args.repeats)
        compositing.CHUNK_SLOTS = default_chunk
        row["speedup_early_exit"] = (
            row["torch_cpu_no_early_exit"]["forward_backward_s"] / row["torch_cpu"]["forward_backward_s"]
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
        # The dense reference fits at small N: a same-run ratio against it.
        n_small = 500
        scene = make_scene(n_small, 256, 192)
        row = {"mode": mode, "n_gaussians": n_small, "width": 256, "height": 192, "dense_small": True}
        row["torch_cpu"] = time_backend(scene, mode, "torch", args.repeats)
        row["dense_cpu"] = time_backend(scene, mode, "dense", 2)
        row["speedup_torch_vs_dense"] = (
            row["dense_cpu"]["forward_backward_s"] / row["torch_cpu"]["forward_backward_s"]
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.quick:
        return
    result = {
        "benchmark": "rasterizer forward+backward",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if has_cuda else None,
            "load_average_at_end": os.getloadavg(),
        },
        "target": "20k Gaussians at 256x192, forward+backward < 0.5 s on 2 threads (CPU, torch backend)",
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
