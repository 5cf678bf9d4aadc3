"""The job column of the page (3 · Job, 4 · Results) and the updates that keep it current.

:func:`job_panel` lays the column out; :func:`job_updates` makes the functions that fill it when
another job is chosen (``select``) and once a second while it runs (``tick``, only what changed),
from the :class:`app.studio.Studio` of the page. None of them is in the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.fusion_task import round_frames
from app.studio import Studio
from app.ui_api import owner_of
from app.widgets import (
    metric_frames,
    progress_html,
    render_gallery,
    round_frame,
    status_markdown,
    viewer_html,
)
from genfusion.errors import GenFusionError


@dataclass
class JobPanel:
    """The job column's components, in page order."""

    jobs: gr.Dropdown
    refresh_button: gr.Button
    job_id: gr.Textbox
    progress: gr.HTML
    status_text: gr.Markdown
    viewer: gr.HTML
    psnr_plot: gr.LinePlot
    count_plot: gr.LinePlot
    downloads: gr.File
    mesh_button: gr.Button
    video_button: gr.Button
    downloads_button: gr.Button
    mesh_file: gr.File
    video_file: gr.File
    rounds_plot: gr.LinePlot
    rounds_view: gr.Gallery
    model: gr.Model3D
    gallery: gr.Gallery
    camera_path: gr.File
    camera_path_button: gr.Button
    camera_path_note: gr.Markdown
    status_button: gr.Button
    status_json: gr.JSON
    events_since: gr.Number  # hidden: the API's events endpoint reads it
    events_json: gr.JSON
    jobs_json: gr.JSON
    events_button: gr.Button
    jobs_button: gr.Button


def job_panel() -> JobPanel:
    """Lay out the job column inside the current Blocks context."""
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
    return JobPanel(
        jobs=jobs,
        refresh_button=refresh_button,
        job_id=job_id,
        progress=progress,
        status_text=status_text,
        viewer=viewer,
        psnr_plot=psnr_plot,
        count_plot=count_plot,
        downloads=downloads,
        mesh_button=mesh_button,
        video_button=video_button,
        downloads_button=downloads_button,
        mesh_file=mesh_file,
        video_file=video_file,
        rounds_plot=rounds_plot,
        rounds_view=rounds_view,
        model=model,
        gallery=gallery,
        camera_path=camera_path,
        camera_path_button=camera_path_button,
        camera_path_note=camera_path_note,
        status_button=status_button,
        status_json=status_json,
        events_since=events_since,
        events_json=events_json,
        jobs_json=jobs_json,
        events_button=events_button,
        jobs_button=jobs_button,
    )


@dataclass(frozen=True)
class JobUpdates:
    """The job column's page updates (see :func:`job_updates`)."""

    job_choices: Callable[[str], list[tuple[str, str]]]  # the job dropdown's choices of an owner
    refresh_jobs: Callable[..., Any]  # -> the job dropdown's update
    select: Callable[..., tuple]  # everything that changes when another job is shown
    tick: Callable[..., tuple]  # progress, status and plots of the shown job (what changed)


def job_updates(studio: Studio) -> JobUpdates:
    """The job column's updates, reading ``studio`` on behalf of each request's owner."""

    def job_choices(owner_key: str) -> list[tuple[str, str]]:
        stamp = lambda t: time.strftime("%H:%M", time.localtime(t))  # noqa: E731
        return [
            (f"{stamp(j['created'])} · {j['title']} · {j['state']}", j["id"])
            for j in studio.list_jobs(owner_key)
        ]

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

    return JobUpdates(job_choices=job_choices, refresh_jobs=refresh_jobs, select=select, tick=tick)


__all__ = ["JobPanel", "JobUpdates", "job_panel", "job_updates"]
