"""The Gradio page: capture -> settings -> run / cancel -> progress, live viewer, downloads.

Every action is a Gradio event with an ``api_name``, so ``gradio_client`` can drive the whole app
(README has the snippet). Each event takes the browser's ``owner`` key (kept in the browser's
localStorage, so a reload or a server restart still lists the browser's jobs); API callers leave
it empty and are identified by their Gradio session instead. The work itself is done by
:class:`app.studio.Studio`; this module only lays out widgets and turns errors into messages.

Settings widgets are generated from :class:`ReconstructConfig` (:mod:`app.params`): the common
ones (method, iterations, downscale) in view, the rest in an accordion grouped by the config's
sections, each with the field's comment as its help text and its CLI flag in the label.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from app.fusion_task import FUSION_MODES, round_frames
from app.params import (
    COMMON_FIELDS,
    FUSION_COMMON,
    PRESETS,
    config_specs,
    fusion_specs,
    preset_note,
    section_title,
)
from app.studio import Studio, repairer_note, repairer_status
from app.tasks import MODES
from app.widgets import (
    metric_frames,
    progress_html,
    render_gallery,
    round_frame,
    status_markdown,
    viewer_html,
    widget_for,
    with_keyword_defaults,
)
from genfusion.errors import GenFusionError
from genfusion.flags import FieldSpec

logger = logging.getLogger(__name__)

SECRET_NAME = ".browser_state_secret"
SOURCE_CHOICES = [("Demo scene (fox)", "demo"), ("Upload", "upload"), ("Folder on this server", "folder")]


def browser_secret(jobs_root: Path) -> str:
    """The key that encrypts the owner key in browsers' localStorage; kept in the jobs root so a
    restarted server can still read it (and so still lists each browser's jobs)."""
    path = Path(jobs_root) / SECRET_NAME
    if path.is_file():
        value = path.read_text().strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(16)
    path.write_text(value)
    os.chmod(path, 0o600)
    return value


def owner_of(owner: str | None, request: gr.Request | None) -> str:
    """The caller: the browser's key when the page sent one, else its Gradio session."""
    if owner:
        return "browser:" + str(owner)
    session = getattr(request, "session_hash", None) if request is not None else None
    if not session:
        raise gr.Error("this request carries no session; reload the page.")
    return "session:" + session


def user_errors(fn: Callable) -> Callable:
    """Turn GenFusionError into a message in the UI (and an error the API client can read)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GenFusionError as err:
            raise gr.Error(str(err), print_exception=False) from None

    return wrapper


# ----------------------------------------------------------------------------- the page


def build_ui(studio: Studio) -> gr.Blocks:
    """The Gradio Blocks of the app (queue configured; mount it with :mod:`app.server`)."""
    specs = {item.name: item for item in config_specs()}
    roots = ", ".join(f"`{r}`" for r in studio.settings.roots())

    with gr.Blocks(title="GenFusion Studio") as demo:
        owner = gr.BrowserState(
            None, storage_key="genfusion-owner", secret=browser_secret(studio.settings.jobs_root)
        )
        seen = gr.State({"job": None, "events": -1, "state": None})

        gr.Markdown(
            "# GenFusion Studio\nTurn a capture into a Gaussian-splatting scene: pick a capture, "
            "press **Run**, "
            "watch the Gaussians grow in the viewer, download the result."
        )
        repairer_line, repairer_details = repairer_status()
        with gr.Row():
            gr.Markdown(repairer_line)
        with gr.Accordion("Repairer details", open=False):
            gr.Markdown(repairer_details)

        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown("### 1 · Capture")
                source = gr.Radio(SOURCE_CHOICES, value="demo", label="Capture")
                with gr.Row():
                    demo_button = gr.Button("Use the demo scene", size="sm")
                    demo_run = gr.Button("Run the demo (preview preset)", size="sm", variant="secondary")
                files = gr.File(
                    label="Photos, one zip (a posed capture or photos) or one video",
                    file_count="multiple",
                    file_types=[".zip", "image", "video"],
                )
                folder = gr.Textbox(
                    label="Folder on this server",
                    placeholder="assets/demo/fox",
                    info=f"A scene or photo folder under {roots}.",
                )
                inspect_button = gr.Button("Inspect capture", size="sm")
                summary = gr.Textbox(label="Capture summary (genfusion inspect)", lines=9, interactive=False)

                gr.Markdown("### 2 · Settings")
                mode = gr.Radio(
                    [(label, key) for key, label in MODES.items()], value="reconstruct", label="Mode"
                )
                preset = gr.Radio(
                    [(f"{name} ({preset_note(name)})", name) for name in PRESETS],
                    value=None,
                    label="Quality vs speed preset",
                )
                widgets: dict[str, gr.components.Component] = {}
                for name in COMMON_FIELDS:
                    widgets[name] = widget_for(specs[name])
                with gr.Accordion("Advanced settings (every flag of `genfusion reconstruct`)", open=False):
                    sections: dict[str, list[FieldSpec]] = {}
                    for item in specs.values():
                        if item.name not in COMMON_FIELDS:
                            sections.setdefault(section_title(item), []).append(item)
                    for title, items in sections.items():
                        gr.Markdown(f"**{title}**")
                        for start in range(0, len(items), 2):
                            with gr.Row():
                                for item in items[start : start + 2]:
                                    widgets[item.name] = widget_for(item)
                with gr.Group(visible=False) as fusion_box:
                    mode_text = gr.Markdown()
                    fusion_widgets: dict[str, gr.components.Component] = {}
                    fusion_items = {item.name: item for item in fusion_specs()}
                    for name in FUSION_COMMON:
                        fusion_widgets[name] = widget_for(fusion_items[name])
                    repairer_text = gr.Markdown(repairer_note("auto"))
                    with gr.Accordion("Fusion settings (every flag of `genfusion fuse`)", open=False):
                        others = [item for name, item in fusion_items.items() if name not in FUSION_COMMON]
                        for start in range(0, len(others), 2):
                            with gr.Row():
                                for item in others[start : start + 2]:
                                    fusion_widgets[item.name] = widget_for(item)
                with gr.Row():
                    run_button = gr.Button("Run", variant="primary")
                    cancel_button = gr.Button("Cancel", variant="stop")

            with gr.Column(scale=3):
                gr.Markdown("### 3 · Job")
                with gr.Row():
                    jobs = gr.Dropdown(label="Your jobs", choices=[], value=None, scale=4)
                    refresh_button = gr.Button("Refresh", size="sm", scale=1)
                job_id = gr.Textbox(label="Job id", interactive=False)
                progress = gr.HTML(progress_html(None))
                status_text = gr.Markdown(status_markdown(None))
                viewer = gr.HTML(viewer_html(None))
                with gr.Row():
                    psnr_plot = gr.LinePlot(x="step", y="psnr", title="Train PSNR (dB)", height=220)
                    count_plot = gr.LinePlot(x="step", y="num_gaussians", title="Gaussians", height=220)
                gr.Markdown("### 4 · Results")
                downloads = gr.File(
                    label="Downloads: splats.ply, splats.splat, run folder zip",
                    file_count="multiple",
                    interactive=False,
                )
                with gr.Row():
                    mesh_button = gr.Button("Export mesh (.glb)", size="sm")
                    video_button = gr.Button("Render path video (.mp4)", size="sm")
                    downloads_button = gr.Button("Refresh downloads", size="sm")
                with gr.Row():
                    mesh_file = gr.File(label="mesh.glb", interactive=False)
                    video_file = gr.File(label="video.mp4", interactive=False)
                with gr.Row():
                    rounds_plot = gr.LinePlot(
                        x="step",
                        y="psnr",
                        color="views",
                        title="Fusion: held-out PSNR per round (dB)",
                        height=220,
                    )
                rounds_view = gr.Gallery(
                    label="Fusion rounds: rendered | repaired | unreliable (latest first)",
                    columns=3,
                    height=240,
                )
                model = gr.Model3D(label="Result (.splat; the viewer above is the live one)", height=360)
                gallery = gr.Gallery(label="Test views: render | photo", columns=4, height=220)
                with gr.Accordion("Camera path and job details", open=False):
                    camera_path = gr.File(
                        label="Upload a nerfstudio camera_path.json for this job", file_types=[".json"]
                    )
                    camera_path_button = gr.Button("Use this camera path", size="sm")
                    camera_path_note = gr.Markdown()
                    status_button = gr.Button("Job status (JSON)", size="sm")
                    status_json = gr.JSON(label="Job status")
                    events_since = gr.Number(value=0, precision=0, label="events from index", visible=False)
                    events_json = gr.JSON(label="Job events", visible=False)
                    jobs_json = gr.JSON(label="Jobs", visible=False)
                    events_button = gr.Button("Events", visible=False)
                    jobs_button = gr.Button("Jobs", visible=False)

        timer = gr.Timer(1.0)

        # ------------------------------------------------------------- actions (all in the API)

        @user_errors
        def inspect_capture(
            source: str = "demo",
            files: list[str] | None = None,
            folder: str | None = None,
            downscale: Any = 1,
            owner: str | None = None,
            request: gr.Request = None,
        ) -> str:
            """What `genfusion inspect` says about the chosen capture (uploads: what they hold)."""
            return studio.inspect(owner_of(owner, request), source, files, folder, downscale)

        def inspect_quietly(source, files, folder, downscale, owner=None, request: gr.Request = None) -> str:
            try:
                return inspect_capture(source, files, folder, downscale, owner, request)
            except gr.Error as err:
                return f"⚠ {err.message}"

        @user_errors
        def run(
            source: str = "demo",
            files: list[str] | None = None,
            folder: str | None = None,
            mode: str = "reconstruct",
            owner: str | None = None,
            request: gr.Request = None,
            **settings: Any,
        ) -> str:
            """Start a job; returns its id. Settings are ReconstructConfig fields (the flags of
            `genfusion reconstruct`) and, for the fusion modes, FusionConfig fields (`genfusion
            fuse`); ``from_job``: a job of yours whose camera_path.json a `complete` run follows."""
            from_job = settings.pop("from_job", None) or None
            who = owner_of(owner, request)
            return studio.run(who, source, files, folder, mode, settings, from_job=from_job)

        # The API lists every setting by its field name, all optional (what the client leaves out
        # keeps the page's default, None = automatic), as `genfusion reconstruct` flags are.
        run_kwargs = {**widgets, **fusion_widgets, "from_job": job_id}
        run.__signature__ = with_keyword_defaults(run, run_kwargs)

        @user_errors
        def cancel(job: str, owner: str | None = None, request: gr.Request = None) -> dict[str, Any]:
            """Cancel a job (within a training step); returns its status."""
            return studio.cancel(owner_of(owner, request), job)

        @user_errors
        def status(job: str, owner: str | None = None, request: gr.Request = None) -> dict[str, Any]:
            """The job's state, progress, metrics and outputs."""
            return studio.status(owner_of(owner, request), job)

        @user_errors
        def events(job: str, since: Any = 0, owner: str | None = None, request: gr.Request = None) -> list:
            """The job's ProgressEvents (stage, step, total, message, metrics) from index ``since``."""
            return studio.events(owner_of(owner, request), job, int(since or 0))

        @user_errors
        def list_jobs(owner: str | None = None, request: gr.Request = None) -> list[dict[str, Any]]:
            """This session's jobs, newest first."""
            return studio.list_jobs(owner_of(owner, request))

        @user_errors
        def get_downloads(job: str, owner: str | None = None, request: gr.Request = None) -> list[str]:
            """splats.ply, splats.splat and the run folder zip of a finished job."""
            return [str(p) for p in studio.downloads(owner_of(owner, request), job)]

        @user_errors
        def mesh(job: str, owner: str | None = None, request: gr.Request = None) -> str:
            """A TSDF mesh (.glb) of a finished job."""
            return str(studio.mesh(owner_of(owner, request), job))

        @user_errors
        def video(job: str, owner: str | None = None, request: gr.Request = None) -> str:
            """An mp4 along the job's camera path (or its input cameras)."""
            return str(studio.video(owner_of(owner, request), job))

        @user_errors
        def use_camera_path(
            job: str, file: str | None = None, owner: str | None = None, request: gr.Request = None
        ) -> str:
            """Make an uploaded camera_path.json the job's path (checked first)."""
            return studio.set_camera_path(owner_of(owner, request), job, file)

        # ------------------------------------------------------------- page updates (not in the API)

        def job_choices(owner_key: str) -> list[tuple[str, str]]:
            stamp = lambda t: time.strftime("%H:%M", time.localtime(t))  # noqa: E731
            return [
                (f"{stamp(j['created'])} · {j['title']} · {j['state']}", j["id"])
                for j in studio.list_jobs(owner_key)
            ]

        def on_load(owner_key: str | None, request: gr.Request):
            if not owner_key:
                owner_key = secrets.token_urlsafe(24)
            choices = job_choices("browser:" + owner_key)
            summary_value = inspect_quietly("demo", None, "", 1, owner_key, request)
            return owner_key, gr.update(choices=choices), summary_value

        def refresh_jobs(owner_key: str | None, request: gr.Request):
            return gr.update(choices=job_choices(owner_of(owner_key, request)))

        def select(job: str | None, owner_key: str | None, request: gr.Request):
            """Everything that changes when another job is shown."""
            if not job:
                empty = metric_frames([])
                return (
                    "",
                    progress_html(None),
                    status_markdown(None),
                    viewer_html(None),
                    *empty,
                    None,
                    None,
                    [],
                    round_frame([]),
                    [],
                    {"job": None, "events": -1, "state": None},
                )
            who = owner_of(owner_key, request)
            try:
                info = studio.status(who, job)
            except GenFusionError as err:
                gr.Warning(str(err))
                return (gr.skip(),) * 11 + ({"job": None, "events": -1, "state": None},)
            all_events = studio.events(who, job)
            done = info["state"] == "done"
            files_now = [str(p) for p in studio.downloads(who, job)] if done else None
            splat = studio.splat_file(who, job)
            job_dir = studio.jobs.get(job, who).folder
            return (
                job,
                progress_html(info),
                status_markdown(info),
                viewer_html(job),
                *metric_frames(all_events),
                files_now,
                str(splat) if splat else None,
                render_gallery(job_dir),
                round_frame(all_events),
                round_frames(job_dir),
                {"job": job, "events": len(all_events), "state": info["state"]},
            )

        def tick(job: str | None, owner_key: str | None, last: dict[str, Any], request: gr.Request):
            """Once a second: progress, status and plots of the shown job (only what changed)."""
            nothing = (gr.skip(),) * 10
            if not job or last.get("job") != job:
                return (*nothing, last)
            who = owner_of(owner_key, request)
            try:
                info = studio.status(who, job)
            except GenFusionError:
                return (*nothing, last)
            job_obj = studio.jobs.get(job, who)
            count = len(job_obj.events())
            if count == last.get("events") and info["state"] == last.get("state"):
                return (*nothing, last)
            all_events = job_obj.events()
            frames = metric_frames(all_events)
            rounds_now = round_frame(all_events)
            new_round = len(rounds_now) != last.get("round_rows", 0)
            round_images = round_frames(job_obj.folder) if new_round else gr.skip()
            finished_now = info["state"] == "done" and last.get("state") != "done"
            files_now = [str(p) for p in studio.downloads(who, job)] if finished_now else gr.skip()
            splat = studio.splat_file(who, job) if finished_now else None
            model_now = str(splat) if splat else gr.skip()
            gallery_now = render_gallery(job_obj.folder) if finished_now else gr.skip()
            new_last = {"job": job, "events": count, "state": info["state"], "round_rows": len(rounds_now)}
            return (
                progress_html(info),
                status_markdown(info),
                *frames,
                files_now,
                model_now,
                gallery_now,
                rounds_now if new_round else gr.skip(),
                round_images,
                gr.update(choices=job_choices(who)) if info["state"] != last.get("state") else gr.skip(),
                new_last,
            )

        def apply_preset(name: str | None):
            if not name:
                return gr.skip(), gr.skip()
            values = PRESETS[name]
            return values.get("iterations", gr.skip()), values.get("downscale", gr.skip())

        def mode_note(value: str):
            """The fusion box shows for the fusion modes, with what the chosen mode does."""
            if value not in FUSION_MODES:
                return gr.update(visible=False), ""
            text = f"**{MODES[value]}.** The mode's protocol and round schedule apply, sized by the budget; "
            text += "settings you change above win over them."
            if value == "complete":
                text += (
                    " It generates along the camera path of the job shown on the right (drawn in its "
                    "viewer's camera-path editor or uploaded below), or around an ellipse without one."
                )
            return gr.update(visible=True), text

        # ------------------------------------------------------------- wiring

        inspect_inputs = [source, files, folder, widgets["downscale"], owner]
        demo.load(on_load, inputs=[owner], outputs=[owner, jobs, summary], api_visibility="private")
        inspect_button.click(inspect_capture, inspect_inputs, summary, api_name="inspect")
        source.change(inspect_quietly, inspect_inputs, summary, api_visibility="private")
        files.upload(
            lambda *a: ("upload", inspect_quietly("upload", *a[1:])),
            inspect_inputs,
            [source, summary],
            api_visibility="private",
        )
        folder.submit(
            lambda *a: ("folder", inspect_quietly("folder", *a[1:])),
            inspect_inputs,
            [source, summary],
            api_visibility="private",
        )
        demo_button.click(lambda: "demo", None, source, api_visibility="private")
        preset.change(
            apply_preset, preset, [widgets["iterations"], widgets["downscale"]], api_visibility="private"
        )
        mode.change(mode_note, mode, [fusion_box, mode_text], api_visibility="private")
        fusion_widgets["repairer"].change(
            repairer_note, fusion_widgets["repairer"], repairer_text, api_visibility="private"
        )

        started = run_button.click(
            run,
            [source, files, folder, mode, owner],
            job_id,
            api_name="run",
            inputs_kwargs=run_kwargs,
            concurrency_limit=4,
        )
        started.success(refresh_jobs, [owner], jobs, api_visibility="private").then(
            lambda job: gr.update(value=job), job_id, jobs, api_visibility="private"
        )

        def run_demo(owner_key, request: gr.Request):
            preview = dict(PRESETS["preview"], method="3dgs")
            return run("demo", None, "", "reconstruct", owner_key, request, **preview)

        demo_run.click(run_demo, [owner], job_id, api_visibility="private").success(
            refresh_jobs, [owner], jobs, api_visibility="private"
        ).then(lambda job: gr.update(value=job), job_id, jobs, api_visibility="private")

        jobs.change(
            select,
            [jobs, owner],
            [
                job_id,
                progress,
                status_text,
                viewer,
                psnr_plot,
                count_plot,
                downloads,
                model,
                gallery,
                rounds_plot,
                rounds_view,
                seen,
            ],  # fmt: skip
            api_visibility="private",
        )
        refresh_button.click(refresh_jobs, [owner], jobs, api_visibility="private")
        timer.tick(
            tick,
            [job_id, owner, seen],
            [
                progress,
                status_text,
                psnr_plot,
                count_plot,
                downloads,
                model,
                gallery,
                rounds_plot,
                rounds_view,
                jobs,
                seen,
            ],  # fmt: skip
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
        )
        cancel_button.click(cancel, [job_id, owner], status_json, api_name="cancel")
        status_button.click(status, [job_id, owner], status_json, api_name="status", concurrency_limit=None)
        events_button.click(
            events, [job_id, events_since, owner], events_json, api_name="events", concurrency_limit=None
        )
        jobs_button.click(list_jobs, [owner], jobs_json, api_name="jobs", concurrency_limit=None)
        downloads_button.click(get_downloads, [job_id, owner], downloads, api_name="downloads")
        mesh_button.click(mesh, [job_id, owner], mesh_file, api_name="export_mesh", concurrency_limit=1)
        video_button.click(video, [job_id, owner], video_file, api_name="export_video", concurrency_limit=1)
        camera_path_button.click(
            use_camera_path, [job_id, camera_path, owner], camera_path_note, api_name="set_camera_path"
        )

    demo.queue(default_concurrency_limit=2)
    return demo


__all__ = ["build_ui", "browser_secret", "owner_of", "user_errors"]
