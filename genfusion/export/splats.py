"""Checking and normalising a splats mapping before any export writes it.

Exports take gsplat-style raw parameters (a ``ParameterDict`` or any mapping of tensors)::

    means [N, 3], quats [N, 4] wxyz, scales [N, 3] log (2DGS: [N, 2] or [N, 3], third unused),
    opacities [N] logit, sh0 [N, 1, 3], shN [N, K-1, 3] (optional: missing = degree 0)

2DGS surfels have no extent along their normal. Formats made for 3D Gaussians (.ply, .splat)
get them as *flat* 3D Gaussians: the third log-scale is set to
``log(max(SURFEL_THICKNESS_FLOOR, SURFEL_THICKNESS_RATIO * min(s0, s1)))``, i.e. a thickness of
1/1000 of the smaller in-plane axis. That is visually a disc in any 3DGS viewer, keeps the
covariance positive definite in float32 (eigenvalue ratio 1e-6), and is ignored by the 2DGS
renderer, so a 2DGS round trip renders identically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from genfusion.errors import GenFusionError
from genfusion.splat.projection import quat_to_rotmat

SURFEL_THICKNESS_RATIO = 1e-3  # flat axis of an exported surfel, relative to its smaller axis
SURFEL_THICKNESS_FLOOR = 1e-7  # absolute lower bound on that thickness (scene units)
METHODS = ("2dgs", "3dgs")


@dataclass
class ExportSplats:
    """Validated CPU float32 parameters, ready to serialise (N may be 0 only before checks)."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] wxyz, as stored (not normalised)
    scales: Tensor  # [N, 3] log scales (2DGS: third axis flattened, see module docstring)
    opacities: Tensor  # [N] logit
    sh0: Tensor  # [N, 1, 3]
    shN: Tensor  # [N, K-1, 3], K-1 may be 0
    method: str  # "2dgs" or "3dgs"
    dropped: int = 0  # Gaussians left out because a parameter was NaN or infinite

    @property
    def num(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.shN.shape[1] + 1))) - 1

    def as_dict(self) -> dict[str, Tensor]:
        """The gsplat-style mapping (what :func:`genfusion.splat.render.render_splats` takes)."""
        return {
            "means": self.means, "quats": self.quats, "scales": self.scales,
            "opacities": self.opacities, "sh0": self.sh0, "shN": self.shN,
        }  # fmt: skip


def surfel_normals(quats: Tensor) -> Tensor:
    """The normal of each 2DGS surfel: the third column of its rotation, [N, 3]."""
    return quat_to_rotmat(quats)[:, :, 2]


def flatten_surfel_scales(log_scales: Tensor) -> Tensor:
    """2DGS log-scales [N, 2] or [N, 3] -> [N, 3] with the flat third axis (module docstring)."""
    in_plane = log_scales[:, :2]
    thickness = torch.clamp(
        in_plane.min(dim=1).values + math.log(SURFEL_THICKNESS_RATIO), min=math.log(SURFEL_THICKNESS_FLOOR)
    )
    return torch.cat([in_plane, thickness[:, None]], dim=1)


def prepare_splats(splats: Mapping[str, Tensor], *, method: str = "3dgs") -> ExportSplats:
    """Check shapes, move to CPU float32, flatten 2DGS surfels, drop non-finite Gaussians.

    Raises :class:`GenFusionError` when a parameter is missing or misshapen, or when no Gaussian
    is left to export.
    """
    if method not in METHODS:
        raise GenFusionError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}.")
    missing = [k for k in ("means", "quats", "scales", "opacities", "sh0") if k not in splats]
    if missing:
        raise GenFusionError(f"the splats lack {', '.join(missing)}; expected gsplat-style parameters.")

    def get(name: str) -> Tensor:
        return splats[name].detach().to("cpu", torch.float32)

    means, quats, scales, opacities, sh0 = (get(k) for k in ("means", "quats", "scales", "opacities", "sh0"))
    n = means.shape[0]
    shN = get("shN") if "shN" in splats else torch.zeros(n, 0, 3)
    if sh0.dim() == 2:
        sh0 = sh0[:, None, :]
    opacities = opacities.reshape(-1) if opacities.dim() == 2 and opacities.shape[1] == 1 else opacities
    scale_columns = (2, 3) if method == "2dgs" else (3,)
    checks = [
        (means.dim() == 2 and means.shape[1] == 3, f"means {tuple(means.shape)}, expected [N, 3]"),
        (quats.shape == (n, 4), f"quats {tuple(quats.shape)}, expected [{n}, 4]"),
        (scales.dim() == 2 and scales.shape[0] == n and scales.shape[1] in scale_columns,
         f"scales {tuple(scales.shape)}, expected [{n}, {'2 or 3' if method == '2dgs' else 3}]"),
        (opacities.shape == (n,), f"opacities {tuple(opacities.shape)}, expected [{n}]"),
        (sh0.shape == (n, 1, 3), f"sh0 {tuple(sh0.shape)}, expected [{n}, 1, 3]"),
        (shN.dim() == 3 and shN.shape[0] == n and shN.shape[2] == 3
         and math.isqrt(shN.shape[1] + 1) ** 2 == shN.shape[1] + 1,
         f"shN {tuple(shN.shape)}, expected [{n}, (d+1)^2-1, 3]"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise GenFusionError(f"malformed splats: {message}.")
    if method == "2dgs":
        scales = flatten_surfel_scales(scales)
    finite = torch.ones(n, dtype=torch.bool)
    for tensor in (means, quats, scales, opacities[:, None], sh0.flatten(1), shN.flatten(1)):
        finite &= torch.isfinite(tensor).all(dim=1)
    finite &= quats.norm(dim=1) > 0
    dropped = int((~finite).sum())
    if dropped:
        means, quats, scales, opacities, sh0, shN = (
            t[finite] for t in (means, quats, scales, opacities, sh0, shN)
        )
    if means.shape[0] == 0:
        reason = f" ({dropped} had NaN/inf parameters)" if dropped else ""
        raise GenFusionError(f"there are no Gaussians to export{reason}; train the run again.")
    return ExportSplats(means, quats, scales, opacities, sh0, shN, method=method, dropped=dropped)


def sh_degree_of(splats: Mapping[str, Tensor]) -> int:
    """The SH degree a splats mapping stores (from the row count of ``shN``; 0 without it)."""
    rest = splats["shN"].shape[1] if "shN" in splats else 0
    return math.isqrt(rest + 1) - 1
