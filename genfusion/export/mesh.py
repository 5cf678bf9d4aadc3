"""A coloured triangle mesh from splats: TSDF fusion of rendered depth and colour along the
training views, marching cubes (PyMCubes), vertex colours from the fused colour volume, written
with trimesh (``.ply``, ``.glb`` or ``.obj``, chosen by the file suffix).

TSDF fusion (Curless & Levoy 1996, as in KinectFusion / Open3D): every voxel centre is projected
into each view; where the view's rendered alpha is high enough, the signed distance along the
ray ``sdf = depth(pixel) - z(voxel)`` is truncated to ``[-t, t]``, divided by ``t`` and averaged
over views (unit weights). Voxels more than ``t`` behind the observed surface are not updated (they
are occluded). Marching cubes extracts the zero level; cells touching a never-observed voxel are
dropped, so the unknown space behind surfaces does not produce a second, spurious shell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genfusion.atomic import atomic_path
from genfusion.data.camera_path import even_size, resize_camera
from genfusion.data.types import Camera
from genfusion.device import resolve_device
from genfusion.errors import GenFusionError
from genfusion.export.splats import sh_degree_of
from genfusion.progress import ProgressCallback, ProgressEvent, emit
from genfusion.splat.cameras import camera_tensors

MESH_SUFFIXES = (".ply", ".glb", ".obj")
_BYTES_PER_VOXEL = 24  # tsdf, weight, colour (3), colour weight: float32 each


@dataclass
class MeshConfig:
    """TSDF fusion and extraction settings."""

    resolution: int = 256  # voxels along the longest side of the fusion box
    truncation_voxels: float = 4.0  # SDF truncation distance t, in voxels
    alpha_threshold: float = 0.5  # pixels whose rendered alpha is below this carry no depth
    max_side: int = 640  # views are rendered with their longest side scaled down to this
    max_views: int = 60  # fuse at most this many views, evenly spaced (each is a pass over the volume)
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]] | None = (
        None  # world box; None = auto
    )
    bounds_percentile: float = 1.0  # auto box: ignore this percent of Gaussian centres at each end
    bounds_padding: float = 0.05  # auto box: grow by this fraction of its size on each side
    min_opacity: float = 0.1  # auto box: only Gaussians at least this opaque define it
    sh_degree: int | None = None  # SH degree for the colours; None = all the splats store
    device: str = "auto"  # "auto" (CUDA when present) | "cpu" | "cuda"
    memory_limit_gb: float = 8.0  # refuse volumes needing more than this (estimated before allocating)
    chunk_voxels: int = 1 << 21  # voxels processed per step (bounds temporary memory)


@dataclass
class MeshResult:
    """What :func:`export_mesh` produced."""

    path: Path  # the mesh file written
    num_vertices: int
    num_faces: int
    voxel_size: float  # edge length of one voxel in scene units
    grid: tuple[int, int, int]  # voxels along x, y, z
    views: int  # views fused


class TSDFVolume:
    """A dense truncated-signed-distance and colour volume on an axis-aligned voxel grid.

    Voxel ``(i, j, k)`` has its centre at ``origin + voxel_size * (i, j, k)``.
    """

    def __init__(
        self, origin: np.ndarray, voxel_size: float, dims: tuple[int, int, int], truncation: float,
        device: torch.device | str = "cpu",
    ) -> None:  # fmt: skip
        self.origin = torch.as_tensor(np.asarray(origin, dtype=np.float32), device=device)
        self.voxel_size = float(voxel_size)
        self.dims = tuple(int(d) for d in dims)
        self.truncation = float(truncation)
        self.device = torch.device(device)
        count = math.prod(self.dims)
        self.tsdf = torch.ones(count, device=device)  # in [-1, 1], 1 = empty / unknown
        self.weight = torch.zeros(count, device=device)  # number of views that updated the voxel
        self.color = torch.zeros(count, 3, device=device)  # running mean colour near the surface
        self.color_weight = torch.zeros(count, device=device)

    @torch.no_grad()
    def integrate(
        self, depth: Tensor, rgb: Tensor, valid: Tensor, camtoworld: np.ndarray, K: np.ndarray,
        chunk_voxels: int = 1 << 21,
    ) -> None:  # fmt: skip
        """Fuse one view: ``depth`` [H, W] z-depth, ``rgb`` [H, W, 3], ``valid`` [H, W] bool,
        OpenCV ``camtoworld`` 4x4 and ``K`` 3x3 (pixel centres at +0.5, as gsplat).

        Works on slabs of whole x-planes, which are contiguous in the flat volume: camera
        coordinates are sums of per-axis offsets (no index arithmetic), and the running averages
        are dense masked updates of the slab (no scatter)."""
        height, width = depth.shape
        nx, ny, nz = self.dims
        w2c = np.linalg.inv(np.asarray(camtoworld, dtype=np.float64))
        steps = w2c[:3, :3] * self.voxel_size  # column a: camera-space step of one voxel along axis a
        base = w2c[:3, :3] @ self.origin.cpu().numpy().astype(np.float64) + w2c[:3, 3]
        fx, fy, cx, cy = float(K[0][0]), float(K[1][1]), float(K[0][2]), float(K[1][2])
        flat_depth = depth.to(self.device).reshape(-1)
        flat_valid = valid.to(self.device).reshape(-1)
        flat_rgb = rgb.to(self.device).reshape(-1, 3)
        j = torch.arange(ny, device=self.device, dtype=torch.float32)[:, None]
        k = torch.arange(nz, device=self.device, dtype=torch.float32)[None, :]
        plane = ny * nz
        slabs = max(1, chunk_voxels // plane)
        for i0 in range(0, nx, slabs):
            i1 = min(i0 + slabs, nx)
            i = torch.arange(i0, i1, device=self.device, dtype=torch.float32)[:, None, None]
            cam = [
                (base[c] + steps[c, 0] * i) + (steps[c, 1] * j + steps[c, 2] * k)[None] for c in range(3)
            ]  # three [slab, ny, nz] tensors: camera x, y, z of every voxel centre
            z = cam[2].reshape(-1)
            safe_z = z.clamp(min=1e-8)
            u = torch.floor(cam[0].reshape(-1) / safe_z * fx + cx)
            v = torch.floor(cam[1].reshape(-1) / safe_z * fy + cy)
            inside = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
            if not bool(inside.any()):
                continue
            pixel = (v.clamp(0, height - 1) * width + u.clamp(0, width - 1)).long()
            sdf = flat_depth[pixel] - z
            update = inside & flat_valid[pixel] & (sdf > -self.truncation)
            if not bool(update.any()):
                continue
            sl = slice(i0 * plane, i1 * plane)
            tsdf, weight = self.tsdf[sl], self.weight[sl]  # views into the flat volume
            new_weight = weight + update.float()
            value = (sdf / self.truncation).clamp(-1.0, 1.0)
            tsdf.copy_(torch.where(update, (tsdf * weight + value) / new_weight.clamp(min=1.0), tsdf))
            weight.copy_(new_weight)
            near = update & (sdf.abs() < self.truncation)
            colour, colour_weight = self.color[sl], self.color_weight[sl]
            new_cw = colour_weight + near.float()
            blended = (colour * colour_weight[:, None] + flat_rgb[pixel]) / new_cw.clamp(min=1.0)[:, None]
            colour.copy_(torch.where(near[:, None], blended, colour))
            colour_weight.copy_(new_cw)

    def extract(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Marching cubes at the zero level -> (vertices [V,3] world, faces [F,3], colours [V,3]
        in [0,1]). Faces in cells with a never-observed corner are dropped."""
        import mcubes
        from scipy.ndimage import map_coordinates

        tsdf = self.tsdf.reshape(self.dims).cpu().numpy().astype(np.float64)
        observed = (self.weight > 0).reshape(self.dims).cpu().numpy()
        vertices, faces = mcubes.marching_cubes(tsdf, 0.0)
        faces = faces[:, ::-1]  # PyMCubes winds for "inside > level"; our inside is negative
        if len(faces) == 0:
            return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros((0, 3))
        cell_ok = np.ones(tuple(d - 1 for d in self.dims), dtype=bool)
        for di in (0, 1):
            for dj in (0, 1):
                for dk in (0, 1):
                    cell_ok &= observed[
                        di : di + self.dims[0] - 1, dj : dj + self.dims[1] - 1, dk : dk + self.dims[2] - 1
                    ]
        centroid = vertices[faces].mean(axis=1)
        cell = np.clip(np.floor(centroid).astype(np.int64), 0, np.array(self.dims) - 2)
        faces = faces[cell_ok[cell[:, 0], cell[:, 1], cell[:, 2]]]
        used = np.unique(faces)
        remap = np.full(len(vertices), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        vertices, faces = vertices[used], remap[faces]
        # colour: trilinear, normalised by the colour weights so unobserved voxels do not darken it
        cw = self.color_weight.reshape(self.dims).cpu().numpy()
        colour_volume = self.color.reshape(*self.dims, 3).cpu().numpy()
        coords = vertices.T
        has_colour = (cw > 0).astype(np.float64)
        weight_at = map_coordinates(has_colour, coords, order=1, mode="nearest")
        colours = (
            np.stack(
                [
                    map_coordinates(colour_volume[..., c] * has_colour, coords, order=1, mode="nearest")
                    for c in range(3)
                ],
                axis=1,
            )
            / np.maximum(weight_at, 1e-8)[:, None]
        )
        world = vertices * self.voxel_size + self.origin.cpu().numpy()
        return world, faces.astype(np.int64), np.clip(colours, 0.0, 1.0)


def auto_bounds(splats: Mapping[str, Tensor], config: MeshConfig) -> tuple[np.ndarray, np.ndarray]:
    """A robust box around the (sufficiently opaque) Gaussian centres, padded."""
    means = splats["means"].detach().float().cpu()
    opaque = torch.sigmoid(splats["opacities"].detach().float().cpu()) >= config.min_opacity
    points = means[opaque] if int(opaque.sum()) >= 4 else means
    q = config.bounds_percentile / 100.0
    lo = torch.quantile(points, q, dim=0).numpy().astype(np.float64)
    hi = torch.quantile(points, 1.0 - q, dim=0).numpy().astype(np.float64)
    pad = (hi - lo).max() * config.bounds_padding + 1e-6
    return lo - pad, hi + pad


def plan_grid(lo: np.ndarray, hi: np.ndarray, config: MeshConfig) -> tuple[float, tuple[int, int, int]]:
    """Voxel size and grid dimensions for the box; refuses (with the number) if too big."""
    extent = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    if not np.all(np.isfinite(extent)) or extent.max() <= 0:
        raise GenFusionError(f"cannot fuse a mesh in an empty or invalid box {lo} .. {hi}.")
    voxel = float(extent.max()) / max(int(config.resolution), 2)
    dims = tuple(int(math.ceil(e / voxel)) + 1 for e in extent)
    needed_gb = math.prod(dims) * _BYTES_PER_VOXEL / 1e9
    if needed_gb > config.memory_limit_gb:
        raise GenFusionError(
            f"a {dims[0]}x{dims[1]}x{dims[2]} TSDF volume needs about {needed_gb:.1f} GB "
            f"(limit {config.memory_limit_gb:g} GB); lower --mesh-resolution (now {config.resolution})."
        )
    return voxel, dims  # type: ignore[return-value]


def fuse_tsdf(
    splats: Mapping[str, Tensor],
    cameras: list[Camera],
    *,
    method: str,
    config: MeshConfig | None = None,
    progress: ProgressCallback | None = None,
) -> TSDFVolume:
    """Render depth, colour and alpha at every camera and fuse them into a :class:`TSDFVolume`."""
    from genfusion.splat.render import render_splats

    config = config or MeshConfig()
    if not cameras:
        raise GenFusionError("no cameras to fuse a mesh from.")
    lo, hi = (
        (np.asarray(b, dtype=np.float64) for b in config.bounds)
        if config.bounds
        else auto_bounds(splats, config)
    )
    if len(cameras) > config.max_views:
        picks = np.linspace(0, len(cameras) - 1, config.max_views).round().astype(int)
        cameras = [cameras[i] for i in picks]
    voxel, dims = plan_grid(lo, hi, config)
    device = resolve_device(config.device)
    volume = TSDFVolume(lo, voxel, dims, config.truncation_voxels * voxel, device=device)
    params = {k: v.detach().to(device, torch.float32) for k, v in splats.items()}
    degree = sh_degree_of(params) if config.sh_degree is None else config.sh_degree
    for index, camera in enumerate(cameras):
        width, height = even_size(camera.width, camera.height, config.max_side)
        view = (
            resize_camera(camera, width, height)
            if (width, height) != (camera.width, camera.height)
            else camera
        )
        viewmat, K = camera_tensors([view], device)
        with torch.no_grad():
            out = render_splats(params, viewmat, K, width, height, sh_degree=degree, mode=method)
        alpha = out.alpha[0, ..., 0]
        depth = out.depth[0, ..., 0]
        valid = (alpha >= config.alpha_threshold) & torch.isfinite(depth) & (depth > 0)
        # un-premultiply: edge pixels are partly transparent and would darken the surface colour
        colour = (out.rgb[0] / alpha.clamp(min=1e-6)[..., None]).clamp(0, 1)
        volume.integrate(depth, colour, valid, view.camtoworld, view.K, config.chunk_voxels)
        emit(
            progress,
            ProgressEvent(stage="export.mesh", step=index + 1, total=len(cameras), message="fusing views"),
        )
    return volume


def export_mesh(
    path: str | Path,
    splats: Mapping[str, Tensor],
    cameras: list[Camera],
    *,
    method: str,
    config: MeshConfig | None = None,
    progress: ProgressCallback | None = None,
) -> MeshResult:
    """Fuse, extract and write a vertex-coloured mesh to ``path`` (.ply/.glb/.obj), atomically."""
    import trimesh

    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise GenFusionError(
            f"unsupported mesh format {path.suffix!r}; use one of {', '.join(MESH_SUFFIXES)}."
        )
    volume = fuse_tsdf(splats, cameras, method=method, config=config, progress=progress)
    vertices, faces, colours = volume.extract()
    if len(faces) == 0:
        raise GenFusionError(
            "the fused volume holds no surface (no view saw opaque splats inside the box); check the run "
            "renders, or lower --alpha-threshold."
        )
    rgba = np.concatenate([np.round(colours * 255), np.full((len(colours), 1), 255)], axis=1).astype(np.uint8)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=rgba, process=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=path.suffix.lower().lstrip("."))
    return MeshResult(
        path=path, num_vertices=len(vertices), num_faces=len(faces), voxel_size=volume.voxel_size,
        grid=volume.dims, views=min(len(cameras), (config or MeshConfig()).max_views),
    )  # fmt: skip
