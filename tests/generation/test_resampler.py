"""ImageProjResampler against the original Resampler (tiny fixture, loaded through the converter)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from genfusion.errors import GenFusionError
from genfusion.generation.convert import convert_lvdm_state_dict
from genfusion.generation.resampler import FULL_RESAMPLER_CONFIG, ImageProjResampler


@pytest.fixture(scope="module")
def tiny(lvdm_fixtures):
    config = json.loads((lvdm_fixtures / "tiny_resampler_config.json").read_text())["params"]
    state = load_file(str(lvdm_fixtures / "tiny_resampler.safetensors"))
    model = ImageProjResampler(**config).eval()
    model.load_state_dict(convert_lvdm_state_dict("image_proj", state, config), strict=True)
    return model, load_file(str(lvdm_fixtures / "tiny_resampler_io.safetensors"))


def test_output_matches_lvdm(tiny):
    model, io = tiny
    with torch.no_grad():
        out = model(io["clip_tokens"])
    assert out.shape == (1, 256, 48)
    assert (out - io["resampler_out"]).abs().max().item() <= 1e-5


def test_batch_items_are_independent(tiny):
    model, io = tiny
    tokens = torch.cat([io["clip_tokens"], torch.randn_like(io["clip_tokens"])])
    with torch.no_grad():
        out = model(tokens)
    assert (out[0] - io["resampler_out"][0]).abs().max().item() <= 1e-5
    assert (out[1] - out[0]).abs().max().item() > 1e-2


def test_save_and_load_round_trip(tiny, tmp_path):
    model, io = tiny
    model.save_pretrained(tmp_path / "image_proj")
    loaded = ImageProjResampler.from_pretrained(tmp_path / "image_proj").eval()
    with torch.no_grad():
        out = loaded(io["clip_tokens"])
    assert (out - io["resampler_out"]).abs().max().item() <= 1e-5


def test_full_size_shapes_match_release(lvdm_fixtures):
    keys = json.loads((lvdm_fixtures / "full_keys.json").read_text())["keys"]
    source = {
        k[len("image_proj_model.") :]: torch.empty(s, device="meta")
        for k, s in keys.items()
        if k.startswith("image_proj_model.")
    }
    state = convert_lvdm_state_dict("image_proj", source, FULL_RESAMPLER_CONFIG)
    assert len(state) == len(source) == 51
    assert sum(t.numel() for t in state.values()) == 48_787_456


def test_wrong_shapes_are_refused(tiny, lvdm_fixtures):
    config = json.loads((lvdm_fixtures / "tiny_resampler_config.json").read_text())["params"]
    state = load_file(str(lvdm_fixtures / "tiny_resampler.safetensors"))
    state["proj_in.weight"] = torch.zeros(64, 41)
    with pytest.raises(GenFusionError, match=r"proj_in.weight has shape \(64, 41\)"):
        convert_lvdm_state_dict("image_proj", state, config)
