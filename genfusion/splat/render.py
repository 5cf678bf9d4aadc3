"""``render()``: one differentiable Gaussian-splatting renderer, two backends, 2DGS and 3DGS.

* ``backend="gsplat"``: gsplat's CUDA ``rasterization`` / ``rasterization_2dgs`` (CUDA tensors).
* ``backend="torch"``: our pure-torch tiled rasteriser (any device; the CPU path).
* ``backend="auto"`` (default): gsplat when the tensors live on CUDA, torch otherwise.
* ``backend="dense"``: the brute-force reference compositor (tests and benchmarks only).

All backends share gsplat's conventions and semantics, so their outputs agree (tested on CPU
between torch and dense, on a GPU between torch and gsplat). gsplat is only imported inside the
CUDA branch: rendering on a CPU-only machine never starts gsplat's CUDA JIT build.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from genfusion.splat.depth_normals import depth_to_normal
from genfusion.splat.projection import project_2dgs, project_3dgs
from genfusion.splat.sh import spherical_harmonics

Mode = Literal["2dgs", "3dgs"]
Backend = Literal["auto", "gsplat", "torch", "dense"]


@dataclass
class RenderOutput:
    """Everything one ``render()`` call produces, for C cameras of H x W pixels."""

    rgb: Tensor  # [C, H, W, D] composited colour (D = 3 for RGB), background included
    depth: Tensor  # [C, H, W, 1] expected z-depth: sum(w_i z_i) / alpha (gsplat's "ED")
    alpha: Tensor  # [C, H, W, 1] accumulated opacity 1 - T_final
    normals: Tensor | None = None  # [C, H, W, 3] 2DGS rendered normals, world frame (3DGS: None)
    surf_normals: Tensor | None = None  # [C, H, W, 3] 2DGS normals of the depth map, world frame
    distortion: Tensor | None = None  # [C, H, W, 1] 2DGS depth distortion sum w_i w_j |z_i - z_j|
    # Densification inputs as gsplat's strategies read them: "means2d" [C, N, 2] (grad-carrying,
    # call .retain_grad() before backward), "radii" [C, N, 2] int32 (0 = culled), "depths" [C, N],
    # "width", "height", "n_cameras", "backend" (which backend ran), and for 2DGS
    # "gradient_2dgs" [C, N, 2] (its .grad is gsplat's 2DGS densification gradient).
    meta: dict = field(default_factory=dict)


class _Densify2DGS(torch.autograd.Function):
    """Identity on the ray transforms that routes gsplat's 2DGS densification gradient.

    gsplat's 2DGS trainer densifies on d(loss)/d(M[0:2, 2]) * depth, collected in the ``.grad``
    of an all-zero ``gradient_2dgs`` tensor; this reproduces it for the torch backends.
    """

    @staticmethod
    def forward(ctx, ray_transforms: Tensor, densify: Tensor) -> Tensor:
        ctx.save_for_backward(ray_transforms)
        return ray_transforms.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ray_transforms,) = ctx.saved_tensors
        depth = ray_transforms[..., 2, 2]
        return grad, torch.stack([grad[..., 0, 2] * depth, grad[..., 1, 2] * depth], dim=-1)


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree) -> None:
    n = means.shape[0]
    checks = [
        (means.dim() == 2 and means.shape[1] == 3, f"means must be [N, 3], got {tuple(means.shape)}"),
        (quats.shape == (n, 4), f"quats must be [N, 4], got {tuple(quats.shape)}"),
        (scales.shape == (n, 3), f"scales must be [N, 3], got {tuple(scales.shape)}"),
        (opacities.shape == (n,), f"opacities must be [N], got {tuple(opacities.shape)}"),
        (viewmats.dim() == 3 and viewmats.shape[1:] == (4, 4), "viewmats must be [C, 4, 4]"),
        (Ks.shape == (viewmats.shape[0], 3, 3), "Ks must be [C, 3, 3] with C = len(viewmats)"),
    ]
    if sh_degree is None:
        ok = colors.dim() == 2 and colors.shape[0] == n
        ok |= colors.dim() == 3 and colors.shape[:2] == (viewmats.shape[0], n)
        checks.append((ok, f"colors must be [N, D] or [C, N, D], got {tuple(colors.shape)}"))
    else:
        ok = colors.dim() in (3, 4) and colors.shape[-1] == 3 and colors.shape[-3] == n
        ok &= colors.shape[-2] >= (sh_degree + 1) ** 2
        checks.append((ok, f"SH colors must be [N, K>=(d+1)^2, 3], got {tuple(colors.shape)}"))
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _view_colors(means: Tensor, colors: Tensor, viewmats: Tensor, sh_degree: int | None) -> Tensor:
    """Per-camera colours [C, N, D]: SH evaluated from each camera centre (+0.5, clamped at 0)."""
    n_cameras = viewmats.shape[0]
    if sh_degree is None:
        return colors.expand(n_cameras, -1, -1) if colors.dim() == 2 else colors
    campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
    dirs = means[None] - campos[:, None]  # [C, N, 3]
    coeffs = colors.expand(n_cameras, -1, -1, -1) if colors.dim() == 3 else colors
    return torch.clamp_min(spherical_harmonics(sh_degree, dirs, coeffs) + 0.5, 0.0)


def resolve_backend(backend: Backend, device: torch.device) -> str:
    """The rasteriser :func:`render` runs for ``backend`` on tensors of ``device`` (what ``auto``
    becomes); a backend the device cannot run is a ``ValueError``."""
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "torch"
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError("backend='gsplat' needs CUDA tensors; use backend='torch' on CPU")
    if backend not in ("gsplat", "torch", "dense"):
        raise ValueError(f"unknown backend {backend!r}")
    return backend


def render(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    mode: Mode = "2dgs",
    sh_degree: int | None = None,
    background: Tensor | None = None,
    backend: Backend = "auto",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> RenderOutput:
    """Render N activated Gaussians into C pinhole cameras (gsplat conventions).

    Args:
        means: [N, 3] centres (world). quats: [N, 4] wxyz rotations (any norm).
        scales: [N, 3] activated scales (2DGS uses the first two). opacities: [N] in (0, 1).
        colors: [N, K, 3] SH coefficients when ``sh_degree`` is given (K >= (d+1)^2), else
            [N, D] or [C, N, D] colours.
        viewmats: [C, 4, 4] world-to-camera (OpenCV: x right, y down, z forward). Ks: [C, 3, 3].
        width, height: image size in pixels.
        mode: "2dgs" (surfels, ray-splat intersection; the paper's default) or "3dgs" (EWA).
        sh_degree: SH degree to evaluate (may be lower than K allows), None for plain colours.
        background: [D] or [C, D] colour behind the splats; None = black.
        backend: "auto" | "gsplat" | "torch" | "dense" (see the module docstring).
        near_plane, far_plane: Gaussians with centre depth outside are culled.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree)
    if mode not in ("2dgs", "3dgs"):
        raise ValueError(f"mode must be '2dgs' or '3dgs', got {mode!r}")
    chosen = resolve_backend(backend, means.device)
    n_cameras = viewmats.shape[0]
    if chosen == "gsplat":
        from genfusion.splat.gsplat_backend import render_gsplat

        return render_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            mode=mode, sh_degree=sh_degree, background=background,
            near_plane=near_plane, far_plane=far_plane,
        )  # fmt: skip

    view_colors = _view_colors(means, colors, viewmats, sh_degree)  # [C, N, D]
    channels = view_colors.shape[-1]
    view_opacities = opacities[None].expand(n_cameras, -1)
    meta: dict = {"width": width, "height": height, "n_cameras": n_cameras, "backend": chosen}
    normals = surf_normals = distortion = None
    if mode == "3dgs":
        proj = project_3dgs(
            means, quats, scales, opacities, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane,
        )  # fmt: skip
        features = torch.cat([view_colors, proj.depths[..., None]], dim=-1)
        if chosen == "dense":
            from genfusion.splat.dense_reference import dense_rasterize_3dgs as rasterize
        else:
            from genfusion.splat.rasterize_3dgs import rasterize_3dgs as rasterize
        accumulated, t_final = rasterize(proj, view_opacities, features, width, height)
        meta.update(means2d=proj.means2d, radii=proj.radii, depths=proj.depths, conics=proj.conics)
    else:
        proj = project_2dgs(
            means, quats, scales, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane,
        )  # fmt: skip
        densify = torch.zeros_like(proj.means2d, requires_grad=True)
        proj.ray_transforms = _Densify2DGS.apply(proj.ray_transforms, densify)
        features = torch.cat([view_colors, proj.depths[..., None], proj.normals], dim=-1)
        if chosen == "dense":
            from genfusion.splat.dense_reference import dense_rasterize_2dgs as rasterize
        else:
            from genfusion.splat.rasterize_2dgs import rasterize_2dgs as rasterize
        accumulated, t_final, distortion = rasterize(proj, view_opacities, features, width, height, channels)
        camtoworlds = torch.linalg.inv(viewmats)
        normals = torch.einsum("cij,chwj->chwi", camtoworlds[:, :3, :3], accumulated[..., channels + 1 :])
        meta.update(
            means2d=proj.means2d, radii=proj.radii, depths=proj.depths,
            ray_transforms=proj.ray_transforms, normals=proj.normals, gradient_2dgs=densify,
        )  # fmt: skip

    alpha = 1.0 - t_final
    rgb = accumulated[..., :channels]
    if background is not None:
        rgb = rgb + t_final * background.expand(n_cameras, channels)[:, None, None, :]
    depth = accumulated[..., channels : channels + 1] / alpha.clamp(min=1e-10)
    if mode == "2dgs":
        surf_normals = depth_to_normal(depth, torch.linalg.inv(viewmats), Ks)
    return RenderOutput(
        rgb=rgb, depth=depth, alpha=alpha, normals=normals, surf_normals=surf_normals,
        distortion=distortion, meta=meta,
    )  # fmt: skip


def activate_splats(splats: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Activated tensors from gsplat-style raw parameters.

    ``splats`` holds means [N, 3], quats [N, 4], scales [N, 3] (log), opacities [N] (logit),
    sh0 [N, 1, 3] and shN [N, K-1, 3] (or "colors" [N, D] for plain colours).
    """
    out = {
        "means": splats["means"],
        "quats": splats["quats"],
        "scales": torch.exp(splats["scales"]),
        "opacities": torch.sigmoid(splats["opacities"]),
    }
    if "sh0" in splats:
        parts = [splats["sh0"]] + ([splats["shN"]] if "shN" in splats else [])
        out["colors"] = torch.cat(parts, dim=1)
    else:
        out["colors"] = splats["colors"]
    return out


def render_splats(
    splats: Mapping[str, Tensor],
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int | None,
    mode: Mode = "2dgs",
    background: Tensor | None = None,
    backend: Backend = "auto",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> RenderOutput:
    """``render()`` on raw gsplat-style parameters (a ParameterDict or any mapping of tensors)."""
    act = activate_splats(splats)
    return render(
        act["means"], act["quats"], act["scales"], act["opacities"], act["colors"],
        viewmats, Ks, width, height, mode=mode, sh_degree=sh_degree, background=background,
        backend=backend, near_plane=near_plane, far_plane=far_plane,
    )  # fmt: skip
