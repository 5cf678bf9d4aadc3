"""The project's one progress-event type, consumed alike by the CLI (tqdm), the Gradio progress
bar and the viser viewer. Long operations take an optional ``progress`` callback and call it
with :class:`ProgressEvent` values; they never print progress themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long operation."""

    stage: str  # dotted name of the operation, e.g. "sfm.match" or "reconstruct"
    step: int  # steps done so far in this stage (0 <= step <= total when total is known)
    total: int | None = None  # number of steps in the stage, None when unknown
    message: str = ""  # short human-readable status line
    metrics: dict[str, float] = field(default_factory=dict)  # numbers worth plotting (loss, psnr)
    payload: Any = None  # optional object for rich consumers (e.g. Gaussians for the viewer)

    @property
    def fraction(self) -> float | None:
        """Progress in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return min(max(self.step / self.total, 0.0), 1.0)


ProgressCallback = Callable[[ProgressEvent], None]


def emit(callback: ProgressCallback | None, event: ProgressEvent) -> None:
    """Send ``event`` to ``callback`` when there is one."""
    if callback is not None:
        callback(event)


@contextmanager
def tqdm_progress(desc: str = "") -> Iterator[ProgressCallback]:
    """A callback that shows each stage as a tqdm bar on stderr (used by the CLI)."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def callback(event: ProgressEvent) -> None:
        bar = bars.get(event.stage)
        if bar is None:
            bar = bars[event.stage] = tqdm(total=event.total, desc=f"{desc}{event.stage}", leave=True)
        if event.total is not None and bar.total != event.total:
            bar.total = event.total
        bar.n = event.step
        postfix = {k: f"{v:.4g}" for k, v in event.metrics.items()}
        if event.message:
            postfix["status"] = event.message
        bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    try:
        yield callback
    finally:
        for bar in bars.values():
            bar.close()
