"""A plain-data description of a loaded scene (what ``genfusion inspect`` prints, and what the app
shows after an upload). Reads only what load_scene already gathered: no image is decoded."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from genfusion.data.types import Scene


def _box(points: np.ndarray) -> dict[str, list[float]]:
    return {"min": points.min(axis=0).round(6).tolist(), "max": points.max(axis=0).round(6).tolist()}


def summarize_scene(scene: Scene) -> dict[str, Any]:
    """JSON-ready facts: format, counts, resolutions, camera models and intrinsics, distortion,
    sparse points, bounds (camera centres; points with the 1% extremes on each side ignored),
    near/far, missing images and loader notes."""
    sizes = Counter((c.width, c.height) for c in scene.cameras)
    cameras: dict[int, dict[str, Any]] = {}
    for camera in scene.cameras:
        entry = cameras.setdefault(
            camera.camera_id,
            {
                "camera_id": camera.camera_id,
                "model": camera.model,
                "width": camera.width,
                "height": camera.height,
                "fx": round(camera.fx, 6),
                "fy": round(camera.fy, 6),
                "cx": round(camera.cx, 6),
                "cy": round(camera.cy, 6),
                "distortion": None if camera.distortion is None else camera.distortion.round(9).tolist(),
                "images": 0,
            },
        )
        entry["images"] += 1
    points_box = None
    if scene.has_points:
        lo, hi = np.percentile(scene.points, 1, axis=0), np.percentile(scene.points, 99, axis=0)
        points_box = {"min": lo.round(6).tolist(), "max": hi.round(6).tolist()}
    return {
        "path": str(scene.root),
        "format": scene.format,
        "images": len(scene),
        "resolutions": [{"width": w, "height": h, "images": n} for (w, h), n in sizes.most_common()],
        "camera_models": sorted({c.model for c in scene.cameras}),
        "distorted": any(c.distortion is not None for c in scene.cameras),
        "cameras": list(cameras.values()),
        "points": {"present": scene.has_points, "count": 0 if scene.points is None else len(scene.points)},
        "bounds": {"camera_centers": _box(scene.centers), "points": points_box},
        "near_far": None
        if scene.near_far is None
        else {"near": float(scene.near_far[:, 0].min()), "far": float(scene.near_far[:, 1].max())},
        "aabb_scale": scene.aabb_scale,
        "missing_images": list(scene.missing_images),
        "notes": list(scene.notes),
    }
