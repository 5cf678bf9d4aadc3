"""Key maps from the original LVDM / OpenCLIP parameter names to this package's models.

Each ``*_key`` function maps one original key (without its checkpoint prefix) to the target
model's key, or raises ``KeyError`` for a name the component does not have. Pure functions of
names; :mod:`genfusion.generation.convert` applies them and checks shapes.
"""

from __future__ import annotations

import re

from torch import nn

# ResBlock sub-layers: original Sequential index -> our name
_RESNET_RULES = [
    (re.compile(r"^in_layers\.0\.(.*)$"), r"norm1.\1"),
    (re.compile(r"^in_layers\.2\.(.*)$"), r"conv1.\1"),
    (re.compile(r"^emb_layers\.1\.(.*)$"), r"time_emb_proj.\1"),
    (re.compile(r"^out_layers\.0\.(.*)$"), r"norm2.\1"),
    (re.compile(r"^out_layers\.3\.(.*)$"), r"conv2.\1"),
    (re.compile(r"^skip_connection\.(.*)$"), r"conv_shortcut.\1"),
    # the original really spells it "temopral_conv"; accept the correct spelling as well
    (re.compile(r"^tem(?:opral|poral)_conv\.conv1\.0\.(.*)$"), r"temporal_conv.stages.0.norm.\1"),
    (re.compile(r"^tem(?:opral|poral)_conv\.conv1\.2\.(.*)$"), r"temporal_conv.stages.0.conv.\1"),
]
# stages 2..4 have a dropout, so their conv sits at index 3
_TEMPORAL_CONV_STAGE = re.compile(r"^tem(?:opral|poral)_conv\.conv([234])\.([03])\.(.*)$")


def _resnet_key(rest: str) -> str:
    stage = _TEMPORAL_CONV_STAGE.match(rest)
    if stage:
        index, layer, leaf = stage.groups()
        part = "norm" if layer == "0" else "conv"
        return f"temporal_conv.stages.{int(index) - 1}.{part}.{leaf}"
    for pattern, replacement in _RESNET_RULES:
        if pattern.match(rest):
            return pattern.sub(replacement, rest)
    raise KeyError(rest)


def _child_key(child_name: str, rest: str) -> str:
    if child_name.startswith("resnet"):
        return f"{child_name}.{_resnet_key(rest)}"
    if child_name == "downsample":
        if not rest.startswith("op."):
            raise KeyError(rest)
        return f"downsample.conv.{rest[3:]}"
    if child_name == "upsample":
        if not rest.startswith("conv."):
            raise KeyError(rest)
        return f"upsample.{rest}"
    return f"{child_name}.{rest}"  # spatial / temporal transformers keep the original names


_BLOCK = re.compile(r"^(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(.*)$")
_MIDDLE = re.compile(r"^middle_block\.(\d+)\.(.*)$")
_EMBED = re.compile(r"^(time_embed|fps_embedding|framestride_embed)\.([02])\.(.*)$")


def unet_key(key: str, unet: nn.Module) -> str:
    """Original ``UNetModel`` key -> ``RepairUNet3DModel`` key (``unet`` gives the layer layout;
    a meta-device instance is enough)."""
    match = _EMBED.match(key)
    if match:
        name, index, leaf = match.groups()
        target = "time_embedding" if name == "time_embed" else "fps_embedding"  # framestride = fps
        return f"{target}.linear_{1 if index == '0' else 2}.{leaf}"
    if key.startswith("input_blocks.0.0."):
        return "conv_in." + key[len("input_blocks.0.0.") :]
    if key.startswith("init_attn.0."):
        return "init_attn." + key[len("init_attn.0.") :]
    if key.startswith("out.0."):
        return "norm_out." + key[len("out.0.") :]
    if key.startswith("out.2."):
        return "conv_out." + key[len("out.2.") :]
    match = _BLOCK.match(key)
    if match:
        group, index, child, rest = match.groups()
        if group == "input_blocks":
            layers, position = unet.down_layers, int(index) - 1
        else:
            layers, position = unet.up_layers, int(index)
        if not 0 <= position < len(layers):
            raise KeyError(key)
        layer = layers[position]
        prefix = "down_layers" if group == "input_blocks" else "up_layers"
    else:
        match = _MIDDLE.match(key)
        if not match:
            raise KeyError(key)
        child, rest = match.groups()
        layer, prefix, position = unet.mid_block, "mid_block", None
    order = layer.lvdm_order
    if int(child) >= len(order):
        raise KeyError(key)
    inner = _child_key(order[int(child)], rest)
    return f"{prefix}.{inner}" if position is None else f"{prefix}.{position}.{inner}"


def resampler_key(key: str) -> str:
    """Original ``Resampler`` key -> ``ImageProjResampler`` key."""
    if key == "latents" or re.match(r"^(proj_in|proj_out|norm_out)\.(weight|bias)$", key):
        return key
    match = re.match(r"^layers\.(\d+)\.([01])\.(.*)$", key)
    if not match:
        raise KeyError(key)
    index, part, rest = match.groups()
    if part == "0":
        return f"layers.{index}.attn.{rest}"
    if not re.match(r"^[013]\.(weight|bias)$", rest):
        raise KeyError(key)
    return f"layers.{index}.ff.{rest}"


_CLIP_TOP = {
    "conv1.weight": "embeddings.patch_embedding.weight",
    "class_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_pre.weight": "pre_layrnorm.weight",
    "ln_pre.bias": "pre_layrnorm.bias",
    "ln_post.weight": "post_layernorm.weight",
    "ln_post.bias": "post_layernorm.bias",
}
_CLIP_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def clip_visual_keys(key: str) -> list[str]:
    """OpenCLIP ``visual.*`` key (without ``visual.``) -> transformers ``CLIPVisionModel`` keys
    (without any ``vision_model.`` prefix). ``attn.in_proj_*`` gives three keys (q, k, v)."""
    if key in _CLIP_TOP:
        return [_CLIP_TOP[key]]
    match = re.match(r"^transformer\.resblocks\.(\d+)\.(.*)\.(weight|bias)$", key)
    if not match:
        raise KeyError(key)
    index, name, leaf = match.groups()
    base = f"encoder.layers.{index}"
    if name in _CLIP_BLOCK:
        return [f"{base}.{_CLIP_BLOCK[name]}.{leaf}"]
    raise KeyError(key)


def clip_in_proj_keys(key: str) -> list[str] | None:
    """``transformer.resblocks.N.attn.in_proj_{weight,bias}`` -> the q, k, v projection keys."""
    match = re.match(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$", key)
    if not match:
        return None
    index, leaf = match.groups()
    return [f"encoder.layers.{index}.self_attn.{p}_proj.{leaf}" for p in ("q", "k", "v")]
