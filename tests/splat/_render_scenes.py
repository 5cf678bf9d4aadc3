"""Small random scenes shared by the renderer tests."""

from __future__ import annotations

import torch


def random_scene(
    n: int = 300,
    width: int = 64,
    height: int = 48,
    n_cameras: int = 2,
    sh_degree: int | None = 1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Gaussians in front of ``n_cameras`` slightly shifted cameras, all leaves with grad."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=gen) * 0.6 + torch.tensor([0.0, 0.0, 4.0])
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.rand(n, 3, generator=gen) * 0.15 + 0.02
    opacities = torch.rand(n, generator=gen) * 0.9 + 0.05
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=gen)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=gen) * 0.5
    viewmats = torch.eye(4)[None].repeat(n_cameras, 1, 1)
    for cam in range(1, n_cameras):
        angle = 0.1 * cam
        viewmats[cam, :3, :3] = torch.tensor(
            [[1.0, 0, 0], [0, float(torch.cos(torch.tensor(angle))), -float(torch.sin(torch.tensor(angle)))],
             [0, float(torch.sin(torch.tensor(angle))), float(torch.cos(torch.tensor(angle)))]]
        )  # fmt: skip
        viewmats[cam, 0, 3] = 0.3 * cam
    focal = 0.95 * width
    Ks = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])[None].repeat(
        n_cameras, 1, 1
    )
    params = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)
    scene = {k: v.to(device=device, dtype=dtype).requires_grad_() for k, v in params.items()}
    scene.update(
        viewmats=viewmats.to(device=device, dtype=dtype),
        Ks=Ks.to(device=device, dtype=dtype),
        width=width,
        height=height,
        sh_degree=sh_degree,
    )
    return scene


PARAM_NAMES = ("means", "quats", "scales", "opacities", "colors")


def render_scene(scene: dict, **kwargs):
    """Call ``render`` on a scene dict."""
    from genfusion.splat.render import render

    return render(
        *(scene[k] for k in PARAM_NAMES),
        scene["viewmats"],
        scene["Ks"],
        scene["width"],
        scene["height"],
        sh_degree=scene["sh_degree"],
        **kwargs,
    )


def weighted_loss(out, seed: int = 1) -> torch.Tensor:
    """A loss touching every output with random per-pixel weights (so no gradient cancels)."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for name in ("rgb", "depth", "alpha", "normals", "distortion"):
        value = getattr(out, name)
        if value is None:
            continue
        weights = torch.rand(value.shape, generator=gen).to(device=value.device, dtype=value.dtype)
        total = total + (value * weights).sum()
    return total
