"""The fusion job kind: (poses) -> :class:`genfusion.fusion.loop.FusionLoop` in the job's ``run/``.

A fusion job runs one of the loop's modes (``masked`` view extrapolation, ``sparse`` few-view,
``complete`` scene completion) exactly as ``genfusion fuse SCENE --out run`` would: the settings
are resolved against the mode's preset and the budget (:func:`plan_fusion`), written to
``run/fusion_config.json`` (so ``genfusion fuse SCENE --out run --resume`` continues a cancelled
job), and the loop writes its run folder (the reconstruction's files plus ``fusion.json``,
``rounds/NN/``, ``events.jsonl``, ``fusion_state.json``).

What rides on the events for the page and the viewer:

- ``capture``: a :class:`app.tasks.SceneCameras` (the input frusta);
- ``reconstruct``: a :class:`app.tasks.LiveSplats` on the loop's trainer (live splats, as for a
  reconstruction job), ``fusion.snapshot``: the loop's own copy of the splats after each round;
- ``fusion.round``: the round's metrics (test PSNR, unreliable share, views used, ...) and, in
  its payload, small rendered / repaired / unreliable frames and the generated views' cameras.
  The job keeps each round's cameras and metrics in ``fusion_rounds.json`` (the viewer of a
  finished job shows the last round's views from it); the page's round gallery is the loop's
  ``run/rounds/NN/frameKK.png`` (rendered | repaired | unreliable side by side).

Mode ``complete`` (and ``--path file`` in any mode) generates along the job's
``camera_path.json`` when the job has one at the time the loop starts (copied from the job it was
started from, or set with the ``set_camera_path`` API while it waits); ``complete`` falls back to
the mode's ellipse without one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.capture import REPO, Capture
from app.params import AppLimits
from app.tasks import (
    CACHE_DIR,
    CAMERA_PATH_NAME,
    MODES,
    RUN_DIR,
    SUMMARY_NAME,
    LiveSplats,
    announce_training,
    export_splat,
    headline,
    metrics_line,
    posed_scene,
    scene_info,
)
from genfusion.atomic import write_json_atomic
from genfusion.errors import Cancelled, GenFusionError
from genfusion.fusion.config import FusionConfig
from genfusion.progress import ProgressCallback, ProgressEvent, emit

FUSION_MODES = ("masked", "sparse", "complete")
ROUNDS_RECORD = "fusion_rounds.json"  # per round: metrics, warnings, generated cameras (the viewer)
CONFIG_NAME = "fusion_config.json"  # genfusion.cli.fuse.CONFIG_NAME: the resolved config, for --resume
MAX_ROUND_CAMERAS = 64  # generated views kept per round for the viewer (an even subsample)


def weights_dir() -> str:
    """This server's repair-model folder (absolute: the app may run from another folder)."""
    from genfusion.generation.repairer import DEFAULT_WEIGHTS_DIR

    return str(REPO / DEFAULT_WEIGHTS_DIR)


def with_job_camera_path(job_dir: Path, config: FusionConfig) -> FusionConfig:
    """``config`` following the job's ``camera_path.json`` when the mode uses a path and the job
    has one; the path is checked first."""
    path = Path(job_dir) / CAMERA_PATH_NAME
    if not path.is_file() or not (config.mode == "complete" or config.path == "file"):
        return config
    from genfusion.data.camera_path import read_camera_path

    try:
        read_camera_path(path)
    except GenFusionError as err:
        raise GenFusionError(
            f"the job's camera path cannot be used: {str(err).replace(str(path), CAMERA_PATH_NAME)}",
            hint="Save another one in the viewer's camera-path editor, or upload one.",
        ) from None
    return dataclasses.replace(config, camera_path=str(path))


def _check_repairer(config: FusionConfig) -> None:
    if config.repairer not in ("diffusion", "reproject+diffusion"):
        return
    from genfusion.generation.repairer import checkpoint_problems

    problems = checkpoint_problems(config.weights_dir)
    if problems:
        raise GenFusionError(
            f"repairer {config.repairer!r} needs the diffusion repair model, which is not installed here "
            f"(missing: {', '.join(problems[:3])}).",
            hint="Pick repairer 'auto' (it uses the weight-free fill), or install the model with "
            "`genfusion download` (checkpoints/README.md).",
        )


def plan_fusion(
    scene_path: Path,
    config: FusionConfig,
    explicit: set[str],
    limits: AppLimits | None = None,
    *,
    cache_dir: Path | None = None,
):
    """(the resolved config, the scene at its resolution): the mode's preset and the budget
    applied as ``genfusion fuse`` applies them, then every check a run would fail later: the
    server's limits, the split the mode trains on, the repairer. Raises GenFusionError in words."""
    from genfusion.data.load import load_scene
    from genfusion.fusion.config import resolve
    from genfusion.splat.data_loader import resolve_split

    probe = load_scene(scene_path, cache_dir=cache_dir)
    long_side = max(max(c.width, c.height) for c in probe.cameras)
    resolved = resolve(config, explicit=explicit, long_side=long_side)
    if limits is not None:
        limits.check_fusion(resolved)
    _check_repairer(resolved)
    downscale = resolved.reconstruct.downscale
    scene = probe if downscale == 1 else load_scene(scene_path, downscale=downscale, cache_dir=cache_dir)
    split = resolved.reconstruct.split
    try:
        resolve_split(scene, split)
    except GenFusionError as err:
        label = MODES[config.mode].split(":")[0]
        chosen = "you chose" if "split" in explicit else "the mode's protocol"
        raise GenFusionError(
            f"mode {config.mode!r} ({label}) trains on --split {split} ({chosen}), which this capture "
            f"cannot give ({len(scene)} images at downscale {downscale}): {err}.",
            hint="Pick another mode, or another split under Advanced settings.",
        ) from None
    return resolved, scene


def fusion_title(config: FusionConfig) -> str:
    """One line for job lists: mode, method, steps, rounds, downscale (of a resolved config)."""
    rc = config.reconstruct
    rounds = f"{len(config.rounds)} rounds · " if config.rounds is not None else ""
    return f"{config.mode} · {rc.method} · {rc.iterations} steps · {rounds}1/{rc.downscale}"


def _even(items: list[Any], count: int) -> list[Any]:
    if len(items) <= count:
        return items
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def read_rounds(job_dir: Path) -> list[dict[str, Any]]:
    """The job's ``fusion_rounds.json`` (empty when it has none)."""
    import json

    path = Path(job_dir) / ROUNDS_RECORD
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("rounds", []))
    except (OSError, ValueError, AttributeError):
        return []


def round_frames(job_dir: Path, limit: int = 48) -> list[tuple[str, str]]:
    """The round gallery: ``run/rounds/NN/frameKK.png`` (rendered | repaired | unreliable), the
    latest round first."""
    from genfusion.fusion.loop import ROUNDS_NAME

    rounds = Path(job_dir) / RUN_DIR / ROUNDS_NAME
    if not rounds.is_dir():
        return []
    items = []
    for folder in sorted((p for p in rounds.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True):
        for frame in sorted(folder.glob("frame*.png")):
            caption = f"round {int(folder.name) + 1} · {frame.stem}: rendered | repaired | unreliable"
            items.append((str(frame), caption))
    return items[:limit]


def keep_last_round(run_dir: Path, method: str, rounds_total: int) -> str:
    """After a cancel: ``splats.ply`` from ``checkpoint.pt`` (so the two agree; the loop saves
    the checkpoint after each round, the trainer every ``checkpoint_every`` steps); returns what
    the folder holds, in words."""
    import json

    from genfusion.export.ply import write_ply
    from genfusion.fusion.loop import STATE_NAME
    from genfusion.splat.checkpoint import load_checkpoint
    from genfusion.splat.run import CHECKPOINT_NAME, SPLATS_NAME

    checkpoint = run_dir / CHECKPOINT_NAME
    if not checkpoint.is_file():
        return "no round had finished and no checkpoint was saved yet, so run/ holds no Gaussians"
    contents = load_checkpoint(checkpoint)
    write_ply(run_dir / SPLATS_NAME, contents["splats"], method=method)
    done = 0
    if (run_dir / STATE_NAME).is_file():
        try:
            done = int(json.loads((run_dir / STATE_NAME).read_text(encoding="utf-8"))["next_round"])
        except (OSError, ValueError, KeyError):
            done = 0
    resume = "`genfusion fuse SCENE --out run --resume` continues it" if done else "no round to resume from"
    return (
        f"{done} of {rounds_total} rounds done; run/checkpoint.pt and run/splats.ply hold step "
        f"{int(contents['step'])} ({resume})"
    )


def fusion_task(
    job_dir: Path,
    capture: Capture,
    config: FusionConfig,
    explicit: set[str],
    *,
    limits: AppLimits | None = None,
    sfm: Any = None,
):
    """The task of a fusion job (``config`` unresolved; ``explicit``: the reconstruction
    settings that win over the mode's preset, :func:`app.params.explicit_fields`)."""
    from genfusion.data.summary import summarize_scene
    from genfusion.fusion.loop import FusionLoop

    job_dir = Path(job_dir)

    def task(progress: ProgressCallback, stop_check: Callable[[], bool]) -> dict[str, Any]:
        scene_path = posed_scene(job_dir, capture, progress, stop_check, sfm=sfm)
        planned = with_job_camera_path(job_dir, config)
        resolved, scene = plan_fusion(scene_path, planned, explicit, limits, cache_dir=job_dir / CACHE_DIR)
        write_json_atomic(job_dir / SUMMARY_NAME, summarize_scene(scene))
        rc = resolved.reconstruct
        run_dir = job_dir / RUN_DIR
        holder: dict[str, LiveSplats] = {}
        rounds: list[dict[str, Any]] = []

        def forward(event: ProgressEvent) -> None:
            if event.stage == "reconstruct" and "live" in holder:
                event = dataclasses.replace(event, payload=holder["live"])
            elif event.stage == "fusion.round" and isinstance(event.payload, dict):
                payload = event.payload
                rounds.append(
                    {
                        "round": int(payload.get("round", len(rounds))),
                        "step": int(event.step),
                        "message": event.message,
                        "metrics": {k: float(v) for k, v in event.metrics.items()},
                        "warnings": list(payload.get("warnings", [])),
                        "cameras": _even(list(payload.get("cameras", [])), MAX_ROUND_CAMERAS),
                    }
                )
                write_json_atomic(job_dir / ROUNDS_RECORD, {"rounds": rounds})
            progress(event)

        loop = FusionLoop(
            scene, resolved, run_dir, progress=forward, scene_info=scene_info(scene_path, scene, rc)
        )
        write_json_atomic(run_dir / CONFIG_NAME, resolved.to_dict())
        holder["live"] = LiveSplats(loop.trainer, rc.method)
        trainer = loop.trainer
        emit(
            progress,
            ProgressEvent(
                "fusion.start",
                0,
                len(resolved.rounds),
                f"{resolved.mode}: {len(resolved.rounds)} rounds at steps "
                f"{', '.join(map(str, resolved.rounds))} of {rc.iterations}; repairer: "
                f"{loop.repairer.description}",
            ),
        )
        announce_training(progress, scene, trainer, holder["live"])
        try:
            metrics = loop.run(stop_check=stop_check)
        except Cancelled:
            kept = keep_last_round(run_dir, rc.method, len(resolved.rounds))
            message = f"cancelled at step {trainer.step} of {rc.iterations}; {kept}"
            raise Cancelled(message, step=trainer.step) from None
        export_splat(job_dir, trainer.splats, rc.method)
        emit(progress, ProgressEvent("evaluate", 1, 1, metrics_line(metrics), metrics=headline(metrics)))
        return {
            "metrics": headline(metrics),
            "scene": str(scene_path),
            "run": str(run_dir),
            "mode": resolved.mode,
            "rounds": len(loop.reports),
            "repairer": getattr(loop.repairer, "description", ""),
        }

    return task


__all__ = [
    "CONFIG_NAME",
    "FUSION_MODES",
    "ROUNDS_RECORD",
    "fusion_task",
    "fusion_title",
    "keep_last_round",
    "plan_fusion",
    "read_rounds",
    "round_frames",
    "weights_dir",
    "with_job_camera_path",
]
