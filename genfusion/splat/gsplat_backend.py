"""gsplat's CUDA rasterisers behind ``render()``'s signature.

Import this module only on the CUDA branch: importing ``gsplat.rendering`` is harmless, but the
first call of a gsplat op loads (or JIT-builds) its CUDA extension, which must never happen on a
CPU-only machine. ``render()`` imports this lazily, only for CUDA tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor


def render_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    mode: str,
    sh_degree: int | None,
    background: Tensor | None,
    near_plane: float,
    far_plane: float,
):
    """Same contract as ``genfusion.splat.render.render`` (which documents the arguments)."""
    from gsplat.rendering import rasterization, rasterization_2dgs

    from genfusion.splat.render import RenderOutput

    n_cameras = viewmats.shape[0]
    channels = 3 if sh_degree is not None else colors.shape[-1]
    backgrounds = None
    if background is not None:
        backgrounds = background.expand(n_cameras, channels).contiguous()
    common = dict(
        width=width, height=height, near_plane=near_plane, far_plane=far_plane,
        sh_degree=sh_degree, packed=False, backgrounds=backgrounds, render_mode="RGB+ED",
    )  # fmt: skip
    if mode == "3dgs":
        images, alphas, meta = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, **common)
        normals = surf_normals = distortion = None
    else:
        images, alphas, normals, surf_normals, distortion, _median, meta = rasterization_2dgs(
            means, quats, scales, opacities, colors, viewmats, Ks, distloss=True, **common
        )
    meta = dict(meta)
    meta["backend"] = "gsplat"
    return RenderOutput(
        rgb=images[..., :channels],
        depth=images[..., channels : channels + 1],
        alpha=alphas,
        normals=normals,
        surf_normals=surf_normals,
        distortion=distortion,
        meta=meta,
    )


def cuda_available() -> bool:
    """True when gsplat's backend can be used (a CUDA device is present)."""
    return torch.cuda.is_available()
