"""Gaussian splats as the standard 3DGS ``.ply`` (what SuperSplat, gsplat and the 3DGS code read).

One ``vertex`` element of little-endian float32 properties, in this order::

    x y z [nx ny nz] f_dc_0..2 f_rest_0..(3*(K-1)-1) opacity scale_0..2 rot_0..3

``f_rest`` is channel-major as in the 3DGS code (all R coefficients, then G, then B), opacity is
the logit, scales are logs, rotation is the unnormalised wxyz quaternion.

* By default the properties are exactly gsplat's (``gsplat.exporter.export_splats``: no normals)
  and one header comment records the method and SH degree (``comment genfusion method=2dgs
  sh_degree=3``) so a reader knows how to render the file; PLY readers skip comments. With
  ``comment=False`` the file is byte-for-byte what gsplat writes (tested).
* ``normals=True`` adds ``nx ny nz`` after ``z`` as the original 3DGS writer does: zeros for 3DGS
  (as 3DGS writes them), the surfel normal for 2DGS.

2DGS surfels are written as flat 3D Gaussians (see :mod:`genfusion.export.splats`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement
from torch import Tensor

from genfusion.atomic import atomic_path
from genfusion.errors import GenFusionError
from genfusion.export.splats import ExportSplats, prepare_splats, surfel_normals

_COMMENT = re.compile(r"genfusion method=(?P<method>\w+) sh_degree=(?P<sh>\d+)")


def ply_property_names(num_rest: int, *, normals: bool = True) -> list[str]:
    """Property names in file order; ``num_rest`` = number of ``f_rest_*`` values (3 * (K-1))."""
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals else [])
    names += [f"f_dc_{i}" for i in range(3)] + [f"f_rest_{i}" for i in range(num_rest)]
    names += ["opacity"] + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    return names


def _vertex_columns(splats: ExportSplats, normals: bool) -> list[np.ndarray]:
    n = splats.num
    rest = splats.shN.permute(0, 2, 1).reshape(n, -1)  # [N, 3*(K-1)], channel-major as 3DGS
    columns = [splats.means]
    if normals:
        columns.append(surfel_normals(splats.quats) if splats.method == "2dgs" else torch.zeros(n, 3))
    columns += [splats.sh0[:, 0, :], rest, splats.opacities[:, None], splats.scales, splats.quats]
    return [c.numpy().astype("<f4") for c in columns]


def write_ply(
    path: str | Path,
    splats: Mapping[str, Tensor] | ExportSplats,
    *,
    method: str = "3dgs",
    normals: bool = False,
    comment: bool = True,
) -> ExportSplats:
    """Write ``splats`` (gsplat-style raw parameters) to ``path`` atomically.

    Gaussians with non-finite parameters are left out (as gsplat does); the returned
    :class:`ExportSplats` says how many (``dropped``) and what was written.
    """
    data = splats if isinstance(splats, ExportSplats) else prepare_splats(splats, method=method)
    columns = _vertex_columns(data, normals)
    table = np.concatenate(columns, axis=1)
    names = ply_property_names(data.shN.shape[1] * 3, normals=normals)
    assert table.shape[1] == len(names)
    vertices = np.empty(data.num, dtype=[(name, "<f4") for name in names])
    vertices.view("<f4").reshape(data.num, len(names))[:] = table
    comments = [f"genfusion method={data.method} sh_degree={data.sh_degree}"] if comment else []
    ply = PlyData([PlyElement.describe(vertices, "vertex")], text=False, byte_order="<", comments=comments)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            ply.write(handle)
    return data


@dataclass
class PlyInfo:
    """What a splat ``.ply`` header says."""

    num_gaussians: int  # vertices in the file
    sh_degree: int  # from the number of f_rest properties
    method: str | None  # "2dgs"/"3dgs" from a genfusion comment, None for other writers
    has_normals: bool  # whether nx ny nz are present
    property_names: list[str]  # in file order


def _open(path: Path) -> PlyData:
    if not path.is_file():
        raise GenFusionError("no such .ply file", path=path)
    try:
        return PlyData.read(str(path))
    except Exception as err:  # plyfile raises several types for malformed files
        raise GenFusionError(
            f"is not a readable .ply file ({type(err).__name__}: {str(err)[:200]}).", path=path
        ) from None


def _info(path: Path, ply: PlyData) -> PlyInfo:
    if "vertex" not in ply:
        raise GenFusionError("has no 'vertex' element, so it holds no Gaussian splats.", path=path)
    names = [p.name for p in ply["vertex"].properties]
    required = ply_property_names(0, normals=False)
    missing = [n for n in required if n not in names]
    if missing:
        raise GenFusionError(
            f"is not a Gaussian-splat .ply (missing {', '.join(missing[:5])}); compressed or mesh "
            "files are not splats. Export it again in the standard 3DGS layout.",
            path=path,
        )
    num_rest = sum(1 for n in names if n.startswith("f_rest_"))
    coeffs = num_rest // 3 + 1
    if num_rest % 3 or math.isqrt(coeffs) ** 2 != coeffs:
        raise GenFusionError(
            f"has {num_rest} f_rest values, not 3 * ((d+1)^2 - 1) for a degree d.", path=path
        )
    method = None
    for comment in ply.comments:
        match = _COMMENT.search(comment)
        if match:
            method = match["method"]
    return PlyInfo(
        num_gaussians=ply["vertex"].count,
        sh_degree=math.isqrt(coeffs) - 1,
        method=method,
        has_normals="nx" in names,
        property_names=names,
    )


def read_ply_info(path: str | Path) -> PlyInfo:
    """The header facts of a splat ``.ply`` (reads the file)."""
    path = Path(path)
    return _info(path, _open(path))


def read_ply(path: str | Path) -> dict[str, Tensor]:
    """Load a 3DGS-layout ``.ply`` (ours, gsplat's or the 3DGS code's) into gsplat-style raw
    parameters: means, quats, scales, opacities, sh0 [N,1,3], shN [N,K-1,3] (float32, CPU)."""
    path = Path(path)
    ply = _open(path)
    info = _info(path, ply)
    vertex = ply["vertex"]

    def stack(names: list[str]) -> Tensor:
        if not names:
            return torch.zeros(info.num_gaussians, 0)
        return torch.from_numpy(np.stack([np.asarray(vertex[n], dtype=np.float32) for n in names], axis=1))

    num_rest = 3 * ((info.sh_degree + 1) ** 2 - 1)
    rest = stack([f"f_rest_{i}" for i in range(num_rest)])
    return {
        "means": stack(["x", "y", "z"]),
        "quats": stack([f"rot_{i}" for i in range(4)]),
        "scales": stack([f"scale_{i}" for i in range(3)]),
        "opacities": stack(["opacity"])[:, 0].contiguous(),
        "sh0": stack([f"f_dc_{i}" for i in range(3)])[:, None, :].contiguous(),
        "shN": rest.reshape(info.num_gaussians, 3, -1).permute(0, 2, 1).contiguous(),
    }
