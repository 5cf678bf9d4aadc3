"""The 4-channel RGB-D VAE (the ``Intel/ldm3d-4c`` AutoencoderKL) and clip-level helpers.

RGB in [-1, 1] and disparity in [-1, 1] are stacked into 4 channels; each frame is encoded on
its own, a latent is *sampled* (not the mode) and scaled by 0.18215. Decoding divides by the
scale; channels 0..2 are RGB, channel 3 is the depth-like disparity.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

VAE_SCALE_FACTOR = 0.18215  # latent scale used by the original (scale_by_std False)

# Effective config of the ldm3d-4c VAE: the SD-1.x layout with 4 input/output/latent channels.
LDM3D_VAE_CONFIG: dict = {
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": VAE_SCALE_FACTOR,
    "force_upcast": True,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}


def build_rgbd_vae(config: dict | None = None) -> AutoencoderKL:
    """An AutoencoderKL with the ldm3d-4c layout (random weights; load or convert weights next)."""
    return AutoencoderKL(**(config or LDM3D_VAE_CONFIG))


def _frames(clip: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W] (frames of one clip consecutive)."""
    b, c, t, h, w = clip.shape
    return clip.transpose(1, 2).reshape(b * t, c, h, w)


def _clip(frames: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W]."""
    bt, c, h, w = frames.shape
    return frames.reshape(batch, bt // batch, c, h, w).transpose(1, 2)


def encode_clip(
    vae: AutoencoderKL,
    clip: torch.Tensor,
    generator: torch.Generator | None = None,
    frames_per_batch: int = 1,
    scale: float = VAE_SCALE_FACTOR,
) -> torch.Tensor:
    """[B, 4, T, H, W] RGB-D in [-1, 1] -> scaled latents [B, 4, T, H/8, W/8].

    Frames go through the encoder ``frames_per_batch`` at a time (1 = the original per-frame
    encoding, the least memory); each latent is a draw from the posterior (``generator`` makes
    it repeatable)."""
    if clip.ndim != 5 or clip.shape[1] != vae.config.in_channels:
        raise ValueError(f"expected a [B, {vae.config.in_channels}, T, H, W] clip, got {tuple(clip.shape)}")
    param = next(vae.parameters())
    frames = _frames(clip).to(device=param.device, dtype=param.dtype)
    latents = [
        vae.encode(chunk).latent_dist.sample(generator=generator) * scale
        for chunk in frames.split(frames_per_batch)
    ]
    return _clip(torch.cat(latents), clip.shape[0])


def decode_clip(
    vae: AutoencoderKL,
    latents: torch.Tensor,
    frames_per_batch: int = 1,
    scale: float = VAE_SCALE_FACTOR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled latents [B, 4, T, h, w] -> (RGB [B, 3, T, 8h, 8w], disparity [B, 1, T, 8h, 8w]),
    both roughly in [-1, 1] (not clamped)."""
    if latents.ndim != 5 or latents.shape[1] != vae.config.latent_channels:
        raise ValueError(
            f"expected [B, {vae.config.latent_channels}, T, h, w] latents, got {tuple(latents.shape)}"
        )
    param = next(vae.parameters())
    frames = _frames(latents).to(device=param.device, dtype=param.dtype) / scale
    decoded = torch.cat([vae.decode(chunk).sample for chunk in frames.split(frames_per_batch)])
    out = _clip(decoded, latents.shape[0])
    return out[:, :3], out[:, 3:4]
