"""Job kinds and exports: what a job's worker runs, and the files a finished job offers.

A job kind is a function that returns a :data:`app.jobs.Task` (``task(progress, stop_check)``).
There are two: :func:`reconstruct_task` (poses when the capture has none, then a 2DGS / 3DGS
reconstruction through the library's Trainer and run folder) and
:func:`app.fusion_task.fusion_task` (the same start, then the fusion loop in ``run/``) for the
modes ``masked``, ``sparse`` and ``complete``.

Job folder layout (inside :mod:`app.jobs`'s folder)::

    upload/            what the user uploaded (see app.capture)
    scene/             the COLMAP scene ``genfusion poses`` made from photos or a video
    cache/             processed images (undistorted / downscaled), never inside the capture
    summary.json       what ``genfusion inspect`` says about the capture as trained
    run/               the library's run folder (genfusion.splat.run): checkpoint.pt,
                       splats.ply, metrics.json, renders/, config.json; a fusion job's also
                       fusion.json, fusion_config.json, fusion_state.json, rounds/, events.jsonl
    fusion_rounds.json a fusion job's rounds: metrics and generated cameras (app.fusion_task)
    exports/           splats.splat, mesh.glb, video.mp4, <job>-run.zip
    camera_path.json   the viewer's camera path (nerfstudio format)

Payloads for rich consumers ride on the ProgressEvents: the ``capture`` event carries a
:class:`SceneCameras`, every ``reconstruct`` event a :class:`LiveSplats` from which the viewer
copies the current Gaussians when (and only when) it wants them.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.capture import Capture
from genfusion.atomic import atomic_path, write_json_atomic
from genfusion.data.types import Camera, Scene
from genfusion.errors import Cancelled, GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent, emit
from genfusion.splat.config import ReconstructConfig

SCENE_DIR = "scene"
CACHE_DIR = "cache"
RUN_DIR = "run"
EXPORTS_DIR = "exports"
SUMMARY_NAME = "summary.json"
CAMERA_PATH_NAME = "camera_path.json"

# The modes a user picks from: a reconstruction, or one of the fusion loop's modes
# (genfusion.fusion.config.Mode, run by app.fusion_task under the same keys).
MODES: dict[str, str] = {
    "reconstruct": "Reconstruct: fit 2DGS / 3DGS to the capture",
    "masked": "Extrapolate: views beyond the capture (fusion loop, masked protocol)",
    "sparse": "Sparse views: complete a 3-9 photo capture (fusion loop)",
    "complete": "Complete: fill regions never seen (fusion loop, along the camera path)",
}
AVAILABLE_MODES = ("reconstruct", "masked", "sparse", "complete")


def check_mode(mode: str) -> str:
    """``mode`` if a job can run it; GenFusionError otherwise."""
    if mode in AVAILABLE_MODES:
        return mode
    raise GenFusionError(f"unknown mode {mode!r}.", hint=f"Use one of {', '.join(MODES)}.")


# ----------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class SceneCameras:
    """Payload of the ``capture`` event: the cameras being trained on, for the viewer."""

    scene: Scene
    train_ids: tuple[int, ...]
    test_ids: tuple[int, ...]


class LiveSplats:
    """Payload of ``reconstruct`` events: a handle on the trainer's Gaussians.

    Consumers are called on the training thread between two steps, so :meth:`take` copies
    safely; it is only called when a consumer wants a frame (the viewer throttles).
    """

    def __init__(self, trainer: Any, method: str):
        self._trainer = trainer
        self.method = method

    @property
    def step(self) -> int:
        return int(self._trainer.step)

    @property
    def num_gaussians(self) -> int:
        return int(self._trainer.num_gaussians)

    def take(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the current raw parameters (gsplat layout)."""
        with torch.no_grad():
            return {name: value.detach().to("cpu", copy=True) for name, value in self._trainer.splats.items()}


# ----------------------------------------------------------------------------- reconstruct


def scene_info(scene_path: Path, scene: Scene, config: ReconstructConfig) -> dict[str, Any]:
    return {"path": str(scene_path), "downscale": config.downscale, "format": scene.format}


def posed_scene(
    job_dir: Path,
    capture: Capture,
    progress: ProgressCallback,
    stop_check: Callable[[], bool],
    *,
    sfm: Any = None,
) -> Path:
    """The capture's scene folder: as given when it is posed, else ``scene/`` after pycolmap
    (every job kind starts here); Cancelled when asked to stop before training."""
    scene_path = capture.path
    if capture.needs_poses:
        from genfusion.data.sfm import estimate_poses

        emit(progress, ProgressEvent("poses", 0, None, "estimating camera poses with pycolmap"))
        scene_path = estimate_poses(
            capture.path, Path(job_dir) / SCENE_DIR, config=sfm, progress=progress, stop_check=stop_check
        )
    if stop_check():
        raise Cancelled("cancelled before training started")
    return scene_path


def announce_training(progress: ProgressCallback, scene: Any, trainer: Any, live: LiveSplats) -> None:
    """The events every job kind sends before its first step: the cameras and their split (the
    viewer is made at this one) and step 0 with the initial Gaussians (the live splats)."""
    split = SceneCameras(scene, tuple(trainer.train_ids), tuple(trainer.test_ids))
    emit(progress, ProgressEvent("capture", 1, 1, f"{len(scene)} images, {scene.format}", payload=split))
    emit(
        progress,
        ProgressEvent(
            "reconstruct",
            0,
            trainer.config.iterations,
            f"{live.method}: {trainer.init_note}",
            metrics={"num_gaussians": float(trainer.num_gaussians)},
            payload=live,
        ),
    )


def reconstruct_task(job_dir: Path, capture: Capture, config: ReconstructConfig, *, sfm: Any = None):
    """The task of a reconstruction job: (poses) -> load -> train -> evaluate -> run folder.

    Cancel stops training between two steps; the run folder then holds ``checkpoint.pt`` (resume
    with ``genfusion reconstruct SCENE --out run --resume``) and ``splats.ply`` of that step, and
    no ``metrics.json`` (the library's mark of a finished run).
    """
    from genfusion.data.load import load_scene
    from genfusion.data.summary import summarize_scene
    from genfusion.splat import run as run_folder
    from genfusion.splat.trainer import Trainer

    def task(progress: ProgressCallback, stop_check: Callable[[], bool]) -> dict[str, Any]:
        scene_path = posed_scene(job_dir, capture, progress, stop_check, sfm=sfm)
        scene = load_scene(scene_path, downscale=config.downscale, cache_dir=job_dir / CACHE_DIR)
        summary = summarize_scene(scene)
        write_json_atomic(job_dir / SUMMARY_NAME, summary)

        holder: dict[str, LiveSplats] = {}

        def live(event: ProgressEvent) -> None:
            if event.stage == "reconstruct" and "live" in holder:
                event = dataclasses.replace(event, payload=holder["live"])
            progress(event)

        run_dir = job_dir / RUN_DIR
        trainer = Trainer(
            scene,
            config,
            progress=live,
            scene_info=scene_info(scene_path, scene, config),
            checkpoint_path=run_dir / run_folder.CHECKPOINT_NAME,
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        holder["live"] = LiveSplats(trainer, config.method)
        announce_training(progress, scene, trainer, holder["live"])
        try:
            trainer.train(stop_check=stop_check)
        except Cancelled:
            save_partial(trainer, run_dir)
            raise Cancelled(
                f"cancelled at step {trainer.step} of {config.iterations}; run/checkpoint.pt and "
                "run/splats.ply hold that step",
                step=trainer.step,
            ) from None
        trainer.save_checkpoint()
        emit(progress, ProgressEvent("evaluate", 0, 1, "rendering the test views"))
        evaluation = trainer.evaluate()
        run_folder.write_run(run_dir, trainer, evaluation)
        metrics = run_folder.run_metrics(trainer, evaluation)
        export_splat(job_dir, trainer.splats, config.method)
        emit(progress, ProgressEvent("evaluate", 1, 1, metrics_line(metrics), metrics=headline(metrics)))
        return {"metrics": headline(metrics), "scene": str(scene_path), "run": str(run_dir)}

    return task


def on_gpu(task: Callable[..., dict[str, Any]], duration_s: int = 600) -> Callable[..., dict[str, Any]]:
    """``task`` under the Hugging Face ``spaces.GPU`` decorator when that package is installed
    (a GPU Space); unchanged elsewhere. On ZeroGPU hardware a GPU is only lent inside a request,
    so there jobs should run one at a time (``--max-jobs 1``)."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return task
    return spaces.GPU(duration=duration_s)(task)


def save_partial(trainer: Any, run_dir: Path) -> None:
    """What a cancelled run keeps: the checkpoint and the .ply of its last completed step."""
    from genfusion.export.ply import write_ply
    from genfusion.splat.run import SPLATS_NAME

    if trainer.step == 0:
        return
    trainer.save_checkpoint()
    write_ply(
        run_dir / SPLATS_NAME,
        {k: v.detach().cpu() for k, v in trainer.splats.items()},
        method=trainer.config.method,
    )


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    keys = ("psnr", "ssim", "lpips", "num_gaussians", "iterations", "time_s", "num_test_views")
    return {k: float(metrics[k]) for k in keys if isinstance(metrics.get(k), int | float)}


def metrics_line(metrics: dict[str, Any]) -> str:
    parts = [
        f"{metrics.get('iterations', 0)} steps in {metrics.get('time_s', 0):.0f} s",
        f"{metrics.get('num_gaussians', 0):,} Gaussians",
    ]
    if isinstance(metrics.get("psnr"), float):
        parts.append(f"test PSNR {metrics['psnr']:.2f} dB over {metrics.get('num_test_views', 0)} views")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- exports


@dataclass(frozen=True)
class JobOutputs:
    """Where a job's outputs are (each may not exist yet)."""

    job_dir: Path

    @property
    def run_dir(self) -> Path:
        return self.job_dir / RUN_DIR

    @property
    def ply(self) -> Path:
        return self.run_dir / "splats.ply"

    @property
    def splat(self) -> Path:
        return self.job_dir / EXPORTS_DIR / "splats.splat"

    @property
    def mesh(self) -> Path:
        return self.job_dir / EXPORTS_DIR / "mesh.glb"

    @property
    def video(self) -> Path:
        return self.job_dir / EXPORTS_DIR / "video.mp4"

    @property
    def camera_path(self) -> Path:
        return self.job_dir / CAMERA_PATH_NAME

    def run_zip(self) -> Path:
        return self.job_dir / EXPORTS_DIR / f"{self.job_dir.name}-run.zip"


def export_splat(job_dir: Path, splats: Any, method: str) -> Path:
    """``exports/splats.splat`` (what gr.Model3D shows)."""
    from genfusion.export.splat_format import write_splat

    out = JobOutputs(job_dir).splat
    out.parent.mkdir(parents=True, exist_ok=True)
    write_splat(out, {k: v.detach().cpu() for k, v in splats.items()}, method=method)
    return out


def _loaded_run(job_dir: Path):
    from genfusion.splat.checkpoint import load_run

    outputs = JobOutputs(job_dir)
    if not (outputs.run_dir / "checkpoint.pt").is_file():
        raise GenFusionError(
            "this job has no trained Gaussians yet.", hint="Wait for it to finish, or run it."
        )
    return load_run(outputs.run_dir)


def _training_cameras(job_dir: Path, run: Any) -> list[Camera]:
    from genfusion.data.load import load_scene
    from genfusion.splat.data_loader import split_indices

    scene_path = Path(run.scene.get("path", ""))
    if not scene_path.exists():
        raise GenFusionError(
            f"the job's capture {scene_path} is no longer there, so its cameras are unknown."
        )
    scene = load_scene(
        scene_path, downscale=int(run.scene.get("downscale", 1)), cache_dir=job_dir / CACHE_DIR
    )
    train, _ = split_indices(scene, run.config.split)
    return [scene.cameras[i] for i in train] or list(scene.cameras)


def export_mesh(job_dir: Path, *, resolution: int = 128, progress: ProgressCallback | None = None) -> Path:
    """``exports/mesh.glb``: TSDF fusion of the training views (genfusion.export.mesh)."""
    from genfusion.export.mesh import MeshConfig
    from genfusion.export.mesh import export_mesh as fuse

    run = _loaded_run(job_dir)
    out = JobOutputs(job_dir).mesh
    out.parent.mkdir(parents=True, exist_ok=True)
    cameras = _training_cameras(job_dir, run)
    config = MeshConfig(resolution=resolution, max_side=480, max_views=30, device="auto")
    fuse(out, run.splats, cameras, method=run.method, config=config, progress=progress)
    return out


def export_video(job_dir: Path, *, max_side: int = 480, progress: ProgressCallback | None = None) -> Path:
    """``exports/video.mp4`` along the job's ``camera_path.json`` when it has one, else along the
    input trajectory."""
    from genfusion.data.camera_path import read_camera_path
    from genfusion.export.video import VideoConfig
    from genfusion.export.video import export_video as render

    run = _loaded_run(job_dir)
    outputs = JobOutputs(job_dir)
    outputs.video.parent.mkdir(parents=True, exist_ok=True)
    if outputs.camera_path.is_file():
        cameras, fps = read_camera_path(outputs.camera_path)
        interpolate = False
    else:
        cameras, fps, interpolate = _training_cameras(job_dir, run), None, True
    config = VideoConfig(fps=fps or 24.0, frames_per_view=4, max_side=max_side)
    render(
        outputs.video,
        run.splats,
        cameras,
        method=run.method,
        config=config,
        interpolate=interpolate,
        progress=progress,
    )
    return outputs.video


def export_run_zip(job_dir: Path) -> Path:
    """``exports/<job>-run.zip``: the run folder plus the capture summary and the camera path."""
    outputs = JobOutputs(job_dir)
    if not outputs.run_dir.is_dir():
        raise GenFusionError("this job has no run folder yet.", hint="Wait for it to finish.")
    out = outputs.run_zip()
    out.parent.mkdir(parents=True, exist_ok=True)
    extras = [job_dir / SUMMARY_NAME, outputs.camera_path, job_dir / "job.json"]
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(outputs.run_dir.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    archive.write(path, Path("run") / path.relative_to(outputs.run_dir))
            for path in extras:
                if path.is_file():
                    archive.write(path, path.name)
    return out


def read_metrics(job_dir: Path) -> dict[str, Any] | None:
    path = JobOutputs(job_dir).run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


__all__ = [
    "AVAILABLE_MODES",
    "announce_training",
    "MODES",
    "JobOutputs",
    "LiveSplats",
    "SceneCameras",
    "check_mode",
    "export_mesh",
    "export_run_zip",
    "export_splat",
    "export_video",
    "headline",
    "metrics_line",
    "on_gpu",
    "posed_scene",
    "read_metrics",
    "reconstruct_task",
    "save_partial",
]
