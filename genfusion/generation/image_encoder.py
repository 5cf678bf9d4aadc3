"""The reference image's CLIP tokens: OpenCLIP ViT-H-14 image tower as a transformers
``CLIPVisionModel``, with the original preprocessing reproduced without kornia.

``encode_reference(encoder, image)`` gives all 257 tokens of the last transformer layer, before
the final LayerNorm (= HF ``last_hidden_state``; HF's ``pre_layrnorm`` is OpenCLIP's ``ln_pre``,
applied right after the position embedding in both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224  # the tower's input side; the reference is squashed (not cropped) to it

# OpenCLIP's ViT-H-14 model config (open_clip/model_configs/ViT-H-14.json).
VIT_H14_OPENCLIP_CONFIG: dict = {
    "embed_dim": 1024,
    "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
}


def clip_vision_config_from_openclip(openclip_config: dict) -> CLIPVisionConfig:
    """transformers config of the image tower described by an OpenCLIP model config."""
    vision = openclip_config["vision_cfg"]
    width = vision["width"]
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=int(width * vision.get("mlp_ratio", 4.0)),
        num_hidden_layers=vision["layers"],
        num_attention_heads=width // vision.get("head_width", 64),
        image_size=vision["image_size"],
        patch_size=vision["patch_size"],
        projection_dim=openclip_config["embed_dim"],
        hidden_act="gelu",  # OpenCLIP ViT-H uses exact GELU, not OpenAI's quick_gelu
        layer_norm_eps=1e-5,
    )


def vit_h14_vision_config() -> CLIPVisionConfig:
    """The released model's image tower (ViT-H-14: 32 layers, width 1280, 16 heads)."""
    return clip_vision_config_from_openclip(VIT_H14_OPENCLIP_CONFIG)


def _gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # same arithmetic as kornia.filters.gaussian (sigma as a tensor of the input dtype)
    sigma_t = torch.tensor(sigma, dtype=dtype, device=device)
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    gauss = torch.exp(-x.pow(2.0) / (2 * sigma_t.pow(2.0)))
    return gauss / gauss.sum()


def _antialias_blur(image: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """kornia's resize antialiasing: a separable Gaussian (reflect padding), sigma =
    max((scale - 1) / 2, 0.001) and kernel int(max(4 sigma, 3)) made odd, per axis."""
    h, w = image.shape[-2:]
    factors = (h / out_size[0], w / out_size[1])
    if max(factors) <= 1:
        return image  # kornia blurs only when downscaling
    sigmas = (max((factors[0] - 1.0) / 2.0, 0.001), max((factors[1] - 1.0) / 2.0, 0.001))
    sizes = [int(max(2.0 * 2 * s, 3)) for s in sigmas]
    sizes = [s + 1 if s % 2 == 0 else s for s in sizes]
    channels = image.shape[1]
    kernel_y = _gaussian_kernel1d(sizes[0], sigmas[0], image.dtype, image.device)
    kernel_x = _gaussian_kernel1d(sizes[1], sigmas[1], image.dtype, image.device)
    # horizontal pass first, then vertical, as kornia's filter2d_separable
    out = F.pad(image, (sizes[1] // 2, sizes[1] // 2, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel_x.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, sizes[0] // 2, sizes[0] // 2), mode="reflect")
    return F.conv2d(out, kernel_y.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def preprocess_reference(image: torch.Tensor, size: int = CLIP_SIZE) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, 3, size, size] CLIP input, exactly as the original:
    antialiased bicubic resize with align_corners=True (aspect ratio squashed), (x + 1) / 2,
    then the CLIP mean / std."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected a [B, 3, H, W] image, got shape {tuple(image.shape)}")
    out_size = (size, size)
    x = image
    if tuple(x.shape[-2:]) != out_size:
        x = _antialias_blur(x, out_size)
        x = F.interpolate(x, size=out_size, mode="bicubic", align_corners=True)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def encode_reference(encoder: CLIPVisionModel, image: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> all tokens of the last layer before the final LayerNorm,
    [B, 1 + (224/14)^2 = 257, width]. The unconditional branch uses ``zeros_like(image)``."""
    param = next(encoder.parameters())
    pixels = preprocess_reference(image.to(torch.float32)).to(device=param.device, dtype=param.dtype)
    return encoder(pixel_values=pixels).last_hidden_state
