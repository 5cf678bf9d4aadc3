"""Tiny stand-ins of the repair model for tests, demos and CPU benchmarks.

The LVDM parity fixtures (``fixtures/lvdm``) hold tiny randomly-initialised networks in the
original naming. :func:`write_tiny_lvdm_checkpoint` packs them, with a tiny random RGB-D VAE and
the real schedule buffers, into a Lightning-style ``.ckpt`` laid out exactly like the released
one, so the converter, the CLI and the pipeline can be exercised end to end without weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from genfusion.generation.convert import SCHEDULE_BUFFERS, ComponentConfigs
from genfusion.generation.vae import LDM3D_VAE_CONFIG

# A 32-channel version of the ldm3d-4c VAE with the same x8 spatial downsampling (4 levels), so a
# 64x64 clip gives the 8x8 latents the tiny UNet fixtures use.
TINY_VAE_CONFIG: dict = dict(
    LDM3D_VAE_CONFIG,
    block_out_channels=[32, 32, 32, 32],
    layers_per_block=1,
    sample_size=64,
)


def tiny_component_configs(fixtures_dir: str | Path) -> ComponentConfigs:
    """Configs of the fixture's tiny UNet, Resampler and CLIP tower, plus :data:`TINY_VAE_CONFIG`."""
    from genfusion.generation.image_encoder import clip_vision_config_from_openclip
    from genfusion.generation.unet import RepairUNet3DModel

    fixtures_dir = Path(fixtures_dir)
    unet = json.loads((fixtures_dir / "tiny_unet_config.json").read_text())["params"]
    resampler = json.loads((fixtures_dir / "tiny_resampler_config.json").read_text())["params"]
    embedder = json.loads((fixtures_dir / "tiny_embedder_config.json").read_text())
    return ComponentConfigs(
        unet=RepairUNet3DModel.config_from_lvdm(unet),
        image_proj=dict(resampler),
        image_encoder=clip_vision_config_from_openclip(embedder["open_clip_model_config"]).to_dict(),
        vae=dict(TINY_VAE_CONFIG),
    )


def tiny_lvdm_state_dict(fixtures_dir: str | Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """The flat state dict of a tiny GenFusion model in the released checkpoint's naming."""
    from diffusers import AutoencoderKL

    from genfusion.generation.scheduler import GenFusionDDIMScheduler

    fixtures_dir = Path(fixtures_dir)
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    scheduler = GenFusionDDIMScheduler()
    # the release's top-level schedule buffers: real values where the scheduler has them, random
    # ones (the converter does not validate those) for the rest
    from_scheduler = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "scale_arr"}
    for name in SCHEDULE_BUFFERS:
        if name in from_scheduler:
            state[name] = getattr(scheduler, name).clone()
        else:
            state[name] = torch.rand(1000, generator=gen)
    for key, value in load_file(str(fixtures_dir / "tiny_unet.safetensors")).items():
        state["model.diffusion_model." + key] = value
    torch.manual_seed(seed)
    for key, value in AutoencoderKL(**TINY_VAE_CONFIG).state_dict().items():
        state["first_stage_model." + key] = value
    # the unused text encoder and the image embedder's text-side leftovers, as in the release
    for key, shape in {
        "cond_stage_model.model.positional_embedding": (77, 32),
        "cond_stage_model.model.token_embedding.weight": (64, 32),
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (96, 32),
        "cond_stage_model.model.logit_scale": (),
        "embedder.model.positional_embedding": (77, 32),
        "embedder.model.text_projection": (32, 32),
        "embedder.model.logit_scale": (),
        "embedder.model.token_embedding.weight": (64, 32),
        "embedder.model.ln_final.weight": (32,),
        "embedder.model.ln_final.bias": (32,),
    }.items():
        state[key] = torch.randn(shape, generator=gen)
    for key, value in load_file(str(fixtures_dir / "tiny_embedder_visual.safetensors")).items():
        state["embedder.model." + key] = value
    for key, value in load_file(str(fixtures_dir / "tiny_resampler.safetensors")).items():
        state["image_proj_model." + key] = value
    return state


def write_tiny_lvdm_checkpoint(fixtures_dir: str | Path, path: str | Path) -> Path:
    """Save :func:`tiny_lvdm_state_dict` as a Lightning checkpoint at ``path``."""
    path = Path(path)
    state = tiny_lvdm_state_dict(fixtures_dir)
    torch.save({"epoch": 59, "global_step": 34000, "state_dict": state}, path)
    return path
