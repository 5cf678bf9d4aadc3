"""Tables and the plot of ``genfusion eval`` (:mod:`genfusion.eval.protocols`), from the
``results.json`` dict alone, so they can be rebuilt from a finished (or interrupted) benchmark.

Cells are ``PSNR/SSIM/LPIPS`` like the paper's tables: each scene's value is the mean over its
test views (the run's ``metrics.json``), and a column's value the mean over the scenes that ran.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genfusion.atomic import atomic_path

FUSION_ARM = "fusion"  # the arm name of the fusion loop (the others are methods: 3dgs, 2dgs)
ARM_LABELS = {"3dgs": "3DGS", "2dgs": "2DGS", FUSION_ARM: "GenFusion"}
MISSING = "—"  # a cell with no value (skipped run, no LPIPS weights, setting not published)
Published = dict[str, dict[str, tuple[float, float, float]]]  # arm -> column label -> PSNR/SSIM/LPIPS


def shown(value: float | None, digits: int = 2) -> str:
    """A number for a table or a progress line; None and non-finite values show as a dash."""
    return MISSING if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _cell(values: list[dict[str, Any]]) -> str:
    """``PSNR/SSIM/LPIPS`` of finished runs, each metric averaged over them."""
    done = [v for v in values if "skipped" not in v]
    if not done:
        return MISSING
    parts = []
    for key, digits in (("psnr", 2), ("ssim", 3), ("lpips", 3)):
        numbers = [v.get(key) for v in done]
        mean = None if any(n is None for n in numbers) else sum(numbers) / len(numbers)
        parts.append(shown(mean, digits))
    return "/".join(parts) + (f" ({len(done)}/{len(values)} scenes)" if len(done) < len(values) else "")


def _published(values: tuple[float, float, float] | None) -> str:
    return MISSING if values is None else f"{values[0]:.2f}/{values[1]:.3f}/{values[2]:.3f}"


def _row(name: str, cells: list[str]) -> str:
    return "| " + " | ".join([name, *cells]) + " |"


def results_markdown(results: dict[str, Any], published: Sequence[tuple[str, Published]] = ()) -> str:
    """The paper-shaped table (rows: arms, each followed by its rows of ``published`` (dataset,
    table) numbers; columns: settings), then one row per scene and arm, the skipped runs and the
    fusion PSNR per round."""
    settings, arms, scenes = results["settings"], results["arms"], results["scenes"]
    labels = [s["label"] for s in settings]
    header = "sparse views" if results["protocol"] == "sparse" else "masked input"
    lines = [f"# genfusion eval: {results['protocol']} protocol", ""]
    lines += [f"Cells: test-view PSNR/SSIM/LPIPS, averaged per scene then over {len(scenes)} scene(s).", ""]
    lines += [_row(f"{header} (PSNR/SSIM/LPIPS)", labels), _row("---", ["---"] * len(labels))]
    for arm in arms:
        cells = [
            _cell([scenes[n].get(s["split"], {}).get(arm, {"skipped": ""}) for n in scenes]) for s in settings
        ]
        lines.append(_row(ARM_LABELS.get(arm, arm), cells))
        for dataset, table in published:
            paper = [_published(table.get(arm, {}).get(label)) for label in labels]
            lines.append(_row(f"{ARM_LABELS.get(arm, arm)}, published ({dataset})", paper))
    lines += ["", "## Per scene", "", _row("scene / arm", labels), _row("---", ["---"] * len(labels))]
    skipped, rounds = [], []
    for name, per_scene in scenes.items():
        for arm in arms:
            cells = []
            for s in settings:
                value = per_scene.get(s["split"], {}).get(arm, {"skipped": "not run"})
                cells.append(_cell([value]))
                if "skipped" in value:
                    skipped.append(f"- {name}, {s['label']}, {ARM_LABELS.get(arm, arm)}: {value['skipped']}")
                elif value.get("rounds"):
                    steps = " → ".join(shown(r["test_psnr"]) for r in value["rounds"])
                    rounds.append(f"- {name}, {s['label']}: {steps} → {shown(value['psnr'])} (final)")
            lines.append(_row(f"{name} / {ARM_LABELS.get(arm, arm)}", cells))
    if skipped:
        lines += ["", "## Skipped", "", *skipped]
    if rounds:
        lines += ["", "## Fusion test PSNR per round (dB)", "", *rounds]
    notes = sorted({c["lpips_note"] for p in scenes.values() for a in p.values() for c in a.values()
                    if isinstance(c, dict) and c.get("lpips_note")})  # fmt: skip
    if notes:
        lines += ["", *(f"LPIPS: {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def plot_rounds(results: dict[str, Any], path: Path) -> str:
    """Fusion test PSNR against training step, one line per scene x setting (the last point is
    the final evaluation); returns a line saying what was written or why not."""
    series = []
    for name, per_scene in results["scenes"].items():
        for s in results["settings"]:
            cell = per_scene.get(s["split"], {}).get(FUSION_ARM, {})
            points = [
                (r["step"], r["test_psnr"]) for r in cell.get("rounds", []) if r["test_psnr"] is not None
            ]
            if cell.get("psnr") is not None and cell.get("iterations"):
                points.append((cell["iterations"], cell["psnr"]))
            if points:
                series.append((f"{name}, {s['label']}", points))
    if not series:
        return f"no fusion rounds with test PSNR to plot; {path.name} not written"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"matplotlib is not installed: {path.name} skipped (pip install matplotlib to get it)"
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, points in series:
        axes.plot(*zip(*points, strict=True), marker="o", label=label)
    axes.set(xlabel="training step", ylabel="test PSNR (dB)", title=f"fusion, {results['protocol']} protocol")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return f"wrote {path}"
