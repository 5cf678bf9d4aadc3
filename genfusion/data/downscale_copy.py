"""A downscaled copy of a transforms.json capture (how the bundled demo scene was made; the tests
use it to build small scenes from the real fox capture).

Intrinsics are scaled in the file's own pixel-corner convention (cx' = cx * s, as instant-ngp and
nerfstudio scale), distortion coefficients are kept (they act on normalised coordinates, so they
do not depend on resolution), and every other key is copied unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from genfusion.atomic import atomic_directory
from genfusion.data.images import decode_image
from genfusion.data.transforms import TRANSFORMS_NAME, resolve_frame_path
from genfusion.errors import GenFusionError

_SCALED_KEYS = ("fl_x", "fl_y", "cx", "cy")


def _scale_intrinsics(entry: dict, sx: float, sy: float, width: int, height: int) -> None:
    for key in _SCALED_KEYS:
        if key in entry:
            entry[key] = float(entry[key]) * (sx if key in ("fl_x", "cx") else sy)
    if "w" in entry:
        entry["w"] = width
    if "h" in entry:
        entry["h"] = height


def downscale_transforms_copy(
    src: Path | str,
    dst: Path | str,
    *,
    factor: float,
    frames: list[int] | None = None,
    jpeg_quality: int = 90,
) -> Path:
    """Copy ``src`` (a folder with transforms.json) to ``dst`` with every image resized by
    1/``factor`` (cv2.INTER_AREA, JPEG at ``jpeg_quality``), keeping only ``frames`` (indices in the
    json's order) when given. ``dst`` is built in a temporary folder beside it and renamed."""
    src, dst = Path(src), Path(dst)
    meta = json.loads((src / TRANSFORMS_NAME).read_text(encoding="utf-8"))
    if dst.exists():
        raise GenFusionError("already exists.", path=dst, hint="Remove it or choose another output folder.")
    with atomic_directory(dst) as tmp:
        chosen = [meta["frames"][i] for i in frames] if frames is not None else meta["frames"]
        sizes = set()
        for frame in chosen:
            image_path = resolve_frame_path(src, frame["file_path"])
            rgb = decode_image(image_path)
            height, width = rgb.shape[:2]
            new_w, new_h = max(1, round(width / factor)), max(1, round(height / factor))
            small = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
            rel = Path(image_path.relative_to(src)).with_suffix(".jpg")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(tmp / rel), bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            frame["file_path"] = rel.as_posix()
            _scale_intrinsics(frame, new_w / width, new_h / height, new_w, new_h)
            sizes.add((width, height, new_w, new_h))
        if len(sizes) == 1:
            width, height, new_w, new_h = sizes.pop()
            _scale_intrinsics(meta, new_w / width, new_h / height, new_w, new_h)
        meta["frames"] = chosen
        (tmp / TRANSFORMS_NAME).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return dst
