"""``genfusion reconstruct SCENE --out DIR``: train 2DGS/3DGS splats on a capture.

Output folder (each file written to a temporary name and renamed, so a failed or interrupted run
leaves the earlier outputs intact)::

    checkpoint.pt   the trained Gaussians + optimiser state (format: genfusion.splat.checkpoint)
    splats.ply      standard 3DGS .ply (SuperSplat, gsplat)
    metrics.json    PSNR / SSIM / LPIPS per test view and their means, time, Gaussians, device
    renders/        test views: <name>.png = render | ground truth side by side
    config.json     every setting of the run

``--resume`` continues the run in DIR from its checkpoint (same method and format version);
flags given with it override the stored settings (e.g. a larger ``--iterations``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

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


# ----------------------------------------------------------------------------- atomic writes


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, allow_nan=True) + "\n").encode())


def write_renders(
    out_dir: Path, names: list[str], renders: list[np.ndarray], targets: list[np.ndarray]
) -> None:
    """``renders/`` with one ``render | ground truth`` png per test view, swapped in whole."""
    import imageio.v3 as iio

    tmp = Path(tempfile.mkdtemp(prefix=".renders.", dir=out_dir))
    try:
        for name, render, target in zip(names, renders, targets, strict=True):
            canvas = np.concatenate([render, target], axis=1)
            stem = Path(name).stem or "view"
            iio.imwrite(tmp / f"{stem}.png", (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8))
        final = out_dir / "renders"
        old = out_dir / f".renders.old.{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- the command


def _load_scene(path: Path, downscale: int):
    from genfusion.data import load_scene

    return load_scene(path, downscale=downscale)


def run(args: argparse.Namespace) -> int:
    from genfusion.splat import checkpoint as ckpt
    from genfusion.splat.config import ReconstructConfig, config_from_args, config_overrides

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
    return reconstruct(scene, config, out_dir, scene_info=scene_info, resume=contents, quiet=args.quiet)


def reconstruct(scene, config, out_dir: Path, *, scene_info: dict, resume: dict | None = None,
                quiet: bool = False, progress=None) -> int:  # fmt: skip
    """Train, then write every output of the run folder (also used by tests and the app)."""
    from contextlib import nullcontext

    from genfusion.progress import tqdm_progress
    from genfusion.splat import checkpoint as ckpt
    from genfusion.splat.trainer import Trainer

    checkpoint_path = out_dir / ckpt.CHECKPOINT_NAME
    bar = nullcontext(progress) if (quiet or progress is not None) else tqdm_progress()
    with bar as callback:
        trainer = Trainer(
            scene, config, progress=callback, scene_info=scene_info, checkpoint_path=checkpoint_path
        )
        out_dir.mkdir(parents=True, exist_ok=True)  # only once the run is accepted (memory, split)
        if resume is not None:
            trainer.load_state(resume)
        trainer.train()
        trainer.save_checkpoint()
        evaluation = trainer.evaluate()

    backend = config.backend
    if backend == "auto":  # what render() picks: gsplat for CUDA tensors, our torch rasteriser otherwise
        backend = "gsplat" if trainer.device.type == "cuda" else "torch"
    views = [{"name": v.name, "psnr": v.psnr, "ssim": v.ssim, "lpips": v.lpips} for v in evaluation.views]
    metrics = {
        "psnr": evaluation.mean("psnr"),
        "ssim": evaluation.mean("ssim"),
        "lpips": evaluation.mean("lpips"),
        "lpips_note": evaluation.lpips_note or None,
        "views": views,
        "num_test_views": len(views),
        "num_train_views": len(trainer.train_views),
        "iterations": trainer.step,
        "time_s": round(trainer.elapsed, 3),
        "num_gaussians": trainer.num_gaussians,
        "method": config.method,
        "backend": backend,
        "device": str(trainer.device),
        "init": trainer.init_note,
        "scene_scale": trainer.scene_scale,
        "resolution": list(trainer.train_views.sizes[0]),
    }
    from genfusion.export.ply import write_ply  # atomic (temporary file + rename)

    splats = {k: v.detach().cpu() for k, v in trainer.splats.items()}
    write_ply(out_dir / "splats.ply", splats, method=config.method)
    write_renders(out_dir, [v.name for v in evaluation.views], evaluation.renders, evaluation.targets)
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "config.json", config.to_dict())
    if not quiet:
        psnr = metrics["psnr"]
        shown = f"{psnr:.2f} dB" if psnr is not None else "n/a (no test views)"
        print(f"{out_dir}: {trainer.num_gaussians} Gaussians, test PSNR {shown}, {trainer.elapsed:.0f} s")
    return 0
