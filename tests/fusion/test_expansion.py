"""Content expansion: the unreliable map, depth alignment, back-projection onto a known plane, and
new Gaussians in the trainer's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from genfusion.data.types import Camera
from genfusion.fusion.expansion import (
    align_depth,
    backproject,
    neighbour_distances,
    new_gaussians,
    quats_facing,
    sample_expansion,
    unreliable_mask,
)
from genfusion.fusion.trajectory import look_at
from genfusion.splat.gaussians import PARAMETER_NAMES, create_splats
from genfusion.splat.sh import sh_to_rgb

W, H = 40, 30
PLANE_N = np.array([0.2, -0.3, 1.0]) / np.linalg.norm([0.2, -0.3, 1.0])  # plane n . X = d
PLANE_D = 4.0


def camera() -> Camera:
    f = 35.0
    K = np.array([[f, 0, W / 2 + 1.5], [0, f * 1.1, H / 2 - 2.0], [0, 0, 1]])  # off-centre, non-square
    c2w = look_at(np.array([0.5, -0.4, -1.0]), np.array([0.8, 0.1, 4.0]), np.array([0.0, -1.0, 0.0]))
    return Camera(camtoworld=c2w, K=K, width=W, height=H)


def plane_depth(cam: Camera) -> torch.Tensor:
    """The exact z-depth [H, W] of the plane through each pixel centre (+0.5)."""
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], axis=-1)  # z = 1
    world_dirs = rays @ cam.rotation.T
    s = (PLANE_D - PLANE_N @ cam.center) / (world_dirs @ PLANE_N)
    return torch.from_numpy(s)  # s along a ray with unit z is the z-depth


def test_unreliable_mask():
    alpha = torch.tensor([[0.05, 0.5, 0.9, 0.9], [0.9, 0.09999, 0.1, 0.9]])
    depth = torch.tensor([[1.0, 1.0, float("nan"), 0.0], [-1.0, 2.0, 2.0, float("inf")]])
    expected = torch.tensor([[True, False, True, True], [True, True, False, True]])
    assert torch.equal(unreliable_mask(alpha, depth), expected)
    assert torch.equal(unreliable_mask(alpha[..., None], depth[..., None]), expected)  # renderer layout
    assert unreliable_mask(alpha, depth, alpha_threshold=0.6)[0, 1]


def test_alignment_recovers_a_known_scale_and_shift():
    gen = torch.Generator().manual_seed(0)
    rendered = 2.0 + 3.0 * torch.rand(H, W, generator=gen)
    generated = (rendered - 0.7) / 2.5  # what the repairer returns: right shape, wrong units
    valid = torch.rand(H, W, generator=gen) > 0.3
    rendered_seen = torch.where(valid, rendered, torch.full_like(rendered, 123.0))  # garbage off-mask
    rendered_seen[0, 0] = float("nan")  # non-finite pixels never enter the fit
    result = align_depth(generated, rendered_seen, valid)
    aligned, scale, shift, fitted, used = result
    assert fitted and scale == pytest.approx(2.5) and shift == pytest.approx(0.7)
    assert used == int(valid.sum()) - int(valid[0, 0])
    torch.testing.assert_close(aligned, rendered, rtol=1e-5, atol=1e-5)  # everywhere, not just on valid


@pytest.mark.parametrize("case", ["few", "flat", "inverted"])
def test_alignment_falls_back_clearly(case):
    rendered = torch.linspace(1.0, 5.0, H * W).reshape(H, W)
    valid = torch.ones(H, W, dtype=torch.bool)
    generated = rendered / 3.0
    if case == "few":
        valid = torch.zeros_like(valid)
        valid[0, :10] = True
    elif case == "flat":
        generated = torch.full_like(rendered, 2.0)
    else:
        generated = -rendered
    result = align_depth(generated, rendered, valid)
    assert not result.fitted and (result.scale, result.shift) == (1.0, 0.0)
    assert torch.equal(result.aligned, generated)


def test_backprojected_points_lie_on_the_plane_and_reproject_to_their_pixels():
    cam = camera()
    depth = plane_depth(cam)
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[3:20, 5:33] = True
    depth[4, 6] = float("nan")  # no depth: left out
    points = backproject(mask, depth, cam)
    assert points.shape == (int(mask.sum()) - 1, 3) and points.dtype == torch.float64
    np.testing.assert_allclose(points.numpy() @ PLANE_N, PLANE_D, atol=1e-9)
    cam_points = (points.numpy() - cam.center) @ cam.rotation  # world -> camera
    uv = cam_points[:, :2] / cam_points[:, 2:] * [cam.fx, cam.fy] + [cam.cx, cam.cy]
    rows, cols = torch.nonzero(mask & torch.isfinite(depth), as_tuple=True)
    np.testing.assert_allclose(uv, np.stack([cols + 0.5, rows + 0.5], axis=1), atol=1e-9)  # pixel centres
    assert backproject(mask, depth.float(), cam).dtype == torch.float32  # follows the depth's dtype


def test_expansion_points_land_where_the_aligned_depth_says():
    """The whole chain on a plane: a render that sees only the left part, a generated depth in
    other units everywhere; the new points fill the right part, on the plane."""
    cam = camera()
    truth = plane_depth(cam).float()
    alpha = torch.zeros(H, W)
    alpha[:, : W // 2] = 1.0
    rendered = torch.where(alpha > 0, truth, torch.zeros_like(truth))
    generated = (truth - 1.2) / 0.8
    holes = unreliable_mask(alpha, rendered)
    assert torch.equal(holes, alpha == 0)
    aligned = align_depth(generated, rendered, alpha > 0.4)
    assert aligned.fitted
    v, u = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    rgb = torch.stack([u / W, v / H, torch.full_like(u, 0.5, dtype=torch.float32)], dim=-1).float()
    points, colors = sample_expansion(rgb, aligned.aligned, holes, cam, 0.1, torch.Generator().manual_seed(3))
    expected = round(0.1 * int(holes.sum()))
    assert points.shape == (expected, 3) and colors.shape == (expected, 3)
    np.testing.assert_allclose(points.double().numpy() @ PLANE_N, PLANE_D, atol=1e-4)
    # every point reprojects into the hole, onto the pixel whose colour it took
    cam_points = (points.double().numpy() - cam.center) @ cam.rotation
    uv = cam_points[:, :2] / cam_points[:, 2:] * [cam.fx, cam.fy] + [cam.cx, cam.cy]
    cols, rows = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    assert holes[rows, cols].all()
    np.testing.assert_allclose(colors[:, 0].numpy(), cols / W, atol=1e-6)
    np.testing.assert_allclose(colors[:, 1].numpy(), rows / H, atol=1e-6)
    again, _ = sample_expansion(rgb, aligned.aligned, holes, cam, 0.1, torch.Generator().manual_seed(3))
    assert torch.equal(points, again)  # a seeded generator repeats the round
    few, _ = sample_expansion(rgb, aligned.aligned, holes, cam, 0.5, max_points=7)
    assert few.shape == (7, 3)


def test_new_gaussians_in_the_trainers_layout():
    sh_degree = 2
    grid = torch.stack(torch.meshgrid(*[torch.arange(10.0) * 0.1] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    points = torch.tensor([[0.45, 0.45, 0.45], [5.0, 5.0, 5.0], [5.3, 5.0, 5.0]], dtype=torch.float64)
    colors = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.0, 0.5], [0.5, 0.5, 0.5]])
    new = new_gaussians(points, colors, grid, sh_degree, opacity=0.1)
    reference = create_splats(
        np.random.rand(5, 3),
        np.random.rand(5, 3),
        sh_degree=sh_degree,
        init_opacity=0.1,
        init_scale=1.0,
        seed=0,
    )
    assert set(new) == set(PARAMETER_NAMES)
    for name in PARAMETER_NAMES:
        assert new[name].shape[1:] == reference[name].shape[1:], name
        assert new[name].shape[0] == 3 and new[name].dtype == grid.dtype
    torch.testing.assert_close(torch.sigmoid(new["opacities"]), torch.full((3,), 0.1))
    torch.testing.assert_close(sh_to_rgb(new["sh0"][:, 0]), colors)
    assert torch.all(new["shN"] == 0)
    torch.testing.assert_close(new["quats"], torch.tensor([[1.0, 0, 0, 0]] * 3))
    sizes = torch.exp(new["scales"][:, 0])
    # amid the 0.1 grid: about the grid spacing; the far pair: its own spacing (new points count)
    assert 0.05 < sizes[0] < 0.12
    assert 0.3 < sizes[1] < 8.0 and sizes[1] > 3 * sizes[0]
    assert torch.all(new["scales"][:, 0] == new["scales"][:, 2])  # isotropic


def test_neighbour_distances_never_zero():
    existing = torch.zeros(0, 3)
    assert neighbour_distances(torch.zeros(1, 3), existing).item() == pytest.approx(0.01)
    twins = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0]])
    assert torch.all(neighbour_distances(twins, existing) > 0)


def test_surfels_face_the_given_normals():
    gen = torch.Generator().manual_seed(1)
    normals = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    normals = torch.cat([normals, torch.tensor([[0.0, 0, 1], [0.0, 0, -1]], dtype=torch.float64)])
    quats = quats_facing(normals)
    R = Rotation.from_quat(quats[:, [1, 2, 3, 0]].numpy()).as_matrix()  # scipy wants xyzw
    unit = (normals / normals.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(R[:, :, 2], unit, atol=1e-9)
    new = new_gaussians(
        torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(4, 3), 0, normals=normals[:2].float()
    )
    assert torch.allclose(new["quats"].norm(dim=-1), torch.ones(2))
    assert new["shN"].shape == (2, 0, 3)  # SH degree 0: no higher coefficients
