"""Which Gaussians the photos saw, and how much of a render they make.

A Gaussian no training view ever saw (random initialisation outside every view, or a child of a
split that landed where no window looks) keeps whatever colour it started with, yet it renders
with full opacity: the reconstruction shows wrong content instead of a hole, and a map of low
alpha never flags it (measured on the fox, masked 1/2: rendered alpha is ~1 over the whole frame
while most out-of-window colour comes from Gaussians no window sees). Two pure functions:

- :func:`seen_weights`: per Gaussian, the blending weight ``T_i * alpha_i`` it received, summed
  over every pixel of the given (training) views. It is the gradient of the summed render of a
  constant colour 1 with respect to that colour, so any differentiable backend computes it
  exactly, with one forward and backward pass per view;
- :func:`observed_alpha`: a view's accumulated opacity counting only the Gaussians seen at least
  ``min_weight`` (in pixels' worth of blending weight; softly below it). Where it is low the render
  shows what no photo saw, which is what repairers treat as a hole.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from genfusion.splat.render import Backend, Mode, activate_splats, render

MIN_SEEN_WEIGHT = 1.0  # a Gaussian counts as seen once it made one full pixel of some photo


def _activated(splats: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: value.detach() for name, value in activate_splats(splats).items()}


def seen_weights(
    splats: Mapping[str, Tensor],
    viewmats: Tensor,
    Ks: Tensor,
    sizes: list[tuple[int, int]],
    *,
    mode: Mode,
    backend: Backend = "auto",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> Tensor:
    """[N] summed blending weight of each Gaussian over the views ``viewmats`` [C, 4, 4] / ``Ks``
    [C, 3, 3] of (width, height) ``sizes``; 0 for a Gaussian none of them sees."""
    act = _activated(splats)
    n = act["means"].shape[0]
    total = torch.zeros(n, device=act["means"].device)
    for viewmat, K, (width, height) in zip(viewmats, Ks, sizes, strict=True):
        ones = torch.ones(n, 1, device=act["means"].device, requires_grad=True)
        with torch.enable_grad():
            out = render(
                act["means"], act["quats"], act["scales"], act["opacities"], ones,
                viewmat[None], K[None], width, height, mode=mode, sh_degree=None,
                backend=backend, near_plane=near_plane, far_plane=far_plane,
            )  # fmt: skip
            (gradient,) = torch.autograd.grad(out.rgb.sum(), ones)
        total += gradient[:, 0]
    return total


@torch.no_grad()
def observed_alpha(
    splats: Mapping[str, Tensor],
    weights: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    *,
    mode: Mode,
    min_weight: float = MIN_SEEN_WEIGHT,
    backend: Backend = "auto",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> Tensor:
    """[H, W] opacity accumulated from seen Gaussians only: sum over the ray of ``T_i * alpha_i *
    seen_i`` with ``seen_i = min(1, weights_i / min_weight)`` (unseen Gaussians still occlude)."""
    act = _activated(splats)
    seen = (weights / min_weight).clamp(0.0, 1.0)[:, None].to(act["means"].device)
    out = render(
        act["means"], act["quats"], act["scales"], act["opacities"], seen,
        viewmat[None], K[None], width, height, mode=mode, sh_degree=None,
        backend=backend, near_plane=near_plane, far_plane=far_plane,
    )  # fmt: skip
    return out.rgb[0, ..., 0].clamp(0.0, 1.0)
