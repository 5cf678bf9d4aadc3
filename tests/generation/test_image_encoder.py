"""CLIP reference preprocessing and tokens against the original OpenCLIP embedder (tiny fixture)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPVisionModel

from genfusion.generation.convert import convert_lvdm_state_dict
from genfusion.generation.image_encoder import (
    _antialias_blur,
    _gaussian_kernel1d,
    clip_vision_config_from_openclip,
    encode_reference,
    preprocess_reference,
    vit_h14_vision_config,
)


@pytest.fixture(scope="module")
def tiny(lvdm_fixtures):
    """(tiny CLIPVisionModel with the fixture's OpenCLIP weights, io tensors, [-1,1] image)."""
    config = json.loads((lvdm_fixtures / "tiny_embedder_config.json").read_text())
    vision_config = clip_vision_config_from_openclip(config["open_clip_model_config"])
    visual = load_file(str(lvdm_fixtures / "tiny_embedder_visual.safetensors"))
    source = {k[len("visual.") :]: v for k, v in visual.items() if k != "visual.proj"}
    state = convert_lvdm_state_dict("image_encoder", source, vision_config.to_dict())
    model = CLIPVisionModel(vision_config).eval()
    model.load_state_dict(state, strict=True)
    io = load_file(str(lvdm_fixtures / "tiny_embedder_io.safetensors"))
    image = (io["ref_image_uint8"].float() / 255 - 0.5) * 2  # as the reconstruction code does
    return model, io, image


def test_preprocessing_matches_kornia_exactly(tiny):
    _, io, image = tiny
    pre = preprocess_reference(image)
    assert pre.shape == (1, 3, 224, 224)
    assert (pre - io["preprocessed_224"]).abs().max().item() <= 1e-6


def test_antialias_kernel_is_kornias():
    # 320x512 -> 224: sigma (0.214, 0.643), both kernels 3 taps
    k = _gaussian_kernel1d(3, (512 / 224 - 1) / 2, torch.float32, torch.device("cpu"))
    assert k.shape == (3,) and abs(k.sum().item() - 1) < 1e-6 and k[1] > k[0] == k[2]
    # a bigger downscale gets a wider odd kernel; upscaling is not blurred
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(_antialias_blur(x, (128, 128)), x)
    blurred = _antialias_blur(torch.randn(1, 3, 960, 960), (224, 224))
    assert blurred.shape == (1, 3, 960, 960)


def test_tokens_and_zero_image_tokens_match(tiny):
    model, io, image = tiny
    with torch.no_grad():
        tokens = encode_reference(model, image)
        zero = encode_reference(model, torch.zeros_like(image))
    assert tokens.shape == (1, 257, 40)
    assert (tokens - io["tokens"]).abs().max().item() <= 1e-5
    assert (zero - io["zero_image_tokens"]).abs().max().item() <= 1e-5
    assert (tokens - zero).abs().max().item() > 0.1


def test_round_trip(tiny, tmp_path):
    model, io, image = tiny
    model.save_pretrained(tmp_path / "image_encoder")
    loaded = CLIPVisionModel.from_pretrained(tmp_path / "image_encoder").eval()
    with torch.no_grad():
        tokens = encode_reference(loaded, image)
    assert (tokens - io["tokens"]).abs().max().item() <= 1e-5


def test_vit_h14_config_matches_release_shapes(lvdm_fixtures):
    keys = json.loads((lvdm_fixtures / "full_keys.json").read_text())["keys"]
    prefix = "embedder.model.visual."
    source = {
        k[len(prefix) :]: torch.empty(s, device="meta")
        for k, s in keys.items()
        if k.startswith(prefix) and k != prefix + "proj"
    }
    config = vit_h14_vision_config()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1280, 32, 16)
    state = convert_lvdm_state_dict("image_encoder", source, config.to_dict())
    expected = sum(torch.Size(s).numel() for k, s in keys.items() if k.startswith(prefix)) - 1280 * 1024
    assert sum(t.numel() for t in state.values()) == expected
