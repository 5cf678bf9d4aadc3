"""LPIPS-VGG (Zhang et al. 2018), computed as the LPIPS reference code (v0.1) computes it.

Pieces: a fixed scaling layer on inputs in [-1, 1]; our own :class:`~genfusion.eval.vgg.VGG16Features`
holding torchvision's ImageNet weights (never downloaded: found on disk or LPIPS is reported as
unavailable); per-tap channel-wise unit normalisation; squared differences weighted by the learned
1x1 "linear" heads that torchmetrics ships (``lpips_models/vgg.pth``); spatial mean; sum over taps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from genfusion.errors import GenFusionError
from genfusion.eval.vgg import LPIPS_TAP_CHANNELS, VGG16Features, find_vgg16_weights, load_vgg16_features

# LPIPS' ScalingLayer: inputs in [-1, 1] are shifted and scaled to ImageNet statistics.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10  # added to the channel norm in LPIPS' normalize_tensor


@dataclass
class LpipsConfig:
    """Where LPIPS-VGG finds its weights."""

    # torchvision vgg16 state dict; None = $GENFUSION_VGG16_WEIGHTS, then the torch hub cache
    backbone_path: Path | None = None
    heads_path: Path | None = None  # LPIPS linear heads (lin0..lin4); None = the file torchmetrics ships
    device: str = "cpu"  # where the network runs


def default_heads_path() -> Path:
    """The LPIPS v0.1 VGG linear heads bundled with torchmetrics."""
    import torchmetrics.functional.image as tm_image

    return Path(tm_image.__file__).parent / "lpips_models" / "vgg.pth"


def load_lpips_heads(path: str | Path) -> list[Tensor]:
    """The five 1x1 head weights [1, C, 1, 1] from an LPIPS ``lin{k}.model.1.weight`` state dict."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        heads = [state[f"lin{k}.model.1.weight"].float() for k in range(len(LPIPS_TAP_CHANNELS))]
    except Exception as err:
        raise GenFusionError(
            f"cannot read the LPIPS linear heads ({type(err).__name__}: {err}).",
            path=path,
            hint="Reinstall torchmetrics or pass the path of LPIPS' vgg.pth.",
        ) from err
    for head, channels in zip(heads, LPIPS_TAP_CHANNELS, strict=True):
        if tuple(head.shape) != (1, channels, 1, 1):
            shape = tuple(head.shape)
            raise GenFusionError(f"LPIPS head of shape {shape}, expected (1,{channels},1,1).", path=path)
    return heads


def normalize_channels(features: Tensor) -> Tensor:
    """Unit-normalise each pixel's feature vector along the channel axis (LPIPS' normalize_tensor)."""
    norm = torch.sqrt(torch.sum(features * features, dim=1, keepdim=True))
    return features / (norm + LPIPS_EPS)


class LPIPS(nn.Module):
    """LPIPS-VGG distance between image batches [B, 3, H, W] in [0, 1] -> per-image [B]."""

    def __init__(self, backbone: VGG16Features, heads: list[Tensor]) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        for k, head in enumerate(heads):
            self.register_buffer(f"head{k}", head.clone())
        self.num_taps = len(heads)
        self.requires_grad_(False)

    def _taps(self, images: Tensor) -> list[Tensor]:
        scaled = (images * 2.0 - 1.0 - self.shift) / self.scale  # [0,1] -> [-1,1] -> ImageNet-ish
        return [normalize_channels(t) for t in self.backbone(scaled)]

    def forward(self, pred: Tensor, gt: Tensor) -> Tensor:
        if pred.shape != gt.shape or pred.ndim != 4 or pred.shape[1] != 3:
            shapes = f"{tuple(pred.shape)}, {tuple(gt.shape)}"
            raise ValueError(f"LPIPS expects two [B,3,H,W] tensors of one shape, got {shapes}")
        taps = self._taps(torch.cat([pred, gt], dim=0).float())
        total = pred.new_zeros(pred.shape[0], dtype=torch.float32)
        for k, tap in enumerate(taps):
            feat_pred, feat_gt = tap.chunk(2, dim=0)
            weighted = torch.nn.functional.conv2d((feat_pred - feat_gt) ** 2, getattr(self, f"head{k}"))
            total = total + weighted.mean(dim=(1, 2, 3))
        return total


@functools.lru_cache(maxsize=4)
def _load_cached(backbone_path: str, heads_path: str, device: str) -> LPIPS:
    model = LPIPS(load_vgg16_features(backbone_path), load_lpips_heads(heads_path))
    return model.to(device).eval()


def load_lpips(config: LpipsConfig | None = None) -> tuple[LPIPS | None, str | None]:
    """The LPIPS network, or ``(None, reason)`` when the VGG16 backbone weights are absent.

    A present but broken file raises :class:`GenFusionError` (silently reporting "unavailable"
    would hide a user mistake). Networks are cached per (paths, device).
    """
    config = config or LpipsConfig()
    backbone, reason = find_vgg16_weights(config.backbone_path)
    if backbone is None:
        return None, f"LPIPS unavailable: {reason}"
    heads = Path(config.heads_path) if config.heads_path is not None else default_heads_path()
    return _load_cached(str(backbone.resolve()), str(heads.resolve()), config.device), None


def lpips(pred: Tensor, gt: Tensor, *, config: LpipsConfig | None = None) -> tuple[Tensor | None, str | None]:
    """Mean LPIPS-VGG over a batch [B, 3, H, W] in [0, 1]: ``(value, None)`` or ``(None, reason)``."""
    model, reason = load_lpips(config)
    if model is None:
        return None, reason
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(pred.to(device), gt.to(device)).mean(), None
