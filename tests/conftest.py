"""Shared fixtures: paths to the real captures, small helpers, CPU thread settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENFUSION_SHARED", REPO.parent / "shared"))
DEMO_SCENE = REPO / "assets" / "demo" / "fox"


def _shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (set GENFUSION_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def fox_dir() -> Path:
    """The full-size instant-ngp fox capture (67 photos, transforms.json with distortion)."""
    return _shared("data", "fox")


@pytest.fixture(scope="session")
def fern_dir() -> Path:
    """The LLFF fern capture (20 photos, poses_bounds.npy, images_4 and images_8)."""
    return _shared("data", "fern")


@pytest.fixture(scope="session")
def lvdm_fixtures() -> Path:
    """Parity fixtures of the original repair-model code (see its README)."""
    return _shared("fixtures", "lvdm")


@pytest.fixture(scope="session")
def demo_scene() -> Path:
    """The downscaled fox copy shipped inside the project."""
    assert DEMO_SCENE.exists(), f"the demo scene is missing at {DEMO_SCENE}"
    return DEMO_SCENE


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs CUDA; runs on the GPU machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
