"""The repair model's denoiser: the DynamiCrafter / LVDM 3D UNet as a diffusers model.

``RepairUNet3DModel(sample [B, 8, T, H, W], timestep [B], context [B, L, D], fs [B] | None)``
returns the v-prediction [B, 4, T, H, W]. The 8 input channels are the noisy latent and the
latent of the artifact-prone RGB-D clip (``c_concat``); the context is the Resampler output of
the reference image's CLIP tokens. Config field names mirror the original ``UNetModel`` so a
LVDM config maps one to one; :data:`FULL_UNET_CONFIG` is the released model's.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from genfusion.errors import GenFusionError
from genfusion.generation.attention import TEXT_CONTEXT_LEN, SpatialTransformer, TemporalTransformer
from genfusion.generation.unet_blocks import (
    FP32GroupNorm,
    ResBlock3D,
    VideoUNetLayer,
    make_downsample,
    make_upsample,
)

# The released GenFusion UNet (``model.params.unet_config.params`` of generation_infer.yaml).
FULL_UNET_CONFIG: dict = {
    "in_channels": 8,
    "out_channels": 4,
    "model_channels": 320,
    "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "dropout": 0.1,
    "num_head_channels": 64,
    "transformer_depth": 1,
    "context_dim": 1024,
    "use_linear": True,
    "temporal_conv": True,
    "temporal_attention": True,
    "temporal_selfatt_only": True,
    "use_relative_position": False,
    "use_causal_attention": False,
    "temporal_length": 16,
    "addition_attention": True,
    "image_cross_attention": True,
    "default_fs": 30,
    "fs_condition": True,
}

# Original options this port implements only at one value: name -> the supported value.
_FIXED_OPTIONS = {
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "use_relative_position": False,
    "use_causal_attention": False,
    "temporal_selfatt_only": True,
    "tempspatial_aware": False,
    "image_cross_attention_scale_learnable": False,
    "conv_resample": True,
    "dims": 2,
    "use_fp16": False,
}
# Original options that only steer training-time behaviour and are dropped.
_IGNORED_OPTIONS = {"use_checkpoint"}

# When the context has 77 text tokens plus this many image tokens per frame, the original gives
# every frame its own image tokens (DynamiCrafter's per-frame path; GenFusion never takes it).
_IMAGE_TOKENS_PER_FRAME = 16


class RepairUNet3DModel(ModelMixin, ConfigMixin):
    """DynamiCrafter-architecture video UNet (see the module docstring)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,  # noisy latent (4) + artifact-clip latent (4)
        out_channels: int = 4,  # v-prediction channels
        model_channels: int = 320,  # width of the first level
        attention_resolutions: Sequence[int] = (4, 2, 1),  # downsample factors that get attention
        num_res_blocks: int = 2,  # ResBlocks per level (down path; up path has one more)
        channel_mult: Sequence[int] = (1, 2, 4, 4),  # width multiplier per level
        dropout: float = 0.1,  # dropout in ResBlocks and attention outputs (training only)
        num_head_channels: int = 64,  # channels per attention head (-1: use num_heads)
        num_heads: int = -1,  # heads per attention when num_head_channels == -1
        transformer_depth: int = 1,  # transformer blocks per spatial/temporal transformer
        context_dim: int = 1024,  # width of the cross-attention context tokens
        use_linear: bool = True,  # original used Linear (True) or 1x1 conv projections; same math
        temporal_conv: bool = True,  # TemporalConvBlock after every ResBlock
        temporal_attention: bool = True,  # TemporalTransformer after every SpatialTransformer
        temporal_selfatt_only: bool = True,  # temporal attn2 is self-attention (only True supported)
        use_relative_position: bool = False,  # relative position in temporal attention (unsupported)
        use_causal_attention: bool = False,  # causal temporal mask (unsupported)
        temporal_length: int = 16,  # frames per clip the model was trained on
        addition_attention: bool = True,  # the extra temporal transformer after conv_in (init_attn)
        image_cross_attention: bool = True,  # split the context at token 77 into text | image
        default_fs: int = 30,  # frame-stride / fps condition used when fs is None
        fs_condition: bool = True,  # embed fs and add it to the time embedding
    ):
        super().__init__()
        if temporal_selfatt_only is not True or use_relative_position or use_causal_attention:
            raise GenFusionError(
                "this UNet port supports only temporal_selfatt_only=True, no relative position and "
                "no causal temporal attention (the GenFusion settings)."
            )
        time_embed_dim = model_channels * 4
        self.gradient_checkpointing = False

        self.time_proj = Timesteps(model_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(model_channels, time_embed_dim)
        self.fps_embedding = TimestepEmbedding(model_channels, time_embed_dim) if fs_condition else None

        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        # init_attn: hard-coded 8 heads of num_head_channels, whatever the width
        self.init_attn = (
            TemporalTransformer(model_channels, 8, num_head_channels, transformer_depth)
            if addition_attention
            else None
        )

        def heads_for(ch: int) -> tuple[int, int]:
            if num_head_channels == -1:
                return num_heads, ch // num_heads
            return ch // num_head_channels, num_head_channels

        def attention_parts(ch: int) -> list[tuple[str, nn.Module]]:
            heads, dim_head = heads_for(ch)
            parts: list[tuple[str, nn.Module]] = [
                (
                    "attention",
                    SpatialTransformer(
                        ch, heads, dim_head, context_dim, transformer_depth, 0.0, image_cross_attention
                    ),
                )
            ]
            if temporal_attention:
                parts.append(("temporal", TemporalTransformer(ch, heads, dim_head, transformer_depth)))
            return parts

        def resnet(cin: int, cout: int) -> ResBlock3D:
            return ResBlock3D(cin, cout, time_embed_dim, dropout, temporal_conv)

        skip_channels = [model_channels]
        ch, ds = model_channels, 1
        self.down_layers = nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                parts: list[tuple[str, nn.Module]] = [("resnet", resnet(ch, mult * model_channels))]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    parts += attention_parts(ch)
                self.down_layers.append(VideoUNetLayer(parts))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.down_layers.append(VideoUNetLayer([("downsample", make_downsample(ch))]))
                skip_channels.append(ch)
                ds *= 2

        self.mid_block = VideoUNetLayer(
            [("resnet", resnet(ch, ch)), *attention_parts(ch), ("resnet2", resnet(ch, ch))]
        )

        self.up_layers = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                parts = [("resnet", resnet(ch + skip_channels.pop(), model_channels * mult))]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    parts += attention_parts(ch)
                if level and i == num_res_blocks:
                    parts.append(("upsample", make_upsample(ch)))
                    ds //= 2
                self.up_layers.append(VideoUNetLayer(parts))

        self.norm_out = FP32GroupNorm(32, ch, eps=1e-5)
        self.conv_out = nn.Conv2d(model_channels, out_channels, 3, padding=1)

    # ------------------------------------------------------------------ configs
    @classmethod
    def config_from_lvdm(cls, params: dict) -> dict:
        """Turn an original ``UNetModel`` params dict into this class's config, refusing options
        the port does not implement."""
        own_fields = set(inspect.signature(cls.__init__).parameters) - {"self"}
        config = {}
        for key, value in params.items():
            if key in _IGNORED_OPTIONS:
                continue
            if key in _FIXED_OPTIONS and value != _FIXED_OPTIONS[key]:
                raise GenFusionError(f"UNet option {key}={value!r} is not supported by this port.")
            if key in own_fields:
                config[key] = value
            elif key not in _FIXED_OPTIONS:
                raise GenFusionError(f"unknown UNet option {key!r}; is this a DynamiCrafter UNet config?")
        return config

    @classmethod
    def from_lvdm_config(cls, params: dict) -> RepairUNet3DModel:
        """Build (random weights) from an original ``UNetModel`` params dict."""
        return cls(**cls.config_from_lvdm(params))

    @classmethod
    def full_config(cls) -> dict:
        """The released GenFusion UNet's config."""
        return dict(FULL_UNET_CONFIG)

    # ------------------------------------------------------------------ forward
    def _expand_context(self, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        """[B, L, D] -> [B*T, L', D]: every frame sees the whole context, except in the original's
        per-frame layout (77 text tokens + 16 image tokens per frame)."""
        if context.shape[1] == TEXT_CONTEXT_LEN + num_frames * _IMAGE_TOKENS_PER_FRAME:
            text = context[:, :TEXT_CONTEXT_LEN].repeat_interleave(num_frames, dim=0)
            image = context[:, TEXT_CONTEXT_LEN:]
            b, _, d = image.shape
            image = image.reshape(b * num_frames, _IMAGE_TOKENS_PER_FRAME, d)
            return torch.cat([text, image], dim=1)
        return context.repeat_interleave(num_frames, dim=0)

    def _per_sample(self, value: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
        value = torch.as_tensor(value, device=device)
        if value.ndim == 0:
            value = value[None]
        if value.shape[0] == 1 and batch > 1:
            value = value.expand(batch)
        if value.ndim != 1 or value.shape[0] != batch:
            raise ValueError(f"expected one timestep/fs per sample ({batch}), got shape {tuple(value.shape)}")
        return value

    def _run(self, layer: nn.Module, *args) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(layer, *args)
        return layer(*args)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        context: torch.Tensor,
        fs: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """sample [B, in_channels, T, H, W], timestep [B] (or one value), context [B, L, D],
        fs [B] (or one value; None = default_fs) -> [B, out_channels, T, H, W].
        H and W must be divisible by 2**(levels-1)."""
        b, c, t, h, w = sample.shape
        dtype = sample.dtype
        timestep = self._per_sample(timestep, b, sample.device)
        emb = self.time_embedding(self.time_proj(timestep).to(dtype))
        if self.fps_embedding is not None:
            fs = self._per_sample(self.config.default_fs if fs is None else fs, b, sample.device)
            emb = emb + self.fps_embedding(self.time_proj(fs).to(dtype))
        emb = emb.repeat_interleave(t, dim=0)
        context = self._expand_context(context, t).to(dtype)

        x = sample.transpose(1, 2).reshape(b * t, c, h, w)  # frames of one clip consecutive
        hidden = self.conv_in(x)
        if self.init_attn is not None:
            hidden = self._run(self.init_attn, hidden, t)
        skips = [hidden]
        for layer in self.down_layers:
            hidden = self._run(layer, hidden, emb, context, t)
            skips.append(hidden)
        hidden = self._run(self.mid_block, hidden, emb, context, t)
        for layer in self.up_layers:
            hidden = self._run(layer, torch.cat([hidden, skips.pop()], dim=1), emb, context, t)
        out = self.conv_out(F.silu(self.norm_out(hidden)))
        return out.reshape(b, t, -1, h, w).transpose(1, 2)
