"""Real spherical harmonics up to degree 3, evaluated exactly like gsplat's ``spherical_harmonics``.

Pure torch (differentiable by autograd, including through the view direction), so the CPU
backend needs no CUDA op. Constants and basis order follow gsplat (Sloan, "Efficient Spherical
Harmonic Evaluation", JCGT 2013), which is also the order of the 3DGS ``f_rest`` fields.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The degree-0 real spherical harmonic, 1 / (2 sqrt(pi)), correctly rounded (gsplat's literal
# 0.2820947917738781 is one double ulp below it; both are the same float32). The one copy in the
# package: training, rendering and every export convert colours with it.
SH_C0 = 0.28209479177387814


def num_sh_bases(degree: int) -> int:
    """Number of coefficients for SH up to ``degree`` (inclusive): (degree + 1) ** 2."""
    return (degree + 1) ** 2


def eval_sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """SH basis values [..., (degree+1)^2] at unit directions ``dirs`` [..., 3]."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be in 0..3, got {degree}")
    bases = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        a = 0.48860251190292
        bases += [-a * y, a * z, -a * x]
    if degree >= 2:
        z2 = z * z
        tmp_b = -1.092548430592079 * z
        tmp_a = 0.5462742152960395
        c1 = x * x - y * y
        s1 = 2 * x * y
        bases += [
            tmp_a * s1,
            tmp_b * y,
            0.9461746957575601 * z2 - 0.3153915652525201,
            tmp_b * x,
            tmp_a * c1,
        ]
    if degree >= 3:
        tmp_c = -2.285228997322329 * z2 + 0.4570457994644658
        tmp_b = 1.445305721320277 * z
        tmp_a = -0.5900435899266435
        c2 = x * c1 - y * s1
        s2 = x * s1 + y * c1
        bases += [
            tmp_a * s2,
            tmp_b * s1,
            tmp_c * y,
            z * (1.865881662950577 * z2 - 1.119528997770346),
            tmp_c * x,
            tmp_b * c1,
            tmp_a * c2,
        ]
    return torch.stack(bases, dim=-1)


def spherical_harmonics(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colour [..., 3] from SH ``coeffs`` [..., K, 3] seen along ``dirs`` [..., 3] (any length).

    Only the first (degree+1)^2 coefficients are used, so a model can ramp its SH degree up
    during training while keeping all K coefficients (as gsplat does). No +0.5 offset here: the
    renderer adds it, as gsplat's ``rasterization`` does.
    """
    n_bases = num_sh_bases(degree)
    if coeffs.shape[-2] < n_bases:
        raise ValueError(f"SH degree {degree} needs {n_bases} coefficients, got {coeffs.shape[-2]}")
    unit_dirs = torch.nn.functional.normalize(dirs, p=2, dim=-1)
    bases = eval_sh_bases(degree, unit_dirs)  # [..., n_bases]
    return (bases[..., None] * coeffs[..., :n_bases, :]).sum(dim=-2)


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """Base colour in [0, 1] -> the degree-0 coefficient that renders as it: ``(rgb - 0.5) / SH_C0``."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh0: Tensor) -> Tensor:
    """The colour a degree-0 coefficient renders as on its own: ``SH_C0 * sh0 + 0.5`` (inverse of
    :func:`rgb_to_sh`; not clamped)."""
    return sh0 * SH_C0 + 0.5
