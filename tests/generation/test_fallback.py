"""The weight-free repairer: fills holes from space and time, keeps reliable pixels, safe on bad input."""

from __future__ import annotations

import time

import pytest
import torch

from genfusion.errors import GenFusionError
from genfusion.generation.fallback import FallbackConfig, FallbackRepairer
from genfusion.generation.repairer import RepairClip, Repairer

T, H, W = 16, 64, 64


def scene_clip(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth moving colour pattern and a tilted-plane depth: the ground truth."""
    t = torch.arange(T, dtype=torch.float32)[:, None, None]
    y = torch.arange(H, dtype=torch.float32)[None, :, None]
    x = torch.arange(W, dtype=torch.float32)[None, None, :]
    channels = [
        0.5 + 0.4 * torch.sin((x + 1.5 * t) / 9 + seed),
        0.5 + 0.4 * torch.cos((y + 0.5 * t) / 11),
        (x + y) / (H + W) + 0 * t,
    ]
    rgb = torch.stack([c.expand(T, H, W) for c in channels], dim=-1)
    depth = (2.0 + (x + 2 * y + t) / 64.0).expand(T, H, W).clone()
    return rgb, depth


def punch(rgb, depth, hole):
    """Render-like input: holes have alpha 0, black colour and no depth."""
    alpha = torch.ones(T, H, W)
    alpha[hole] = 0.0
    rgb_in, depth_in = rgb.clone(), depth.clone()
    rgb_in[hole] = 0.0
    depth_in[hole] = 0.0
    return RepairClip.from_arrays(rgb_in, depth_in, alpha)


def disk(cx, cy, r):
    y = torch.arange(H)[:, None]
    x = torch.arange(W)[None, :]
    return (x - cx) ** 2 + (y - cy) ** 2 < r**2


def test_is_a_repairer_with_a_name():
    repairer = FallbackRepairer(reason="no weights")
    assert isinstance(repairer, Repairer)
    assert repairer.name == "fallback" and "no weights" in repairer.description


def test_fills_holes_close_to_truth_and_keeps_reliable_pixels_exactly():
    rgb, depth = scene_clip()
    hole = disk(32, 30, 9).expand(T, H, W)
    clip = punch(rgb, depth, hole)
    result = FallbackRepairer().repair(clip)
    assert result.usable and result.repairer == "fallback"
    assert torch.equal(result.rgb[~hole], clip.rgb[~hole])
    assert torch.equal(result.depth[~hole], clip.depth[~hole])
    assert torch.equal(result.reliable, ~hole)
    rgb_error = (result.rgb - rgb).abs()[hole].mean().item()
    depth_rel_error = ((result.depth - depth).abs() / depth)[hole].mean().item()
    assert rgb_error < 0.06, rgb_error  # black holes start 0.5 away on average
    assert depth_rel_error < 0.03, depth_rel_error
    assert torch.isfinite(result.depth).all() and (result.depth > 0).all()


def test_uses_neighbouring_frames_at_the_same_location():
    """A hole in one frame only is filled mostly from the adjacent frames' pixels, not from far away."""
    rgb, depth = scene_clip()
    hole = torch.zeros(T, H, W, dtype=torch.bool)
    hole[7] = disk(32, 32, 16)
    clip = punch(rgb, depth, hole)
    with_time = FallbackRepairer().repair(clip)
    space_only = FallbackRepairer(FallbackConfig(temporal_radius=0)).repair(clip)
    err_time = (with_time.rgb - rgb).abs()[hole].mean().item()
    err_space = (space_only.rgb - rgb).abs()[hole].mean().item()
    assert err_time < 0.5 * err_space, (err_time, err_space)


def test_temporally_consistent_fill():
    """A static hole over a static scene is filled the same way in every frame (no flicker)."""
    rgb, depth = scene_clip()
    rgb = rgb[:1].expand(T, H, W, 3).clone()
    depth = depth[:1].expand(T, H, W).clone()
    hole = disk(20, 40, 10).expand(T, H, W)
    result = FallbackRepairer().repair(punch(rgb, depth, hole))
    flicker = (result.rgb[1:] - result.rgb[:-1]).abs()[hole[1:]].max().item()
    assert flicker < 1e-5


def test_empty_frame_is_filled_from_other_frames_with_a_warning():
    rgb, depth = scene_clip()
    hole = torch.zeros(T, H, W, dtype=torch.bool)
    hole[3] = True
    result = FallbackRepairer().repair(punch(rgb, depth, hole))
    assert result.usable and any("1 frame" in w for w in result.warnings)
    assert (result.rgb[3] - rgb[3]).abs().mean() < 0.1


def test_all_empty_alpha_is_returned_unchanged_and_flagged():
    rgb, depth = scene_clip()
    clip = RepairClip.from_arrays(rgb, depth, torch.zeros(T, H, W))
    result = FallbackRepairer().repair(clip)
    assert not result.usable and result.warnings and "no reliable pixel" in result.warnings[0]
    assert torch.equal(result.rgb, rgb) and torch.equal(result.depth, depth)


def test_nan_depth_is_treated_as_unreliable():
    rgb, depth = scene_clip()
    nan_region = disk(40, 20, 6).expand(T, H, W)
    depth_in = depth.clone()
    depth_in[nan_region] = float("nan")
    rgb_in = rgb.clone()
    rgb_in[0, 0, 0] = float("nan")  # a broken colour pixel as well
    result = FallbackRepairer().repair(RepairClip.from_arrays(rgb_in, depth_in, torch.ones(T, H, W)))
    assert torch.isfinite(result.depth).all() and torch.isfinite(result.rgb).all()
    assert not result.reliable[nan_region].any() and not result.reliable[0, 0, 0]
    assert ((result.depth - depth).abs() / depth)[nan_region].mean() < 0.03


def test_wrong_shapes_raise_a_clear_error():
    rgb, depth = scene_clip()
    with pytest.raises(GenFusionError, match=r"rgb must have shape \[T, H, W, 3\]"):
        RepairClip.from_arrays(rgb[..., :2], depth, torch.ones(T, H, W))
    with pytest.raises(GenFusionError, match="depth must have shape"):
        RepairClip.from_arrays(rgb, depth[:, :10], torch.ones(T, H, W))
    with pytest.raises(GenFusionError, match="alpha must have shape"):
        RepairClip.from_arrays(rgb, depth, torch.ones(T - 1, H, W))
    with pytest.raises(GenFusionError, match="reference"):
        RepairClip.from_arrays(rgb, depth, torch.ones(T, H, W), reference=torch.ones(4, 4))


def test_numpy_uint8_input_and_speed():
    rgb, depth = scene_clip()
    hole = disk(32, 32, 12).expand(T, H, W)
    rgb_u8 = (rgb * 255).round().to(torch.uint8).numpy()
    alpha = (~hole).float().numpy()
    clip = RepairClip.from_arrays(rgb_u8, torch.where(hole, 0.0, depth).numpy(), alpha)
    repairer = FallbackRepairer()
    start = time.perf_counter()
    result = repairer.repair(clip)
    elapsed = time.perf_counter() - start
    assert result.rgb.dtype == torch.float32 and result.rgb.shape == (T, H, W, 3)
    assert elapsed < 5.0  # generous bound for a shared CI machine; typical 0.1-0.3 s (see bench_repair)
