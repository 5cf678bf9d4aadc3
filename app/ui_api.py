"""The page's API actions: who is calling, and the Studio calls each event makes.

Each action takes the browser's ``owner`` key (kept in the browser's localStorage, encrypted with
:func:`browser_secret`); API callers leave it empty and are identified by their Gradio session
instead (:func:`owner_of`). :func:`user_errors` turns a :class:`GenFusionError` into a message in
the UI and an error the API client can read. :func:`api_actions` makes the actions of one
:class:`app.studio.Studio`; :mod:`app.ui` wires them to the page with their ``api_name``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.studio import Studio
from genfusion.errors import GenFusionError

SECRET_NAME = ".browser_state_secret"


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


@dataclass(frozen=True)
class Actions:
    """The API actions of one studio (each takes ``owner`` and Gradio's request last)."""

    inspect_capture: Callable[..., str]
    inspect_quietly: Callable[..., str]  # inspect_capture, errors as the summary text
    run: Callable[..., str]
    cancel: Callable[..., dict[str, Any]]
    status: Callable[..., dict[str, Any]]
    events: Callable[..., list]
    list_jobs: Callable[..., list[dict[str, Any]]]
    get_downloads: Callable[..., list[str]]
    mesh: Callable[..., str]
    video: Callable[..., str]
    use_camera_path: Callable[..., str]


def api_actions(studio: Studio) -> Actions:
    """The actions of the page, calling ``studio`` on behalf of the owner of each request."""

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

    return Actions(
        inspect_capture=inspect_capture,
        inspect_quietly=inspect_quietly,
        run=run,
        cancel=cancel,
        status=status,
        events=events,
        list_jobs=list_jobs,
        get_downloads=get_downloads,
        mesh=mesh,
        video=video,
        use_camera_path=use_camera_path,
    )


__all__ = ["Actions", "SECRET_NAME", "api_actions", "browser_secret", "owner_of", "user_errors"]
