"""Refuse a reconstruction that will not fit in memory, before anything big is allocated.

The estimate is the peak resident memory that training adds to the process, by part:

- ``images``: every view decoded to float32 [H, W, 3] and kept for the whole run;
- ``gaussians``: per Gaussian at the largest count densification may reach (``max_gaussians``,
  or ``GROWTH_FACTOR`` x the initial count if lower): parameters, gradients, two Adam moments, a
  second copy while densification concatenates, and the projection / SH temporaries of a render;
- ``rasteriser``: the CPU tiled rasteriser's per-(Gaussian, tile) state, which grows with the
  number of tile intersections of one render (predicted by :func:`predicted_intersections`),
  plus its per-block temporaries (one set per worker thread);
- ``other``: per-pixel outputs, loss maps and their gradients, and the fixed cost of code loaded
  on first use.

Every constant was measured with ``benchmarks/bench_memory.py`` (real fern runs on CPU, each in a
fresh process, peak RSS minus the RSS after imports and scene load; results in
``benchmarks/results/memory.json``). The estimate errs high on purpose: a false refusal costs the
user a ``--downscale``; a false accept costs a swapping machine or an out-of-memory kill with
nothing saved. On CUDA, gsplat keeps far less per intersection, so the estimate is conservative.
"""

from __future__ import annotations

import math
import os

import torch

from genfusion.data.types import Camera
from genfusion.errors import GenFusionError

MIB = 1024**2

# --- Gaussians ---------------------------------------------------------------------------------
FLOATS_PER_GAUSSIAN = 59  # means 3 + quats 4 + scales 3 + opacity 1 + SH 48
COPIES_PER_GAUSSIAN = 5  # parameter, gradient, Adam exp_avg, exp_avg_sq, + the copy densification's cat makes
# Per Gaussian per render: projected means/conics/depths/radii, SH basis and view colours, and their
# gradients (~1 KB in the 3DGS/2DGS projection code, float32 with a few float64 intermediates).
RENDER_BYTES_PER_GAUSSIAN = 1024
GROWTH_FACTOR = 10  # densification grows the initial count at most about this much in practice

# --- tile intersections ------------------------------------------------------------------------
TILE_SIZE = 16  # pixels per tile side (genfusion.splat.projection.TILE_SIZE)
# Screen footprint model: random-init / densified Gaussians fill the scene volume, so their size
# falls as N^(-1/3); a Gaussian's bounding box spans FOOTPRINT * sqrt(W H) / 16 * N^(-1/3) + 1 tiles
# per side. Fitted on fern: 3.15..3.65 over 126x94 .. 1008x756 and 10k .. 100k Gaussians (bench);
# 4.0 keeps a margin for closer or larger scenes.
FOOTPRINT = 4.0
# Measured peak bytes per tile intersection of the largest render (3DGS 1.6-3.1 KB, 2DGS 2.1-3.7 KB
# after the per-block part below): the blended weights and ratios of every fragment (8 B x 256
# pixels) are alive while a render's blocks are composited (also when the backward recomputes them:
# the allocator keeps the blocks' pages), plus sort keys, tile groups and per-fragment gradients.
BYTES_PER_INTERSECTION = {"3dgs": 3_000, "2dgs": 3_700}
# Per worker thread: the [G, 256, K] float32/float64 temporaries of one tile block (bounded by the
# tiler's max_elements) and the allocator arena that keeps them; 2DGS builds float64 ray-splat
# geometry, so several times more. Measured as the intercept at small images (126x94, 40k
# intersections: 3DGS 266 MiB, 2DGS 453 MiB in all, with 2 threads).
BLOCK_BYTES_PER_THREAD = {"3dgs": 40 * MIB, "2dgs": 130 * MIB}

# --- per pixel and fixed -----------------------------------------------------------------------
# Rendered colour/depth/alpha (+ normals, surface normals and distortion for 2DGS), the SSIM maps of
# the D-SSIM loss (11x11 window over 5 moment maps) and the gradients of all of them, float32.
PIXEL_BYTES = {"3dgs": 600, "2dgs": 1_200}
# Code and allocator state loaded on the first step (torch.optim's Adam pulls in torch._dynamo:
# 68 MiB measured), independent of the scene.
RUNTIME_BYTES = 100 * MIB


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (CUDA: free device memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def predicted_intersections(num_gaussians: int, width: int, height: int) -> int:
    """Tile intersections ((Gaussian, tile) pairs) of one render of ``num_gaussians`` Gaussians,
    from the footprint model above (never more than one per Gaussian and tile)."""
    if num_gaussians <= 0:
        return 0
    tiles = math.ceil(width / TILE_SIZE) * math.ceil(height / TILE_SIZE)
    span = FOOTPRINT * math.sqrt(width * height) / TILE_SIZE * num_gaussians ** (-1 / 3) + 1
    return int(num_gaussians * min(tiles, span * span))


def estimate_training_bytes(
    *,
    num_gaussians: int,
    width: int,
    height: int,
    num_views: int,
    max_gaussians: int | None = None,
    method: str = "2dgs",
    threads: int | None = None,
) -> dict[str, int]:
    """Estimated peak bytes training adds to the process, by part (``total`` is the sum);
    ``threads`` defaults to torch's CPU thread count (the rasteriser's worker pool)."""
    grown = num_gaussians * GROWTH_FACTOR
    if max_gaussians:
        grown = min(grown, max_gaussians)
    grown = max(grown, num_gaussians)
    kind = method if method in BYTES_PER_INTERSECTION else "2dgs"
    threads = max(1, threads or torch.get_num_threads())
    pixels = width * height
    intersections = predicted_intersections(grown, width, height)
    parts = {
        "images": num_views * pixels * 3 * 4,
        "gaussians": grown * (FLOATS_PER_GAUSSIAN * 4 * COPIES_PER_GAUSSIAN + RENDER_BYTES_PER_GAUSSIAN),
        "rasteriser": intersections * BYTES_PER_INTERSECTION[kind] + threads * BLOCK_BYTES_PER_THREAD[kind],
        "other": pixels * PIXEL_BYTES[kind] + RUNTIME_BYTES,
    }
    parts["total"] = sum(parts.values())
    parts["intersections"] = intersections
    return parts


def check_training_memory(
    *,
    num_gaussians: int,
    cameras: list[Camera],
    method: str,
    device: torch.device,
    limit_gb: float = 0.0,
    max_gaussians: int | None = None,
    downscale: int = 1,
) -> dict[str, int]:
    """Raise :class:`GenFusionError` when the estimate exceeds the limit (``limit_gb``, or 80% of
    the free memory when 0), naming the number and the ``--downscale`` that would fit."""
    if not cameras:
        raise GenFusionError("the scene has no cameras to train on")
    width = max(c.width for c in cameras)
    height = max(c.height for c in cameras)
    estimate = estimate_training_bytes(
        num_gaussians=num_gaussians,
        width=width,
        height=height,
        num_views=len(cameras),
        max_gaussians=max_gaussians,
        method=method,
    )
    limit = int(limit_gb * 1024**3) if limit_gb > 0 else int(0.8 * available_bytes(device))
    if estimate["total"] <= limit:
        return estimate
    factor, fits = 2, False
    while factor <= 64 and not fits:
        smaller = estimate_training_bytes(
            num_gaussians=num_gaussians,
            width=max(1, width // factor),
            height=max(1, height // factor),
            num_views=len(cameras),
            max_gaussians=max_gaussians,
            method=method,
        )
        fits = smaller["total"] <= limit
        factor = factor if fits else factor * 2
    if fits:
        advice = f"Re-run with --downscale {downscale * factor} (or larger), or lower --max-gaussians."
    else:
        advice = "No downscale fits it alone: lower --max-gaussians and --init-random-points too."
    gib = 1024**3
    raise GenFusionError(
        f"training {method} on {len(cameras)} images of {width}x{height} starting from "
        f"{num_gaussians} Gaussians needs about "
        f"{estimate['total'] / gib:.1f} GiB (images {estimate['images'] / gib:.1f}, Gaussians "
        f"{estimate['gaussians'] / gib:.1f}, rasteriser {estimate['rasteriser'] / gib:.1f} for about "
        f"{estimate['intersections']:,} tile intersections, other {estimate['other'] / gib:.1f}) but only "
        f"{limit / gib:.2f} GiB can be used on {device.type}. {advice}"
    )
