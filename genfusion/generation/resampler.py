"""The image-projection Resampler (``image_proj_model``): CLIP image tokens -> cross-attention
context of ``num_queries`` learned queries per frame (a Perceiver / IP-adapter resampler).

[B, 257, embedding_dim] -> [B, num_queries * video_length, output_dim].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# The released GenFusion Resampler (``image_proj_stage_config.params``).
FULL_RESAMPLER_CONFIG: dict = {
    "dim": 1024,
    "depth": 4,
    "dim_head": 64,
    "heads": 12,
    "num_queries": 16,
    "embedding_dim": 1280,
    "output_dim": 1024,
    "ff_mult": 4,
    "video_length": 16,
}


class PerceiverAttention(nn.Module):
    """Queries from the latents; keys and values from ``cat(image tokens, latents)``.

    The original scales q and k by d^-1/4 each and runs the softmax in fp32; SDPA's single
    1/sqrt(d) scale is the same product and its kernels accumulate in fp32.
    """

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)  # first half k, second half v
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class ResamplerLayer(nn.Module):
    """Perceiver attention then LN -> Linear -> GELU -> Linear (no biases), both residual."""

    def __init__(self, dim: int, dim_head: int, heads: int, ff_mult: int):
        super().__init__()
        self.attn = PerceiverAttention(dim, dim_head, heads)
        inner = int(dim * ff_mult)
        # indices 0/1/3 match the original Sequential, so the converter maps them verbatim
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False)
        )

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        latents = self.attn(x, latents) + latents
        return self.ff(latents) + latents


class ImageProjResampler(ModelMixin, ConfigMixin):
    """CLIP image tokens -> per-frame query tokens for the UNet's image cross-attention."""

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        dim: int = 1024,  # width of the learned queries
        depth: int = 4,  # number of attention + feed-forward layers
        dim_head: int = 64,  # channels per head
        heads: int = 12,  # attention heads
        num_queries: int = 16,  # queries per frame
        embedding_dim: int = 1280,  # width of the CLIP tokens coming in
        output_dim: int = 1024,  # width of the context tokens going out (UNet context_dim)
        ff_mult: int = 4,  # feed-forward expansion
        video_length: int | None = 16,  # frames: num_queries per frame (None: one image)
    ):
        super().__init__()
        total_queries = num_queries * (video_length or 1)
        self.latents = nn.Parameter(torch.randn(1, total_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(ResamplerLayer(dim, dim_head, heads, ff_mult) for _ in range(depth))

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """image_tokens [B, N, embedding_dim] -> [B, num_queries * video_length, output_dim]."""
        latents = self.latents.expand(image_tokens.shape[0], -1, -1).to(image_tokens.dtype)
        x = self.proj_in(image_tokens)
        for layer in self.layers:
            latents = layer(x, latents)
        return self.norm_out(self.proj_out(latents))
