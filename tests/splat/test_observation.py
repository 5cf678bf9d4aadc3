"""seen_weights / observed_alpha: which Gaussians the photos saw and how much of a render they make."""

from __future__ import annotations

import math

import pytest
import torch

from genfusion.splat.observation import observed_alpha, seen_weights
from genfusion.splat.render import render

W, H = 48, 32


def _camera(x: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera at (x, 0, 0) looking down +z (OpenCV), focal 40 px."""
    viewmat = torch.eye(4)
    viewmat[0, 3] = -x
    K = torch.tensor([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1.0]])
    return viewmat, K


def _splats(means: list[list[float]], opacities: list[float], scale: float = 0.15) -> dict:
    n = len(means)
    return {
        "means": torch.tensor(means),
        "quats": torch.tensor([[1.0, 0, 0, 0]] * n),
        "scales": torch.full((n, 3), math.log(scale)),
        "opacities": torch.logit(torch.tensor(opacities)),
        "colors": torch.rand(n, 3),
    }


@pytest.mark.parametrize("mode", ["3dgs", "2dgs"])
def test_seen_weight_is_the_summed_blending_weight(mode):
    # 0: in front of camera A; 1: far to the side, outside A's view; 2: straight behind 0
    splats = _splats([[0.0, 0.0, 4.0], [6.0, 0.0, 4.0], [0.0, 0.0, 6.0]], [0.9, 0.9, 0.5], scale=0.3)
    viewmat, K = _camera()
    weights = seen_weights(splats, viewmat[None], K[None], [(W, H)], mode=mode)
    assert weights[1] == 0.0  # outside the view: never seen
    assert weights[0] > 10.0  # a disc of several dozen pixels at up to 0.9
    assert 0 < weights[2] < 0.3 * weights[0]  # behind it: seen only around its rim

    # the weights are what the render composites: with per-Gaussian colours e_k the render of
    # channel k summed over the image is exactly weight k
    out = render(
        splats["means"], splats["quats"], splats["scales"].exp(), splats["opacities"].sigmoid(),
        torch.eye(3), viewmat[None], K[None], W, H, mode=mode, sh_degree=None,
    )  # fmt: skip
    assert torch.allclose(out.rgb[0].sum(dim=(0, 1)), weights, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["3dgs", "2dgs"])
def test_observed_alpha_is_low_where_only_unseen_gaussians_render(mode):
    # camera A (left) sees only the left Gaussian; camera B sees both, one in each half
    splats = _splats([[-0.3, 0.0, 4.0], [2.3, 0.0, 4.0]], [0.95, 0.95], scale=0.25)
    view_a, K = _camera(-1.5)
    weights = seen_weights(splats, view_a[None], K[None], [(W, H)], mode=mode)
    assert weights[0] > 1.0 and weights[1] == 0.0
    view_b, _ = _camera(1.0)
    observed = observed_alpha(splats, weights, view_b, K, W, H, mode=mode)
    out = render(
        splats["means"], splats["quats"], splats["scales"].exp(), splats["opacities"].sigmoid(),
        torch.ones(2, 1), view_b[None], K[None], W, H, mode=mode, sh_degree=None,
    )  # fmt: skip
    alpha = out.alpha[0, ..., 0]
    left, right = alpha[:, : W // 2], alpha[:, W // 2 :]
    assert left.max() > 0.8 and right.max() > 0.8  # both render solidly in B
    assert observed[:, : W // 2].max() > 0.8  # the seen one counts
    assert observed[:, W // 2 :].max() < 1e-3  # the unseen one is a hole
    assert torch.all(observed <= alpha + 1e-6)
