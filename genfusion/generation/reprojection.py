"""Reprojection repair: the capture's own photos carried into novel views before anything is invented.

Much of what a novel view needs was photographed, only from another camera (or, in the masked
protocol, through another frame's window). :class:`ReprojectionRepairer` brings those real pixels
over, and leaves invention to a second stage (the diffusion model when installed, otherwise the
push-pull fill of :class:`~genfusion.generation.fallback.FallbackRepairer`) only where no photo saw
the surface. Per clip frame:

1. **Back-project** every pixel with the frame's rendered depth (pixel centres at +0.5, OpenCV
   axes, as :mod:`genfusion.data.types`); surface normals come from the depth map's neighbours.
2. **Pick sources**: a strided subset of the pixels is scored against every photo of the
   :class:`PhotoBank` and the ``max_sources`` best photos are kept (multi-view stereo's view
   selection; bounds the cost on long captures).
3. **Project and test** each point in each kept photo: in front of it, inside its image and its
   valid mask (the masked protocol's window), *visible* (its depth agrees with that photo's own
   rendered depth within a relative tolerance, so an occluded point is never coloured from a
   photo that cannot see it), ray angle to the novel camera below ``max_angle_deg``, surface not
   grazing. The geometric weight is the product of soft terms: small angle, frontal, similar
   footprint (distance x focal), depth agreement, window coverage of the bilinear footprint.
4. **Blend consistent colours**: colours are sampled bilinearly; the best-supported colour (the
   sample most other views agree with, weighted) is the reference, each view's weight is
   multiplied by its agreement with it (a robust, mode-seeking mean), and the weighted mean is
   the repaired colour.
5. **Confidence** in [0, 1]: ``(1 - exp(-W / support_scale)) * agreement``, with ``W`` the summed
   weight of the agreeing views and ``agreement`` the share of all geometric weight that agrees:
   high where several consistent real views see the pixel, lower with one view, low where views
   disagree. Pixels only the next stage made get that stage's fixed confidence
   (``fill_confidence``, ``diffusion_confidence``).
6. **Unreliable map** (what the viewer shows shrinking): low alpha or no depth, no photo sees it,
   the render disagrees with the reprojected photos, or fewer than ``min_views`` views saw it.

Everything but the per-frame loop is vectorised tensor code on whatever device the photo bank
lives on (the clip is moved there and the result back). This module sees clips, cameras and
photos, never Gaussians: it imports nothing from ``genfusion.splat`` or ``genfusion.fusion``.

Documented fallbacks:

* no photo bank, or a clip without cameras: the clip goes to the next stage unchanged (a warning
  says so); without a next stage it is returned as rendered, ``confidence`` None;
* a frame no photo sees at all is left entirely to the next stage (a warning counts them);
* NaN/inf in the render counts as unreliable and never reaches the output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from genfusion.data.types import Camera
from genfusion.errors import GenFusionError
from genfusion.generation.depth import reliable_mask, valid_depth
from genfusion.generation.repairer import RepairClip, Repairer, RepairResult
from genfusion.progress import ProgressCallback, ProgressEvent, emit

logger = logging.getLogger(__name__)

Uncovered = Literal["auto", "next", "render"]


@dataclass
class ReprojectionConfig:
    """Settings of the reprojection repairer (distances in scene units, angles in degrees)."""

    depth_tolerance: float = 0.05  # a source sees a point when |z - its depth| <= this x its depth
    max_angle_deg: float = 50.0  # rays point->novel camera and point->source further apart: ignored
    angle_sigma_deg: float = 20.0  # Gaussian fall-off of a source's weight with that angle
    min_frontality: float = 0.1  # |cos| surface normal / source ray below this (grazing): ignored
    frontal_cos: float = 0.5  # ... and from this cos on (60 deg) the view counts as fully frontal
    resolution_sigma: float = 0.7  # fall-off with |log| of the source/novel pixel-footprint ratio
    colour_sigma: float = 0.08  # RGB distance (RMS over channels, [0, 1]) at which views disagree
    max_sources: int = 16  # photos used per frame (best by a strided pre-pass)
    selection_stride: int = 4  # pixel stride of that pre-pass
    min_weight: float = 0.05  # summed agreeing weight for a pixel to count as seen by the photos
    min_views: int = 1  # fewer agreeing photos than this: the pixel is marked unreliable
    support_scale: float = 0.5  # confidence = (1 - exp(-weight / support_scale)) * agreement
    disagreement: float = 0.1  # render vs reprojected colour (RMS) above this: unreliable
    alpha_threshold: float = 0.5  # rendered alpha below this (or no depth): unreliable
    # pixels no photo sees but the render covers (alpha, depth): "next" stage repaints them, or keep
    # the "render"; "auto": next for the diffusion model, render for the fill (measured on the fox,
    # masked 1/2: the push-pull fill over them scored 12.8 dB against the hidden photos where the
    # render scored 13.4; pixels the render misses always go to the next stage)
    uncovered: Uncovered = "auto"
    render_confidence: float = 0.0  # confidence of kept render pixels (0: a render teaching itself)
    fill_confidence: float = 0.15  # confidence of pixels only the fill made
    diffusion_confidence: float = 0.5  # confidence of pixels only the diffusion model made
    depth_search_steps: int = 1  # depths tried per pixel around the rendered one (1: trust the render)
    depth_search_range: float = 0.2  # ... within +- this relative change of disparity
    disagreement_penalty: float = 1.0  # search score: agreeing weight - this x disagreeing weight
    prior_bonus: float = 0.05  # search score bonus of the rendered depth (it wins ties)
    max_pairs: int = 1 << 22  # source x pixel x 4 entries per chunk (bounds memory)

    def validate(self) -> None:
        for name in ("depth_tolerance", "angle_sigma_deg", "resolution_sigma", "colour_sigma"):
            if not getattr(self, name) > 0:
                raise GenFusionError(f"reprojection {name} must be > 0, got {getattr(self, name)}")
        for name in (
            "min_frontality",
            "render_confidence",
            "fill_confidence",
            "diffusion_confidence",
            "alpha_threshold",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise GenFusionError(f"reprojection {name} must lie in [0, 1], got {getattr(self, name)}")
        if self.max_sources < 1 or self.selection_stride < 1 or self.min_views < 0:
            raise GenFusionError("reprojection max_sources and selection_stride must be >= 1")
        if self.uncovered not in ("auto", "next", "render"):
            raise GenFusionError(
                f"reprojection uncovered must be auto, next or render, got {self.uncovered!r}"
            )


# ------------------------------------------------------------------------------------ cameras


def camera_matrices(
    cameras: list[Camera], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """``(camtoworld [N, 4, 4], worldtocam [N, 4, 4], K [N, 3, 3])`` float32 of ``cameras``."""
    if not cameras:
        raise GenFusionError("no cameras given")
    c2w = np.stack([c.camtoworld for c in cameras])
    K = np.stack([c.K for c in cameras])
    c2w_t = torch.as_tensor(c2w, dtype=torch.float64)
    w2c = torch.linalg.inv(c2w_t)
    return (
        c2w_t.float().to(device),
        w2c.float().to(device),
        torch.as_tensor(K, dtype=torch.float32).to(device),
    )


@dataclass
class PhotoBank:
    """The real photos a novel view may borrow from, padded to one size and stacked.

    Build it with :meth:`build`. In the masked protocol the photos are the training windows (with
    their shifted-principal-point cameras); full frames with a ``valid`` mask work too.
    """

    images: Tensor  # [N, 3, Hm, Wm] colour in [0, 1], zero-padded
    depths: Tensor  # [N, 1, Hm, Wm] the reconstruction's rendered depth of each photo; 0 = none
    valid: Tensor  # [N, 1, Hm, Wm] float 1 where the photo's pixel may be used (0 in the padding)
    worldtocam: Tensor  # [N, 4, 4]
    Ks: Tensor  # [N, 3, 3] intrinsics in pixels (pixel centres at +0.5)
    centers: Tensor  # [N, 3] camera centres, world
    sizes: Tensor  # [N, 2] (width, height) of each photo (before padding), float

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    @classmethod
    def build(
        cls,
        images: list[Any],
        cameras: list[Camera],
        depths: list[Any],
        valid: list[Any] | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> PhotoBank:
        """Stack photos [h, w, 3], their cameras, rendered depths [h, w] and optional bool masks.

        ``device`` defaults to the first image's device (numpy: CPU). Depth that is NaN, inf or
        <= 0 means "unknown": such pixels can never confirm visibility.
        """
        if not (len(images) == len(cameras) == len(depths)) or not images:
            raise GenFusionError(
                f"a photo bank needs as many images, cameras and depths (got {len(images)}, "
                f"{len(cameras)}, {len(depths)}), and at least one"
            )
        if valid is not None and len(valid) != len(images):
            raise GenFusionError(f"valid masks: {len(valid)} for {len(images)} photos")
        first = images[0]
        if device is None:
            device = first.device if isinstance(first, Tensor) else torch.device("cpu")
        device = torch.device(device)
        hm = max(c.height for c in cameras)
        wm = max(c.width for c in cameras)
        n = len(cameras)
        out_images = torch.zeros(n, 3, hm, wm, device=device)
        out_depths = torch.zeros(n, 1, hm, wm, device=device)
        out_valid = torch.zeros(n, 1, hm, wm, device=device)
        for i, camera in enumerate(cameras):
            h, w = camera.height, camera.width
            image = torch.as_tensor(np.asarray(images[i]) if not isinstance(images[i], Tensor) else images[i])
            depth = torch.as_tensor(np.asarray(depths[i]) if not isinstance(depths[i], Tensor) else depths[i])
            if image.dtype == torch.uint8:
                image = image.float() / 255.0
            image, depth = image.float().to(device), depth.float().to(device)
            if depth.ndim == 3 and depth.shape[-1] == 1:
                depth = depth[..., 0]
            if tuple(image.shape) != (h, w, 3) or tuple(depth.shape) != (h, w):
                raise GenFusionError(
                    f"photo {i} ({camera.name or 'unnamed'}): image {tuple(image.shape)} and depth "
                    f"{tuple(depth.shape)} must be ({h}, {w}, 3) and ({h}, {w}) as its camera says"
                )
            ok = torch.isfinite(image).all(dim=-1)
            if valid is not None:
                mask = torch.as_tensor(np.asarray(valid[i]) if not isinstance(valid[i], Tensor) else valid[i])
                if tuple(mask.shape) != (h, w):
                    raise GenFusionError(f"photo {i}: valid mask {tuple(mask.shape)}, expected ({h}, {w})")
                ok &= mask.to(device).bool()
            out_images[i, :, :h, :w] = torch.nan_to_num(image, nan=0.0).clamp(0, 1).permute(2, 0, 1)
            out_depths[i, 0, :h, :w] = torch.where(valid_depth(depth), depth, torch.zeros_like(depth))
            out_valid[i, 0, :h, :w] = ok.float()
        c2w, w2c, Ks = camera_matrices(cameras, device)
        sizes = torch.tensor([[c.width, c.height] for c in cameras], dtype=torch.float32, device=device)
        return cls(out_images, out_depths, out_valid, w2c, Ks, c2w[:, :3, 3].contiguous(), sizes)

    def subset(self, index: Tensor) -> PhotoBank:
        return PhotoBank(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


# ------------------------------------------------------------------------------------ geometry


def pixel_rays(K: Tensor, height: int, width: int) -> Tensor:
    """[H, W, 3] camera-frame rays with z = 1 through the pixel centres (+0.5 convention)."""
    device = K.device
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    x = (u - K[0, 2] - K[0, 1] * (v - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def backproject_depth(depth: Tensor, K: Tensor, camtoworld: Tensor) -> tuple[Tensor, Tensor]:
    """World points [H, W, 3] of a z-depth map [H, W], and bool [H, W] where the depth is valid."""
    valid = valid_depth(depth)
    safe = torch.where(valid, depth, torch.zeros_like(depth))
    cam = pixel_rays(K, *depth.shape) * safe[..., None]
    world = cam @ camtoworld[:3, :3].T + camtoworld[:3, 3]
    return world, valid


def depth_normals(points: Tensor, valid: Tensor, center: Tensor, *, max_jump: float = 0.1) -> Tensor:
    """Unit normals [H, W, 3] of back-projected ``points``, facing the camera at ``center``.

    Central differences (one-sided at borders and next to invalid pixels or depth jumps larger
    than ``max_jump`` x the distance to the camera); where no tangent pair exists the normal is
    the direction back to the camera (treated as frontal).
    """
    dist = (points - center).norm(dim=-1).clamp_min(1e-12)

    def tangent(dim: int) -> Tensor:
        n = points.shape[dim]
        if n < 2:
            return torch.zeros_like(points), torch.zeros_like(valid)
        fwd = points.narrow(dim, 1, n - 1) - points.narrow(dim, 0, n - 1)  # p[i+1] - p[i]
        ok = valid.narrow(dim, 1, n - 1) & valid.narrow(dim, 0, n - 1)
        ok &= fwd.norm(dim=-1) <= max_jump * dist.narrow(dim, 0, n - 1)
        fwd = torch.where(ok[..., None], fwd, torch.zeros_like(fwd))
        # per pixel: the sum of the valid forward and backward differences
        zeros = torch.zeros_like(points.narrow(dim, 0, 1))
        after = torch.cat([fwd, zeros], dim=dim)  # p[i+1] - p[i] at i
        before = torch.cat([zeros, fwd], dim=dim)  # p[i] - p[i-1] at i
        ok_after = torch.cat([ok, torch.zeros_like(ok.narrow(dim, 0, 1))], dim=dim)
        ok_before = torch.cat([torch.zeros_like(ok.narrow(dim, 0, 1)), ok], dim=dim)
        return after + before, ok_after | ok_before

    tx, okx = tangent(1)
    ty, oky = tangent(0)
    normal = torch.cross(tx, ty, dim=-1)
    to_camera = (center - points) / dist[..., None]
    length = normal.norm(dim=-1)
    ok = okx & oky & valid & (length > 1e-12)
    normal = torch.where(ok[..., None], normal / length.clamp_min(1e-12)[..., None], to_camera)
    flip = (normal * to_camera).sum(dim=-1) < 0
    return torch.where(flip[..., None], -normal, normal)


@dataclass
class _Samples:
    """Per source, per pixel: geometric weight, bilinear sample positions, sampled colour."""

    weight: Tensor  # [S, P] in [0, 1]; 0 = this source does not see the pixel
    grid: Tensor  # [S, P, 2] grid_sample coordinates in the padded source images


def _geometric(
    points: Tensor,  # [P, 3] world
    normals: Tensor,  # [P, 3]
    target_center: Tensor,  # [3]
    target_footprint: Tensor,  # [P] target pixel size at the point: depth / focal
    bank: PhotoBank,
    config: ReprojectionConfig,
) -> _Samples:
    """Which sources see each point, how well (weights in [0, 1]), and where (no colours yet)."""
    rot, trans = bank.worldtocam[:, :3, :3], bank.worldtocam[:, :3, 3]
    cam = torch.einsum("sij,pj->spi", rot, points) + trans[:, None, :]  # [S, P, 3]
    z = cam[..., 2]
    front = z > 1e-6
    zs = torch.where(front, z, torch.ones_like(z))
    K = bank.Ks
    u = K[:, 0, 0, None] * cam[..., 0] / zs + K[:, 0, 1, None] * cam[..., 1] / zs + K[:, 0, 2, None]
    v = K[:, 1, 1, None] * cam[..., 1] / zs + K[:, 1, 2, None]
    width, height = bank.sizes[:, 0, None], bank.sizes[:, 1, None]
    inside = front & (u >= 0) & (u <= width) & (v >= 0) & (v <= height)
    hm, wm = bank.images.shape[-2:]
    grid = torch.stack([2.0 * u / wm - 1.0, 2.0 * v / hm - 1.0], dim=-1)  # align_corners=False
    grid = torch.where(inside[..., None], grid, torch.full_like(grid, -2.0))  # outside: zeros
    sample_grid = grid[:, None]  # [S, 1, P, 2]
    coverage = F.grid_sample(bank.valid, sample_grid, mode="bilinear", align_corners=False)[:, 0, 0]
    seen_depth = F.grid_sample(bank.depths, sample_grid, mode="nearest", align_corners=False)[:, 0, 0]
    relative = (z - seen_depth).abs() / seen_depth.clamp_min(1e-12)
    visible = inside & (coverage >= 0.5) & (seen_depth > 0) & (relative <= config.depth_tolerance)

    to_target = target_center - points  # [P, 3]
    to_target = to_target / to_target.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    to_source = bank.centers[:, None, :] - points[None]  # [S, P, 3]
    source_dist = to_source.norm(dim=-1).clamp_min(1e-12)
    to_source = to_source / source_dist[..., None]
    angle = torch.rad2deg(torch.arccos((to_source * to_target).sum(-1).clamp(-1.0, 1.0)))
    frontal = (to_source * normals[None]).sum(-1)
    visible &= (angle <= config.max_angle_deg) & (frontal >= config.min_frontality)

    w_angle = torch.exp(-0.5 * (angle / config.angle_sigma_deg) ** 2)
    span = max(config.frontal_cos - config.min_frontality, 1e-6)
    w_front = ((frontal - config.min_frontality) / span).clamp(0.0, 1.0)
    w_front = 0.25 + 0.75 * w_front  # grazing views still count, a little
    source_footprint = zs / K[:, 0, 0, None]
    log_ratio = torch.log(source_footprint.clamp_min(1e-12) / target_footprint.clamp_min(1e-12)[None])
    w_res = torch.exp(-0.5 * (log_ratio / config.resolution_sigma) ** 2)
    w_depth = torch.exp(-0.5 * (relative / (0.5 * config.depth_tolerance)) ** 2)
    weight = w_angle * w_front * w_res * w_depth * coverage.clamp(0.0, 1.0)
    weight = torch.where(visible, weight, torch.zeros_like(weight))
    return _Samples(weight=weight, grid=grid)


def _sample_colours(bank: PhotoBank, grid: Tensor) -> Tensor:
    """Bilinear colours [S, P, 3] at ``grid`` [S, P, 2], renormalised by the valid footprint."""
    premultiplied = torch.cat([bank.images * bank.valid, bank.valid], dim=1)
    out = F.grid_sample(premultiplied, grid[:, None], mode="bilinear", align_corners=False)[:, :, 0]
    colour = out[:, :3] / out[:, 3:].clamp_min(1e-6)
    return colour.permute(0, 2, 1).clamp(0.0, 1.0)


def blend_consistent(
    colours: Tensor, weights: Tensor, colour_sigma: float, *, candidates: int = 3
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Robust blend over sources of ``colours`` [S, P, 3] with ``weights`` [S, P].

    The ``candidates`` heaviest samples of each pixel are candidate references; the one with the
    most weighted support (Gaussian kernel of the RMS colour distance, ``colour_sigma``) wins, and
    each sample's weight is multiplied by its agreement with it (mode-seeking, so two views that
    disagree never blend into a grey neither of them saw). Cost O(candidates x S x P). Returns
    ``(colour [P, 3], agreeing weight [P], agreement share [P] in [0, 1], agreeing views [P])``;
    pixels without any weight get colour 0.
    """
    m = max(1, min(candidates, colours.shape[0]))

    def kernel_to(reference: Tensor) -> Tensor:  # [..., P, 3] -> [..., S, P]
        dist2 = ((colours - reference.unsqueeze(-3)) ** 2).mean(-1)
        return torch.exp(-0.5 * dist2 / colour_sigma**2)

    top = weights.topk(m, dim=0).indices  # [m, P]
    picked = colours.gather(0, top[..., None].expand(m, -1, 3))  # [m, P, 3]
    kernel = kernel_to(picked)  # [m, S, P]
    support = (kernel * weights[None]).sum(1)  # [m, P]
    best = support.argmax(0)  # [P]
    reference = picked.gather(0, best[None, :, None].expand(1, -1, 3))[0]  # [P, 3]
    agree = kernel_to(reference)  # [S, P]
    agreeing = weights * agree
    total = weights.sum(0)
    consistent = agreeing.sum(0)
    colour = (agreeing[..., None] * colours).sum(0) / consistent.clamp_min(1e-12)[..., None]
    share = torch.where(total > 0, consistent / total.clamp_min(1e-12), torch.zeros_like(total))
    views = ((weights > 0) & (agree > 0.5)).sum(0)
    return colour, consistent, share.clamp(0.0, 1.0), views


@dataclass
class FrameReprojection:
    """What the photos say about one novel frame."""

    rgb: Tensor  # [H, W, 3] blended photo colour (0 where no photo sees the pixel)
    weight: Tensor  # [H, W] summed weight of the agreeing views
    agreement: Tensor  # [H, W] share of the geometric weight that agrees, in [0, 1]
    views: Tensor  # [H, W] int: photos that see the pixel and agree
    covered: Tensor  # [H, W] bool: weight >= min_weight and at least one agreeing view
    confidence: Tensor  # [H, W] in [0, 1], 0 where not covered
    sources: list[int]  # bank indices used for this frame
    depth: Tensor  # [H, W] the depth the colours were taken at (the render's, or the search's pick)


def select_sources(
    points: Tensor,
    normals: Tensor,
    valid: Tensor,
    target_center: Tensor,
    footprint: Tensor,
    bank: PhotoBank,
    config: ReprojectionConfig,
) -> Tensor:
    """Indices (long) of the at most ``max_sources`` photos that see most of the frame (strided
    pre-pass on every ``selection_stride``-th pixel); empty when no photo sees any of it."""
    stride = config.selection_stride
    sub = (slice(None, None, stride), slice(None, None, stride))
    keep = valid[sub]
    if not bool(keep.any()):
        return torch.zeros(0, dtype=torch.long, device=bank.device)
    p, n, f = points[sub][keep], normals[sub][keep], footprint[sub][keep]
    chunk = max(1, config.max_pairs // max(1, len(bank)))
    score = torch.zeros(len(bank), device=bank.device)
    for start in range(0, len(p), chunk):
        part = slice(start, start + chunk)
        score += _geometric(p[part], n[part], target_center, f[part], bank, config).weight.sum(1)
    order = torch.argsort(score, descending=True)
    order = order[score[order] > 0]
    return order[: config.max_sources]


def _evidence(
    points: Tensor,
    normals: Tensor,
    center: Tensor,
    footprint: Tensor,
    bank: PhotoBank,
    config: ReprojectionConfig,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Blend of the bank's photos at ``points`` [P, 3]: colour, agreeing weight, agreement share,
    agreeing views, and the total geometric weight (all per point), in chunks bounded by
    ``max_pairs``."""
    n = len(points)
    device = points.device
    rgb = torch.zeros(n, 3, device=device)
    weight, share, total = (torch.zeros(n, device=device) for _ in range(3))
    views = torch.zeros(n, dtype=torch.long, device=device)
    chunk = max(1, config.max_pairs // (4 * len(bank)))
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        samples = _geometric(points[part], normals[part], center, footprint[part], bank, config)
        colours = _sample_colours(bank, samples.grid)
        rgb[part], weight[part], share[part], views[part] = blend_consistent(
            colours, samples.weight, config.colour_sigma
        )
        total[part] = samples.weight.sum(0)
    return rgb, weight, share, views, total


def depth_hypotheses(config: ReprojectionConfig) -> Tensor:
    """Relative disparity offsets r of the depth search (depth / (1 + r)); 0 (the render) first."""
    steps = max(1, config.depth_search_steps)
    if steps == 1 or config.depth_search_range <= 0:
        return torch.zeros(1)
    offsets = torch.linspace(-config.depth_search_range, config.depth_search_range, steps)
    offsets = offsets[offsets.abs() > 1e-9]
    return torch.cat([torch.zeros(1), offsets])


def reproject_frame(
    depth: Tensor, K: Tensor, camtoworld: Tensor, bank: PhotoBank, config: ReprojectionConfig
) -> FrameReprojection:
    """Carry the photos of ``bank`` into the novel frame with z-depth ``depth`` [H, W], intrinsics
    ``K`` and pose ``camtoworld`` (all on ``bank.device``).

    With a depth search (``depth_search_steps`` > 1) every pixel also tries depths around the
    rendered one (disparity x (1 + r), r within +-``depth_search_range``) and keeps the one where
    the photos agree best: agreeing weight minus ``disagreement_penalty`` x disagreeing weight,
    averaged over a 3x3 neighbourhood (plane-sweep stereo with the render as the prior; the
    rendered depth wins ties). The chosen depth is returned in ``depth``.
    """
    h, w = depth.shape
    device = bank.device
    points, valid = backproject_depth(depth, K, camtoworld)
    center = camtoworld[:3, 3]
    normals = depth_normals(points, valid, center)
    footprint = torch.where(valid, depth, torch.zeros_like(depth)) / K[0, 0]
    sources = select_sources(points, normals, valid, center, footprint, bank, config)
    rgb = torch.zeros(h * w, 3, device=device)
    weight, agreement = torch.zeros(h * w, device=device), torch.zeros(h * w, device=device)
    views = torch.zeros(h * w, dtype=torch.long, device=device)
    chosen = torch.where(valid, depth, torch.zeros_like(depth)).reshape(-1).clone()
    flat_valid = valid.reshape(-1)
    if len(sources) and bool(flat_valid.any()):
        sub = bank.subset(sources)
        idx = flat_valid.nonzero()[:, 0]
        d0 = depth.reshape(-1)[idx]
        rays = points.reshape(-1, 3)[idx] - center  # the render's point, relative to the camera
        n_all, f_all = normals.reshape(-1, 3)[idx], footprint.reshape(-1)[idx]
        results, scores = [], []
        for r in depth_hypotheses(config).tolist():
            scale = 1.0 / (1.0 + r)
            ev = _evidence(center + rays * scale, n_all, center, f_all * scale, sub, config)
            results.append((ev[0], ev[1], ev[2], ev[3], d0 * scale))
            score = ev[1] - config.disagreement_penalty * (ev[4] - ev[1])
            scores.append(score + (config.prior_bonus if r == 0 else 0.0))
        if len(results) == 1:
            best = torch.zeros(len(idx), dtype=torch.long, device=device)
        else:
            maps = torch.zeros(len(scores), h * w, device=device)
            maps[:, idx] = torch.stack(scores)
            counts = torch.zeros(1, 1, h * w, device=device)
            counts[..., idx] = 1.0
            box = F.avg_pool2d(maps.reshape(-1, 1, h, w), 3, stride=1, padding=1)
            norm = F.avg_pool2d(counts.reshape(1, 1, h, w), 3, stride=1, padding=1).clamp_min(1e-6)
            best = (box / norm).reshape(len(scores), -1)[:, idx].argmax(0)

        def pick(k: int) -> Tensor:
            values = torch.stack([res[k] for res in results])  # [K, P, ...]
            index = best.reshape(1, -1, *([1] * (values.dim() - 2))).expand(1, *values.shape[1:])
            return values.gather(0, index)[0]

        rgb[idx], weight[idx], agreement[idx], views[idx], chosen[idx] = (pick(k) for k in range(5))
    covered = (weight >= config.min_weight) & (views >= 1)
    confidence = (1.0 - torch.exp(-weight / config.support_scale)) * agreement
    confidence = torch.where(covered, confidence, torch.zeros_like(confidence)).clamp(0.0, 1.0)
    original = torch.where(valid, depth, torch.zeros_like(depth)).reshape(-1)
    return FrameReprojection(
        rgb=rgb.reshape(h, w, 3),
        weight=weight.reshape(h, w),
        agreement=agreement.reshape(h, w),
        views=views.reshape(h, w),
        covered=covered.reshape(h, w),
        confidence=confidence.reshape(h, w),
        sources=[int(i) for i in sources],
        depth=torch.where(covered, chosen, original).reshape(h, w),
    )


def colour_distance(a: Tensor, b: Tensor) -> Tensor:
    """RMS over channels of [..., 3] colours."""
    return ((a - b) ** 2).mean(-1).sqrt()


# ------------------------------------------------------------------------------------ the repairer


class ReprojectionRepairer:
    """Real photos reprojected into the clip; what they do not cover goes to ``next_stage``.

    ``set_photos`` (the fusion loop calls it every round, with fresh rendered depths) fills the
    photo bank; clips must carry their ``cameras``. ``next_stage`` is any :class:`Repairer`
    (the diffusion model or the fallback), or None: uncovered pixels then keep the render.
    """

    def __init__(
        self,
        next_stage: Repairer | None = None,
        config: ReprojectionConfig | None = None,
        *,
        reason: str = "requested",
    ):
        self.config = config or ReprojectionConfig()
        self.config.validate()
        self.next_stage = next_stage
        self.reason = reason
        self.bank: PhotoBank | None = None
        self.name = "reproject" if next_stage is None else f"reproject+{next_stage.name}"
        then = (
            "pixels no photo sees keep the render"
            if next_stage is None
            else f"pixels no photo sees go to: {next_stage.description.split('; chosen because')[0]}"
        )
        self.description = (
            f"reprojection of the capture's own photos into novel views (visibility-checked, "
            f"confidence-weighted), then {then}; chosen because: {reason}"
        )

    # ---------------------------------------------------------------- photos

    def set_photos(
        self,
        images: list[Any],
        cameras: list[Camera],
        depths: list[Any],
        valid: list[Any] | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        """Replace the photo bank (see :meth:`PhotoBank.build`)."""
        self.bank = PhotoBank.build(images, cameras, depths, valid, device=device)

    def clear_photos(self) -> None:
        self.bank = None

    @property
    def _next_is_diffusion(self) -> bool:
        return self.next_stage is not None and "diffusion" in self.next_stage.name

    # ---------------------------------------------------------------- repair

    def _pass_through(self, clip: RepairClip, why: str, seed, progress) -> RepairResult:
        logger.warning("reprojection repairer: %s", why)
        if self.next_stage is not None:
            result = self.next_stage.repair(clip, seed=seed, progress=progress)
            result.warnings = [why, *result.warnings]
            result.repairer = self.name
            return result
        reliable = reliable_mask(clip.depth, clip.alpha, self.config.alpha_threshold)
        return RepairResult(
            rgb=torch.nan_to_num(clip.rgb, nan=0.0).clamp(0, 1),
            depth=torch.nan_to_num(clip.depth, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0),
            reliable=reliable,
            repairer=self.name,
            usable=bool(reliable.any()),
            warnings=[why],
            unreliable=~reliable,
        )

    def reproject(self, clip: RepairClip) -> list[FrameReprojection]:
        """The photo evidence for every frame of ``clip`` (needs the bank and the clip's cameras)."""
        if self.bank is None or clip.cameras is None:
            raise GenFusionError("reprojection needs a photo bank (set_photos) and the clip's cameras")
        bank = self.bank
        c2w, _, Ks = camera_matrices(clip.cameras, bank.device)
        depth = clip.depth.to(bank.device).float()
        return [reproject_frame(depth[j], Ks[j], c2w[j], bank, self.config) for j in range(clip.num_frames)]

    def repair(
        self, clip: RepairClip, *, seed: int | None = None, progress: ProgressCallback | None = None
    ) -> RepairResult:
        """Repair ``clip`` from the photos, then hand what they do not cover to the next stage."""
        clip.validate()
        cfg = self.config
        if self.bank is None:
            return self._pass_through(clip, "no photo bank was set: reprojection skipped", seed, progress)
        if clip.cameras is None:
            return self._pass_through(clip, "the clip has no cameras: reprojection skipped", seed, progress)
        emit(progress, ProgressEvent("repair.reproject", 0, clip.num_frames, "reprojecting photos"))
        frames = self.reproject(clip)
        out_device = clip.rgb.device

        def stack(key: str) -> Tensor:
            return torch.stack([getattr(f, key) for f in frames]).to(out_device)

        photo_rgb, covered, conf, views = stack("rgb"), stack("covered"), stack("confidence"), stack("views")
        rgb = torch.nan_to_num(clip.rgb.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
        rendered_ok = reliable_mask(clip.depth, clip.alpha, cfg.alpha_threshold) & torch.isfinite(
            clip.rgb
        ).all(-1)
        disagrees = covered & (colour_distance(rgb, photo_rgb) > cfg.disagreement)
        unreliable = ~rendered_ok | ~covered | disagrees | (views < cfg.min_views)
        warnings: list[str] = []
        blind = int((~covered.flatten(1).any(1)).sum())
        if blind:
            warnings.append(f"{blind} frame(s) had no pixel any photo sees: left to the next stage")
        emit(progress, ProgressEvent("repair.reproject", clip.num_frames, clip.num_frames, "blending"))

        staged = torch.where(covered[..., None], photo_rgb, rgb)
        depth = torch.nan_to_num(clip.depth.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
        uncovered = cfg.uncovered
        if uncovered == "auto":
            uncovered = "next" if self._next_is_diffusion else "render"
        keep_render = (rendered_ok & ~covered) if uncovered == "render" else torch.zeros_like(covered)
        if self.next_stage is None or not bool((~covered & ~keep_render).any()):
            out_rgb, out_depth = staged, depth
            fill_conf = cfg.fill_confidence
            trusted = covered | rendered_ok
            usable = bool(trusted.any())
            out_depth = torch.where(valid_depth(depth), depth, torch.zeros_like(depth))
        else:
            if self._next_is_diffusion:  # the model sees the cleaner clip; it aligns depth by alpha
                inner = RepairClip(
                    rgb=staged, depth=depth, alpha=clip.alpha, reference=clip.reference, cameras=clip.cameras
                )
            else:  # the fill keeps alpha-1 pixels bit for bit and fills the rest from them
                solid = (covered | keep_render) & valid_depth(depth)
                inner = RepairClip(
                    rgb=staged,
                    depth=torch.where(solid, depth, torch.zeros_like(depth)),
                    alpha=solid.float(),
                    reference=clip.reference,
                    cameras=clip.cameras,
                )
            result = self.next_stage.repair(inner, seed=seed, progress=progress)
            warnings += result.warnings
            made = result.rgb.to(out_device).float().clamp(0, 1)
            if self._next_is_diffusion:
                fill_conf = cfg.diffusion_confidence
                mix = conf[..., None]
                out_rgb = torch.where(covered[..., None], mix * photo_rgb + (1 - mix) * made, made)
            else:
                fill_conf = cfg.fill_confidence
                out_rgb = torch.where((covered | keep_render)[..., None], staged, made)
            made_depth = torch.nan_to_num(result.depth.to(out_device).float(), nan=0.0).clamp_min(0)
            out_depth = torch.where(valid_depth(depth), depth, made_depth)
            usable = result.usable or bool(covered.any())
        confidence = torch.where(covered, conf, torch.full_like(conf, fill_conf))
        confidence = torch.where(keep_render, torch.full_like(conf, cfg.render_confidence), confidence)
        if not torch.isfinite(out_rgb).all():
            warnings.append("non-finite colour after reprojection was replaced by the render")
            out_rgb = torch.where(torch.isfinite(out_rgb), out_rgb, rgb)
        return RepairResult(
            rgb=out_rgb.clamp(0, 1),
            depth=out_depth,
            reliable=~unreliable,
            repairer=self.name,
            usable=usable,
            warnings=warnings,
            confidence=confidence.clamp(0, 1),
            unreliable=unreliable,
        )


def coverage_summary(frames: list[FrameReprojection]) -> dict[str, float]:
    """Shares of pixels covered, mean confidence of covered pixels and mean agreeing views."""
    covered = torch.stack([f.covered for f in frames]).float()
    conf = torch.stack([f.confidence for f in frames])
    views = torch.stack([f.views for f in frames]).float()
    n = float(covered.sum())
    return {
        "covered": float(covered.mean()),
        "confidence_covered": float(conf.sum() / max(n, 1.0)),
        "views_covered": float((views * covered).sum() / max(n, 1.0)),
    }


__all__ = [
    "FrameReprojection",
    "PhotoBank",
    "ReprojectionConfig",
    "ReprojectionRepairer",
    "backproject_depth",
    "blend_consistent",
    "camera_matrices",
    "colour_distance",
    "coverage_summary",
    "depth_normals",
    "pixel_rays",
    "reproject_frame",
    "select_sources",
]
