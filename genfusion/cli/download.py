"""``genfusion download [--out checkpoints/genfusion-repair] [--cache DIR]``: fetch the official
repair-model files from Hugging Face (or use files placed by hand) and convert them."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "download and convert the repair-model weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genfusion.generation.download import DEFAULT_CACHE, DEFAULT_OUT

    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="converted diffusers folder to write")
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the downloaded (or hand-placed) original files live",
    )
    parser.add_argument(
        "--checkpoint-only",
        action="store_true",
        help="fetch only the GenFusion checkpoint (it already holds the VAE and CLIP tower), "
        "not the upstream ldm3d-4c VAE and OpenCLIP ViT-H-14 originals",
    )
    parser.add_argument("--overwrite", action="store_true", help="convert again over an existing --out")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full unpickling of the .ckpt (it holds Python objects besides tensors)",
    )
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for the connectivity check"
    )


def run(args: argparse.Namespace) -> int:
    from genfusion.generation.download import download_and_convert
    from genfusion.progress import tqdm_progress

    with tqdm_progress() as progress:
        out = download_and_convert(
            args.out,
            args.cache,
            checkpoint_only=args.checkpoint_only,
            overwrite=args.overwrite,
            trust_checkpoint=args.trust_checkpoint,
            timeout=args.timeout,
            progress=progress,
        )
    print(f"repair model ready in {out} (use it with --repairer diffusion or auto)")
    return 0
