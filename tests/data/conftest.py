"""Small scenes built from the real captures (downscaled copies in pytest's tmp folders)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genfusion.data.downscale_copy import downscale_transforms_copy

SMALL_FOX_FRAMES = [0, 5, 10, 15, 20, 25, 30, 35]  # 8 frames spread over the fox sequence
SMALL_FOX_FACTOR = 8  # 1080x1920 -> 135x240


@pytest.fixture(scope="session")
def small_fox_master(fox_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 fox frames at 135x240 with a scaled transforms.json (shared: never modify it)."""
    out = tmp_path_factory.mktemp("small_fox") / "fox"
    return downscale_transforms_copy(fox_dir, out, factor=SMALL_FOX_FACTOR, frames=SMALL_FOX_FRAMES)


@pytest.fixture
def small_fox(small_fox_master: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of the small fox scene."""
    return Path(shutil.copytree(small_fox_master, tmp_path / "fox"))
