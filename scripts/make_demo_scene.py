"""Rebuild the bundled demo scene ``assets/demo/fox`` from the full-size fox capture.

    .venv/bin/python scripts/make_demo_scene.py [--src ../shared/data/fox] [--out assets/demo/fox]

All 67 frames, 1/4 resolution (1080x1920 -> 270x480, cv2.INTER_AREA), JPEG quality 90;
transforms.json intrinsics scaled to match (distortion kept); sparse points triangulated at the
capture's own poses from this copy (``genfusion triangulate``, written as ``sparse_pc.ply``, which
the reader picks up); LICENSE.txt and SOURCE.txt copied, with a line in SOURCE.txt saying how this
copy was made.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from genfusion.data.downscale_copy import downscale_transforms_copy

REPO = Path(__file__).resolve().parents[1]
FACTOR = 4
JPEG_QUALITY = 90


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "fox")
    parser.add_argument("--out", type=Path, default=REPO / "assets" / "demo" / "fox")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    downscale_transforms_copy(args.src, args.out, factor=FACTOR, jpeg_quality=JPEG_QUALITY)
    shutil.copy(args.src / "LICENSE.txt", args.out / "LICENSE.txt")
    from genfusion.cli import main as genfusion

    if genfusion(["triangulate", str(args.out)]) != 0:
        raise SystemExit("triangulation failed")
    source = (args.src / "SOURCE.txt").read_text(encoding="utf-8").rstrip("\n")
    source += (
        f"\ndownscaled: by scripts/make_demo_scene.py: every image resized by 1/{FACTOR} "
        f"(1080x1920 -> 270x480, cv2.INTER_AREA), saved as JPEG quality {JPEG_QUALITY}; transforms.json "
        "fl_x, fl_y, cx, cy, w, h scaled to match, distortion (k1, k2, p1, p2) unchanged.\n"
        "points: sparse_pc.ply triangulated at the transforms.json poses from this copy by "
        "`genfusion triangulate` (SIFT matches, no pose refinement).\n"
    )
    (args.out / "SOURCE.txt").write_text(source, encoding="utf-8")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
