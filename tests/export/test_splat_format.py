"""The antimatter15 .splat export: record layout, order, values against an independent converter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genfusion.errors import GenFusionError
from genfusion.export.ply import write_ply
from genfusion.export.splat_format import SPLAT_DTYPE, read_splat, write_splat

from .helpers import random_splats


def _antimatter15_convert(ply_path) -> bytes:
    """antimatter15's convert.py logic, reading the 3DGS .ply fields with plyfile."""
    from plyfile import PlyData

    v = PlyData.read(str(ply_path))["vertex"]
    order = np.argsort(-np.exp(v["scale_0"] + v["scale_1"] + v["scale_2"]) / (1 + np.exp(-v["opacity"])))
    sh_c0 = 0.28209479177387814
    out = bytearray()
    for i in order:
        out += np.array([v["x"][i], v["y"][i], v["z"][i]], dtype=np.float32).tobytes()
        out += np.exp(
            np.array([v["scale_0"][i], v["scale_1"][i], v["scale_2"][i]], dtype=np.float32)
        ).tobytes()
        color = np.array(
            [0.5 + sh_c0 * v["f_dc_0"][i], 0.5 + sh_c0 * v["f_dc_1"][i], 0.5 + sh_c0 * v["f_dc_2"][i],
             1 / (1 + np.exp(-v["opacity"][i]))]
        )  # fmt: skip
        out += (color * 255).clip(0, 255).astype(np.uint8).tobytes()
        rot = np.array([v["rot_0"][i], v["rot_1"][i], v["rot_2"][i], v["rot_3"][i]], dtype=np.float64)
        out += ((rot / np.linalg.norm(rot)) * 128 + 128).clip(0, 255).astype(np.uint8).tobytes()
    return bytes(out)


def test_matches_reference_converter(tmp_path):
    splats = random_splats(80, seed=11)
    write_ply(tmp_path / "s.ply", splats)
    write_splat(tmp_path / "s.splat", splats)
    ours = (tmp_path / "s.splat").read_bytes()
    reference = _antimatter15_convert(tmp_path / "s.ply")
    assert len(ours) == 32 * 80
    a = np.frombuffer(ours, dtype=SPLAT_DTYPE)
    b = np.frombuffer(reference, dtype=SPLAT_DTYPE)
    np.testing.assert_array_equal(a["position"], b["position"])  # same Gaussians in the same order
    np.testing.assert_allclose(a["scale"], b["scale"], rtol=1e-6)  # torch vs numpy exp: 1 ulp
    # colour and rotation bytes: float32 vs float64 may flip a truncation by one step
    for field in ("rgba", "rotation"):
        assert np.abs(a[field].astype(int) - b[field].astype(int)).max() <= 1


def test_decode_and_sort_order(tmp_path):
    splats = random_splats(50, sh_degree=0, seed=4)
    splats["sh0"] = splats["sh0"].clamp(-1.5, 1.5)  # colours inside [0, 1]: no clamping loss
    write_splat(tmp_path / "a.splat", splats)
    back = read_splat(tmp_path / "a.splat")
    # match each decoded Gaussian to its source by position
    src = {tuple(m.tolist()): i for i, m in enumerate(splats["means"])}
    index = torch.tensor([src[tuple(m.tolist())] for m in back["means"]])
    assert sorted(index.tolist()) == list(range(50))
    importance = torch.exp(splats["scales"].sum(1)) * torch.sigmoid(splats["opacities"])
    assert torch.all(importance[index][:-1] >= importance[index][1:])  # largest * most opaque first
    torch.testing.assert_close(back["scales"], splats["scales"][index], atol=1e-6, rtol=0)
    colour = 0.5 + 0.28209479177387814 * splats["sh0"][index, 0]
    decoded = 0.5 + 0.28209479177387814 * back["sh0"][:, 0]
    assert float((decoded - colour).abs().max()) <= 1 / 255 + 1e-6
    q = torch.nn.functional.normalize(splats["quats"][index], dim=1)
    q_back = torch.nn.functional.normalize(back["quats"], dim=1)
    assert float((q - q_back).abs().max()) < 0.03


def test_2dgs_surfels_are_flat_and_bad_file_rejected(tmp_path):
    splats = random_splats(10, seed=1)
    write_splat(tmp_path / "s.splat", splats, method="2dgs")
    scales = torch.exp(read_splat(tmp_path / "s.splat")["scales"])
    assert torch.all(scales[:, 2] <= 1.001e-3 * scales[:, :2].min(dim=1).values)
    (tmp_path / "bad.splat").write_bytes(b"x" * 33)
    with pytest.raises(GenFusionError, match="multiple of 32"):
        read_splat(tmp_path / "bad.splat")
