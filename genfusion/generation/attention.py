"""Attention pieces of the repair UNet: the IP-adapter style context split, the spatial and the
temporal transformers (LVDM / DynamiCrafter layout, built on diffusers ``Attention``).

Every attention runs through ``F.scaled_dot_product_attention`` (diffusers ``AttnProcessor2_0``
or :class:`SplitContextAttnProcessor`). :class:`EinsumAttnProcessor` is the plain
softmax(QK^T/sqrt(d))V formula of the original code, kept as the reference that tests compare
SDPA against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

# The original UNet always splits the cross-attention context here: tokens [0, 77) are "text"
# (CLIP text length), the rest are image tokens with their own key/value projections.
TEXT_CONTEXT_LEN = 77


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, H*D] -> [B, H, N, D]."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, N, D] -> [B, N, H*D]."""
    batch, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * dim)


def _einsum_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The original code's attention formula on [B, H, N, D] tensors (reference only)."""
    scale = q.shape[-1] ** -0.5
    weights = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    return torch.einsum("bhij,bhjd->bhid", weights.softmax(dim=-1), v)


class SplitContextAttnProcessor:
    """Cross-attention whose context is split at ``attn.text_context_len``.

    Tokens before the split go through ``to_k/to_v``, the rest through ``to_k_ip/to_v_ip``; both
    attentions share the query and their outputs are summed (image part times
    ``attn.image_scale``) before ``to_out``. With ``use_sdpa=False`` the einsum formula is used.
    Self-attention (no context) falls back to the plain path.
    """

    def __init__(self, use_sdpa: bool = True):
        self.use_sdpa = use_sdpa  # False: the reference einsum formula (for tests)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.use_sdpa:
            return F.scaled_dot_product_attention(q, k, v)
        return _einsum_attention(q, k, v)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("the repair UNet's attention takes no mask")
        heads = attn.heads
        query = _split_heads(attn.to_q(hidden_states), heads)
        split_ip = getattr(attn, "to_k_ip", None) is not None and encoder_hidden_states is not None
        if encoder_hidden_states is None:
            context = hidden_states
        elif split_ip:
            context = encoder_hidden_states[:, : attn.text_context_len]
        else:
            # without image projections the original keeps only the text part of a context
            context = encoder_hidden_states[:, :TEXT_CONTEXT_LEN]
        key = _split_heads(attn.to_k(context), heads)
        value = _split_heads(attn.to_v(context), heads)
        out = self._attend(query, key, value)
        if split_ip:
            image_context = encoder_hidden_states[:, attn.text_context_len :]
            if image_context.shape[1] > 0:
                key_ip = _split_heads(attn.to_k_ip(image_context), heads)
                value_ip = _split_heads(attn.to_v_ip(image_context), heads)
                out = out + attn.image_scale * self._attend(query, key_ip, value_ip)
        out = _merge_heads(out).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


class EinsumAttnProcessor(SplitContextAttnProcessor):
    """The original einsum attention, for parity tests of the SDPA path."""

    def __init__(self):
        super().__init__(use_sdpa=False)


class ImageCrossAttention(Attention):
    """diffusers ``Attention`` plus the image key/value projections of the original UNet."""

    def __init__(
        self,
        query_dim: int,
        context_dim: int,
        heads: int,
        dim_head: int,
        dropout: float = 0.0,
        text_context_len: int = TEXT_CONTEXT_LEN,
        image_scale: float = 1.0,
    ):
        super().__init__(
            query_dim=query_dim,
            cross_attention_dim=context_dim,
            heads=heads,
            dim_head=dim_head,
            dropout=dropout,
            bias=False,
            processor=SplitContextAttnProcessor(),
        )
        inner_dim = heads * dim_head
        self.to_k_ip = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v_ip = nn.Linear(context_dim, inner_dim, bias=False)
        self.text_context_len = text_context_len  # where the context splits into text | image
        self.image_scale = image_scale  # weight of the image attention in the sum (1.0 here)


def make_attention(query_dim: int, heads: int, dim_head: int, dropout: float, context_dim: int | None = None):
    """A plain (self- or cross-) attention: no bias on q/k/v, bias on the output, SDPA."""
    return Attention(
        query_dim=query_dim,
        cross_attention_dim=context_dim,
        heads=heads,
        dim_head=dim_head,
        dropout=dropout,
        bias=False,
        processor=AttnProcessor2_0(),
    )


class TransformerBlock(nn.Module):
    """LayerNorm -> attn1 (self) -> LayerNorm -> attn2 -> LayerNorm -> GEGLU feed-forward.

    ``attn2`` is a cross-attention (optionally with the image split) when ``context_dim`` is
    given, otherwise a second self-attention (the temporal blocks).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        dropout: float = 0.0,
        context_dim: int | None = None,
        image_cross_attention: bool = False,
    ):
        super().__init__()
        self.attn1 = make_attention(dim, heads, dim_head, dropout)
        if context_dim is not None and image_cross_attention:
            self.attn2 = ImageCrossAttention(dim, context_dim, heads, dim_head, dropout)
        else:
            self.attn2 = make_attention(dim, heads, dim_head, dropout, context_dim)
            if context_dim is not None:
                # the original keeps only the first 77 tokens when there is no image branch
                self.attn2.set_processor(SplitContextAttnProcessor())
        self.ff = FeedForward(dim, dropout=dropout, activation_fn="geglu")
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.is_cross = context_dim is not None  # attn2 attends to the context

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), encoder_hidden_states=context if self.is_cross else None) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Attention over the pixels of each frame; attn2 attends to the image context."""

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        context_dim: int,
        depth: int = 1,
        dropout: float = 0.0,
        image_cross_attention: bool = True,
    ):
        super().__init__()
        inner = heads * dim_head
        # eps 1e-6 here (1e-5 in the ResBlocks): quirk 5 of the fixtures README
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        # the converter turns the original's 1x1 conv (use_linear=False) into this Linear too
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, dim_head, dropout, context_dim, image_cross_attention)
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] frames; context: [N, L, D] (already repeated per frame)."""
        n, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        tokens = self.proj_out(tokens)
        return tokens.reshape(n, h, w, c).permute(0, 3, 1, 2) + x


class TemporalTransformer(nn.Module):
    """Self-attention over the frames of each pixel (both attn1 and attn2 are self-attention).

    The GroupNorm runs on the whole [B, C, T, H, W] clip, so its statistics span all frames.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int = 1, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, dim_head, dropout) for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: [B*T, C, H, W] with frames of one clip consecutive; returns the same layout."""
        bt, c, h, w = x.shape
        b = bt // num_frames
        clip = x.reshape(b, num_frames, c, h, w).transpose(1, 2)  # [B, C, T, H, W]
        normed = self.norm(clip)
        tokens = normed.permute(0, 3, 4, 2, 1).reshape(b * h * w, num_frames, c)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens)
        out = tokens.reshape(b, h, w, num_frames, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)
        return out + x


def set_reference_attention(module: nn.Module, reference: bool) -> None:
    """Switch every attention under ``module`` between SDPA and the einsum reference formula."""
    for sub in module.modules():
        if not isinstance(sub, Attention):
            continue
        if reference:
            sub.set_processor(EinsumAttnProcessor())
        elif sub.is_cross_attention:
            sub.set_processor(SplitContextAttnProcessor())
        else:
            sub.set_processor(AttnProcessor2_0())
