"""The run folder of a reconstruction: written by :func:`reconstruct` (``genfusion reconstruct``),
read by :func:`read_run` (the exports, the app, the fusion loop).

Layout::

    checkpoint.pt   the trained Gaussians + optimiser state (format: genfusion.splat.checkpoint);
                    written by Trainer.save_checkpoint(), first, so a run can always be resumed
    splats.ply      standard 3DGS .ply of the Gaussians (SuperSplat, gsplat; genfusion.export.ply)
    metrics.json    test-view PSNR / SSIM / LPIPS (means and per view) and the run's facts:
                    iterations, time, Gaussians, method, backend, device, init, scale, resolution
    renders/        one <view>.png per test view: render | ground truth, side by side
    config.json     every setting of the run (ReconstructConfig.to_dict())

Each file is written to a temporary name and renamed, and ``renders/`` is built beside the old one
and swapped in whole (:mod:`genfusion.atomic`), so a failed or interrupted write leaves the earlier
outputs intact. ``metrics.json`` is written after ``splats.ply`` and ``renders/``: a folder that
has it holds a finished run.

This module is the one place that knows the layout; the CLI only parses arguments and checks that
a resume is consistent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genfusion.atomic import atomic_directory, write_json_atomic
from genfusion.data.types import Scene
from genfusion.errors import GenFusionError
from genfusion.progress import ProgressCallback
from genfusion.splat import checkpoint as ckpt
from genfusion.splat.config import ReconstructConfig
from genfusion.splat.render import resolve_backend
from genfusion.splat.trainer import Evaluation, Trainer

CHECKPOINT_NAME = ckpt.CHECKPOINT_NAME
SPLATS_NAME = "splats.ply"
METRICS_NAME = "metrics.json"
RENDERS_NAME = "renders"
CONFIG_NAME = "config.json"


# ----------------------------------------------------------------------------- writing


def run_metrics(trainer: Trainer, evaluation: Evaluation) -> dict[str, Any]:
    """The content of ``metrics.json``: every key of ``evaluation.to_dict()`` (means, per-view
    values, LPIPS note, test-view count), then the facts of the run."""
    return {
        **evaluation.to_dict(),
        "num_train_views": len(trainer.train_views.sizes),
        "iterations": trainer.step,
        "time_s": round(trainer.elapsed, 3),
        "num_gaussians": trainer.num_gaussians,
        "method": trainer.config.method,
        # the rasteriser that ran, not the setting ("auto" -> gsplat on CUDA, torch otherwise)
        "backend": resolve_backend(trainer.config.backend, trainer.device),
        "device": str(trainer.device),
        "init": trainer.init_note,
        "scene_scale": trainer.scene_scale,
        "resolution": list(trainer.train_views.sizes[0]),  # (width, height) of the training views
    }


def write_renders(
    renders_dir: str | Path, names: list[str], renders: list[np.ndarray], targets: list[np.ndarray]
) -> Path:
    """A folder with one ``render | ground truth`` png per view (float [H, W, 3] in [0, 1]),
    swapped in whole so it never mixes two runs' images."""
    import imageio.v3 as iio

    with atomic_directory(renders_dir) as tmp:
        for name, render, target in zip(names, renders, targets, strict=True):
            canvas = np.concatenate([render, target], axis=1)
            stem = Path(name).stem or "view"
            iio.imwrite(tmp / f"{stem}.png", (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8))
    return Path(renders_dir)


def write_run(out_dir: str | Path, trainer: Trainer, evaluation: Evaluation) -> Path:
    """Write ``splats.ply``, ``renders/``, ``metrics.json`` and ``config.json`` of a trained run
    into ``out_dir`` (the checkpoint is ``trainer.save_checkpoint()``'s job); returns ``out_dir``.

    ``evaluation`` must hold its renders (``trainer.evaluate(keep_renders=True)``, the default)
    for ``renders/`` to show the test views.
    """
    # The .ply is the export format's job. Imported here: export sits above splat in the pipeline,
    # and importing it at module level would make the two packages import each other.
    from genfusion.export.ply import write_ply

    out_dir = Path(out_dir)
    splats = {name: value.detach().cpu() for name, value in trainer.splats.items()}
    write_ply(out_dir / SPLATS_NAME, splats, method=trainer.config.method)
    write_renders(
        out_dir / RENDERS_NAME, [v.name for v in evaluation.views], evaluation.renders, evaluation.targets
    )
    write_json_atomic(out_dir / METRICS_NAME, run_metrics(trainer, evaluation))
    write_json_atomic(out_dir / CONFIG_NAME, trainer.config.to_dict())
    return out_dir


def reconstruct(
    scene: Scene,
    config: ReconstructConfig,
    out_dir: str | Path,
    *,
    scene_info: dict[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
    quiet: bool = False,
    progress: ProgressCallback | None = None,
    stop_check: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train on ``scene``, then write the whole run folder ``out_dir``; returns the metrics
    (what ``metrics.json`` holds).

    ``scene_info`` (``{"path", "downscale", "format"}``) is stored in the checkpoint so a resume
    can check it trains on the same capture; None stores ``scene.root``. ``resume`` is a loaded
    checkpoint (:func:`genfusion.splat.checkpoint.load_checkpoint`) to continue from; checking
    that it matches ``config`` is the caller's job. ``progress`` receives the training events;
    without it a tqdm bar is shown unless ``quiet``. ``stop_check()`` returning True cancels
    (:class:`~genfusion.errors.Cancelled`); the checkpoint keeps the last saved step.

    ``out_dir`` is created only once the Trainer has accepted the run (memory estimate, split,
    device), so a refused run leaves nothing behind. Errors are :class:`GenFusionError`.
    """
    from genfusion.progress import tqdm_progress

    out_dir = Path(out_dir)
    bar = nullcontext(progress) if (quiet or progress is not None) else tqdm_progress()
    with bar as callback:
        trainer = Trainer(
            scene,
            config,
            progress=callback,
            scene_info=scene_info,
            checkpoint_path=out_dir / CHECKPOINT_NAME,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            trainer.load_state(resume)
        trainer.train(stop_check=stop_check)
        trainer.save_checkpoint()
        evaluation = trainer.evaluate()
    write_run(out_dir, trainer, evaluation)
    return run_metrics(trainer, evaluation)


# ----------------------------------------------------------------------------- reading


@dataclass
class RunFolder:
    """A finished run folder, as :func:`read_run` found it."""

    path: Path  # the folder
    run: ckpt.LoadedRun  # the checkpoint: Gaussians, method, step, settings, scene
    metrics: dict[str, Any]  # metrics.json (layout: run_metrics)
    config: dict[str, Any]  # config.json (ReconstructConfig.to_dict())

    @property
    def splats_path(self) -> Path:
        return self.path / SPLATS_NAME

    @property
    def renders_dir(self) -> Path:
        return self.path / RENDERS_NAME


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from the run folder; missing or unreadable is a GenFusionError."""
    run_dir = path.parent
    if not path.is_file():
        raise GenFusionError(
            f"{run_dir} has a checkpoint but no {path.name}: the run did not finish",
            hint=f"Finish it with `genfusion reconstruct SCENE --out {run_dir} --resume`.",
        )
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GenFusionError(
            f"{path} is not readable {what} ({type(err).__name__}: {str(err)[:200]})",
            hint=f"Rewrite the run folder with `genfusion reconstruct SCENE --out {run_dir} --resume`.",
        ) from None
    if not isinstance(value, dict):
        raise GenFusionError(
            f"{path} holds {type(value).__name__}, not the {what} of a run",
            hint=f"Rewrite the run folder with `genfusion reconstruct SCENE --out {run_dir} --resume`.",
        )
    return value


def read_run(out_dir: str | Path) -> RunFolder:
    """Load the run folder ``out_dir``: its checkpoint, ``metrics.json`` and ``config.json``.

    An absent folder, a folder without a readable checkpoint, and a run that did not finish or
    whose JSON files are damaged are each a :class:`GenFusionError` saying what to do.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GenFusionError(
            "is a file, not a run folder", path=out_dir, hint="Give the folder passed to --out."
        )
    run = ckpt.load_run(out_dir)  # absent folder, missing/foreign/empty checkpoint: clear errors
    return RunFolder(
        path=out_dir,
        run=run,
        metrics=_read_json(out_dir / METRICS_NAME, "metrics"),
        config=_read_json(out_dir / CONFIG_NAME, "config"),
    )
