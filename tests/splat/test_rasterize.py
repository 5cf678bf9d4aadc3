"""The tiled torch rasterisers against the dense brute-force compositor (CPU, float32 + float64)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from genfusion.splat.render import render

sys.path.insert(0, str(Path(__file__).parent))  # the shared scene helpers beside this file
from _render_scenes import PARAM_NAMES, random_scene, render_scene, weighted_loss  # noqa: E402

TOL = 1e-5  # relative to each compared tensor's largest magnitude (at least 1)
# float32 renders differ from float64 ones by float32 conditioning alone (measured ~1e-5 on
# gradients for the dense and the tiled rasteriser alike), so that comparison gets a looser bound.
TOL_FLOAT32 = 1e-4


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, name: str, tol: float = TOL) -> None:
    scale = max(1.0, float(expected.detach().abs().max()))
    diff = float((actual.detach().double() - expected.detach().double()).abs().max())
    assert diff <= tol * scale, f"{name}: max |diff| {diff:.3g} > {tol} x {scale:.3g}"


def _render_with_grads(mode: str, backend: str, dtype: torch.dtype):
    scene = random_scene(dtype=dtype)
    background = torch.tensor([0.2, 0.5, 0.8], dtype=dtype)
    out = render_scene(scene, mode=mode, background=background, backend=backend)
    out.meta["means2d"].retain_grad()
    loss = weighted_loss(out)
    grads = torch.autograd.grad(
        loss, [scene[k] for k in PARAM_NAMES] + [out.meta["means2d"]], retain_graph=mode == "2dgs"
    )
    extra = torch.autograd.grad(loss, [out.meta["gradient_2dgs"]])[0] if mode == "2dgs" else None
    return out, grads, extra


@pytest.fixture(scope="module", params=["3dgs", "2dgs"])
def rendered_pair(request):
    """The same scene rendered by the tiled and the dense backends, in float64 (exact maths) and
    the tiled one also in float32 (what runs in practice)."""
    mode = request.param
    results = {
        "torch": _render_with_grads(mode, "torch", torch.float64),
        "dense": _render_with_grads(mode, "dense", torch.float64),
        "torch32": _render_with_grads(mode, "torch", torch.float32),
    }
    return mode, results


def test_float32_tiled_matches_float64_dense(rendered_pair):
    mode, results = rendered_pair
    (tiled, grads_tiled, _), (dense, grads_dense, _) = results["torch32"], results["dense"]
    assert tiled.rgb.dtype == torch.float32
    for name in ("rgb", "depth", "alpha"):
        assert_matches(getattr(tiled, name), getattr(dense, name), name, TOL_FLOAT32)
    for name, g_tiled, g_dense in zip(PARAM_NAMES, grads_tiled[:5], grads_dense[:5], strict=True):
        assert_matches(g_tiled, g_dense, f"d/d{name}", TOL_FLOAT32)


def test_forward_matches_dense(rendered_pair):
    mode, results = rendered_pair
    (tiled, _, _), (dense, _, _) = results["torch"], results["dense"]
    # not vacuous: the scene covers much of both images and stacks Gaussians in depth
    assert float(dense.alpha.mean()) > 0.15 and float(dense.alpha.max()) > 0.9
    assert (dense.meta["radii"] > 0).all(-1).sum() > 400
    names = ["rgb", "depth", "alpha"] + (["normals", "surf_normals", "distortion"] if mode == "2dgs" else [])
    for name in names:
        assert_matches(getattr(tiled, name), getattr(dense, name), name)
    if mode == "3dgs":
        assert tiled.normals is None and tiled.distortion is None
    else:
        assert float(dense.distortion.max()) > 1e-3


def test_gradients_match_dense(rendered_pair):
    mode, results = rendered_pair
    (_, grads_tiled, extra_tiled), (_, grads_dense, extra_dense) = results["torch"], results["dense"]
    for name, g_tiled, g_dense in zip(PARAM_NAMES + ("means2d",), grads_tiled, grads_dense, strict=True):
        assert float(g_dense.abs().max()) > 0, name
        assert_matches(g_tiled, g_dense, f"d/d{name}")
    if mode == "2dgs":
        assert float(extra_dense.abs().max()) > 0
        assert_matches(extra_tiled, extra_dense, "gradient_2dgs")


@pytest.mark.parametrize("mode", ["3dgs", "2dgs"])
def test_gradcheck_float64(mode):
    """The hand-written backward against finite differences on a tiny float64 scene."""
    scene = random_scene(n=6, width=20, height=18, n_cameras=1, dtype=torch.float64, seed=3)
    # bigger, fully in-view splats so that several overlap and the alpha cut-offs are far away
    with torch.no_grad():
        scene["means"].mul_(0.3)
        scene["means"][:, 2] = 4.0 + torch.arange(6, dtype=torch.float64) * 0.1
        scene["scales"].fill_(0.35)
        scene["opacities"].clamp_(0.3, 0.8)
    inputs = tuple(scene[k] for k in PARAM_NAMES)

    def func(*params):
        out = render(
            *params, scene["viewmats"], scene["Ks"], scene["width"], scene["height"],
            mode=mode, sh_degree=scene["sh_degree"], background=torch.tensor([0.3, 0.2, 0.1]).double(),
            backend="torch",
        )  # fmt: skip
        outputs = [out.rgb, out.depth * out.alpha, out.alpha]
        if mode == "2dgs":
            outputs += [out.normals, out.distortion]
        return tuple(outputs)

    assert torch.autograd.gradcheck(func, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_background_and_empty_pixels():
    scene = random_scene(n=5, n_cameras=1)
    with torch.no_grad():
        scene["scales"].fill_(0.01)
    background = torch.tensor([0.1, 0.7, 0.3])
    out = render_scene(scene, mode="3dgs", background=background, backend="torch")
    empty = out.alpha[..., 0] == 0
    assert empty.float().mean() > 0.5
    assert torch.equal(out.rgb[empty], background.expand(int(empty.sum()), 3))
    assert torch.all(out.depth[empty] == 0)


def _opaque_stack(dtype: torch.dtype, scale: float = 0.8) -> dict:
    """Large, overlapping splats in depth order, half of them more opaque than gsplat's 0.999 alpha
    clamp: pixels stop early and many fragments are clamped (all pixels when ``scale`` >= 3)."""
    scene = random_scene(n=40, width=40, height=32, n_cameras=1, dtype=dtype, seed=5)
    with torch.no_grad():
        scene["means"][:, :2].mul_(0.15)
        scene["means"][:, 2] = 3.0 + torch.arange(40, dtype=dtype) * 0.05
        scene["scales"].fill_(scale)
        scene["opacities"][::2] = 0.9999
        scene["opacities"][1::2] = 0.7
    return scene


def _grads(scene: dict, mode: str, backend: str):
    out = render_scene(
        scene,
        mode=mode,
        background=torch.tensor([0.2, 0.5, 0.8], dtype=scene["means"].dtype),
        backend=backend,
    )
    return out, torch.autograd.grad(weighted_loss(out), [scene[k] for k in PARAM_NAMES])


@pytest.mark.parametrize("mode", ["3dgs", "2dgs"])
@pytest.mark.parametrize(
    ("keep_weights", "chunk"),
    [(True, 128), (False, 128), (True, 4)],
    ids=["saved", "recomputed", "early-exit"],
)
def test_opaque_stack_clamps_and_stops_like_dense(mode, keep_weights, chunk, monkeypatch):
    """The 0.999 alpha clamp (no gradient through a clamped alpha) and the early stop at
    T <= 1e-4, with the backward on saved weights and on weights recomputed when they exceed the
    memory budget; with small chunks, whole tiles stop early and skip their hidden Gaussians."""
    import genfusion.splat.compositing as compositing
    import genfusion.splat.rasterize_2dgs as rasterize_2dgs
    import genfusion.splat.rasterize_3dgs as rasterize_3dgs

    module = rasterize_3dgs if mode == "3dgs" else rasterize_2dgs
    if not keep_weights:
        monkeypatch.setattr(compositing, "SAVE_BUDGET_BYTES", 0)
    monkeypatch.setattr(compositing, "CHUNK_SLOTS", chunk)
    skipped = []

    def spy(alpha_of_slots, n_slots, **kwargs):
        comp, used = compositing.composite_until_opaque(alpha_of_slots, n_slots, **kwargs)
        skipped.append(n_slots - used)
        return comp, used

    monkeypatch.setattr(module, "composite_until_opaque", spy)
    scale = 3.0 if chunk == 4 else 0.8  # early exit needs a whole block of stopped pixels
    tiled, grads_tiled = _grads(_opaque_stack(torch.float64, scale), mode, "torch")
    dense, grads_dense = _grads(_opaque_stack(torch.float64, scale), mode, "dense")
    if chunk == 4:  # every pixel stops behind the first splats: the rest are never evaluated
        assert float(dense.alpha.mean()) > 0.999 and min(skipped) > 0
    else:  # an opaque centre, where pixels stop behind clamped fragments, and the un-stopped rim
        assert float((dense.alpha > 0.999).float().mean()) > 0.2
        assert float((dense.alpha < 0.99).float().mean()) > 0.2
        assert max(skipped) == 0
    for name in ("rgb", "depth", "alpha"):
        assert_matches(getattr(tiled, name), getattr(dense, name), name)
    for name, g_tiled, g_dense in zip(PARAM_NAMES, grads_tiled, grads_dense, strict=True):
        assert_matches(g_tiled, g_dense, f"d/d{name}")


def test_surfel_seen_edge_on_is_finite_and_matches_dense():
    """A surfel whose plane contains the camera centre: the rays of one pixel row lie in it
    (cz == 0 exactly), where the low-pass branch takes over, with finite gradients."""
    from genfusion.splat.fragments import ray_splat_2dgs
    from genfusion.splat.projection import project_2dgs

    # camera at (0, 0, 4) looking along +x with image y along world -z (exact integer matrix);
    # the surfel spans the world plane z = 4, i.e. the camera's y = 0 plane: pixel row 12
    viewmat = torch.tensor([[0, -1, 0, 0], [0, 0, -1, 4], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    results = {}
    for backend in ("torch", "dense"):
        scene = random_scene(n=1, width=32, height=24, n_cameras=1, sh_degree=None, dtype=torch.float64)
        with torch.no_grad():
            scene["means"].copy_(torch.tensor([[4.0, 0.0, 4.0]]))
            scene["quats"].copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
            scene["scales"].fill_(0.5)
            scene["opacities"].fill_(0.8)
        scene["viewmats"] = viewmat[None]
        scene["Ks"][0, 1, 2] = 12.5
        results[backend] = _grads(scene, "2dgs", backend)
    proj = project_2dgs(
        *(scene[k] for k in ("means", "quats", "scales")), scene["viewmats"], scene["Ks"], 32, 24
    )
    rows = proj.ray_transforms[0, 0].detach()
    _, _, cz = ray_splat_2dgs(
        torch.arange(32) + 0.5, torch.tensor(12.5, dtype=torch.float64), *(tuple(r) for r in rows)
    )
    assert bool((cz == 0).all()), "the test scene must put pixel row 12 exactly in the surfel's plane"
    (tiled, grads_tiled), (dense, grads_dense) = results["torch"], results["dense"]
    assert float(tiled.alpha[0, 12].max()) > 0.5  # the low-pass branch renders the row
    for name in ("rgb", "depth", "alpha"):
        assert_matches(getattr(tiled, name), getattr(dense, name), name)
    for name, g_tiled, g_dense in zip(PARAM_NAMES, grads_tiled, grads_dense, strict=True):
        assert torch.isfinite(g_tiled).all(), name
        assert_matches(g_tiled, g_dense, f"d/d{name}")
