"""The Gradio page: capture -> settings -> run / cancel -> progress, live viewer, downloads.

Every action is a Gradio event with an ``api_name``, so ``gradio_client`` can drive the whole app
(README has the snippet). Each event takes the browser's ``owner`` key (kept in the browser's
localStorage, so a reload or a server restart still lists the browser's jobs); API callers leave
it empty and are identified by their Gradio session instead. The work itself is done by
:class:`app.studio.Studio`; this module lays out the capture and settings column and wires every
event. The parts, one job each: :mod:`app.ui_api` (the API actions, the caller's identity, errors
as messages), :mod:`app.ui_fusion` (the fusion box), :mod:`app.ui_job` (the job column and its
updates).

Settings widgets are generated from :class:`ReconstructConfig` (:mod:`app.params`): the common
ones (method, iterations, downscale) in view, the rest in an accordion grouped by the config's
sections, each with the field's comment as its help text and its CLI flag in the label.
"""

from __future__ import annotations

import logging
import secrets

import gradio as gr

from app.params import COMMON_FIELDS, PRESETS, config_specs, preset_note, section_title
from app.studio import Studio, repairer_note, repairer_status
from app.tasks import MODES
from app.ui_api import api_actions, browser_secret
from app.ui_fusion import fusion_box, mode_note
from app.ui_job import job_panel, job_updates
from app.widgets import widget_for, with_keyword_defaults
from genfusion.flags import FieldSpec

logger = logging.getLogger(__name__)

SOURCE_CHOICES = [("Demo scene (fox)", "demo"), ("Upload", "upload"), ("Folder on this server", "folder")]


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
                fusion = fusion_box()
                with gr.Row():
                    run_button = gr.Button("Run", variant="primary")
                    cancel_button = gr.Button("Cancel", variant="stop")

            panel = job_panel()

        timer = gr.Timer(1.0)

        # ------------------------------------------------------------- actions (all in the API)

        actions = api_actions(studio)
        run = actions.run
        # The API lists every setting by its field name, all optional (what the client leaves out
        # keeps the page's default, None = automatic), as `genfusion reconstruct` flags are.
        run_kwargs = {**widgets, **fusion.widgets, "from_job": panel.job_id}
        run.__signature__ = with_keyword_defaults(run, run_kwargs)

        # ------------------------------------------------------------- page updates (not in the API)

        updates = job_updates(studio)

        def on_load(owner_key: str | None, request: gr.Request):
            if not owner_key:
                owner_key = secrets.token_urlsafe(24)
            choices = updates.job_choices("browser:" + owner_key)
            summary_value = actions.inspect_quietly("demo", None, "", 1, owner_key, request)
            return owner_key, gr.update(choices=choices), summary_value

        def apply_preset(name: str | None):
            if not name:
                return gr.skip(), gr.skip()
            values = PRESETS[name]
            return values.get("iterations", gr.skip()), values.get("downscale", gr.skip())

        # ------------------------------------------------------------- wiring

        inspect_inputs = [source, files, folder, widgets["downscale"], owner]
        demo.load(on_load, inputs=[owner], outputs=[owner, panel.jobs, summary], api_visibility="private")
        inspect_button.click(actions.inspect_capture, inspect_inputs, summary, api_name="inspect")
        source.change(actions.inspect_quietly, inspect_inputs, summary, api_visibility="private")
        files.upload(
            lambda *a: ("upload", actions.inspect_quietly("upload", *a[1:])),
            inspect_inputs,
            [source, summary],
            api_visibility="private",
        )
        folder.submit(
            lambda *a: ("folder", actions.inspect_quietly("folder", *a[1:])),
            inspect_inputs,
            [source, summary],
            api_visibility="private",
        )
        demo_button.click(lambda: "demo", None, source, api_visibility="private")
        preset.change(
            apply_preset, preset, [widgets["iterations"], widgets["downscale"]], api_visibility="private"
        )
        mode.change(mode_note, mode, [fusion.box, fusion.mode_text], api_visibility="private")
        fusion.widgets["repairer"].change(
            repairer_note, fusion.widgets["repairer"], fusion.repairer_text, api_visibility="private"
        )

        started = run_button.click(
            run,
            [source, files, folder, mode, owner],
            panel.job_id,
            api_name="run",
            inputs_kwargs=run_kwargs,
            concurrency_limit=4,
        )
        started.success(updates.refresh_jobs, [owner], panel.jobs, api_visibility="private").then(
            lambda job: gr.update(value=job), panel.job_id, panel.jobs, api_visibility="private"
        )

        def run_demo(owner_key, request: gr.Request):
            preview = dict(PRESETS["preview"], method="3dgs")
            return run("demo", None, "", "reconstruct", owner_key, request, **preview)

        demo_run.click(run_demo, [owner], panel.job_id, api_visibility="private").success(
            updates.refresh_jobs, [owner], panel.jobs, api_visibility="private"
        ).then(lambda job: gr.update(value=job), panel.job_id, panel.jobs, api_visibility="private")

        # what a job switch and the timer both refresh, in the order select and tick return them
        job_views = [
            panel.psnr_plot,
            panel.count_plot,
            panel.downloads,
            panel.model,
            panel.gallery,
            panel.rounds_plot,
            panel.rounds_view,
        ]
        panel.jobs.change(
            updates.select,
            [panel.jobs, owner],
            [
                panel.job_id,
                panel.progress,
                panel.status_text,
                panel.viewer,
                *job_views,
                seen,
            ],  # fmt: skip
            api_visibility="private",
        )
        panel.refresh_button.click(updates.refresh_jobs, [owner], panel.jobs, api_visibility="private")
        timer.tick(
            updates.tick,
            [panel.job_id, owner, seen],
            [
                panel.progress,
                panel.status_text,
                *job_views,
                panel.jobs,
                seen,
            ],  # fmt: skip
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
        )
        cancel_button.click(actions.cancel, [panel.job_id, owner], panel.status_json, api_name="cancel")
        panel.status_button.click(
            actions.status,
            [panel.job_id, owner],
            panel.status_json,
            api_name="status",
            concurrency_limit=None,
        )
        panel.events_button.click(
            actions.events,
            [panel.job_id, panel.events_since, owner],
            panel.events_json,
            api_name="events",
            concurrency_limit=None,
        )
        panel.jobs_button.click(
            actions.list_jobs, [owner], panel.jobs_json, api_name="jobs", concurrency_limit=None
        )
        panel.downloads_button.click(
            actions.get_downloads, [panel.job_id, owner], panel.downloads, api_name="downloads"
        )
        panel.mesh_button.click(
            actions.mesh, [panel.job_id, owner], panel.mesh_file, api_name="export_mesh", concurrency_limit=1
        )
        panel.video_button.click(
            actions.video,
            [panel.job_id, owner],
            panel.video_file,
            api_name="export_video",
            concurrency_limit=1,
        )
        panel.camera_path_button.click(
            actions.use_camera_path,
            [panel.job_id, panel.camera_path, owner],
            panel.camera_path_note,
            api_name="set_camera_path",
        )

    demo.queue(default_concurrency_limit=2)
    return demo


__all__ = ["build_ui"]
