"""Per-frame photo evidence: the photos of a :class:`~genfusion.generation.photo_bank.PhotoBank`
carried into one novel frame through its rendered depth (:func:`reproject_frame`).

1. **Pick sources**: a strided subset of the pixels is scored against every photo of the bank and
   the ``max_sources`` best photos are kept (multi-view stereo's view selection; bounds the cost on
   long captures).
2. **Project and test** each point in each kept photo: in front of it, inside its image and its
   valid mask (the masked protocol's window), *visible* (its depth agrees with that photo's own
   rendered depth within a relative tolerance, so an occluded point is never coloured from a
   photo that cannot see it), ray angle to the novel camera below ``max_angle_deg``, surface not
   grazing. The geometric weight is the product of soft terms: small angle, frontal, similar
   footprint (distance x focal), depth agreement, window coverage of the bilinear footprint.
3. **Blend consistent colours**: colours are sampled bilinearly; the best-supported colour (the
   sample most other views agree with, weighted) is the reference, each view's weight is
   multiplied by its agreement with it (a robust, mode-seeking mean), and the weighted mean is
   the repaired colour.
4. **Confidence** in [0, 1]: ``(1 - exp(-W / support_scale)) * agreement``, with ``W`` the summed
   weight of the agreeing views and ``agreement`` the share of all geometric weight that agrees:
   high where several consistent real views see the pixel, lower with one view, low where views
   disagree.

Vectorised tensor code on the bank's device, chunked by ``max_pairs``; it imports nothing from
``genfusion.splat`` or ``genfusion.fusion``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from genfusion.generation.photo_bank import PhotoBank, backproject_depth, depth_normals
from genfusion.generation.reprojection_config import ReprojectionConfig


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
    "blend_consistent",
    "colour_distance",
    "coverage_summary",
    "depth_hypotheses",
    "reproject_frame",
    "select_sources",
]
