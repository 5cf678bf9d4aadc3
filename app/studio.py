"""The app's actions, without any UI: what the Gradio page and its API both call.

:class:`Studio` ties the pieces together: captures (:mod:`app.capture`), settings
(:mod:`app.params`), jobs (:mod:`app.jobs`), job kinds and exports (:mod:`app.tasks`) and the
viewers (:mod:`app.viewer`). Every method takes the caller's ``owner`` key (a browser's key or a
Gradio session) and only touches that owner's jobs; every user error is a
:class:`GenFusionError` whose message the UI shows as it is.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.capture import (
    REPO,
    Capture,
    UploadLimits,
    demo_capture,
    describe_upload,
    folder_capture,
    summary_text,
    upload_capture,
)
from app.fusion_task import (
    FUSION_MODES,
    fusion_task,
    fusion_title,
    plan_fusion,
    read_rounds,
    round_frames,
    weights_dir,
    with_job_camera_path,
)
from app.jobs import PUBLIC_OWNER, Job, JobManager
from app.params import AppLimits, config_from_values, explicit_fields, fusion_config_from_values, split_values
from app.tasks import (
    CAMERA_PATH_NAME,
    JobOutputs,
    check_mode,
    export_mesh,
    export_run_zip,
    export_video,
    on_gpu,
    read_metrics,
    reconstruct_task,
)
from genfusion.errors import GenFusionError

logger = logging.getLogger(__name__)

SOURCES = ("demo", "upload", "folder")
DEFAULT_JOBS_ROOT = REPO / "outputs" / "app_jobs"


@dataclass
class StudioSettings:
    """How this server runs jobs and what it accepts."""

    jobs_root: Path = DEFAULT_JOBS_ROOT  # one folder per job
    max_concurrent: int = 1  # jobs training at once; the rest wait in a queue
    folder_roots: tuple[Path, ...] | None = None  # server folders users may name; None = assets + jobs root
    limits: AppLimits = field(default_factory=AppLimits)  # settings this server refuses
    upload_limits: UploadLimits = field(default_factory=UploadLimits)  # what an upload may hold
    viewer_interval_s: float = 2.0  # the live viewer shows new Gaussians at most this often
    max_viewers: int = 4  # viser servers kept open (finished jobs' viewers are closed first)

    def roots(self) -> tuple[Path, ...]:
        if self.folder_roots is not None:
            return tuple(self.folder_roots)
        return (REPO / "assets", Path(self.jobs_root))


def repairer_status() -> tuple[str, str]:
    """(one line for the page, the repairer's own full description): which repair model the
    fusion loop would use, and how to get the diffusion one."""
    from genfusion.generation.repairer import DEFAULT_WEIGHTS_DIR, checkpoint_problems, make_repairer

    weights = REPO / DEFAULT_WEIGHTS_DIR
    if not checkpoint_problems(weights):
        line = f"**Repair model:** the diffusion model in `{DEFAULT_WEIGHTS_DIR}`."
        return line, "Loaded when a fusion run starts (genfusion.generation.pipeline)."
    repairer = make_repairer("auto", weights)  # without weights: the weight-free one, instantly
    line = (
        "**Repair model:** weight-free (the diffusion model is not installed; `genfusion download` "
        "installs it, see checkpoints/README.md)."
    )
    return line, repairer.description


def repairer_note(kind: str) -> str:
    """What repairer ``kind`` (FusionConfig.repairer) would run here, in one Markdown line."""
    from genfusion.generation.repairer import checkpoint_problems, make_repairer

    weights = weights_dir()
    installed = not checkpoint_problems(weights)
    if kind in ("diffusion", "reproject+diffusion"):
        if not installed:
            return (
                f"⚠ **{kind}** needs the diffusion repair model, which is not installed "
                "(`genfusion download`); a job asking for it is refused. **auto** uses the weight-free fill."
            )
        first = "reprojected photos, then " if kind != "diffusion" else ""
        return f"**{kind}:** {first}the diffusion model in `{weights}` (loaded when the job starts)."
    if kind == "auto" and installed:
        return "**auto:** reprojected photos, then the diffusion model for what no photo saw."
    try:
        return f"**{kind}:** {make_repairer(kind, weights).description}"
    except GenFusionError as err:
        return f"⚠ **{kind}:** {err}"


class Studio:
    """Jobs, captures, exports and viewers behind one set of owner-checked actions."""

    def __init__(self, settings: StudioSettings | None = None, *, viewers: bool = True):
        self.settings = settings or StudioSettings()
        self.jobs = JobManager(self.settings.jobs_root, max_concurrent=self.settings.max_concurrent)
        self.hub = None
        if viewers:
            from app.viewer_hub import ViewerHub

            self.hub = ViewerHub(
                self.jobs, max_viewers=self.settings.max_viewers, interval_s=self.settings.viewer_interval_s
            )
        self._export_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ captures

    def _folder(self, owner: str, folder: str) -> Capture:
        capture = folder_capture(folder, self.settings.roots())
        root = self.jobs.root
        if capture.path.is_relative_to(root):  # another job's folder: only the owner's own
            parts = capture.path.relative_to(root).parts
            if not parts:
                raise GenFusionError(
                    "the jobs folder itself is not a capture.", hint="Name one job's scene folder."
                )
            self.jobs.get(parts[0], owner)
        return capture

    def inspect(
        self, owner: str, source: str, files: Sequence[str] | None, folder: str | None, downscale: Any = 1
    ) -> str:
        """The capture summary (``genfusion inspect``) of what the user picked, writing nothing."""
        source = _check_source(source)
        factor = _downscale(downscale)
        if source == "demo":
            return summary_text(demo_capture(), factor)
        if source == "folder":
            return summary_text(self._folder(owner, folder or ""), factor)
        return describe_upload(list(files or []), self.settings.upload_limits)

    # ------------------------------------------------------------------ jobs

    def run(
        self,
        owner: str,
        source: str,
        files: Sequence[str] | None,
        folder: str | None,
        mode: str,
        settings: dict[str, Any],
        *,
        from_job: str | None = None,
    ) -> str:
        """Check everything, lay the capture out in a new job folder and queue the job; returns
        its id. A refused input leaves no job folder behind.

        ``settings`` are ReconstructConfig fields, plus FusionConfig fields for the fusion modes
        (ignored for a reconstruction). ``from_job`` (one of the owner's jobs, e.g. the one whose
        viewer drew a camera path) lends its ``camera_path.json`` to a ``complete`` run (or one
        with ``path`` file)."""
        source = _check_source(source)
        check_mode(mode)
        reconstruct_values, fusion_values = split_values(settings)
        if mode not in FUSION_MODES:
            return self._submit(owner, source, files, folder, mode, reconstruct_values)
        config = config_from_values(reconstruct_values, self.settings.limits)  # again once resolved
        lent = self._lent_camera_path(owner, from_job)
        wants_path = mode == "complete" or fusion_values.get("path") == "file"
        fusion = fusion_config_from_values(
            mode,
            fusion_values,
            config,
            camera_path=str(lent) if lent is not None and wants_path else None,
            weights_dir=weights_dir(),
        )
        return self._submit(owner, source, files, folder, mode, reconstruct_values, fusion=fusion, lent=lent)

    def _lent_camera_path(self, owner: str, from_job: str | None) -> Path | None:
        if not from_job:
            return None
        path = self.jobs.get(from_job, owner).folder / CAMERA_PATH_NAME
        return path if path.is_file() else None

    def _submit(
        self,
        owner: str,
        source: str,
        files: Sequence[str] | None,
        folder: str | None,
        mode: str,
        settings: dict[str, Any],
        *,
        fusion: Any = None,
        lent: Path | None = None,
    ) -> str:
        limits = self.settings.limits
        config = fusion.reconstruct if fusion is not None else config_from_values(settings, limits)
        if source == "demo":
            capture = demo_capture()
        elif source == "folder":
            capture = self._folder(owner, folder or "")
        else:
            capture = None  # laid out inside the job folder below
        title = f"{config.method} · {config.iterations} steps · 1/{config.downscale}"
        if fusion is not None:
            title = f"{mode} · {title}"
        job = self.jobs.create(owner, kind=mode, title=title, params={"settings": config.to_dict()})
        try:
            if capture is None:
                capture = upload_capture(list(files or []), job.folder, self.settings.upload_limits)
            if fusion is None:
                task = on_gpu(reconstruct_task(job.folder, capture, config))
            else:
                task, title = self._fusion_job(job, capture, fusion, lent, title)
            job.record.title = f"{_short(capture.source)} · {title}"
            job.record.params["capture"] = capture.to_dict()
        except BaseException:
            self.jobs.discard(job)
            raise
        self.jobs.submit(job, task)
        return job.id

    def _fusion_job(self, job: Job, capture: Capture, fusion: Any, lent: Path | None, title: str):
        """(the task, the title) of a fusion job; a posed capture is checked against the mode
        now (a split it cannot give, the limits, the repairer), photos once their poses exist."""
        explicit = explicit_fields(fusion.reconstruct)
        if lent is not None:
            shutil.copyfile(lent, job.folder / CAMERA_PATH_NAME)
            if fusion.camera_path:
                fusion = dataclasses.replace(fusion, camera_path=str(job.folder / CAMERA_PATH_NAME))
        if not capture.needs_poses:
            planned = with_job_camera_path(job.folder, fusion)
            resolved, _ = plan_fusion(capture.path, planned, explicit, self.settings.limits)
            title = fusion_title(resolved)
            job.record.params["settings"] = resolved.reconstruct.to_dict()
            job.record.params["fusion"] = {k: v for k, v in resolved.to_dict().items() if k != "reconstruct"}
        task = fusion_task(job.folder, capture, fusion, explicit, limits=self.settings.limits)
        return on_gpu(task), title

    def cancel(self, owner: str, job_id: str) -> dict[str, Any]:
        self.jobs.cancel(job_id, owner)
        return self.status(owner, job_id)

    def status(self, owner: str, job_id: str) -> dict[str, Any]:
        """A JSON-ready picture of the job: state, message, progress, last metrics, outputs."""
        job = self.jobs.get(job_id, owner)
        return job_status(job, self.jobs.queue_position(job.id))

    def events(self, owner: str, job_id: str, since: int = 0) -> list[dict[str, Any]]:
        return self.jobs.get(job_id, owner).events(max(0, int(since)))

    def list_jobs(self, owner: str) -> list[dict[str, Any]]:
        return [
            {
                "id": j.id,
                "title": j.record.title,
                "state": j.state,
                "created": j.record.created,
                "public": j.record.owner == _public_hash(),
            }
            for j in self.jobs.list_jobs(owner)
        ]

    def submit_public_demo(self, settings: dict[str, Any]) -> str:
        """The ``--demo`` job at start-up: the demo scene, visible (read-only) to every session."""
        return self.run(PUBLIC_OWNER, "demo", None, None, "reconstruct", settings)

    # ------------------------------------------------------------------ outputs

    def _finished(self, owner: str, job_id: str) -> Job:
        job = self.jobs.get(job_id, owner)
        if job.state != "done":
            raise GenFusionError(
                f"job {job.id} is {job.state}, so it has no final outputs yet.",
                hint="Wait until it is done (a cancelled job keeps run/checkpoint.pt and run/splats.ply).",
            )
        return job

    def _export_lock(self, job_id: str) -> threading.Lock:
        with self._lock:
            return self._export_locks.setdefault(job_id, threading.Lock())

    def downloads(self, owner: str, job_id: str) -> list[Path]:
        """The finished job's ``.ply``, ``.splat`` and run folder zip (made on first request)."""
        job = self._finished(owner, job_id)
        outputs = JobOutputs(job.folder)
        with self._export_lock(job.id):
            archive = outputs.run_zip()
            if not archive.is_file():
                archive = export_run_zip(job.folder)
        return [p for p in (outputs.ply, outputs.splat, archive) if p.is_file()]

    def rounds(self, owner: str, job_id: str) -> list[tuple[str, str]]:
        """The fusion rounds' frames so far (rendered | repaired | unreliable), newest first."""
        return round_frames(self.jobs.get(job_id, owner).folder)

    def splat_file(self, owner: str, job_id: str) -> Path | None:
        job = self.jobs.get(job_id, owner)
        path = JobOutputs(job.folder).splat
        return path if job.state == "done" and path.is_file() else None

    def mesh(self, owner: str, job_id: str) -> Path:
        """``mesh.glb`` of the finished job (TSDF fusion; made once, then reused)."""
        job = self._finished(owner, job_id)
        with self._export_lock(job.id):
            out = JobOutputs(job.folder).mesh
            return out if out.is_file() else export_mesh(job.folder)

    def video(self, owner: str, job_id: str) -> Path:
        """``video.mp4`` along the job's camera path (or the input trajectory); remade each time,
        since the path may have changed."""
        job = self._finished(owner, job_id)
        with self._export_lock(job.id):
            return export_video(job.folder)

    def set_camera_path(self, owner: str, job_id: str, file: str | None) -> str:
        """Check an uploaded nerfstudio ``camera_path.json`` and make it the job's path."""
        from genfusion.data.camera_path import read_camera_path

        job = self.jobs.get(job_id, owner, write=True)
        if not file:
            raise GenFusionError("no camera path was uploaded.", hint="Upload a nerfstudio camera_path.json.")
        shown = Path(file).name
        try:
            cameras, _ = read_camera_path(file)
        except GenFusionError as err:
            raise GenFusionError(str(err).replace(str(file), shown)) from None
        from app.camera_path import keyframes_path

        keyframes_path(job.folder / CAMERA_PATH_NAME).unlink(missing_ok=True)
        shutil.copyfile(file, job.folder / CAMERA_PATH_NAME)
        if self.hub is not None:
            try:
                self.hub.viewer(job.id).load_camera_path()
            except GenFusionError:
                pass
        return f"camera path with {len(cameras)} cameras saved to the job; the path video follows it."

    def viewer_port(self, job_id: str) -> int | None:
        """For the proxy: the job's viser port (the job id is the capability)."""
        return None if self.hub is None else self.hub.port_of(job_id)

    def close(self) -> None:
        self.jobs.shutdown()
        if self.hub is not None:
            self.hub.close()


# ----------------------------------------------------------------------------- helpers


def _public_hash() -> str:
    from app.jobs import owner_hash

    return owner_hash(PUBLIC_OWNER)


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise GenFusionError(f"unknown source {source!r}.", hint=f"Use one of {', '.join(SOURCES)}.")
    return source


def _downscale(value: Any) -> int:
    try:
        factor = int(float(value))
    except (TypeError, ValueError):
        raise GenFusionError(f"--downscale must be a whole number, got {value!r}.") from None
    if factor < 1:
        raise GenFusionError(f"--downscale must be a positive integer, got {factor}.")
    return factor


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_status(job: Job, queue_position: int | None = None) -> dict[str, Any]:
    """The status dict of :meth:`Studio.status`."""
    record = job.record
    progress = None
    event = job.last_event()
    fusion = record.kind in FUSION_MODES
    if fusion and event is not None and event["stage"].startswith("fusion"):
        # the bar follows the training steps; round events count rounds, not steps
        event = job.last_event("reconstruct") or event
    if event is not None and event["stage"] != "job":
        total = event.get("total")
        fraction = min(1.0, event["step"] / total) if total else None
        progress = {
            "stage": event["stage"],
            "step": event["step"],
            "total": total,
            "fraction": fraction,
            "message": event.get("message", ""),
        }
    train = job.last_event("reconstruct")
    outputs = JobOutputs(job.folder)
    now = time.time()
    return {
        "id": job.id,
        "state": record.state,
        "message": record.message,
        "title": record.title,
        "kind": record.kind,
        "created": record.created,
        "started": record.started,
        "finished": record.finished,
        "elapsed_s": round(((record.finished or now) - (record.started or now)), 1)
        if record.started
        else 0.0,
        "queue_position": queue_position,
        "progress": progress,
        "train_metrics": dict(train["metrics"]) if train and train["stage"] == "reconstruct" else {},
        "result": record.result,
        "test_metrics": _test_metrics(job),
        "fusion": _fusion_status(job) if fusion else None,
        "viewer": f"/viewer/{job.id}/",
        "outputs": {
            name: path.is_file()
            for name, path in (
                ("ply", outputs.ply),
                ("splat", outputs.splat),
                ("mesh", outputs.mesh),
                ("video", outputs.video),
                ("camera_path", outputs.camera_path),
            )
        },
    }


def _fusion_status(job: Job) -> dict[str, Any]:
    """Rounds done / planned, the last round's metrics and warnings."""
    start = job.last_event("fusion.start")
    done = read_rounds(job.folder)
    last = done[-1] if done else None
    return {
        "mode": job.record.kind,
        "rounds_total": int(start["total"]) if start and start.get("total") is not None else None,
        "rounds_done": len(done),
        "last_round": None if last is None else {"round": last["round"] + 1, **last["metrics"]},
        "warnings": [] if last is None else last["warnings"][:5],
        "plan": start["message"] if start else "",
    }


def _test_metrics(job: Job) -> dict[str, Any]:
    metrics = read_metrics(job.folder) if job.state == "done" else None
    if not metrics:
        return {}
    keys = ("psnr", "ssim", "lpips", "psnr_inside", "psnr_outside", "num_test_views", "num_gaussians")
    keys += ("iterations", "time_s")
    return {k: metrics.get(k) for k in keys}


__all__ = ["SOURCES", "Studio", "StudioSettings", "job_status", "repairer_note", "repairer_status"]
