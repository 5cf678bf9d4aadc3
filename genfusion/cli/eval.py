"""``genfusion eval ROOT --protocol sparse|masked --out DIR``: the paper's benchmarks on your scenes.

ROOT holds one scene folder per subfolder. For each scene and setting (``--views`` for sparse,
``--fractions`` for masked) it trains each ``--methods`` baseline and the fusion loop with the same
settings and seed, then writes ``DIR/results.json``, ``DIR/results.md`` (the paper-shaped table,
the published numbers beside ours) and ``DIR/psnr_per_round.png``; layout and resume rules in
:mod:`genfusion.eval.protocols`. Every ``genfusion fuse`` setting is a flag here too (the protocol
sets ``--mode`` and ``--split``). Rerunning the same command reuses every finished run, so Ctrl-C
and a later rerun lose at most the run in progress.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "the paper's sparse-view / masked-input benchmark on a folder of scenes"
SKIPPED_FLAGS = ("mode", "reconstruct.split")  # set by the protocol and the setting, not by the user


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genfusion.flags import add_dataclass_arguments
    from genfusion.fusion.config import FusionConfig

    parser.add_argument(
        "root", type=Path, help="folder with one scene folder (COLMAP, transforms, LLFF) each"
    )
    parser.add_argument(
        "--protocol",
        choices=("sparse", "masked"),
        required=True,
        help="sparse: N training views (Mip-NeRF 360); masked: 1/K of the frames, windowed",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and the results")
    parser.add_argument(
        "--views",
        type=int,
        nargs="+",
        metavar="N",
        help="sparse: training-view counts, one setting each (default: 3 6 9)",
    )
    parser.add_argument(
        "--fractions",
        type=int,
        nargs="+",
        metavar="K",
        help="masked: train on 1/K of the frames, one setting per K (default: 2 4)",
    )
    parser.add_argument(
        "--scenes", nargs="+", metavar="NAME", help="subfolders of ROOT (default: all scenes)"
    )
    parser.add_argument(
        "--methods",
        nargs="*",
        choices=("3dgs", "2dgs"),
        default=["3dgs", "2dgs"],
        help="plain-reconstruction baselines (default: 3dgs 2dgs)",
    )
    parser.add_argument("--no-fusion", action="store_true", help="baselines only, no fusion run")
    add_dataclass_arguments(parser, FusionConfig, skip=SKIPPED_FLAGS, title="run settings")


def _eval_config(args: argparse.Namespace):
    """The EvalConfig of the command line; a flag of the other protocol is an error, not ignored."""
    from genfusion.errors import GenFusionError
    from genfusion.eval.protocols import EvalConfig
    from genfusion.flags import dataclass_from_args, overrides_from_args
    from genfusion.fusion.config import FusionConfig

    wrong = "--fractions" if args.protocol == "sparse" else "--views"
    if getattr(args, wrong.lstrip("-")) is not None:
        right = "--views" if args.protocol == "sparse" else "--fractions"
        raise GenFusionError(
            f"{wrong} is for the other protocol; with --protocol {args.protocol} use {right}"
        )
    settings = {"views": tuple(args.views)} if args.views else {}
    if args.fractions:
        settings["fractions"] = tuple(args.fractions)
    return EvalConfig(
        root=args.root,
        out=args.out,
        protocol=args.protocol,
        scenes=tuple(args.scenes or ()),
        methods=tuple(args.methods),
        fusion=not args.no_fusion,
        base=dataclass_from_args(FusionConfig, args),
        explicit=frozenset(overrides_from_args(FusionConfig, args).get("reconstruct", {})),
        **settings,
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from genfusion.cli.poses import _ctrl_c_cancels
    from genfusion.errors import Cancelled, GenFusionError
    from genfusion.eval.protocols import RESULTS_NAME, TABLE_NAME, run_protocol

    config = _eval_config(args)
    if config.out.exists() and not config.out.is_dir():
        raise GenFusionError("--out must be a folder, this is a file", path=config.out)
    try:
        with _ctrl_c_cancels() as stop_check:
            run_protocol(config, echo=lambda line: print(line, flush=True), stop_check=stop_check)
    except Cancelled:
        print(
            f"genfusion eval: cancelled; finished runs are in {config.out / RESULTS_NAME}. "
            "Run the same command again to go on from there.",
            file=sys.stderr,
        )
        return 130
    print(f"results: {config.out / RESULTS_NAME}, table: {config.out / TABLE_NAME}")
    return 0
