"""Spherical harmonics: gsplat's basis (checked against gsplat's pure-torch reference)."""

from __future__ import annotations

import pytest
import torch

from genfusion.splat.sh import eval_sh_bases, rgb_to_sh, sh_to_rgb, spherical_harmonics


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_matches_gsplat_reference(degree):
    # gsplat's _torch_impl is plain torch for SH (importing it loads no CUDA extension)
    from gsplat.cuda._torch_impl import _spherical_harmonics

    gen = torch.Generator().manual_seed(degree)
    dirs = torch.randn(50, 3, generator=gen) * 3.0  # any length: both normalise
    coeffs = torch.randn(50, 16, 3, generator=gen)
    ours = spherical_harmonics(degree, dirs, coeffs)
    theirs = _spherical_harmonics(degree, dirs, coeffs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_basis_is_orthonormal():
    """Monte-Carlo check: the 16 real SH functions are orthonormal on the sphere."""
    gen = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(400_000, 3, generator=gen, dtype=torch.float64), dim=-1)
    bases = eval_sh_bases(3, dirs)
    gram = 4 * torch.pi * bases.T @ bases / dirs.shape[0]
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.02, rtol=0)


def test_degree_zero_and_dc_roundtrip():
    rgb = torch.tensor([[0.2, 0.5, 0.9]])
    sh0 = rgb_to_sh(rgb)
    torch.testing.assert_close(sh_to_rgb(sh0), rgb)
    colour = spherical_harmonics(0, torch.tensor([[0.0, 0.0, 1.0]]), sh0[:, None, :]) + 0.5
    torch.testing.assert_close(colour, rgb)


def test_gradient_reaches_directions():
    dirs = torch.randn(8, 3, requires_grad=True)
    coeffs = torch.randn(8, 9, 3)
    spherical_harmonics(2, dirs, coeffs).sum().backward()
    assert dirs.grad.abs().sum() > 0


def test_rejects_too_few_coefficients():
    with pytest.raises(ValueError, match="needs 9"):
        spherical_harmonics(2, torch.randn(4, 3), torch.randn(4, 4, 3))
