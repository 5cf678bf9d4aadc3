"""Refuse a reconstruction that will not fit in memory, before anything big is allocated.

The estimate is the sum of
- the decoded images (float32, all views kept in memory),
- the Gaussians with their gradients and two Adam moments (4 copies of 59 floats each), at the
  largest count densification may reach (``max_gaussians``, or 10x the initial count if lower),
- the rasteriser's working set for one training view: per-pixel buffers kept for the backward
  pass plus per-(pixel, Gaussian) intersection records. The latter grows with the number of
  Gaussians overlapping a pixel, modelled as ``OVERLAP_PER_PIXEL`` (a 2DGS/3DGS scene after
  densification has tens of surfels per pixel); the constants were measured on our CPU rasteriser
  and are conservative for gsplat's CUDA kernels (which keep far less).

It errs high on purpose: a false refusal costs the user a ``--downscale``; a false accept costs
a swapping machine or an out-of-memory kill with nothing saved.
"""

from __future__ import annotations

import os

import torch

from genfusion.data.types import Camera
from genfusion.errors import GenFusionError

FLOATS_PER_GAUSSIAN = 59  # means 3 + quats 4 + scales 3 + opacity 1 + SH 48
COPIES_PER_GAUSSIAN = 4  # parameter, gradient, Adam exp_avg, exp_avg_sq
PROJECTION_BYTES_PER_GAUSSIAN = 600  # projected 2D means, conics/ray transforms, depths, radii, grads
PIXEL_BUFFER_BYTES = 400  # per pixel: colour, depth, alpha, normals, loss maps and their gradients
OVERLAP_PER_PIXEL = 48  # Gaussians intersecting an average pixel (after densification)
BYTES_PER_INTERSECTION = 48  # per (pixel, Gaussian): alpha, transmittance, weights saved for backward
GROWTH_FACTOR = 10  # densification grows the initial count at most about this much in practice


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


def estimate_training_bytes(
    *, num_gaussians: int, width: int, height: int, num_views: int, max_gaussians: int | None = None
) -> dict[str, int]:
    """Estimated peak bytes of training, by part (``total`` is the sum)."""
    grown = num_gaussians * GROWTH_FACTOR
    if max_gaussians:
        grown = min(grown, max_gaussians)
    grown = max(grown, num_gaussians)
    pixels = width * height
    parts = {
        "images": num_views * pixels * 3 * 4,
        "gaussians": grown * (FLOATS_PER_GAUSSIAN * 4 * COPIES_PER_GAUSSIAN + PROJECTION_BYTES_PER_GAUSSIAN),
        "rasteriser": pixels * (PIXEL_BUFFER_BYTES + OVERLAP_PER_PIXEL * BYTES_PER_INTERSECTION),
    }
    parts["total"] = sum(parts.values())
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
        f"{estimate['gaussians'] / gib:.1f}, rasteriser {estimate['rasteriser'] / gib:.1f}) but only "
        f"{limit / gib:.2f} GiB can be used on {device.type}. {advice}"
    )
