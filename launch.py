"""``python launch.py``: GenFusion Studio (Gradio page + live viser viewer) on one port.

Binds 127.0.0.1:7860 unless asked otherwise (``--host 0.0.0.0``, ``--port``, ``--share``). On a
Hugging Face Space (``SPACE_ID`` set) it listens where the Space expects (``GRADIO_SERVER_NAME`` /
``GRADIO_SERVER_PORT``), reads server folders only from ``assets/``, and runs one job at a time.
The app runs from this checkout: ``app/`` is not installed into site-packages.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the checkout's app/ (never an installed package named "app")

DEMO_SCENE = REPO / "assets" / "demo" / "fox"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    on_space = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(description="GenFusion Studio: the Gradio app and the live viewer")
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
        help="the one port for the page, its API and the viewers (default 7860)",
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--demo", action="store_true", help="start a short job on the demo scene at start-up")
    parser.add_argument(
        "--jobs-root",
        type=Path,
        default=REPO / "outputs" / "app_jobs",
        help="where job folders live (default outputs/app_jobs)",
    )
    parser.add_argument("--max-jobs", type=int, default=1, help="jobs training at once; more wait in a queue")
    parser.add_argument(
        "--folder-root",
        type=Path,
        action="append",
        default=None,
        help="a folder users may name on the server (repeatable; default: assets/ and the jobs "
        "root; on a Space: assets/ only)",
    )
    parser.add_argument(
        "--no-folders", action="store_true", help="uploads and the demo only, no server folders"
    )
    parser.add_argument(
        "--max-iterations", type=int, default=30_000 if on_space else 100_000, help="refuse longer runs"
    )
    parser.add_argument("--max-upload-mb", type=int, default=2048, help="largest uploaded file, in MiB")
    parser.add_argument(
        "--viewer-interval",
        type=float,
        default=2.0,
        help="seconds between two live-viewer updates while training",
    )
    args = parser.parse_args(argv)
    if on_space and args.folder_root is None:
        args.folder_root = [REPO / "assets"]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from app.params import AppLimits
    from app.server import ServerOptions, serve
    from app.studio import StudioSettings

    roots = () if args.no_folders else (tuple(args.folder_root) if args.folder_root else None)
    settings = StudioSettings(
        jobs_root=args.jobs_root.resolve(),
        max_concurrent=args.max_jobs,
        folder_roots=roots,
        limits=AppLimits(max_iterations=args.max_iterations),
        viewer_interval_s=args.viewer_interval,
    )
    options = ServerOptions(
        host=args.host,
        port=args.port,
        share=args.share,
        demo=args.demo,
        max_upload_mb=args.max_upload_mb,
        settings=settings,
    )
    serve(options)


if __name__ == "__main__":
    main()
