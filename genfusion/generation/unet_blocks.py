"""Convolutional blocks of the repair UNet: the ResBlock with its temporal convolution, and the
layer container that chains ResBlock -> spatial transformer -> temporal transformer -> resample.

Frames travel as a [B*T, C, H, W] batch (frames of one clip consecutive); the temporal parts
reshape to [B, C, T, H, W] internally. Written here rather than taken from diffusers because the
original ResBlock adds the time embedding without scale-shift and ends with a 4-stage temporal
conv, which no diffusers block does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.downsampling import Downsample2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from genfusion.generation.attention import SpatialTransformer, TemporalTransformer


class FP32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back, as the original ResBlocks and output head do
    (matters under fp16/bf16, a no-op in float32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(
            x.float(),
            self.num_groups,
            self.weight.float() if self.weight is not None else None,
            self.bias.float() if self.bias is not None else None,
            self.eps,
        ).to(x.dtype)


class TemporalConvStage(nn.Module):
    """GroupNorm -> SiLU -> [dropout] -> Conv3d with a (3, 1, 1) kernel along time."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.dropout(F.silu(self.norm(x))))


class TemporalConvBlock(nn.Module):
    """Four temporal conv stages with an identity residual (the first stage has no dropout)."""

    def __init__(self, channels: int, dropout: float = 0.1):
        super().__init__()
        self.stages = nn.ModuleList(TemporalConvStage(channels, 0.0 if i == 0 else dropout) for i in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, T, H, W]."""
        h = x
        for stage in self.stages:
            h = stage(h)
        return x + h


class ResBlock3D(nn.Module):
    """GN -> SiLU -> conv3x3, + Linear(SiLU(emb)), GN -> SiLU -> dropout -> conv3x3, + skip;
    then the temporal conv block on the whole clip."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        dropout: float,
        temporal_conv: bool = True,
    ):
        super().__init__()
        self.norm1 = FP32GroupNorm(32, in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(emb_channels, out_channels)
        self.norm2 = FP32GroupNorm(32, out_channels, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        # the original hard-codes dropout 0.1 in the temporal conv whatever the UNet's dropout
        self.temporal_conv = TemporalConvBlock(out_channels, dropout=0.1) if temporal_conv else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(emb)).to(h.dtype)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        h = skip + h
        if self.temporal_conv is not None:
            bt, c, height, width = h.shape
            clip = h.reshape(bt // num_frames, num_frames, c, height, width).transpose(1, 2)
            clip = self.temporal_conv(clip)
            h = clip.transpose(1, 2).reshape(bt, c, height, width)
        return h


class VideoUNetLayer(nn.Module):
    """One entry of the original ``input_blocks`` / ``output_blocks`` / ``middle_block``: some of
    resnet, attention (spatial), temporal, a second resnet (middle only), downsample, upsample.

    ``lvdm_order`` lists the children in the original's order: index j of the original
    ``TimestepEmbedSequential`` is child ``lvdm_order[j]`` here (the converter relies on it).
    """

    def __init__(self, parts: list[tuple[str, nn.Module]]):
        super().__init__()
        self.lvdm_order = [name for name, _ in parts]
        for name, module in parts:
            self.add_module(name, module)

    def forward(
        self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        for name in self.lvdm_order:
            module = getattr(self, name)
            if isinstance(module, ResBlock3D):
                h = module(h, emb, num_frames)
            elif isinstance(module, SpatialTransformer):
                h = module(h, context)
            elif isinstance(module, TemporalTransformer):
                h = module(h, num_frames)
            else:  # Downsample2D / Upsample2D
                h = module(h)
        return h


def make_downsample(channels: int) -> Downsample2D:
    """Strided 3x3 conv (padding 1), stored as ``conv``."""
    return Downsample2D(channels, use_conv=True, out_channels=channels, padding=1, name="op")


def make_upsample(channels: int) -> Upsample2D:
    """Nearest x2 then 3x3 conv, stored as ``conv``."""
    return Upsample2D(channels, use_conv=True, out_channels=channels, name="conv")
