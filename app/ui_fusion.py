"""The fusion box of the page: the fusion modes' settings and what the chosen mode does.

Shown only for the fusion modes (:func:`mode_note`). Its widgets are generated from
:class:`FusionConfig` (:mod:`app.params`): the common ones in view, the rest in an accordion,
with a note on the chosen repairer below the common ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.fusion_task import FUSION_MODES
from app.params import FUSION_COMMON, fusion_specs
from app.studio import repairer_note
from app.tasks import MODES
from app.widgets import widget_for


@dataclass
class FusionBox:
    """The fusion box's components (``widgets``: one per FusionConfig field, by field name)."""

    box: gr.Group
    mode_text: gr.Markdown
    widgets: dict[str, gr.components.Component]
    repairer_text: gr.Markdown


def fusion_box() -> FusionBox:
    """Lay out the (hidden) fusion box inside the current Blocks context."""
    with gr.Group(visible=False) as box:
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
    return FusionBox(box=box, mode_text=mode_text, widgets=fusion_widgets, repairer_text=repairer_text)


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


__all__ = ["FusionBox", "fusion_box", "mode_note"]
