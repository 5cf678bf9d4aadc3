"""The weight-free repairer: classical space-time inpainting of unreliable pixels.

It stands in for the diffusion model on machines without weights, so the whole fusion loop runs
anywhere. Holes (alpha below a threshold, no depth, NaN) are filled by *push-pull* (multi-scale
normalised convolution, Gortler et al. 1996) over a space-time volume: at every pyramid level the
reliable colour/disparity is averaged with a small spatial kernel and a Gaussian over neighbouring
frames at the same pixel, so a hole takes its value first from the same place in adjacent frames
and nearby pixels, then from ever coarser context. Depth is filled as disparity (1/depth), which
interpolates correctly across perspective. Reliable pixels are returned bit for bit.

Documented fallbacks:
* a clip without a single reliable pixel is returned unchanged with ``usable=False`` and a warning
  (there is nothing to inpaint from; the caller must not supervise with it);
* NaN/inf depth or colour counts as unreliable and never reaches the output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genfusion.generation.depth import reliable_mask
from genfusion.generation.repairer import RepairClip, RepairResult
from genfusion.progress import ProgressCallback, ProgressEvent, emit

logger = logging.getLogger(__name__)


@dataclass
class FallbackConfig:
    """Settings of the weight-free repairer."""

    alpha_threshold: float = 0.5  # pixels rendered with less opacity are holes to fill
    temporal_radius: int = 2  # frames on each side that lend reliable pixels at the same location
    temporal_sigma: float = 1.0  # Gaussian fall-off of those frames' weight, in frames
    trust_coverage: float = 0.5  # kernel coverage at which a level's own average is fully trusted
    min_size: int = 2  # stop building the pyramid when the shorter side reaches this size


def _temporal_kernel(radius: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / max(sigma, 1e-6)) ** 2)
    return kernel / kernel.sum()


_BINOMIAL = torch.tensor([1.0, 2.0, 1.0]) / 4.0


def _filter_axis(volume: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Correlate ``volume`` with a short odd 1-D ``kernel`` along ``dim``, zero padding.

    Shifted adds instead of conv3d: for these 3-5 tap kernels it is several times faster on CPU.
    """
    radius = kernel.numel() // 2
    length = volume.shape[dim]
    out = volume * float(kernel[radius])
    for offset in range(1, min(radius, length - 1) + 1):
        weight_before, weight_after = float(kernel[radius - offset]), float(kernel[radius + offset])
        ahead = volume.narrow(dim, offset, length - offset)  # sample at i + offset
        behind = volume.narrow(dim, 0, length - offset)  # sample at i - offset
        out.narrow(dim, 0, length - offset).add_(ahead, alpha=weight_after)
        out.narrow(dim, offset, length - offset).add_(behind, alpha=weight_before)
    return out


def _normalised_filter(volume: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """:func:`_filter_axis` divided by the kernel mass inside the volume.

    Without it the first and last frames (and border pixels) would see less support than the
    others, trust their own estimate less, and so flicker against the middle frames.
    """
    ones = torch.ones(volume.shape[dim], dtype=volume.dtype, device=volume.device)
    coverage = _filter_axis(ones, kernel, dim=0)
    shape = [1] * volume.ndim
    shape[dim] = -1
    return _filter_axis(volume, kernel, dim) / coverage.reshape(shape)


def _smooth(volume: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
    """Separable [temporal x 3 x 3] smoothing of [C, T, H, W], renormalised at the borders."""
    x = _normalised_filter(volume, temporal, dim=1) if temporal.numel() > 1 else volume
    x = _normalised_filter(x, _BINOMIAL, dim=2)
    return _normalised_filter(x, _BINOMIAL, dim=3)


def _downsample(volume: torch.Tensor) -> torch.Tensor:
    return F.avg_pool3d(volume.unsqueeze(0), kernel_size=(1, 2, 2), ceil_mode=True).squeeze(0)


def _upsample(volume: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(volume, size=size, mode="bilinear", align_corners=False)


def push_pull_fill(values: torch.Tensor, weights: torch.Tensor, config: FallbackConfig) -> torch.Tensor:
    """Fill [C, T, H, W] ``values`` where ``weights`` [T, H, W] (in [0, 1]) is low, from the rest.

    Returns the smooth estimate everywhere (callers keep their reliable pixels). Frames with no
    support at any scale take the time-weighted average of the frames that have some.
    """
    temporal = _temporal_kernel(config.temporal_radius, config.temporal_sigma)
    w = weights.unsqueeze(0).float()
    vw = values.float() * w
    sums: list[tuple[torch.Tensor, torch.Tensor]] = []
    while True:
        s_vw, s_w = _smooth(vw, temporal), _smooth(w, temporal)
        sums.append((s_vw, s_w))
        if min(vw.shape[-2:]) <= config.min_size:
            break
        vw, w = _downsample(s_vw), _downsample(s_w)

    # Coarsest level: each frame's own average, else the other frames' averages weighted by time.
    s_vw, s_w = sums[-1]
    frame_vw = s_vw.sum(dim=(-2, -1))  # [C, T]
    frame_w = s_w.sum(dim=(-2, -1))  # [1, T]
    t = torch.arange(frame_w.shape[1], dtype=torch.float32, device=values.device)
    closeness = 1.0 / (1.0 + (t[:, None] - t[None, :]).abs())  # [T, T]
    global_v = (frame_vw @ closeness.T) / (frame_w @ closeness.T).clamp_min(1e-12)  # [C, T]
    estimate = _blend(s_vw, s_w, global_v[..., None, None].expand_as(s_vw), config)
    for s_vw, s_w in reversed(sums[:-1]):
        coarse = _upsample(estimate, tuple(s_vw.shape[-2:]))
        estimate = _blend(s_vw, s_w, coarse, config)
    return estimate


def _blend(
    s_vw: torch.Tensor, s_w: torch.Tensor, coarse: torch.Tensor, config: FallbackConfig
) -> torch.Tensor:
    """This level's normalised average where it has support, the coarser estimate elsewhere."""
    trust = (s_w / config.trust_coverage).clamp(0.0, 1.0)
    own = s_vw / s_w.clamp_min(1e-12)
    return trust * own + (1.0 - trust) * coarse


class FallbackRepairer:
    """Space-time push-pull inpainting of colour and depth; same interface as the diffusion model."""

    name = "fallback"

    def __init__(self, config: FallbackConfig | None = None, *, reason: str = "requested"):
        self.config = config or FallbackConfig()
        self.reason = reason  # why this repairer is in use (shown with the description)
        self.description = (
            "weight-free repairer (space-time push-pull inpainting of low-alpha and depth-less pixels)"
            f"; chosen because: {reason}"
        )

    def repair(
        self, clip: RepairClip, *, seed: int | None = None, progress: ProgressCallback | None = None
    ) -> RepairResult:
        """Fill unreliable pixels of ``clip``; ``seed`` is accepted for the interface (deterministic)."""
        clip.validate()
        emit(progress, ProgressEvent("repair.fallback", 0, 1, "inpainting holes"))
        rgb, depth, alpha = clip.rgb, clip.depth, clip.alpha
        reliable = reliable_mask(depth, alpha, self.config.alpha_threshold)
        reliable &= torch.isfinite(rgb).all(dim=-1)
        if not reliable.any():
            message = (
                "no reliable pixel in the clip (alpha below "
                f"{self.config.alpha_threshold} or no depth everywhere): returned unchanged, not usable"
            )
            logger.warning("fallback repairer: %s", message)
            emit(progress, ProgressEvent("repair.fallback", 1, 1, "nothing to inpaint from"))
            return RepairResult(
                rgb=torch.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1),
                depth=torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0),
                reliable=reliable,
                repairer=self.name,
                usable=False,
                warnings=[message],
            )
        safe_depth = torch.where(reliable, depth, torch.ones_like(depth))
        disparity = torch.where(reliable, 1.0 / safe_depth, torch.zeros_like(depth))
        safe_rgb = torch.where(reliable[..., None], rgb, torch.zeros_like(rgb))
        # Normalise disparity to ~1 so colour and disparity fill with comparable precision.
        disparity_unit = disparity[reliable].median().clamp_min(1e-12)
        channels = torch.cat([safe_rgb.permute(3, 0, 1, 2), (disparity / disparity_unit)[None]], dim=0)
        filled = push_pull_fill(channels, reliable.float(), self.config)
        out_rgb = torch.where(reliable[..., None], rgb, filled[:3].permute(1, 2, 3, 0).clamp(0.0, 1.0))
        min_disparity = disparity[reliable].min() / disparity_unit * 1e-3
        filled_depth = 1.0 / (filled[3].clamp_min(min_disparity) * disparity_unit)
        out_depth = torch.where(reliable, depth, filled_depth)
        warnings = []
        empty_frames = int((~reliable.flatten(1).any(dim=1)).sum())
        if empty_frames:
            warnings.append(
                f"{empty_frames} frame(s) had no reliable pixel and were filled from other frames"
            )
        emit(progress, ProgressEvent("repair.fallback", 1, 1, "done"))
        return RepairResult(
            rgb=out_rgb,
            depth=out_depth,
            reliable=reliable,
            repairer=self.name,
            usable=True,
            warnings=warnings,
        )
