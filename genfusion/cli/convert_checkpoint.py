"""``genfusion convert-checkpoint CKPT --out checkpoints/genfusion-repair/``: the official
GenFusion checkpoint -> a diffusers folder (unet, image_proj, image_encoder, vae, scheduler)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genfusion.errors import GenFusionError

HELP = "convert the official GenFusion checkpoint into a diffusers folder"

_DTYPES = {"keep": None, "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", type=Path, help="the released epoch=59-step=34000.ckpt (Lightning or DeepSpeed)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("checkpoints/genfusion-repair"), help="diffusers folder to write"
    )
    parser.add_argument(
        "--dtype", choices=sorted(_DTYPES), default="keep", help="store weights in this precision"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full unpickling (only for files you trust) when the .ckpt holds Python objects",
    )
    parser.add_argument(
        "--configs",
        type=Path,
        default=None,
        help="JSON with 'unet', 'image_proj', 'image_encoder', 'vae' configs (default: the released model)",
    )


def _load_configs(path: Path | None):
    from genfusion.generation.convert import ComponentConfigs

    if path is None:
        return ComponentConfigs.full()
    try:
        data = json.loads(path.read_text())
        return ComponentConfigs(**{k: data[k] for k in ("unet", "image_proj", "image_encoder", "vae")})
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise GenFusionError(
            f"cannot read the component configs ({err}).",
            path=path,
            hint="Give a JSON object with the keys unet, image_proj, image_encoder and vae.",
        ) from None


def run(args: argparse.Namespace) -> int:
    import torch

    from genfusion.generation.convert import convert_checkpoint
    from genfusion.progress import tqdm_progress

    configs = _load_configs(args.configs)
    dtype = getattr(torch, _DTYPES[args.dtype]) if _DTYPES[args.dtype] else None
    with tqdm_progress() as progress:
        out = convert_checkpoint(
            args.checkpoint,
            args.out,
            configs=configs,
            dtype=dtype,
            overwrite=args.overwrite,
            trust_pickle=args.trust_checkpoint,
            progress=progress,
        )
    report = json.loads((out / "conversion_report.json").read_text())
    print(f"wrote {out}: {report['consumed']} tensors converted")
    for reason, count in report["skipped"].items():
        print(f"  skipped {count} tensors: {reason}")
    if report["schedule_buffers_validated"]:
        print(f"  checked {len(report['schedule_buffers_validated'])} schedule buffers against the scheduler")
    return 0
