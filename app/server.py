"""One port for everything: a FastAPI app with the viewer proxy and the Gradio page.

``/``              the Gradio page and its API (``/gradio_api/...``, what gradio_client calls)
``/viewer/<job>/`` the job's live viser viewer (HTTP and websocket forwarded, :mod:`app.proxy`)
``/healthz``       ``{"ok": true, ...}`` for probes and tests

:func:`serve` runs it with uvicorn on ``127.0.0.1`` unless another host is asked for, prints the
URLs, optionally starts a short public demo job, and shuts the jobs and viewers down on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from app.studio import Studio, StudioSettings

logger = logging.getLogger(__name__)

# The --demo job at start-up: small enough for a CPU in about a minute.
DEMO_SETTINGS: dict[str, Any] = {"method": "3dgs", "iterations": 300, "downscale": 8}


@dataclass
class ServerOptions:
    """How ``python launch.py`` serves the app."""

    host: str = "127.0.0.1"  # bind address; 0.0.0.0 only when asked (--host, or a Space)
    port: int = 7860  # the one port (Gradio page, API and viewers)
    share: bool = False  # also open a public gradio.live tunnel
    demo: bool = False  # start a short job on the demo scene at start-up
    max_upload_mb: int = 2048  # per uploaded file
    settings: StudioSettings = field(default_factory=StudioSettings)


def _under(path: Path, root: str) -> bool:
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except OSError:
        return False


def create_app(studio: Studio, *, max_upload_mb: int = 2048) -> FastAPI:
    """The FastAPI app: viewer proxy routes first, then Gradio mounted at ``/``."""
    import gradio as gr

    from app.proxy import mount_viewer_proxy
    from app.ui import build_ui
    from app.widgets import CSS

    closers: list[Callable[[], Any]] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        for close in closers:
            await close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    closers.append(mount_viewer_proxy(app, studio.viewer_port))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"ok": True, "running_jobs": len(studio.jobs.running())}

    blocks = build_ui(studio)
    jobs_root = studio.settings.jobs_root
    # Gradio hands out files it may move into its cache: those under the working directory or the
    # temp folder; a jobs root elsewhere has to be allowed explicitly.
    allowed = (
        []
        if (_under(jobs_root, os.getcwd()) or _under(jobs_root, tempfile.gettempdir()))
        else [str(jobs_root)]
    )
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        css=CSS,
        allowed_paths=allowed,
        max_file_size=f"{max_upload_mb}mb",
        footer_links=["api", "gradio"],
        run_history=False,
    )
    return app


def _open_tunnel(port: int) -> str | None:
    """A public gradio.live URL for ``--share`` (needs internet access to Gradio's share server)."""
    from gradio import networking

    try:
        return networking.setup_tunnel("127.0.0.1", port, secrets.token_urlsafe(32), None, None)
    except Exception as err:  # no internet, blocked binary download, ...
        print(f"  --share: no public link ({type(err).__name__}: {err})")
        return None


def serve(options: ServerOptions, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the app until interrupted (Ctrl-C); prints the URLs once it listens."""
    import uvicorn

    studio = Studio(options.settings)
    app = create_app(studio, max_upload_mb=options.max_upload_mb)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        ws="websockets-sansio",
        timeout_graceful_shutdown=3,  # open Gradio streams and viewer sockets must not hold up Ctrl-C
    )
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if not server.started:
            return
        shown_host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
        url = f"http://{shown_host}:{options.port}/"
        print("GenFusion Studio is serving:")
        print(f"  page and API:  {url}")
        print(f"  live viewers:  {url}viewer/<job id>/ (linked from the page)")
        print(f"  jobs folder:   {options.settings.jobs_root}")
        if options.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"  listening on {options.host}: reachable from other machines")
        if options.share:
            public = _open_tunnel(options.port)
            if public:
                print(f"  public link:   {public}")
        if options.demo:
            job = studio.submit_public_demo(DEMO_SETTINGS)
            print(
                f"  demo job:      {job} (the demo scene, {DEMO_SETTINGS['iterations']} steps; on the page)"
            )
        if ready is not None:
            ready(url)

    threading.Thread(target=announce, name="announce", daemon=True).start()
    try:
        server.run()
    finally:
        studio.close()


__all__ = ["DEMO_SETTINGS", "ServerOptions", "create_app", "serve"]
