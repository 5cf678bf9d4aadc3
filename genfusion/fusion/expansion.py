"""Content expansion (scene completion): new Gaussians where the reconstruction has nothing.

Split and clone only grow Gaussians that already exist, so a region no Gaussian covers (a "black
hole" of the render) never fills by densification. GenFusion's fix (method.md, "Content
expansion"): where the render is unreliable, trust the repaired frame instead, i.e.

1. :func:`unreliable_mask`: pixels with low alpha or no rendered depth;
2. :func:`align_depth`: the generated depth is only defined up to scale and shift (clip-normalised
   disparity, inverted), so fit both by least squares onto the rendered depth where the render
   is solid (the caller passes alpha > 0.4);
3. :func:`sample_expansion`: a random fraction (10%) of the unreliable pixels, back-projected
   (:func:`backproject`) with the aligned depth, coloured by the generated RGB;
4. :func:`new_gaussians`: Gaussians there in the trainer's parameter layout (scale from
   nearest-neighbour distances, low opacity), ready for :func:`genfusion.splat.append.append_gaussians`.

Pure tensor functions, on whatever device the inputs are (the camera is numpy, as everywhere in
``genfusion.data``). Images are [H, W] / [H, W, 3]; a trailing channel of 1 ([H, W, 1], as the
renderer returns alpha and depth) is accepted too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from genfusion.data.types import Camera
from genfusion.splat.sh import rgb_to_sh

ALPHA_RELIABLE = 0.4  # method.md: generated depth is aligned where the render's alpha exceeds this
ALPHA_UNRELIABLE = 0.1  # method.md: below this alpha a pixel shows nothing the reconstruction knows
MIN_ALIGN_PIXELS = 64  # fewer valid pixels than this give no trustworthy scale and shift
NEIGHBOURS = 3  # new Gaussians' size: RMS distance to this many nearest points (gsplat's init)


def _plane(image: Tensor) -> Tensor:
    """[H, W] view of an [H, W] or [H, W, 1] tensor."""
    return image[..., 0] if image.dim() == 3 and image.shape[-1] == 1 else image


def unreliable_mask(alpha: Tensor, depth: Tensor, alpha_threshold: float = ALPHA_UNRELIABLE) -> Tensor:
    """bool [H, W]: where the render cannot be trusted, i.e. alpha below ``alpha_threshold`` or no
    rendered depth (not finite, or not in front of the camera)."""
    alpha, depth = _plane(alpha), _plane(depth)
    return (alpha < alpha_threshold) | ~torch.isfinite(depth) | (depth <= 0)


class DepthAlignment(NamedTuple):
    """What :func:`align_depth` found: ``aligned = scale * generated + shift``."""

    aligned: Tensor  # [H, W] the generated depth in the render's units
    scale: float  # least-squares scale (1.0 when the fit failed)
    shift: float  # least-squares shift (0.0 when the fit failed)
    fitted: bool  # False: too few valid pixels or a degenerate fit; ``aligned`` is the input unchanged
    valid_pixels: int  # pixels the fit used


def align_depth(
    generated: Tensor, rendered: Tensor, valid: Tensor, *, min_pixels: int = MIN_ALIGN_PIXELS
) -> DepthAlignment:
    """Least-squares scale and shift of ``generated`` depth onto ``rendered`` depth over ``valid``.

    Minimises sum over valid pixels of (scale * generated + shift - rendered)^2 (only pixels where
    both depths are finite count). With fewer than ``min_pixels`` such pixels, a flat generated
    depth or a non-positive scale (a fit that would turn the scene inside out) the result is the
    documented fallback: scale 1, shift 0, ``fitted=False``; the caller should then not
    back-project with it. Returned as a :class:`DepthAlignment` (a named tuple: ``aligned, scale,
    shift, fitted, valid_pixels``).
    """
    generated, rendered, valid = _plane(generated), _plane(rendered), _plane(valid).bool()
    use = valid & torch.isfinite(generated) & torch.isfinite(rendered)
    count = int(use.sum())
    if count >= max(min_pixels, 2):
        wide = torch.float32 if generated.device.type == "mps" else torch.float64  # MPS has no float64
        g = generated[use].to(wide)  # sums over a million pixels: float64 where the device has it
        r = rendered[use].to(wide)
        g_mean, r_mean = g.mean(), r.mean()
        variance = ((g - g_mean) ** 2).mean()
        if float(variance) > 1e-12 * max(float(g_mean**2), 1e-12):
            scale = float(((g - g_mean) * (r - r_mean)).mean() / variance)
            shift = float(r_mean - scale * g_mean)
            if scale > 0 and math.isfinite(scale) and math.isfinite(shift):
                return DepthAlignment(generated * scale + shift, scale, shift, True, count)
    return DepthAlignment(generated, 1.0, 0.0, False, count)


def _camera_tensors(camera: Camera, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(K, R, t) of ``camera`` as tensors with ``like``'s device and floating dtype."""
    dtype = like.dtype if like.is_floating_point() else torch.float32
    K = torch.as_tensor(camera.K, dtype=dtype, device=like.device)
    c2w = torch.as_tensor(camera.camtoworld, dtype=dtype, device=like.device)
    return K, c2w[:3, :3], c2w[:3, 3]


def backproject(mask: Tensor, depth: Tensor, camera: Camera) -> Tensor:
    """World points [N, 3] of the pixels in ``mask`` at their ``depth`` (z-depth, camera axes
    OpenCV), in row-major pixel order; pixels without a usable depth (not finite, <= 0) are left
    out. Pixel centres sit at +0.5 (COLMAP / gsplat): pixel (0, 0) is the ray through (0.5, 0.5)."""
    mask, depth = _plane(mask).bool(), _plane(depth)
    if tuple(mask.shape) != (camera.height, camera.width):
        raise ValueError(
            f"mask {tuple(mask.shape)} does not match the camera's {camera.height}x{camera.width}"
        )
    use = mask & torch.isfinite(depth) & (depth > 0)
    rows, cols = torch.nonzero(use, as_tuple=True)
    K, R, t = _camera_tensors(camera, depth)
    z = depth[rows, cols].to(K.dtype)
    x = (cols.to(K.dtype) + 0.5 - K[0, 2]) / K[0, 0] * z
    y = (rows.to(K.dtype) + 0.5 - K[1, 2]) / K[1, 1] * z
    return torch.stack([x, y, z], dim=-1) @ R.T + t


def sample_expansion(
    rgb: Tensor,
    aligned_depth: Tensor,
    mask: Tensor,
    camera: Camera,
    fraction: float = 0.1,
    generator: torch.Generator | None = None,
    *,
    max_points: int | None = None,
) -> tuple[Tensor, Tensor]:
    """A random ``fraction`` of the ``mask`` pixels (the unreliable ones) with a usable aligned
    depth, back-projected: (points [M, 3], colours [M, 3] from ``rgb`` [H, W, 3] in [0, 1]).

    ``M = round(fraction * candidates)``, at most ``max_points``. Sampling uses ``generator`` (give
    one for repeatable rounds) and draws on the generator's device.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    depth = _plane(aligned_depth)
    candidates = _plane(mask).bool() & torch.isfinite(depth) & (depth > 0)
    flat = torch.nonzero(candidates.reshape(-1), as_tuple=True)[0]
    keep = int(math.floor(fraction * flat.numel() + 0.5))
    if max_points is not None:
        keep = min(keep, max_points)
    device = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(flat.numel(), generator=generator, device=device)[:keep].to(flat.device)
    chosen = torch.zeros_like(candidates.reshape(-1))
    chosen[flat[order]] = True
    chosen = chosen.reshape(candidates.shape)
    points = backproject(chosen, depth, camera)
    colors = rgb[chosen].to(points.dtype).clamp(0.0, 1.0)  # same row-major order as backproject
    return points, colors


def quats_facing(directions: Tensor) -> Tensor:
    """wxyz quaternions [N, 4] that turn the local +z axis onto each unit ``direction`` [N, 3]:
    a 2DGS surfel's normal is its local z, so this makes new surfels face the camera."""
    d = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # half-way quaternion between z = (0, 0, 1) and d: (1 + z.d, z x d), normalised
    quats = torch.stack([1.0 + d[:, 2], -d[:, 1], d[:, 0], torch.zeros_like(d[:, 0])], dim=-1)
    opposite = quats.norm(dim=-1) < 1e-6  # d = -z: half a turn about x
    quats[opposite] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=quats.dtype, device=quats.device)
    return quats / quats.norm(dim=-1, keepdim=True)


def neighbour_distances(points: Tensor, existing: Tensor, k: int = NEIGHBOURS) -> Tensor:
    """RMS distance [N] of each of ``points`` to its ``k`` nearest others among ``existing`` and
    ``points`` together (never zero: duplicates get the smallest positive distance, an isolated
    single point 0.01). On the CPU with a k-d tree: one query per round, any device in and out."""
    if points.shape[0] == 0:
        return points.new_zeros(0)
    new = points.detach().cpu().double().numpy()
    cloud = np.concatenate([existing.detach().cpu().double().numpy().reshape(-1, 3), new])
    if len(cloud) < 2:
        return points.new_full((points.shape[0],), 0.01)
    k = min(k, len(cloud) - 1)
    distances, _ = cKDTree(cloud).query(new, k=k + 1)  # the nearest is the point itself
    rms = np.sqrt((np.asarray(distances).reshape(len(new), k + 1)[:, 1:] ** 2).mean(axis=1))
    positive = rms[rms > 0]
    rms = np.maximum(rms, float(positive.min()) if len(positive) else 0.01)
    return torch.as_tensor(rms, dtype=points.dtype, device=points.device)


def new_gaussians(
    points: Tensor,
    colors: Tensor,
    existing_means: Tensor,
    sh_degree: int,
    opacity: float = 0.1,
    *,
    scale_multiplier: float = 1.0,
    normals: Tensor | None = None,
) -> dict[str, Tensor]:
    """Parameters of new Gaussians at ``points`` [N, 3] with base ``colors`` [N, 3] in [0, 1], in
    the trainer's layout (:mod:`genfusion.splat.gaussians`): means, quats (wxyz), log scales,
    logit opacities, sh0 = :func:`rgb_to_sh` of the colour, shN zeros.

    Size: ``scale_multiplier`` x the RMS distance to the 3 nearest points among the existing
    Gaussians and the new ones (so a new point amid dense Gaussians stays small and an isolated
    one covers its hole), isotropic. Rotation: identity, or facing ``normals`` [N, 3] (a 2DGS
    surfel's normal; pass the direction towards the camera that saw the point). Tensors have
    ``existing_means``' device and dtype.
    """
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"opacity must be in (0, 1), got {opacity}")
    device, dtype = existing_means.device, existing_means.dtype
    points = points.to(device, dtype).reshape(-1, 3)
    colors = colors.to(device, dtype).reshape(-1, 3)
    n = points.shape[0]
    if colors.shape[0] != n:
        raise ValueError(f"{n} points but {colors.shape[0]} colours")
    distance = neighbour_distances(points, existing_means.reshape(-1, 3).to(device, dtype))
    scales = torch.log(distance * scale_multiplier).unsqueeze(-1).repeat(1, 3)
    if normals is None:
        quats = torch.zeros((n, 4), device=device, dtype=dtype)
        quats[:, 0] = 1.0
    else:
        quats = quats_facing(normals.to(device, dtype).reshape(-1, 3))
    return {
        "means": points.clone(),
        "quats": quats,
        "scales": scales,
        "opacities": torch.full((n,), math.log(opacity / (1.0 - opacity)), device=device, dtype=dtype),
        "sh0": rgb_to_sh(colors.clamp(0.0, 1.0)).unsqueeze(1),
        "shN": torch.zeros((n, (sh_degree + 1) ** 2 - 1, 3), device=device, dtype=dtype),
    }


__all__ = [
    "ALPHA_RELIABLE",
    "ALPHA_UNRELIABLE",
    "DepthAlignment",
    "align_depth",
    "backproject",
    "neighbour_distances",
    "new_gaussians",
    "quats_facing",
    "sample_expansion",
    "unreliable_mask",
]
