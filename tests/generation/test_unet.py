"""RepairUNet3DModel against the original LVDM UNet (tiny fixture, loaded through the converter)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from genfusion.errors import GenFusionError
from genfusion.generation.attention import set_reference_attention
from genfusion.generation.convert import convert_lvdm_state_dict
from genfusion.generation.unet import FULL_UNET_CONFIG, RepairUNet3DModel

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny(lvdm_fixtures):
    """(model, io tensors) for the tiny UNet with the fixture weights."""
    params = json.loads((lvdm_fixtures / "tiny_unet_config.json").read_text())["params"]
    config = RepairUNet3DModel.config_from_lvdm(params)
    state = convert_lvdm_state_dict("unet", load_file(str(lvdm_fixtures / "tiny_unet.safetensors")), config)
    model = RepairUNet3DModel(**config).eval()
    model.load_state_dict(state, strict=True)
    io = load_file(str(lvdm_fixtures / "tiny_unet_io.safetensors"))
    return model, io


@pytest.fixture(scope="module")
def outputs(tiny):
    """Case 1 (with every intermediate) and case 2 outputs, computed once (CPU time is scarce)."""
    model, io = tiny
    seen, handles = _capture(model)
    try:
        with torch.no_grad():
            case1 = model(io["x"], io["timesteps"], io["context"], io["fs"])
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        case2 = model(io["case2.x"], io["case2.timesteps"], io["case2.context"], io["case2.fs"])
    return {"case1": case1, "case2": case2, "intermediates": seen}


def _capture(model: RepairUNet3DModel):
    """Forward hooks recording outputs under the fixture's LVDM names."""
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name):
        def fn(module, args, kwargs, output):
            seen[name] = output
            if name == "time_embed":
                seen["time_embed.input"] = args[0]
            if name == "fps_embedding":
                seen["fps_embedding.input"] = args[0]
            if name.endswith("attn2.out"):
                seen[name.replace(".out", ".x")] = args[0]
                seen[name.replace(".out", ".context")] = kwargs["encoder_hidden_states"]

        return fn

    targets = {
        "time_embed": model.time_embedding,
        "fps_embedding": model.fps_embedding,
        "input_blocks.0": model.conv_in,
        "init_attn": model.init_attn,
        "middle_block": model.mid_block,
        "input_blocks.1.1.transformer_blocks.0.attn2.out": (
            model.down_layers[0].attention.transformer_blocks[0].attn2
        ),
    }
    targets.update({f"input_blocks.{i + 1}": layer for i, layer in enumerate(model.down_layers)})
    targets.update({f"output_blocks.{i}": layer for i, layer in enumerate(model.up_layers)})
    for name, module in targets.items():
        handles.append(module.register_forward_hook(hook(name), with_kwargs=True))
    return seen, handles


def test_case1_output_and_intermediates_match_lvdm(tiny, outputs):
    _, io = tiny
    out, seen = outputs["case1"], outputs["intermediates"]
    assert out.shape == io["out"].shape == (1, 4, 16, 8, 8)
    assert (out - io["out"]).abs().max().item() <= TOL
    assert io["out"].abs().max().item() > 0.1  # the reference is not trivially zero
    names = [k[len("intermediate.") :] for k in io if k.startswith("intermediate.")]
    assert len(names) == 27
    for name in names:
        ref = io[f"intermediate.{name}"]
        got = seen[name]
        assert got.shape == ref.shape, name
        # intermediates reach |x| ~ 25: 1e-5 relative to their scale (the output is absolute)
        assert (got - ref).abs().max().item() <= TOL * max(1.0, ref.abs().max().item()), name


def test_case2_batch_of_two_with_different_t_fs_and_context(tiny, outputs):
    _, io = tiny
    out = outputs["case2"]
    assert (out - io["case2.out"]).abs().max().item() <= TOL
    # the two samples really differ, so interleaving bugs would show
    assert (io["case2.out"][0] - io["case2.out"][1]).abs().max() > 0.1


def test_fs_none_is_default_fs_30_and_fs_matters(tiny, outputs):
    model, io = tiny
    with torch.no_grad():
        # fs=None and a plain int timestep: the default fs=30 of the fixture run
        default = model(io["x"], int(io["timesteps"][0]), io["context"], None)
        other = model(io["x"], io["timesteps"], io["context"], torch.tensor([10]))
    assert (default - io["out"]).abs().max().item() <= TOL
    assert torch.allclose(default, outputs["case1"], atol=1e-6)
    assert (other - default).abs().max().item() > 1e-3


def test_sdpa_matches_einsum_reference(tiny, outputs):
    model, io = tiny
    sdpa = outputs["case2"]
    with torch.no_grad():
        set_reference_attention(model, True)
        try:
            reference = model(io["case2.x"], io["case2.timesteps"], io["case2.context"], io["case2.fs"])
        finally:
            set_reference_attention(model, False)
    assert (sdpa - reference).abs().max().item() <= TOL
    assert (reference - io["case2.out"]).abs().max().item() <= TOL


def test_save_and_load_round_trip(tiny, tmp_path):
    model, io = tiny
    model.save_pretrained(tmp_path / "unet")
    loaded = RepairUNet3DModel.from_pretrained(tmp_path / "unet").eval()
    assert loaded.config.context_dim == 48 and list(loaded.config.channel_mult) == [1, 1, 2]
    with torch.no_grad():
        out = loaded(io["x"], io["timesteps"], io["context"], io["fs"])
    assert (out - io["out"]).abs().max().item() <= TOL


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    model, io = tiny
    x = io["x"][:, :, :2]  # 2 frames keep it quick
    ctx = io["context"]

    def grads():
        model.zero_grad()
        model(x, io["timesteps"], ctx, io["fs"]).square().mean().backward()
        return model.conv_in.weight.grad.clone()

    plain = grads()
    model.enable_gradient_checkpointing()
    try:
        checkpointed = grads()
    finally:
        model.disable_gradient_checkpointing()
        model.zero_grad(set_to_none=True)
    assert plain.abs().max() > 0
    assert torch.allclose(plain, checkpointed, atol=1e-6)


def test_full_size_parameter_count_matches_release(lvdm_fixtures):
    keys = json.loads((lvdm_fixtures / "full_keys.json").read_text())["keys"]
    prefix = "model.diffusion_model."
    expected = sum(torch.Size(s).numel() for k, s in keys.items() if k.startswith(prefix))
    with torch.device("meta"):
        model = RepairUNet3DModel(**FULL_UNET_CONFIG)
    assert sum(p.numel() for p in model.parameters()) == expected == 1_438_854_980


def test_unsupported_original_options_are_refused():
    params = dict(FULL_UNET_CONFIG, use_scale_shift_norm=True)
    with pytest.raises(GenFusionError, match="use_scale_shift_norm"):
        RepairUNet3DModel.config_from_lvdm(params)
    with pytest.raises(GenFusionError, match="unknown UNet option"):
        RepairUNet3DModel.config_from_lvdm(dict(FULL_UNET_CONFIG, text_width=3))


def test_per_frame_context_layout_of_the_original():
    # 77 text tokens + 16 image tokens per frame: each frame gets the text and its own 16 tokens
    # (DynamiCrafter's path; GenFusion's 256-token context is repeated whole for every frame)
    frames, width = 3, 4
    context = torch.randn(2, 77 + 16 * frames, width)
    with torch.device("meta"):
        model = RepairUNet3DModel(
            model_channels=32, channel_mult=[1], attention_resolutions=[], context_dim=4
        )
    expanded = model._expand_context(context, frames)
    assert expanded.shape == (2 * frames, 77 + 16, width)
    assert torch.equal(expanded[4, :77], context[1, :77])
    assert torch.equal(expanded[4, 77:], context[1, 77 + 16 : 77 + 32])
    resampled = torch.randn(2, 256, width)
    whole = model._expand_context(resampled, frames)
    assert whole.shape == (2 * frames, 256, width) and torch.equal(whole[5], resampled[1])
