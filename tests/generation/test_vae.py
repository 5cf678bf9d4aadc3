"""The RGB-D VAE config and clip helpers (tiny random AutoencoderKL; the real one in names only)."""

from __future__ import annotations

import json

import pytest
import torch

from genfusion.generation.convert import convert_lvdm_state_dict
from genfusion.generation.vae import (
    LDM3D_VAE_CONFIG,
    VAE_SCALE_FACTOR,
    build_rgbd_vae,
    decode_clip,
    encode_clip,
)

TINY_VAE = dict(
    LDM3D_VAE_CONFIG,
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    block_out_channels=[32, 32],
    layers_per_block=1,
)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_rgbd_vae(TINY_VAE).eval()


def test_encode_is_per_frame_sampled_and_scaled(vae):
    clip = torch.rand(2, 4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a = encode_clip(vae, clip, generator=torch.Generator().manual_seed(1))
        b = encode_clip(vae, clip, generator=torch.Generator().manual_seed(1))
        c = encode_clip(vae, clip, generator=torch.Generator().manual_seed(2), frames_per_batch=6)
        frame = vae.encode(clip[1, :, 2][None]).latent_dist
    assert a.shape == (2, 4, 3, 8, 8)
    assert torch.equal(a, b)  # the generator makes the draw repeatable
    assert (a - c).abs().max() > 1e-3  # and it is a draw, not the mode
    # sample 1, frame 2: a draw around that frame's posterior mean, times 0.18215
    z = a[1, :, 2] / VAE_SCALE_FACTOR
    assert ((z - frame.mean[0]).abs() <= 6 * frame.std[0]).all()


def test_decode_divides_the_scale_and_splits_rgb_depth(vae):
    latents = torch.randn(1, 4, 2, 8, 8)
    with torch.no_grad():
        rgb, depth = decode_clip(vae, latents)
        frame = vae.decode(latents[:, :, 1] / VAE_SCALE_FACTOR).sample
    assert rgb.shape == (1, 3, 2, 16, 16) and depth.shape == (1, 1, 2, 16, 16)
    assert torch.allclose(rgb[:, :, 1], frame[:, :3], atol=1e-5)
    assert torch.allclose(depth[:, 0, 1], frame[:, 3], atol=1e-5)


def test_bad_shapes_are_refused(vae):
    with pytest.raises(ValueError, match="4, T, H, W"):
        encode_clip(vae, torch.zeros(1, 3, 2, 16, 16))
    with pytest.raises(ValueError, match="latents"):
        decode_clip(vae, torch.zeros(1, 4, 8, 8))


def test_release_vae_names_are_diffusers_0_42_names(lvdm_fixtures):
    keys = json.loads((lvdm_fixtures / "full_keys.json").read_text())["keys"]
    prefix = "first_stage_model."
    source = {
        k[len(prefix) :]: torch.empty(s, device="meta") for k, s in keys.items() if k.startswith(prefix)
    }
    state = convert_lvdm_state_dict("vae", source, LDM3D_VAE_CONFIG)
    assert len(state) == len(source) == 248
    assert all(k in source for k in state)  # no renaming needed
    assert sum(t.numel() for t in state.values()) == 83_656_168
