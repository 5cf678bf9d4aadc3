"""Reconstruction losses: values on known inputs and gradients."""

from __future__ import annotations

import pytest
import torch

from genfusion.splat.losses import (
    distortion_loss,
    dssim_loss,
    l1_loss,
    normal_consistency_loss,
    photometric_loss,
    psnr_of_mse,
)


def test_photometric_loss_mixes_l1_and_dssim():
    torch.manual_seed(0)
    target = torch.rand(1, 24, 32, 3)
    assert photometric_loss(target, target, 0.2).item() == pytest.approx(0.0, abs=1e-6)
    noisy = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    l1, ds = l1_loss(noisy, target).item(), dssim_loss(noisy, target).item()
    assert 0 < ds < 1 and l1 > 0
    assert photometric_loss(noisy, target, 0.2).item() == pytest.approx(0.8 * l1 + 0.2 * ds, rel=1e-5)
    assert photometric_loss(noisy, target, 0.0).item() == pytest.approx(l1, rel=1e-6)


def test_dssim_is_differentiable_and_points_towards_target():
    torch.manual_seed(1)
    target = torch.rand(1, 16, 16, 3)
    render = torch.rand(1, 16, 16, 3, requires_grad=True)
    dssim_loss(render, target).backward()
    with torch.no_grad():
        stepped = render - 0.5 * render.grad / render.grad.abs().max()
    assert dssim_loss(stepped, target) < dssim_loss(render.detach(), target)


def test_normal_consistency():
    normals = torch.nn.functional.normalize(torch.randn(1, 8, 8, 3), dim=-1)
    alpha = torch.ones(1, 8, 8, 1)
    assert normal_consistency_loss(normals, normals, alpha).item() == pytest.approx(0.0, abs=1e-6)
    assert normal_consistency_loss(normals, -normals, alpha).item() == pytest.approx(2.0, abs=1e-6)
    # empty pixels (alpha 0) cost exactly 1 and give the depth normals no gradient
    surf = normals.clone().requires_grad_(True)
    loss = normal_consistency_loss(normals, surf, torch.zeros(1, 8, 8, 1))
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and surf.grad.abs().max() == 0


def test_distortion_and_psnr():
    assert distortion_loss(torch.full((1, 4, 4, 1), 0.25)).item() == pytest.approx(0.25)
    # in NDC units: scaled by n f / ((f - n) z^2); at z = 2 that is 0.2 * 100 / 99.8 / 4
    ndc = distortion_loss(torch.full((1, 4, 4, 1), 0.25), torch.full((1, 4, 4, 1), 2.0)).item()
    assert ndc == pytest.approx(0.25 * 0.2 * 100 / 99.8 / 4)
    assert psnr_of_mse(0.01) == pytest.approx(20.0)
    assert psnr_of_mse(0.0) == float("inf")


def test_invariant_depth_loss_ignores_scale_and_shift_of_the_disparity_target():
    from genfusion.splat.losses import invariant_depth_loss

    gen = torch.Generator().manual_seed(0)
    depth = 1.0 + 3.0 * torch.rand(24, 32, generator=gen)
    # a target whose disparity is an affine map of the rendered one: no loss
    target = 1.0 / (2.5 / depth + 0.3)
    assert float(invariant_depth_loss(depth, target)) < 1e-5  # float32 rounding
    # a target with other structure: a loss, and a gradient that pulls the render towards it
    other = 1.0 + 3.0 * torch.rand(24, 32, generator=gen)
    rendered = depth.clone().requires_grad_()
    loss = invariant_depth_loss(rendered, other)
    loss.backward()
    assert float(loss) > 1e-3 and torch.isfinite(rendered.grad).all() and rendered.grad.abs().sum() > 0
    # pixels without target depth (0) or with zero weight are ignored
    weight = torch.ones(24, 32)
    weight[:, :16] = 0
    mixed = torch.where(weight > 0, target, other)
    assert float(invariant_depth_loss(depth, mixed, weight)) < 1e-5
