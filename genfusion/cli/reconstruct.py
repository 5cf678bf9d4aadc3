"""``genfusion reconstruct SCENE --out DIR``: train 2DGS/3DGS splats on a capture.

DIR becomes a run folder (``checkpoint.pt``, ``splats.ply``, ``metrics.json``, ``renders/``,
``config.json``; layout and atomicity in :mod:`genfusion.splat.run`, which writes it). This module
only parses the flags, checks a resume, and calls :func:`genfusion.splat.run.reconstruct`.

``--resume`` continues the run in DIR from its checkpoint (same method and format version);
flags given with it override the stored settings (e.g. a larger ``--iterations``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genfusion.errors import GenFusionError

HELP = "train 2DGS/3DGS splats on a scene"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genfusion.splat.config import add_config_arguments

    parser.add_argument("scene", type=Path, help="scene folder (COLMAP, transforms.json or LLFF)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the run")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint.pt"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def _load_scene(path: Path, downscale: int):
    from genfusion.data import load_scene

    return load_scene(path, downscale=downscale)


def run(args: argparse.Namespace) -> int:
    from genfusion.splat import checkpoint as ckpt
    from genfusion.splat.config import ReconstructConfig, config_from_args, config_overrides
    from genfusion.splat.run import reconstruct

    out_dir: Path = args.out
    checkpoint_path = out_dir / ckpt.CHECKPOINT_NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise GenFusionError("--out must be a folder, this is a file", path=out_dir)

    contents = None
    if args.resume:
        overrides = config_overrides(args)
        contents = ckpt.load_checkpoint(checkpoint_path, expected_method=overrides.get("method"))
        stored = ReconstructConfig.from_dict(contents["config"])
        config = config_from_args(args, base=stored)
        for key in ("method", "sh_degree", "downscale", "split", "seed"):
            if getattr(config, key) != getattr(stored, key):
                raise GenFusionError(
                    f"--{key.replace('_', '-')} {getattr(config, key)} differs from the run being resumed "
                    f"({getattr(stored, key)}); drop the flag or train into a new --out folder"
                )
    else:
        if checkpoint_path.exists():
            raise GenFusionError(
                f"{out_dir} already holds a reconstruction (checkpoint.pt); continue it with --resume, "
                "or choose another --out folder (or delete this one)"
            )
        config = config_from_args(args)

    scene = _load_scene(args.scene, config.downscale)
    scene_info = {
        "path": str(Path(args.scene).resolve()),
        "downscale": config.downscale,
        "format": scene.format,
    }
    if contents is not None and contents.get("scene", {}).get("path") not in (None, scene_info["path"]):
        raise GenFusionError(
            f"the run in {out_dir} was trained on {contents['scene']['path']}, not {scene_info['path']}; "
            "resume with the same scene or train into a new --out folder"
        )
    metrics = reconstruct(scene, config, out_dir, scene_info=scene_info, resume=contents, quiet=args.quiet)
    if not args.quiet:
        psnr = metrics["psnr"]
        shown = f"{psnr:.2f} dB" if psnr is not None else "n/a (no test views)"
        if metrics.get("psnr_inside") is not None:  # masked protocol: where fusion must help
            shown += f" (inside windows {metrics['psnr_inside']:.2f}, outside {metrics['psnr_outside']:.2f})"
        print(
            f"{out_dir}: {metrics['num_gaussians']} Gaussians, test PSNR {shown}, {metrics['time_s']:.0f} s"
        )
    return 0
