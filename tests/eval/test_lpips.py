"""LPIPS-VGG plumbing with random backbone weights saved as a torchvision-named state dict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genfusion.errors import GenFusionError
from genfusion.eval.lpips import LpipsConfig, default_heads_path, load_lpips, lpips
from genfusion.eval.vgg import VGG16_WEIGHTS_FILENAME, VGG16Features, load_vgg16_features

TORCHVISION_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # conv indices in features


def _random_torchvision_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """What torchvision's vgg16 state dict looks like: features.N.* plus classifier.* keys."""
    gen = torch.Generator().manual_seed(seed)
    channels = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    state = {}
    for k, index in enumerate(TORCHVISION_VGG16_CONVS):
        cin, cout = channels[k], channels[k + 1]
        std = (2.0 / (cin * 9)) ** 0.5  # He init keeps activations alive through 13 layers
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * std
        state[f"features.{index}.bias"] = torch.randn(cout, generator=gen) * 0.01
    state["classifier.0.weight"] = torch.zeros(8, 8)  # present in the real file, must be ignored
    state["classifier.0.bias"] = torch.zeros(8)
    return state


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / VGG16_WEIGHTS_FILENAME
    torch.save(_random_torchvision_state(), path)
    return path


@pytest.fixture(autouse=True)
def _no_user_weights(monkeypatch, tmp_path):
    """Tests never see a real cache or the user's environment variable."""
    monkeypatch.delenv("GENFUSION_VGG16_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))


def _images(seed: int, size=(2, 3, 64, 48)) -> torch.Tensor:
    return torch.rand(size, generator=torch.Generator().manual_seed(seed))


def _reference_lpips(pred, gt, state, heads_file) -> torch.Tensor:
    """LPIPS written out from the paper code: functional VGG, scaling, unit-normalise, heads."""
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(x):
        x = ((2 * x - 1) - shift) / scale
        out = []
        blocks = [(0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28)]
        for b, convs in enumerate(blocks):
            if b > 0:
                x = F.max_pool2d(x, 2, 2)
            for i in convs:
                x = F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1))
            out.append(x)
        return out

    total = 0
    for k, (a, b) in enumerate(zip(feats(pred), feats(gt), strict=True)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads[f"lin{k}.model.1.weight"]
        total = total + ((a - b) ** 2 * w.view(1, -1, 1, 1)).sum(1).mean(dim=(1, 2))
    return total


def test_absent_weights_give_none_and_one_line_reason():
    value, reason = lpips(_images(0), _images(1))
    assert value is None
    assert reason and "\n" not in reason and VGG16_WEIGHTS_FILENAME in reason


def test_loads_from_path_and_matches_reference(backbone_file):
    pred, gt = _images(0), _images(1)
    value, reason = lpips(pred, gt, config=LpipsConfig(backbone_path=backbone_file))
    assert reason is None and value is not None and value.ndim == 0
    expected = _reference_lpips(pred, gt, _random_torchvision_state(), default_heads_path()).mean()
    assert float(value) == pytest.approx(float(expected), rel=1e-5)


def test_loads_from_fake_torch_hub_cache(backbone_file, monkeypatch, tmp_path):
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / VGG16_WEIGHTS_FILENAME).write_bytes(backbone_file.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(home))
    via_cache, reason = lpips(_images(0), _images(1))
    via_path, _ = lpips(_images(0), _images(1), config=LpipsConfig(backbone_path=backbone_file))
    assert reason is None
    assert float(via_cache) == pytest.approx(float(via_path), rel=1e-6)


def test_distance_properties(backbone_file):
    model, _ = load_lpips(LpipsConfig(backbone_path=backbone_file))
    gt = _images(3, (1, 3, 64, 64))
    noise = torch.randn(gt.shape, generator=torch.Generator().manual_seed(4))
    assert float(model(gt, gt)[0]) == pytest.approx(0.0, abs=1e-7)
    other = (gt + 0.2 * noise).clamp(0, 1)
    per_image = model(torch.cat([gt, other]), torch.cat([other, gt]))
    assert per_image.shape == (2,)
    assert float(per_image[0]) == pytest.approx(float(per_image[1]), rel=1e-5)  # symmetric
    values = [float(model((gt + s * noise).clamp(0, 1), gt)[0]) for s in (0.02, 0.1, 0.3)]
    assert 0 < values[0] < values[1] < values[2]


def test_backbone_keys_match_torchvision_layout():
    keys = set(VGG16Features().state_dict())
    expected = {f"features.{i}.{p}" for i in TORCHVISION_VGG16_CONVS for p in ("weight", "bias")}
    assert keys == expected


def test_broken_backbone_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(GenFusionError, match="torchvision VGG16"):
        load_vgg16_features(bad)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(GenFusionError, match="cannot read"):
        load_vgg16_features(garbage)
    value, reason = lpips(_images(0), _images(1), config=LpipsConfig(backbone_path=tmp_path / "absent.pth"))
    assert value is None and "absent.pth" in reason
