"""The checkpoint converter: the release's exact names and shapes (meta tensors), a tiny fake
checkpoint end to end, and refusals of anything else."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file
from transformers import CLIPVisionModel

from genfusion.errors import GenFusionError
from genfusion.generation.convert import (
    ComponentConfigs,
    _target_model,
    convert_checkpoint,
    convert_state_dict,
    read_checkpoint,
)
from genfusion.generation.image_encoder import encode_reference
from genfusion.generation.resampler import ImageProjResampler
from genfusion.generation.scheduler import GenFusionDDIMScheduler
from genfusion.generation.tiny_models import (
    tiny_component_configs,
    tiny_lvdm_state_dict,
    write_tiny_lvdm_checkpoint,
)
from genfusion.generation.unet import RepairUNet3DModel


class NotATensor:
    """A pickled Python object, as Lightning may store in hyper_parameters."""


@pytest.fixture(scope="module")
def release_keys(lvdm_fixtures) -> dict:
    return json.loads((lvdm_fixtures / "full_keys.json").read_text())


@pytest.fixture(scope="module")
def release_meta(release_keys) -> dict[str, torch.Tensor]:
    """The released checkpoint's state dict as meta tensors (names and shapes, no memory)."""
    return {k: torch.empty(s, device="meta") for k, s in release_keys["keys"].items()}


@pytest.fixture(scope="module")
def tiny_configs(lvdm_fixtures) -> ComponentConfigs:
    return tiny_component_configs(lvdm_fixtures)


@pytest.fixture(scope="module")
def tiny_state(lvdm_fixtures) -> dict[str, torch.Tensor]:
    return tiny_lvdm_state_dict(lvdm_fixtures)


@pytest.fixture(scope="module")
def converted(lvdm_fixtures, tiny_configs, tmp_path_factory):
    """A tiny fake release checkpoint converted into a diffusers folder."""
    root = tmp_path_factory.mktemp("convert")
    ckpt = write_tiny_lvdm_checkpoint(lvdm_fixtures, root / "epoch=59-step=34000.ckpt")
    return convert_checkpoint(ckpt, root / "genfusion-repair", configs=tiny_configs)


def test_every_release_tensor_is_accounted_for(release_keys, release_meta):
    result = convert_state_dict(release_meta)
    skipped = sum(result.skipped.values())
    assert result.consumed + skipped + len(result.schedule) == release_keys["num_tensors"] == 2520
    assert len(result.schedule) == 13
    assert skipped == 294 + 6 + 1  # text encoder, embedder text leftovers, CLIP projection
    configs = ComponentConfigs.full()
    for name, state in result.components.items():
        target = _target_model(name, getattr(configs, name)).state_dict()
        assert set(state) == set(target), name  # nothing left uninitialised
        assert all(state[k].shape == target[k].shape for k in state), name
    sizes = {name: sum(t.numel() for t in s.values()) for name, s in result.components.items()}
    per_prefix = release_keys["per_prefix"]
    assert sizes["unet"] == per_prefix["model.diffusion_model"]["numel"]
    assert sizes["image_proj"] == per_prefix["image_proj_model"]["numel"]
    assert sizes["vae"] == per_prefix["first_stage_model"]["numel"]


def test_deepspeed_and_framestride_variants(tmp_path, tiny_state, tiny_configs):
    renamed = {k.replace(".fps_embedding.", ".framestride_embed."): v for k, v in tiny_state.items()}
    assert any("framestride_embed" in k for k in renamed)
    path = tmp_path / "deepspeed.pt"
    torch.save({"module": {"_forward_module." + k: v for k, v in renamed.items()}}, path)
    state = read_checkpoint(path)
    assert set(state) == set(renamed)
    a = convert_state_dict(state, tiny_configs).components["unet"]
    b = convert_state_dict(tiny_state, tiny_configs).components["unet"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_converted_folder_reproduces_the_fixtures(converted, lvdm_fixtures):
    names = {p.name for p in converted.iterdir()}
    assert {"unet", "image_proj", "image_encoder", "vae", "scheduler", "model_index.json"} <= names
    assert not list(converted.parent.glob(".genfusion-repair.tmp-*"))
    index = json.loads((converted / "model_index.json").read_text())
    assert index["unet"] == ["genfusion.generation.unet", "RepairUNet3DModel"]
    report = json.loads((converted / "conversion_report.json").read_text())
    assert sum(report["skipped"].values()) == 4 + 6 + 1

    unet = RepairUNet3DModel.from_pretrained(converted / "unet").eval()
    io = load_file(str(lvdm_fixtures / "tiny_unet_io.safetensors"))
    with torch.no_grad():
        out = unet(io["case2.x"], io["case2.timesteps"], io["case2.context"], io["case2.fs"])
    assert (out - io["case2.out"]).abs().max().item() <= 1e-5

    resampler = ImageProjResampler.from_pretrained(converted / "image_proj").eval()
    rio = load_file(str(lvdm_fixtures / "tiny_resampler_io.safetensors"))
    with torch.no_grad():
        context = resampler(rio["clip_tokens"])
    assert (context - rio["resampler_out"]).abs().max().item() <= 1e-5

    encoder = CLIPVisionModel.from_pretrained(converted / "image_encoder").eval()
    eio = load_file(str(lvdm_fixtures / "tiny_embedder_io.safetensors"))
    image = (eio["ref_image_uint8"].float() / 255 - 0.5) * 2
    with torch.no_grad():
        tokens = encode_reference(encoder, image)
    assert (tokens - eio["tokens"]).abs().max().item() <= 1e-5

    vae = AutoencoderKL.from_pretrained(converted / "vae")
    source = tiny_lvdm_state_dict(lvdm_fixtures)
    for key, value in vae.state_dict().items():
        assert torch.equal(value, source["first_stage_model." + key]), key

    scheduler = GenFusionDDIMScheduler.from_pretrained(converted / "scheduler")
    assert scheduler.config.prediction_type == "v_prediction"
    assert torch.equal(scheduler.alphas_cumprod, source["alphas_cumprod"])


def test_existing_output_is_kept_unless_overwrite(converted, lvdm_fixtures, tiny_configs, tmp_path):
    ckpt = write_tiny_lvdm_checkpoint(lvdm_fixtures, tmp_path / "tiny.ckpt")
    with pytest.raises(GenFusionError, match="already exists"):
        convert_checkpoint(ckpt, converted, configs=tiny_configs)
    out = convert_checkpoint(ckpt, tmp_path / "out", configs=tiny_configs, dtype=torch.float16)
    out = convert_checkpoint(ckpt, out, configs=tiny_configs, dtype=torch.float16, overwrite=True)
    stored = load_file(str(next((out / "unet").glob("*.safetensors"))))
    assert {t.dtype for t in stored.values()} == {torch.float16}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.ckpt"]


def _refused(state, configs, match):
    with pytest.raises(GenFusionError, match=match):
        convert_state_dict(state, configs)


def test_truncated_checkpoint_is_refused(tiny_state, tiny_configs):
    truncated = {k: v for k, v in tiny_state.items() if "output_blocks.8" not in k}
    _refused(truncated, tiny_configs, r"lacks \d+ of the \d+ unet tensors")
    no_proj = {k: v for k, v in tiny_state.items() if not k.startswith("image_proj_model.")}
    _refused(no_proj, tiny_configs, "no tensors under image_proj_model.")


def test_other_models_are_refused(tiny_state, tiny_configs, release_meta):
    # the tiny checkpoint read with the full-size architecture: every shape differs
    _refused(tiny_state, ComponentConfigs.full(), "has shape .* expects")
    # a DynamiCrafter / LDM checkpoint: VAE in the original LDM naming
    ldm_vae = dict(tiny_state)
    ldm_vae["first_stage_model.encoder.down.0.block.0.norm1.weight"] = torch.zeros(32)
    _refused(
        ldm_vae, tiny_configs, "first_stage_model.encoder.down.0.block.0.norm1.weight has no place in the vae"
    )
    stray = dict(tiny_state, **{"model_ema.decay": torch.tensor(0.999)})
    _refused(stray, tiny_configs, "belong to no known part")
    extra_block = dict(tiny_state)
    extra_block["model.diffusion_model.input_blocks.1.3.weight"] = torch.zeros(1)
    _refused(extra_block, tiny_configs, "not part of a GenFusion unet")


def test_wrong_schedule_is_refused(tmp_path, tiny_state, tiny_configs):
    state = dict(tiny_state, betas=torch.linspace(1e-4, 2e-2, 1000))
    torch.save({"state_dict": state}, tmp_path / "other.ckpt")
    with pytest.raises(GenFusionError, match="diffusion schedule"):
        convert_checkpoint(tmp_path / "other.ckpt", tmp_path / "out", configs=tiny_configs)
    assert not (tmp_path / "out").exists()


def test_unreadable_files_are_refused(tmp_path, tiny_state):
    with pytest.raises(GenFusionError, match="not found"):
        read_checkpoint(tmp_path / "missing.ckpt")
    for name in ("junk.ckpt", "junk.safetensors"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
        with pytest.raises(GenFusionError, match="cannot read"):
            read_checkpoint(tmp_path / name)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hparams": NotATensor()}, tmp_path / "pickled.ckpt")
    with pytest.raises(GenFusionError, match="--trust-checkpoint"):
        read_checkpoint(tmp_path / "pickled.ckpt")
    assert set(read_checkpoint(tmp_path / "pickled.ckpt", trust_pickle=True)) == {"x"}
    torch.save({"optimizer": [1, 2]}, tmp_path / "nostate.ckpt")
    with pytest.raises(GenFusionError, match="no state_dict"):
        read_checkpoint(tmp_path / "nostate.ckpt")


def test_conv_projections_become_linear_but_other_shapes_do_not(tiny_state, tiny_configs):
    # init_attn (use_linear=False in the original) stores 1x1 Conv1d weights; ours are Linear
    key = "model.diffusion_model.init_attn.0.proj_in.weight"
    assert tiny_state[key].shape == (128, 32, 1)
    unet = convert_state_dict(tiny_state, tiny_configs).components["unet"]
    assert unet["init_attn.proj_in.weight"].shape == (128, 32)
    bad = dict(tiny_state, **{key: torch.zeros(128, 32, 3)})
    _refused(bad, tiny_configs, r"shape \(128, 32, 3\)")
