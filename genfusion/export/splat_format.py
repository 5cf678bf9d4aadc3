"""The ``.splat`` format of antimatter15's WebGL viewer (also read by SuperSplat and Gradio's
``Model3D``): 32 bytes per Gaussian, no header, little-endian::

    position  float32 x 3   world centre
    scale     float32 x 3   linear standard deviations (exp of the log-scales)
    colour    uint8 x 4     RGB = 0.5 + SH_C0 * f_dc (clamped), A = sigmoid(opacity)
    rotation  uint8 x 4     normalised wxyz quaternion * 128 + 128

Only the degree-0 colour survives (no view dependence). Gaussians are sorted by decreasing
``volume * opacity`` (exp of the summed log-scales times sigmoid opacity), as antimatter15's
``convert.py`` does, so a viewer that streams the file shows the big, opaque ones first. Byte
values follow that script too (truncation after clamping to [0, 255]). 2DGS surfels are flat 3D
Gaussians (see :mod:`genfusion.export.splats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genfusion.atomic import write_bytes_atomic
from genfusion.errors import GenFusionError
from genfusion.export.splats import ExportSplats, prepare_splats
from genfusion.splat.sh import rgb_to_sh, sh_to_rgb

SPLAT_DTYPE = np.dtype(
    [("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)), ("rotation", "u1", (4,))]
)
assert SPLAT_DTYPE.itemsize == 32


def splat_bytes(splats: ExportSplats) -> bytes:
    """Serialise validated splats to ``.splat`` bytes (sorted, 32 bytes each)."""
    importance = torch.exp(splats.scales.double().sum(dim=1)) * torch.sigmoid(splats.opacities.double())
    order = torch.argsort(-importance, stable=True)
    colour = sh_to_rgb(splats.sh0[:, 0, :].double())
    rgba = torch.cat([colour, torch.sigmoid(splats.opacities.double())[:, None]], dim=1) * 255.0
    rotation = torch.nn.functional.normalize(splats.quats.double(), dim=1) * 128.0 + 128.0
    records = np.empty(splats.num, dtype=SPLAT_DTYPE)
    records["position"] = splats.means[order].numpy()
    records["scale"] = torch.exp(splats.scales[order]).numpy()
    records["rgba"] = rgba[order].clamp(0, 255).numpy().astype(np.uint8)
    records["rotation"] = rotation[order].clamp(0, 255).numpy().astype(np.uint8)
    return records.tobytes()


def write_splat(
    path: str | Path, splats: Mapping[str, Tensor] | ExportSplats, *, method: str = "3dgs"
) -> ExportSplats:
    """Write ``splats`` (gsplat-style raw parameters) as a ``.splat`` file, atomically."""
    data = splats if isinstance(splats, ExportSplats) else prepare_splats(splats, method=method)
    write_bytes_atomic(path, splat_bytes(data))
    return data


def read_splat(path: str | Path) -> dict[str, Tensor]:
    """Decode a ``.splat`` file into gsplat-style raw parameters (degree 0, quantised colour,
    opacity and rotation). Opacities of 0 or 1 are clipped to finite logits."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) % SPLAT_DTYPE.itemsize:
        raise GenFusionError(f"is {len(raw)} bytes, not a multiple of 32, so not a .splat file.", path=path)
    records = np.frombuffer(raw, dtype=SPLAT_DTYPE)
    rgba = torch.from_numpy(records["rgba"].astype(np.float32)) / 255.0
    alpha = rgba[:, 3].clamp(1e-4, 1 - 1e-4)
    return {
        "means": torch.from_numpy(records["position"].copy()),
        "scales": torch.log(torch.from_numpy(records["scale"].copy())),
        "quats": (torch.from_numpy(records["rotation"].astype(np.float32)) - 128.0) / 128.0,
        "opacities": torch.log(alpha / (1 - alpha)),
        "sh0": rgb_to_sh(rgba[:, :3])[:, None, :],
        "shN": torch.zeros(len(records), 0, 3),
    }
