"""The cases that ``bench_quality.py`` trains and tabulates: the grid (scenes and their (low, high)
downscale factors, lengths, methods, variants), a run's key, the config fields each variant sets,
and the tolerance of the default against the control. Shared by the runner and the table
(``quality_tables.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENFUSION_SHARED", REPO.parent / "shared"))
SCENES = {"fox": REPO / "assets" / "demo" / "fox", "fern": SHARED / "data" / "fern"}
DOWNSCALES = {"fox": (8, 4), "fern": (64, 32)}  # (low, high) resolution divisors: CPU-sized
RESOLUTIONS = ("low", "high")
LENGTHS = (1000, 7000)
METHODS = ("3dgs", "2dgs")
VARIANTS = ("default", "control")
TOLERANCE_DB = 0.2  # the default may be this much below the control and still be ok


def config_values(method: str, iterations: int, downscale: int, variant: str) -> dict[str, Any]:
    """The ReconstructConfig fields set for one run (everything else stays at its default)."""
    values: dict[str, Any] = {
        "method": method,
        "iterations": iterations,
        "downscale": downscale,
        "device": "cpu",
        "checkpoint_every": 0,
    }
    if variant == "control":  # the 3DGS paper's fixed schedule, given explicitly
        values.update(
            refine_every=100,
            refine_start=300,
            refine_stop=iterations // 2 + 1,  # densify from 300 to the mid-point, inclusive
            prune_opacity=0.005,
            reset_every=3000,
            reset_recovery=0,  # 3DGS resets every 3000 steps while densifying
            sh_degree_interval=1000,  # the 3DGS SH ramp
        )
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}")
    return values


def run_key(scene: str, resolution: str, method: str, length: int, variant: str) -> str:
    return f"{scene}/{resolution}/{method}/{length}/{variant}"
