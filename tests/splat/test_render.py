"""render() API: backends, shapes, activations, normals, and no gsplat CUDA build on CPU."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from genfusion.splat.render import activate_splats, render, render_splats

sys.path.insert(0, str(Path(__file__).parent))  # the shared scene helpers beside this file
from _render_scenes import random_scene, render_scene  # noqa: E402


class _Tripwire(types.ModuleType):
    """Stands in for gsplat's CUDA extension module: touching it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"gsplat's CUDA backend was used on CPU (attribute {name!r})")


def test_cpu_render_never_touches_gsplat_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "gsplat.cuda._backend", _Tripwire("gsplat.cuda._backend"))
    scene = random_scene(n=50, n_cameras=1)
    for mode in ("2dgs", "3dgs"):
        out = render_scene(scene, mode=mode)  # backend="auto" on CPU tensors
        assert out.meta["backend"] == "torch"
        out.rgb.sum().backward()
    assert "genfusion.splat.gsplat_backend" not in sys.modules
    with pytest.raises(ValueError, match="CUDA"):
        render_scene(scene, backend="gsplat")


@pytest.mark.parametrize("mode", ["2dgs", "3dgs"])
def test_output_shapes_and_meta(mode):
    scene = random_scene(n=80, width=40, height=24, n_cameras=2, sh_degree=2)
    out = render_scene(scene, mode=mode, background=torch.ones(3))
    assert out.rgb.shape == (2, 24, 40, 3)
    assert out.depth.shape == out.alpha.shape == (2, 24, 40, 1)
    assert float(out.alpha.min()) >= 0 and float(out.alpha.max()) <= 1
    assert out.meta["means2d"].shape == (2, 80, 2) and out.meta["means2d"].requires_grad
    assert out.meta["radii"].shape == (2, 80, 2) and out.meta["radii"].dtype == torch.int32
    assert (out.meta["width"], out.meta["height"], out.meta["n_cameras"]) == (40, 24, 2)
    if mode == "2dgs":
        assert out.normals.shape == out.surf_normals.shape == (2, 24, 40, 3)
        assert out.distortion.shape == (2, 24, 40, 1)
        assert out.meta["gradient_2dgs"].shape == (2, 80, 2)
    else:
        assert out.normals is None and out.surf_normals is None and out.distortion is None


def test_per_camera_colours_and_plain_rgb():
    scene = random_scene(n=60, n_cameras=2, sh_degree=None)
    shared = render_scene(scene, mode="3dgs")
    per_camera = scene["colors"].detach()[None].repeat(2, 1, 1)
    scene2 = dict(scene, colors=per_camera)
    torch.testing.assert_close(render_scene(scene2, mode="3dgs").rgb, shared.rgb)


def test_render_splats_activates_like_gsplat():
    scene = random_scene(n=40, n_cameras=1, sh_degree=1)
    with torch.no_grad():
        raw = {
            "means": scene["means"],
            "quats": scene["quats"],
            "scales": torch.log(scene["scales"]),
            "opacities": torch.logit(scene["opacities"]),
            "sh0": scene["colors"][:, :1],
            "shN": scene["colors"][:, 1:],
        }
    act = activate_splats(raw)
    torch.testing.assert_close(act["scales"], scene["scales"].detach())
    torch.testing.assert_close(act["colors"], scene["colors"].detach())
    a = render_splats(raw, scene["viewmats"], scene["Ks"], 64, 48, sh_degree=1, mode="3dgs")
    b = render_scene(scene, mode="3dgs")
    torch.testing.assert_close(a.rgb, b.rgb.detach())


def test_flat_wall_normals_and_depth():
    """A wall of overlapping surfels facing the camera at z = 3: depth 3, normals -z everywhere."""
    xs, ys = torch.meshgrid(torch.linspace(-2, 2, 25), torch.linspace(-1.5, 1.5, 19), indexing="xy")
    n = xs.numel()
    means = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.full((n,), 3.0)], dim=-1)
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1)
    scales = torch.tensor([[0.15, 0.15, 1e-3]]).repeat(n, 1)
    opacities = torch.full((n,), 0.95)
    colors = torch.rand(n, 3)
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]]])
    out = render(means, quats, scales, opacities, colors, viewmats, Ks, 64, 48, mode="2dgs")
    inner = (slice(None), slice(8, -8), slice(10, -10))  # away from the wall's edges
    assert float(out.alpha[inner].min()) > 0.99
    torch.testing.assert_close(out.depth[inner], torch.full_like(out.depth[inner], 3.0), atol=1e-4, rtol=0)
    facing = torch.tensor([0.0, 0.0, -1.0])
    normal = torch.nn.functional.normalize(out.normals[inner], dim=-1)
    assert float((normal - facing).abs().max()) < 1e-4
    assert float((out.surf_normals[inner] - facing).abs().max()) < 1e-3
    assert float(out.distortion[inner].max()) < 1e-4  # all surfels at one depth


def test_bad_shapes_raise():
    scene = random_scene(n=10, n_cameras=1)
    with pytest.raises(ValueError, match="quats"):
        render(scene["means"], scene["quats"][:, :3], scene["scales"], scene["opacities"], scene["colors"],
               scene["viewmats"], scene["Ks"], 64, 48, sh_degree=1)  # fmt: skip
    with pytest.raises(ValueError, match="mode"):
        render_scene(scene, mode="4dgs")
