"""``genfusion`` command line: one subcommand per module in this package.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand runs, so ``genfusion
inspect`` never pays for importing torch or diffusers. User errors (:class:`GenFusionError`)
print as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from genfusion.errors import GenFusionError

# subcommand name -> module under genfusion.cli (kept in pipeline order for --help)
SUBCOMMANDS: dict[str, str] = {
    "inspect": "inspect",
    "poses": "poses",
    "triangulate": "triangulate",
    "reconstruct": "reconstruct",
    "fuse": "fuse",
    "render": "render",
    "eval": "eval",
    "export": "export",
    "convert-checkpoint": "convert_checkpoint",
    "download": "download",
}

# One-line help per subcommand, duplicated here so that --help needs no heavy imports.
SUMMARIES: dict[str, str] = {
    "inspect": "describe a capture: format, images, cameras, distortion, points, bounds",
    "poses": "estimate camera poses for unposed photos, a zip or a video (pycolmap)",
    "triangulate": "triangulate sparse points at a capture's known poses (transforms.json, LLFF)",
    "reconstruct": "train 2DGS/3DGS splats on a scene",
    "fuse": "cyclic fusion: reconstruct, repair novel views, train on them, repeat",
    "render": "render a camera path from a run as mp4, optionally repaired",
    "eval": "the paper's sparse-view / masked-input benchmark on a folder of scenes",
    "export": "export a run as .ply, .splat, a mesh or a video",
    "convert-checkpoint": "convert the official GenFusion checkpoint into a diffusers folder",
    "download": "download and convert the repair-model weights",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genfusion", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None
    args = list(sys.argv[1:] if argv is None else argv)
    for token in args:
        if token in SUBCOMMANDS:
            wanted = token
            break
    for name, module_name in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=SUMMARIES[name], description=SUMMARIES[name])
        if name == wanted:  # only the chosen subcommand's module is imported
            module = importlib.import_module(f"genfusion.cli.{module_name}")
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.version:
        from genfusion import __version__

        print(__version__)
        return 0
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except GenFusionError as err:
        print(f"genfusion {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genfusion {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
