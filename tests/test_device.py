"""``--device``: auto picks CUDA only when present; CUDA asked for without one is a clear error."""

from __future__ import annotations

import pytest
import torch

from genfusion.device import resolve_device
from genfusion.errors import GenFusionError


def test_auto_cpu_and_devices_pass_through():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_a_gpu_names_device_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(GenFusionError, match="no CUDA GPU; use --device cpu"):
            resolve_device(name)


def test_unknown_device_is_a_clear_error():
    with pytest.raises(GenFusionError, match="unknown device 'gpu0'; use --device auto, cpu or cuda"):
        resolve_device("gpu0")
