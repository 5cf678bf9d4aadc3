"""``genfusion inspect SCENE [--json]``: describe a capture without decoding its images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "describe a capture: format, images, cameras, distortion, points, bounds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, help="scene folder (COLMAP, transforms.json or LLFF) or its json")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    parser.add_argument(
        "--downscale", type=int, default=1, help="describe the scene as loaded at 1/N resolution"
    )


def _vec(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = [
        f"scene:       {summary['path']}",
        f"format:      {summary['format']}",
        f"images:      {summary['images']}"
        + (f" ({len(summary['missing_images'])} missing)" if summary["missing_images"] else ""),
        "resolution:  "
        + ", ".join(f"{r['width']}x{r['height']} ({r['images']})" for r in summary["resolutions"]),
        f"cameras:     {len(summary['cameras'])} ({', '.join(summary['camera_models'])})",
    ]
    for cam in summary["cameras"][:8]:
        distortion = "none" if cam["distortion"] is None else " ".join(f"{d:.4g}" for d in cam["distortion"])
        lines.append(
            f"  #{cam['camera_id']}: {cam['width']}x{cam['height']} fx={cam['fx']:.2f} fy={cam['fy']:.2f} "
            f"cx={cam['cx']:.2f} cy={cam['cy']:.2f} distortion: {distortion} [{cam['images']} images]"
        )
    if len(summary["cameras"]) > 8:
        lines.append(f"  ... {len(summary['cameras']) - 8} more")
    points = summary["points"]
    lines.append(
        f"points:      {points['count']} sparse points" if points["present"] else "points:      none"
    )
    box = summary["bounds"]["camera_centers"]
    lines.append(f"cameras box: {_vec(box['min'])} .. {_vec(box['max'])}")
    if summary["bounds"]["points"]:
        box = summary["bounds"]["points"]
        lines.append(f"points box:  {_vec(box['min'])} .. {_vec(box['max'])} (1%-99%)")
    if summary["near_far"]:
        lines.append(f"near/far:    {summary['near_far']['near']:.3f} / {summary['near_far']['far']:.3f}")
    if summary["aabb_scale"] is not None:
        lines.append(f"aabb_scale:  {summary['aabb_scale']:g}")
    for name in summary["missing_images"][:10]:
        lines.append(f"missing:     {name}")
    for note in summary["notes"]:
        lines.append(f"note:        {note}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from genfusion.data.load import load_scene
    from genfusion.data.summary import summarize_scene

    # undistort=False: describe the capture as it is; allow_missing: report, do not refuse
    scene = load_scene(args.scene, downscale=args.downscale, undistort=False, allow_missing=True)
    summary = summarize_scene(scene)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
