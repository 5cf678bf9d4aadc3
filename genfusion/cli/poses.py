"""``genfusion poses INPUT --out DIR``: camera poses for unposed photos, a zip or a video.

Writes ``DIR/images/``, ``DIR/sparse/0/`` (a COLMAP model that ``genfusion inspect`` and every
reader load) and ``DIR/sfm_report.json``. ``INPUT`` may be ``DIR/images`` itself (or ``DIR``):
then the photos stay where they are and only ``sparse/0`` is added.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HELP = "estimate camera poses for unposed photos, a zip or a video (pycolmap)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genfusion.data.sfm import CAMERA_MODELS, MATCHERS, SfMConfig

    defaults = SfMConfig()
    parser.add_argument("input", type=Path, help="a folder of photos, a .zip of photos or a video")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--fps", type=float, default=defaults.ingest.fps, help="video: frames kept per second of video"
    )
    parser.add_argument("--max-frames", type=int, default=None, help="video: keep at most this many frames")
    parser.add_argument(
        "--max-size", type=int, default=None, help="downscale so the long side is at most this many pixels"
    )
    parser.add_argument(
        "--matcher",
        choices=MATCHERS,
        default=defaults.matcher,
        help="feature matching: auto = sequential for video, exhaustive for up to"
        f" {defaults.exhaustive_max_images} photos",
    )
    parser.add_argument(
        "--camera-model",
        choices=CAMERA_MODELS,
        default=defaults.camera_model,
        help="COLMAP camera model (OPENCV for strong lens distortion)",
    )
    parser.add_argument(
        "--per-image-cameras",
        action="store_true",
        help="one camera per image instead of one shared camera (mixed cameras or sizes)",
    )
    parser.add_argument(
        "--max-features", type=int, default=defaults.max_num_features, help="SIFT features per image"
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all available)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing images/ and sparse/")


def config_from_args(args: argparse.Namespace):
    """The :class:`SfMConfig` the flags describe."""
    from genfusion.data.ingest import IngestConfig
    from genfusion.data.sfm import SfMConfig
    from genfusion.errors import GenFusionError

    for flag, value in (("--max-frames", args.max_frames), ("--max-size", args.max_size)):
        if value is not None and value < 1:
            raise GenFusionError(
                f"{flag} must be 1 or more (got {value}).", hint=f"Leave out {flag} or raise it."
            )
    if args.max_size is not None and args.max_size < 64:
        raise GenFusionError(
            f"--max-size {args.max_size} is too small for feature matching.", hint="Use 64 pixels or more."
        )
    if args.fps <= 0:
        raise GenFusionError(f"--fps must be positive (got {args.fps}).", hint="Use e.g. --fps 2.")
    return SfMConfig(
        ingest=IngestConfig(fps=args.fps, max_frames=args.max_frames, max_size=args.max_size),
        matcher=args.matcher,
        camera_model=args.camera_model,
        single_camera=not args.per_image_cameras,
        max_num_features=args.max_features,
        num_threads=args.threads,
        overwrite=args.overwrite,
    )


@contextmanager
def _ctrl_c_cancels() -> Iterator[Callable[[], bool]]:
    """A stop_check that turns the first Ctrl-C into a clean cancel (pycolmap's C++ loops never
    see Python's KeyboardInterrupt); a second Ctrl-C interrupts as usual."""
    stop = threading.Event()

    def on_sigint(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\ncancelling... (Ctrl-C again to abort at once)", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():
        yield stop.is_set  # signals can only be handled on the main thread
        return
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def run(args: argparse.Namespace) -> int:
    from genfusion.data.sfm import estimate_poses, read_report
    from genfusion.progress import tqdm_progress

    config = config_from_args(args)
    with tqdm_progress("poses ") as progress, _ctrl_c_cancels() as stop_check:
        out = estimate_poses(args.input, args.out, config=config, progress=progress, stop_check=stop_check)
    report = read_report(out)
    registered, total = len(report["registered"]), report["num_images"]
    print(f"registered {registered}/{total} images ({report['matcher']} matching, {report['camera_model']})")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"COLMAP model: {out / 'sparse' / '0'}")
    print(f"next: genfusion inspect {out}")
    return 0
