"""The .ply export: gsplat's field names and bytes, 3DGS normals, lossless round trip, renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gsplat.exporter import export_splats
from plyfile import PlyData

from genfusion.errors import GenFusionError
from genfusion.export.ply import read_ply, read_ply_info, write_ply
from genfusion.export.splats import SURFEL_THICKNESS_RATIO, surfel_normals
from genfusion.splat.render import render_splats

from .helpers import intrinsics, look_at, random_splats


def _gsplat_bytes(s: dict[str, torch.Tensor]) -> bytes:
    return export_splats(
        s["means"], s["scales"], s["quats"], s["opacities"], s["sh0"], s["shN"], format="ply"
    )


@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_field_names_and_bytes_match_gsplat(tmp_path, sh_degree):
    splats = random_splats(40, sh_degree=sh_degree)
    reference = tmp_path / "gsplat.ply"
    reference.write_bytes(_gsplat_bytes(splats))
    ours = tmp_path / "ours.ply"
    write_ply(ours, splats)
    ref_names = [p.name for p in PlyData.read(str(reference))["vertex"].properties]
    our_ply = PlyData.read(str(ours))
    assert [p.name for p in our_ply["vertex"].properties] == ref_names
    assert all(p.val_dtype in ("f4", "<f4", "float32") for p in our_ply["vertex"].properties)
    # without the header comment the file is byte-for-byte gsplat's
    exact = tmp_path / "exact.ply"
    write_ply(exact, splats, comment=False)
    assert exact.read_bytes() == reference.read_bytes()


def test_round_trip_is_lossless_and_channel_major(tmp_path):
    splats = random_splats(33, sh_degree=2, seed=3)
    path = tmp_path / "s.ply"
    write_ply(path, splats)
    back = read_ply(path)
    for key, value in splats.items():
        assert torch.equal(back[key], value), key
    # f_rest is channel-major as in 3DGS: f_rest_0..7 are the 8 red coefficients
    vertex = PlyData.read(str(path))["vertex"]
    np.testing.assert_array_equal(vertex["f_rest_1"], splats["shN"][:, 1, 0].numpy())
    np.testing.assert_array_equal(vertex["f_rest_8"], splats["shN"][:, 0, 1].numpy())
    info = read_ply_info(path)
    assert (info.num_gaussians, info.sh_degree, info.method, info.has_normals) == (33, 2, "3dgs", False)


def test_3dgs_normals_layout_and_surfel_normals(tmp_path):
    splats = random_splats(20, sh_degree=1, seed=5)
    path = tmp_path / "n.ply"
    write_ply(path, splats, method="2dgs", normals=True)
    names = read_ply_info(path).property_names
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    vertex = PlyData.read(str(path))["vertex"]
    normals = np.stack([vertex["nx"], vertex["ny"], vertex["nz"]], axis=1)
    np.testing.assert_allclose(normals, surfel_normals(splats["quats"]).numpy(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    back = read_ply(path)  # normals are ignored when reading
    assert torch.equal(back["means"], splats["means"])
    # a 3DGS file with normals writes zeros there, as the 3DGS code does
    write_ply(path, splats, method="3dgs", normals=True)
    assert not np.any(PlyData.read(str(path))["vertex"]["nx"])


def test_surfels_are_written_flat(tmp_path):
    splats = random_splats(16, seed=2)
    path = tmp_path / "flat.ply"
    write_ply(path, splats, method="2dgs")
    back = read_ply(path)
    torch.testing.assert_close(back["scales"][:, :2], splats["scales"][:, :2], rtol=0, atol=0)
    expected = splats["scales"][:, :2].min(dim=1).values + np.log(SURFEL_THICKNESS_RATIO)
    torch.testing.assert_close(back["scales"][:, 2], expected, atol=1e-5, rtol=0)
    assert read_ply_info(path).method == "2dgs"
    # surfels given with only two scale columns work too
    two = dict(splats, scales=splats["scales"][:, :2])
    write_ply(path, two, method="2dgs")
    assert torch.equal(read_ply(path)["scales"], back["scales"])


@pytest.mark.parametrize("mode", ["3dgs", "2dgs"])
def test_round_trip_renders_identically(tmp_path, mode):
    splats = random_splats(150, sh_degree=3, seed=7, spread=0.6)
    width, height = 40, 30
    c2w = np.stack([look_at((0.3, -0.2, -2.5)), look_at((-1.5, 0.1, -2.0))])
    viewmats = torch.from_numpy(np.linalg.inv(c2w)).float()
    Ks = torch.from_numpy(np.stack([intrinsics(width, height)] * 2)).float()
    path = tmp_path / f"{mode}.ply"
    write_ply(path, splats, method=mode)
    back = read_ply(path)
    kwargs = dict(sh_degree=3, mode=mode, backend="torch")
    with torch.no_grad():
        before = render_splats(splats, viewmats, Ks, width, height, **kwargs)
        after = render_splats(back, viewmats, Ks, width, height, **kwargs)
    assert float(before.alpha.max()) > 0.5  # the cameras see the splats
    torch.testing.assert_close(after.rgb, before.rgb, atol=1e-6, rtol=0)
    torch.testing.assert_close(after.alpha, before.alpha, atol=1e-6, rtol=0)
    torch.testing.assert_close(after.depth, before.depth, atol=1e-6, rtol=0)


def test_bad_inputs(tmp_path):
    empty = {k: v[:0] for k, v in random_splats(4).items()}
    target = tmp_path / "out.ply"
    target.write_bytes(b"previous")
    with pytest.raises(GenFusionError, match="no Gaussians"):
        write_ply(target, empty)
    assert target.read_bytes() == b"previous"  # earlier output intact
    nan = random_splats(5)
    nan["means"][1, 0] = float("nan")
    nan["opacities"][3] = float("inf")
    written = write_ply(target, nan)
    assert written.dropped == 2 and read_ply(target)["means"].shape == (3, 3)
    with pytest.raises(GenFusionError, match="malformed"):
        write_ply(target, dict(random_splats(4), quats=torch.zeros(4, 3)))
    with pytest.raises(GenFusionError, match="no such"):
        read_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_bytes(b"hello")
    with pytest.raises(GenFusionError, match="not a readable"):
        read_ply(tmp_path / "junk.ply")
    import trimesh

    trimesh.creation.box().export(tmp_path / "mesh.ply")
    with pytest.raises(GenFusionError, match="not a Gaussian-splat"):
        read_ply(tmp_path / "mesh.ply")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
