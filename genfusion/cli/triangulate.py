"""``genfusion triangulate SCENE``: sparse points for a posed capture that has none.

instant-ngp / nerfstudio ``transforms.json`` and LLFF ``poses_bounds.npy`` captures usually come
without sparse points, and 3DGS trains far better from them than from random points. This
triangulates SIFT matches at the capture's own poses (nothing is re-estimated) and writes
``SCENE/sparse_pc.ply``, which the readers pick up from then on. ``genfusion reconstruct`` and
``fuse`` do the same automatically (``--init-points auto``, cached); this command makes the result
part of the capture, e.g. before sharing it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "triangulate sparse points at a capture's known poses (transforms.json, LLFF)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genfusion.data.triangulate import TriangulateConfig
    from genfusion.flags import add_dataclass_arguments

    parser.add_argument("scene", type=Path, help="a transforms.json or LLFF capture folder")
    parser.add_argument(
        "--out", type=Path, default=None, help="the .ply to write (default: SCENE/sparse_pc.ply)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing sparse_pc.ply (or --out file)"
    )
    add_dataclass_arguments(parser, TriangulateConfig, title="triangulation")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from genfusion.cli.poses import _ctrl_c_cancels
    from genfusion.data import load_scene
    from genfusion.data.transforms import POINTS_NAME
    from genfusion.data.triangulate import TriangulateConfig, triangulate_points
    from genfusion.data.writers import write_points_ply
    from genfusion.errors import GenFusionError
    from genfusion.flags import dataclass_from_args
    from genfusion.progress import tqdm_progress

    config: TriangulateConfig = dataclass_from_args(TriangulateConfig, args)
    folder = args.scene if args.scene.is_dir() else args.scene.parent
    out = args.out if args.out is not None else folder / POINTS_NAME
    if out.exists() and not args.overwrite:
        raise GenFusionError("already exists.", path=out, hint="Pass --overwrite to replace it.")
    # a temp cache: photos are decoded and undistorted for SIFT, never cached into the capture
    with tempfile.TemporaryDirectory(prefix="genfusion-triangulate-") as cache:
        scene = load_scene(args.scene, cache_dir=Path(cache))
        if scene.has_points and not (out.exists() and args.overwrite):
            raise GenFusionError(
                f"already has {len(scene.points)} sparse points ({scene.format}); nothing to triangulate.",
                path=args.scene,
                hint="Use them as they are, or pass --overwrite to replace a sparse_pc.ply.",
            )
        with tqdm_progress("triangulate ") as progress, _ctrl_c_cancels() as stop_check:
            found = triangulate_points(scene, config=config, progress=progress, stop_check=stop_check)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_points_ply(out, found.points, found.colors)
    print(
        f"{len(found.points)} points from {found.num_images} photos "
        f"(track {found.mean_track_length:.1f} photos, "
        f"reprojection error {found.mean_reprojection_error:.2f} px)"
    )
    print(f"wrote {out}")
    if out.parent.resolve() != folder.resolve() or out.name != POINTS_NAME:
        print(f"note: the readers pick up {POINTS_NAME} beside the pose file; move it there to use it")
    return 0
