"""How a job looks on the page: settings widgets, the progress bar, status text, plots and
galleries. Pure functions of a job's status / events / folder; :mod:`app.ui` lays them out."""

from __future__ import annotations

import html
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from app.params import AUTOMATIC, format_vector, label_of
from app.tasks import JobOutputs
from genfusion.flags import FieldSpec

CSS = """
.gf-progress {height: 14px; background: #e5e7eb; border-radius: 7px; overflow: hidden}
.gf-progress > div {height: 100%; background: linear-gradient(90deg, #f97316, #facc15); transition: width .4s}
.gf-progress-text {font-size: 0.9em; margin-top: 4px}
.gf-viewer iframe {width: 100%; height: 540px; border: 0; border-radius: 8px; background: #111}
"""


# ----------------------------------------------------------------------------- widgets


def widget_for(item: FieldSpec, **overrides: Any) -> gr.components.Component:
    """The widget of one ReconstructConfig field (label shows the CLI flag, info its comment)."""
    label = f"{label_of(item)}  ({item.flag})"
    info = item.doc + ("  Leave empty for automatic." if item.optional else "")
    if item.kind == "bool" and item.optional:  # three states: automatic (None), on, off
        choices = [(f"{AUTOMATIC}", ""), ("on", "true"), ("off", "false")]
        value = "" if item.default is None else str(bool(item.default)).lower()
        return gr.Dropdown(choices=choices, value=value, label=label, info=item.doc, **overrides)
    if item.kind == "bool":
        return gr.Checkbox(value=bool(item.default), label=label, info=item.doc, **overrides)
    if item.kind == "choice":
        return gr.Dropdown(
            choices=list(item.choices), value=item.default, label=label, info=item.doc, **overrides
        )
    if item.kind == "sequence":
        return gr.Textbox(
            value="" if item.default is None else format_vector(item.default),
            label=label,
            info=info + " (numbers separated by spaces)",
            placeholder=AUTOMATIC if item.optional else None,
            **overrides,
        )
    if item.value_type in (int, float) and item.optional:
        # A number box sends 0 when left empty; an optional field needs "empty = automatic".
        value = "" if item.default is None else str(item.default)
        return gr.Textbox(value=value, label=label, info=info, placeholder=AUTOMATIC, **overrides)
    if item.value_type in (int, float):
        precision = 0 if item.value_type is int else None
        return gr.Number(value=item.default, label=label, info=info, precision=precision, **overrides)
    return gr.Textbox(value=str(item.default), label=label, info=info, **overrides)


def progress_html(status: dict[str, Any] | None) -> str:
    """A progress bar from the job's last ProgressEvent."""
    if not status:
        return "<div class='gf-progress-text'>No job selected.</div>"
    state = status["state"]
    progress = status.get("progress") or {}
    fraction = progress.get("fraction")
    if state == "done":
        fraction = 1.0
    width = 0 if fraction is None else round(100 * fraction, 1)
    parts = [html.escape(state)]
    if state in ("running", "queued") and progress:
        step, total = progress.get("step"), progress.get("total")
        parts.append(html.escape(progress["stage"]) + (f" {step}/{total}" if total else f" {step}"))
        if fraction and fraction > 0.02 and status.get("elapsed_s"):
            remaining = status["elapsed_s"] * (1 - fraction) / fraction
            parts.append(f"about {remaining:.0f} s left")
    if state == "queued" and status.get("queue_position") is not None:
        parts.append(f"{status['queue_position']} job(s) ahead")
    metrics = status.get("train_metrics") or {}
    if "psnr" in metrics:
        parts.append(f"train PSNR {metrics['psnr']:.2f} dB")
    if "num_gaussians" in metrics:
        parts.append(f"{int(metrics['num_gaussians']):,} Gaussians")
    text = " · ".join(parts)
    return (
        f"<div class='gf-progress'><div style='width:{width}%'></div></div>"
        f"<div class='gf-progress-text'>{text}</div>"
    )


def status_markdown(status: dict[str, Any] | None) -> str:
    if not status:
        return "Pick a capture and press **Run**, or choose one of your jobs."
    lines = [f"**{html.escape(status['title'])}**  \n`{status['id']}` · {status['state']}"]
    if status.get("message"):
        lines.append(html.escape(status["message"]))
    test = status.get("test_metrics") or {}
    if test.get("psnr") is not None:
        lines.append(
            f"Test views: PSNR {test['psnr']:.2f} dB, SSIM {test['ssim']:.3f} "
            f"over {test['num_test_views']} views; "
            f"{test['num_gaussians']:,} Gaussians after {test['iterations']} steps in {test['time_s']:.0f} s."
        )
        if test.get("psnr_outside") is not None:
            lines[-1] += (
                f" Inside the training windows {test['psnr_inside']:.2f} dB, "
                f"outside {test['psnr_outside']:.2f} dB."
            )
    lines += fusion_lines(status.get("fusion"))
    return "\n\n".join(lines)


def fusion_lines(fusion: dict[str, Any] | None) -> list[str]:
    """A fusion job's plan, rounds done and its last round (Markdown lines)."""
    if not fusion:
        return []
    total = fusion.get("rounds_total")
    lines = [f"Fusion ({fusion['mode']}): {fusion['rounds_done']} of {total or '?'} rounds done."]
    if fusion.get("plan"):
        lines.append(html.escape(fusion["plan"]))
    last = fusion.get("last_round")
    if last:
        parts = [f"round {last['round']}"]
        if last.get("test_psnr") is not None:
            parts.append(f"held-out PSNR {last['test_psnr']:.2f} dB")
        if last.get("test_psnr_outside") is not None:
            parts.append(f"outside windows {last['test_psnr_outside']:.2f} dB")
        if last.get("unreliable_before") is not None:
            parts.append(f"{100 * last['unreliable_before']:.0f}% of the path unreliable before repair")
        if last.get("used_views") is not None:
            parts.append(f"{int(last['used_views'])} generated views trained on")
        lines.append("Last " + " · ".join(parts) + ".")
    lines += [f"⚠ {html.escape(w)}" for w in fusion.get("warnings", [])]
    return lines


def viewer_html(job_id: str | None) -> str:
    if not job_id:
        return "<div class='gf-viewer'><p>The live viewer appears here once a job is selected.</p></div>"
    src = f"viewer/{html.escape(job_id)}/"
    return (
        f"<div class='gf-viewer'><iframe src='{src}' allow='fullscreen' title='live viewer'></iframe>"
        f"<p><a href='{src}' target='_blank'>Open the viewer in its own tab</a> · drag to orbit, scroll to "
        "zoom; the panel has pause, render modes and the camera-path editor.</p></div>"
    )


def metric_frames(events: list[dict[str, Any]]) -> tuple[Any, Any]:
    """(train PSNR, Gaussian count) over steps, as data frames for the line plots."""
    import pandas as pd

    rows = [
        (e["step"], e["metrics"].get("psnr"), e["metrics"].get("num_gaussians"), e["metrics"].get("loss"))
        for e in events
        if e["stage"] == "reconstruct" and e.get("metrics")
    ]
    frame = pd.DataFrame(rows, columns=["step", "psnr", "num_gaussians", "loss"])
    return frame.dropna(subset=["psnr"]), frame.dropna(subset=["num_gaussians"])


def round_frame(events: list[dict[str, Any]]) -> Any:
    """Held-out PSNR (full frame and, for masked runs, outside the windows) at each fusion round,
    as a long data frame for one line plot."""
    import pandas as pd

    rows = []
    for event in events:
        if event["stage"] != "fusion.round" or not event.get("metrics"):
            continue
        for key, series in (("test_psnr", "full frame"), ("test_psnr_outside", "outside windows")):
            if event["metrics"].get(key) is not None:
                rows.append((event["step"], event["metrics"][key], series))
    return pd.DataFrame(rows, columns=["step", "psnr", "views"])


def render_gallery(job_dir: Path) -> list[tuple[str, str]]:
    renders = JobOutputs(job_dir).run_dir / "renders"
    if not renders.is_dir():
        return []
    return [(str(p), f"{p.stem}: render | photo") for p in sorted(renders.glob("*.png"))[:24]]


def with_keyword_defaults(fn: Callable, names: dict[str, Any]) -> inspect.Signature:
    """``fn``'s signature with its ``**kwargs`` replaced by one keyword parameter per name
    (default None), so Gradio's API shows each setting as an optional named parameter."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in names]
    return inspect.Signature(params, return_annotation=inspect.signature(fn).return_annotation)
