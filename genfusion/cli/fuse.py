"""``genfusion fuse SCENE --out DIR``: cyclic fusion (reconstruction + repair in a loop).

Every field of :class:`~genfusion.fusion.config.FusionConfig` is a flag, the reconstruction's
(``--iterations``, ``--method``, ...) included; settings left out take the ``--mode``'s published
values, sized by ``--budget`` (a CPU preview unless a CUDA GPU is present). The run folder is
described in :mod:`genfusion.fusion.loop`. ``--resume`` continues a cancelled run from its last
round; Ctrl-C cancels cleanly (the folder keeps its last completed round).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genfusion.errors import GenFusionError

HELP = "cyclic fusion: reconstruct, repair novel views, train on them, repeat"
CONFIG_NAME = "fusion_config.json"  # the resolved FusionConfig, for --resume


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genfusion.flags import add_dataclass_arguments
    from genfusion.fusion.config import FusionConfig

    parser.add_argument("scene", type=Path, help="scene folder (COLMAP, transforms.json or LLFF)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the run")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last round")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataclass_arguments(parser, FusionConfig, title="fusion settings")


def _print_round(event) -> None:
    if event.stage == "fusion.round":
        print(f"  {event.message}; unreliable {event.metrics['unreliable_before']:.1%}", flush=True)


def run(args: argparse.Namespace) -> int:
    import json

    from genfusion.data import load_scene
    from genfusion.flags import dataclass_from_args, overrides_from_args
    from genfusion.fusion.config import FusionConfig, resolve
    from genfusion.fusion.loop import STATE_NAME, FusionLoop
    from genfusion.progress import tqdm_progress

    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise GenFusionError("--out must be a folder, this is a file", path=out_dir)
    if args.resume:  # the stored, resolved settings: the run goes on exactly as it started
        if not (out_dir / STATE_NAME).is_file() or not (out_dir / CONFIG_NAME).is_file():
            raise GenFusionError(
                f"{out_dir} holds no fusion run to resume ({STATE_NAME} is missing); "
                "start it without --resume"
            )
        config = FusionConfig.from_dict(json.loads((out_dir / CONFIG_NAME).read_text(encoding="utf-8")))
    else:
        if (out_dir / "checkpoint.pt").exists():
            raise GenFusionError(
                f"{out_dir} already holds a run (checkpoint.pt); continue it with --resume, or choose "
                "another --out folder"
            )
        given = overrides_from_args(FusionConfig, args)
        explicit = set(given.get("reconstruct", {}))
        config = dataclass_from_args(FusionConfig, args)
        probe = load_scene(args.scene)
        long_side = max(max(c.width, c.height) for c in probe.cameras)
        config = resolve(config, explicit=explicit, long_side=long_side)
    scene = load_scene(args.scene, downscale=config.reconstruct.downscale)
    scene_info = {"path": str(Path(args.scene).resolve()), "downscale": config.reconstruct.downscale,
                  "format": scene.format}  # fmt: skip
    with tqdm_progress("fuse ") if not args.quiet else _no_progress() as bar:

        def progress(event) -> None:
            if bar is not None and event.stage in ("reconstruct", "fusion.round"):
                bar(event)
            if not args.quiet:
                _print_round(event)

        loop = FusionLoop(scene, config, out_dir, progress=progress, scene_info=scene_info)
        if not args.quiet:
            print(f"genfusion fuse: {loop.repairer.description}", flush=True)
        _write_config(out_dir, config)
        if args.resume:
            loop.resume()
        from genfusion.cli.poses import _ctrl_c_cancels

        with _ctrl_c_cancels() as stop_check:
            metrics = loop.run(stop_check=stop_check)
    if not args.quiet:
        shown = "n/a" if metrics.get("psnr") is None else f"{metrics['psnr']:.2f} dB"
        if metrics.get("psnr_outside") is not None:
            shown += f" (inside windows {metrics['psnr_inside']:.2f}, outside {metrics['psnr_outside']:.2f})"
        print(
            f"{out_dir}: {metrics['num_gaussians']} Gaussians, test PSNR {shown}, {metrics['time_s']:.0f} s"
        )
    return 0


def _write_config(out_dir: Path, config) -> None:
    from genfusion.atomic import write_json_atomic

    write_json_atomic(out_dir / CONFIG_NAME, config.to_dict())


class _no_progress:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
