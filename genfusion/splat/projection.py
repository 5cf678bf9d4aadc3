"""Project Gaussians into cameras (pure torch, differentiable by autograd), as gsplat does.

Two projections with gsplat's exact semantics (read from gsplat 1.5.3's CUDA kernels):

* 3DGS: EWA splatting. Camera-space covariance J W S S^T W^T J^T with the Jacobian's x/y
  clamped to 1.3x the field of view, a 0.3 px^2 low-pass (``eps2d``) added to the 2D covariance,
  and an opacity-aware bounding box (radius = ceil(min(3.33, sqrt(2 ln(255 o))) * sigma)).
* 2DGS: the ray-splat transform ``M = K [R s_u, R s_v, t]`` (rows u, v, w) of each surfel, its
  projected centre and 3.33-sigma bounding box from the conic of the splat's unit circle, and its
  camera-space normal flipped to face the camera.

Culled Gaussians (behind the near plane, degenerate, transparent or off-screen) get radii 0. Their
other outputs are finite but meaningless: the maths runs on safe stand-in values so that no NaN
reaches the backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat: fragments fainter than this are skipped
MAX_ALPHA = 0.999  # gsplat clamps each fragment's alpha to this
TRANSMITTANCE_STOP = 1e-4  # gsplat: a pixel stops when T would drop to this or below (exclusive)
TILE_SIZE = 16  # tile edge in pixels (gsplat's default; the rasterisers assume it)


@dataclass
class Projection3DGS:
    """Per-camera screen-space Gaussians for the 3DGS rasteriser (C cameras, N Gaussians)."""

    means2d: Tensor  # [C, N, 2] projected centres in pixels (differentiable)
    conics: Tensor  # [C, N, 3] inverse 2D covariance (a, b, c) = [[a, b], [b, c]] (differentiable)
    depths: Tensor  # [C, N] camera-space z of the centres (differentiable)
    radii: Tensor  # [C, N, 2] int32 bounding-box half sizes in pixels; 0 = culled


@dataclass
class Projection2DGS:
    """Per-camera surfels for the 2DGS rasteriser (C cameras, N Gaussians)."""

    means2d: Tensor  # [C, N, 2] projected centres in pixels (differentiable)
    ray_transforms: Tensor  # [C, N, 3, 3] rows u, v, w of K [R s_u, R s_v, t] (differentiable)
    depths: Tensor  # [C, N] camera-space z of the centres (differentiable)
    normals: Tensor  # [C, N, 3] camera-space unit normals facing the camera (differentiable)
    radii: Tensor  # [C, N, 2] int32 bounding-box half sizes in pixels; 0 = culled


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from (not necessarily normalised) wxyz quaternions [..., 4]."""
    w, x, y, z = torch.nn.functional.normalize(quats, p=2, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def _to_camera(means: Tensor, viewmats: Tensor) -> Tensor:
    """World points [N, 3] into every camera: [C, N, 3]."""
    rot = viewmats[:, None, :3, :3]
    return (rot @ means[None, :, :, None]).squeeze(-1) + viewmats[:, None, :3, 3]


def _offscreen(means2d: Tensor, radii: Tensor, width: int, height: int) -> Tensor:
    """True where the bounding box misses the image (gsplat's test, boundaries excluded)."""
    rx, ry = radii.unbind(-1)
    mx, my = means2d.unbind(-1)
    return (mx + rx <= 0) | (mx - rx >= width) | (my + ry <= 0) | (my - ry >= height)


def project_3dgs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
) -> Projection3DGS:
    """EWA projection of N 3D Gaussians into C pinhole cameras (gsplat's fused projection)."""
    means_c = _to_camera(means, viewmats)  # [C, N, 3]
    x, y, z = means_c.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))

    rot = quat_to_rotmat(quats)  # [N, 3, 3]
    rs = rot * scales[:, None, :]
    covar = rs @ rs.transpose(-1, -2)  # [N, 3, 3]
    view_rot = viewmats[:, None, :3, :3]  # [C, 1, 3, 3]
    covar_c = view_rot @ covar[None] @ view_rot.transpose(-1, -2)  # [C, N, 3, 3]

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z_safe
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zeros = torch.zeros_like(z)
    jac = torch.stack(
        [fx * rz, zeros, -fx * tx * rz * rz, zeros, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(z.shape + (2, 3))
    cov2d = jac @ covar_c @ jac.transpose(-1, -2)  # [C, N, 2, 2]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    positive = det > 0
    det_safe = torch.where(positive, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)

    with torch.no_grad():
        opac = opacities.detach().expand_as(z)
        bright = opac >= ALPHA_THRESHOLD
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp(max=3.33)
        radius = torch.stack(
            [
                torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0))),
                torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0))),
            ],
            dim=-1,
        )
        keep = in_depth & positive & bright
        keep &= ~((radius[..., 0] <= radius_clip) & (radius[..., 1] <= radius_clip))
        keep &= ~_offscreen(means2d.detach(), radius, width, height)
        radii = torch.where(keep[..., None], radius, torch.zeros_like(radius)).to(torch.int32)
    return Projection3DGS(means2d=means2d, conics=conics, depths=z, radii=radii)


def project_2dgs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
) -> Projection2DGS:
    """Ray-splat transforms of N surfels in C pinhole cameras (gsplat's 2DGS projection)."""
    means_c = _to_camera(means, viewmats)  # [C, N, 3]
    z = means_c[..., 2]
    in_depth = (z > near_plane) & (z < far_plane)

    rot = quat_to_rotmat(quats)  # [N, 3, 3]
    view_rot = viewmats[:, None, :3, :3]
    rot_c = view_rot @ rot[None]  # [C, N, 3, 3] surfel axes in camera space (columns)
    tangent_u = rot_c[..., 0] * scales[None, :, 0, None]
    tangent_v = rot_c[..., 1] * scales[None, :, 1, None]
    wh = torch.stack([tangent_u, tangent_v, means_c], dim=-1)  # columns [C, N, 3, 3]
    ray_transforms = Ks[:, None] @ wh  # [C, N, 3, 3], rows u, v, w

    row_u, row_v, row_w = ray_transforms.unbind(-2)
    sign = torch.tensor([1.0, 1.0, -1.0], dtype=means.dtype, device=means.device)
    distance = (sign * row_w * row_w).sum(-1)
    nonzero = distance != 0
    distance_safe = torch.where(nonzero, distance, torch.ones_like(distance))
    f = sign / distance_safe[..., None]
    means2d = torch.stack([(f * row_u * row_w).sum(-1), (f * row_v * row_w).sum(-1)], dim=-1)

    normal = rot_c[..., 2]
    facing = (-normal * means_c).sum(-1) > 0
    normals = normal * torch.where(facing, 1.0, -1.0)[..., None].to(normal.dtype)

    with torch.no_grad():
        second = torch.stack([(f * row_u * row_u).sum(-1), (f * row_v * row_v).sum(-1)], dim=-1)
        half_extend = means2d.detach() ** 2 - second
        radius = torch.ceil(3.33 * torch.sqrt(half_extend.clamp_min(1e-4)))
        keep = in_depth & nonzero
        keep &= ~((radius[..., 0] <= radius_clip) & (radius[..., 1] <= radius_clip))
        keep &= ~_offscreen(means2d.detach(), radius, width, height)
        radii = torch.where(keep[..., None], radius, torch.zeros_like(radius)).to(torch.int32)
    return Projection2DGS(
        means2d=means2d, ray_transforms=ray_transforms, depths=z, normals=normals, radii=radii
    )


def tile_bounds(
    means2d: Tensor, radii: Tensor, width: int, height: int, tile_size: int = TILE_SIZE
) -> tuple[Tensor, Tensor]:
    """Tile rectangle [min, max) of every projected Gaussian, as gsplat's ``isect_tiles``.

    Returns (tile_min, tile_max), each [..., 2] int64 (x, y). Culled Gaussians (a zero radius)
    get an empty rectangle. Every rasteriser uses these so that the same fragments are composited.
    """
    tiles_x = math.ceil(width / tile_size)
    tiles_y = math.ceil(height / tile_size)
    limits = torch.tensor([tiles_x, tiles_y], device=means2d.device)
    with torch.no_grad():
        centre = means2d.detach().float() / tile_size
        extent = radii.float() / tile_size
        lo = torch.floor(centre - extent).clamp_min(0).long()
        hi = torch.ceil(centre + extent).clamp_min(0).long()
        lo = torch.minimum(lo, limits)
        hi = torch.minimum(hi, limits)
        visible = (radii > 0).all(dim=-1, keepdim=True)
        hi = torch.where(visible, hi, lo)
    return lo, hi
