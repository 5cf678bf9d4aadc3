"""The VGG16 convolutional stack, laid out exactly as torchvision's ``vgg16().features``.

torchvision cannot be installed here (it would pull a CUDA torch), but its ImageNet weight file
``vgg16-397923af.pth`` is the backbone LPIPS-VGG was calibrated with. Keeping torchvision's layer
order makes the state-dict keys ``features.N.weight`` / ``features.N.bias`` line up, so that file
loads into :class:`VGG16Features` directly, from a given path or from the usual torch hub cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from genfusion.errors import GenFusionError

VGG16_WEIGHTS_FILENAME = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 weights

# torchvision's configuration "D": channel counts of the 13 convolutions, "M" = 2x2 max pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip

# Exclusive end index in ``features`` of each LPIPS tap: relu1_2, relu2_2, relu3_3, relu4_3,
# relu5_3 (the slices the LPIPS reference code cuts torchvision's stack into).
LPIPS_TAP_ENDS: tuple[int, ...] = (4, 9, 16, 23, 30)
LPIPS_TAP_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)


def _build_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=False))  # not in-place: the taps must keep their values
            in_channels = int(item)
    return nn.Sequential(*layers)


class VGG16Features(nn.Module):
    """torchvision's VGG16 ``features`` (31 modules), returning the five LPIPS taps."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _build_features()

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x`` [B, 3, H, W] (already normalised by the caller) -> five ReLU feature maps."""
        taps: list[Tensor] = []
        start = 0
        for end in LPIPS_TAP_ENDS:
            for index in range(start, end):
                x = self.features[index](x)
            taps.append(x)
            start = end
        return taps


def default_vgg16_weights_path() -> Path:
    """Where torchvision would cache the file: ``$TORCH_HOME/hub/checkpoints`` (torch's rules)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_WEIGHTS_FILENAME


def find_vgg16_weights(path: str | Path | None = None) -> tuple[Path | None, str | None]:
    """Resolve the backbone file: an explicit ``path``, then ``$GENFUSION_VGG16_WEIGHTS``, then the
    torch hub cache. Returns ``(path, None)`` when found, ``(None, reason)`` otherwise."""
    if path is not None:
        candidate = Path(path).expanduser()
        if candidate.is_file():
            return candidate, None
        return None, f"VGG16 weights not found at {candidate}"
    env = os.environ.get("GENFUSION_VGG16_WEIGHTS")
    if env:
        candidate = Path(env).expanduser()
        if candidate.is_file():
            return candidate, None
        return None, f"VGG16 weights not found at $GENFUSION_VGG16_WEIGHTS={candidate}"
    candidate = default_vgg16_weights_path()
    if candidate.is_file():
        return candidate, None
    return None, (
        f"VGG16 ImageNet weights ({VGG16_WEIGHTS_FILENAME}) not found in {candidate.parent}; "
        "place torchvision's file there or pass its path"
    )


def load_vgg16_features(path: str | Path) -> VGG16Features:
    """A :class:`VGG16Features` holding the weights of a torchvision-named state-dict file.

    Accepts the full torchvision file (``features.*`` and ``classifier.*`` keys; the classifier
    is ignored) or a file holding only the ``features.*`` keys. Raises :class:`GenFusionError`
    when the file is unreadable or its tensors do not fit the VGG16 layout.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt / foreign files
        raise GenFusionError(
            f"cannot read VGG16 weights ({type(err).__name__}: {err}).",
            path=path,
            hint=f"Use torchvision's {VGG16_WEIGHTS_FILENAME}.",
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise GenFusionError("is not a state dict of VGG16 weights.", path=path)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    model = VGG16Features()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(features))
    wrong = [k for k in expected if k in features and tuple(features[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        detail = f"missing {missing[:3]}" if missing else f"wrong shapes for {wrong[:3]}"
        raise GenFusionError(
            f"does not hold torchvision VGG16 'features.N' weights ({detail}).",
            path=path,
            hint=f"Use torchvision's {VGG16_WEIGHTS_FILENAME}.",
        )
    model.load_state_dict({k: features[k].float() for k in expected}, strict=True)
    return model.eval().requires_grad_(False)
