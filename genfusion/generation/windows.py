"""Long trajectories as overlapping 16-frame windows, blended so consecutive windows agree.

The original repairs a long camera path as independent 16-frame segments, and its known weak
spot is the visible jump where two segments meet. Here windows overlap by ``overlap`` frames; the
pipeline conditions each window on the previous window's output in the overlap (latent
replacement while sampling, see pipeline.py) and the two outputs are then cross-faded over the
overlap with raised-cosine weights, so no frame pair carries the full disagreement between two
windows. :func:`seam_discontinuity` measures the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    """Frames ``[start, stop)`` of the trajectory repaired together."""

    start: int  # first frame (inclusive)
    stop: int  # one past the last frame

    @property
    def length(self) -> int:
        return self.stop - self.start


def plan_windows(num_frames: int, window: int = 16, overlap: int = 4) -> list[Window]:
    """Cover ``num_frames`` with windows of ``window`` frames that overlap by at least ``overlap``.

    The fewest windows that achieve it are spread evenly from the first to the last frame, so the
    overlaps are equal up to one frame (and may exceed ``overlap``). A trajectory no longer than
    one window is one (possibly short) window; the pipeline pads it to the model's length.
    """
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if window < 1:
        raise ValueError(f"need window >= 1, got {window=}")
    if num_frames <= window:
        return [Window(0, num_frames)]
    if not 0 <= overlap < window:
        raise ValueError(f"need 0 <= overlap < window, got {window=}, {overlap=}")
    count = math.ceil((num_frames - window) / (window - overlap)) + 1
    last = num_frames - window
    # Spread the starts evenly: every overlap is then >= ``overlap`` and they differ by <= 1 frame.
    starts = [round(i * last / (count - 1)) for i in range(count)]
    return [Window(s, s + window) for s in starts]


def crossfade_weights(windows: list[Window], num_frames: int) -> list[torch.Tensor]:
    """Per-window frame weights that sum to 1 at every frame.

    Inside an overlap the later window's weight rises as ``0.5 - 0.5 cos(pi (k + 1) / (L + 1))``
    (k = 0..L-1 over the L shared frames) and the earlier window's falls by the same amount, so
    each step of the hand-over moves at most ``sin(pi / (2 (L + 1)))``-ish of the difference.
    """
    raw = [torch.ones(w.length, dtype=torch.float64) for w in windows]
    for i in range(1, len(windows)):
        prev, cur = windows[i - 1], windows[i]
        shared = prev.stop - cur.start
        if shared <= 0:
            continue
        k = torch.arange(shared, dtype=torch.float64)
        rise = 0.5 - 0.5 * torch.cos(math.pi * (k + 1) / (shared + 1))
        raw[i][:shared] = torch.minimum(raw[i][:shared], rise)
        raw[i - 1][prev.length - shared :] = torch.minimum(raw[i - 1][prev.length - shared :], 1.0 - rise)
    total = torch.zeros(num_frames, dtype=torch.float64)
    for w, weights in zip(windows, raw, strict=True):
        total[w.start : w.stop] += weights
    if (total <= 0).any():
        raise ValueError("the windows do not cover every frame")
    return [(weights / total[w.start : w.stop]).float() for w, weights in zip(windows, raw, strict=True)]


def blend_windows(outputs: list[torch.Tensor], windows: list[Window], num_frames: int) -> torch.Tensor:
    """Weighted sum of per-window outputs [t, ...] into one [num_frames, ...] tensor."""
    if len(outputs) != len(windows):
        raise ValueError(f"{len(outputs)} outputs for {len(windows)} windows")
    weights = crossfade_weights(windows, num_frames)
    first = outputs[0]
    result = torch.zeros((num_frames, *first.shape[1:]), dtype=first.dtype, device=first.device)
    for out, w, wt in zip(outputs, windows, weights, strict=True):
        if out.shape[0] != w.length:
            raise ValueError(f"window {w} has {w.length} frames but its output has {out.shape[0]}")
        shape = (-1,) + (1,) * (out.ndim - 1)
        result[w.start : w.stop] += out * wt.to(device=out.device, dtype=out.dtype).reshape(shape)
    return result


def pad_frames(clip: torch.Tensor, length: int, dim: int = 0) -> torch.Tensor:
    """Repeat the last frame along ``dim`` until the clip has ``length`` frames (model input length)."""
    count = clip.shape[dim]
    if count >= length:
        return clip
    last = clip.narrow(dim, count - 1, 1)
    repeats = [1] * clip.ndim
    repeats[dim] = length - count
    return torch.cat([clip, last.repeat(*repeats)], dim=dim)


def seam_pairs(windows: list[Window]) -> set[int]:
    """Indices k of consecutive-frame pairs (k, k+1) where one window hands over to the next.

    For abutting windows that is the single pair across the boundary; for overlapping windows
    every pair that touches the shared frames.
    """
    pairs: set[int] = set()
    for prev, cur in zip(windows, windows[1:], strict=False):
        last_shared = max(prev.stop, cur.start) - 1  # == cur.start - 1 when the windows only abut
        pairs.update(k for k in range(cur.start - 1, last_shared + 1) if k >= 0)
    return pairs


def frame_differences(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of each consecutive frame pair: [T, ...] -> [T - 1]."""
    diffs = (frames[1:] - frames[:-1]).abs()
    return diffs.reshape(diffs.shape[0], -1).mean(dim=1)


def seam_discontinuity(frames: torch.Tensor, windows: list[Window]) -> float:
    """Largest frame-to-frame change at a seam divided by the median change elsewhere.

    About 1 means seams are invisible; the original's independent segments give large values
    when segments disagree.
    """
    diffs = frame_differences(frames.float())
    seams = sorted(k for k in seam_pairs(windows) if k < diffs.shape[0])
    if not seams:
        return 1.0
    others = [k for k in range(diffs.shape[0]) if k not in set(seams)]
    baseline = diffs[others].median() if others else diffs.median()
    return float(diffs[seams].max() / baseline.clamp_min(1e-12))
