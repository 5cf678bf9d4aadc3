"""The one exception type for errors a user can cause (bad input, missing weights, ...).

Its message always says what went wrong *and* what to do about it; the CLI prints it without a
traceback, the app shows it in the UI. Programming errors stay ordinary Python exceptions.
"""

from __future__ import annotations

from pathlib import Path


class GenFusionError(Exception):
    """A problem the user can fix. ``str(err)`` is a complete, actionable sentence."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        self.path = Path(path) if path is not None else None
        self.hint = hint
        text = message
        if path is not None and str(path) not in message:
            text = f"{path}: {text}"
        if hint:
            text = f"{text} {hint}"
        super().__init__(text)


class Cancelled(GenFusionError):
    """A long operation stopped because its ``stop_check()`` said so (the user cancelled).

    Every cancellable operation (pose estimation, reconstruction, fusion) raises this one type,
    after leaving its outputs as they were before it started (or, for training, at the last
    completed step: the caller may still save or evaluate). ``step`` is how far it got, when known.
    """

    def __init__(self, message: str, *, step: int | None = None, hint: str | None = None):
        self.step = step
        super().__init__(message, hint=hint)
