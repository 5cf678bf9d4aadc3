"""What the user hands in -> a :class:`Capture` the job can train on.

Three sources:

- the demo scene (``assets/demo/fox``), used in place;
- a folder on the server, only under the allowed roots (symlinks resolved first), used in place
  when it is a posed scene (COLMAP, transforms.json, LLFF), else as unposed photos;
- uploads: one ``.zip`` (a posed scene or photos; zip-slip and zip bombs are refused by
  :mod:`genfusion.data.safezip` before anything is written), one video, or several images.
  Everything an upload produces is written inside the job's ``upload/`` folder.

Photos and videos need camera poses first (``genfusion poses``, pycolmap): the job does that in
its worker. Everything checked here is cheap enough to do before a job is queued, so a bad
upload is refused with a message at once. Errors are :class:`GenFusionError`.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from genfusion.data.ingest import IMAGE_SUFFIXES, is_ignored, list_folder_images, open_verified_image
from genfusion.data.safezip import ZipLimits, extract_zip
from genfusion.data.video import VIDEO_SUFFIXES
from genfusion.errors import GenFusionError

REPO = Path(__file__).resolve().parents[1]
DEMO_SCENE = REPO / "assets" / "demo" / "fox"
UPLOAD_DIR = "upload"

CaptureKind = Literal["scene", "photos", "video"]


@dataclass(frozen=True)
class Capture:
    """A capture ready for a job: a posed scene folder, or photos / a video that need poses."""

    kind: CaptureKind  # "scene" (posed, loadable by load_scene), "photos" or "video"
    path: Path  # the scene folder, the photos folder or the video file
    source: str  # what the user gave, in words ("the demo scene", "upload of 12 images", ...)
    num_images: int | None = None  # photos (None for scenes and videos: see the summary)

    @property
    def needs_poses(self) -> bool:
        return self.kind != "scene"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "source": self.source,
            "num_images": self.num_images,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Capture:
        return cls(
            kind=data["kind"],
            path=Path(data["path"]),
            source=data["source"],
            num_images=data.get("num_images"),
        )


@dataclass(frozen=True)
class UploadLimits:
    """How much an upload may hold (gradio's ``max_file_size`` limits each file already)."""

    max_files: int = 2_000  # files in one upload
    max_total_bytes: int = 4 * 1024**3  # all uploaded files together
    max_zip_bytes: int = 4 * 1024**3  # uncompressed size of a zip
    min_photos: int = 3  # pose estimation needs at least this many photos


def demo_capture() -> Capture:
    """The bundled demo scene (a posed transforms.json capture)."""
    if not DEMO_SCENE.is_dir():
        raise GenFusionError("the demo scene is missing.", path=DEMO_SCENE, hint="Restore assets/demo/fox.")
    return Capture(kind="scene", path=DEMO_SCENE, source="the demo scene (assets/demo/fox)")


# ----------------------------------------------------------------------------- server folders


def resolve_allowed(text: str, roots: Sequence[Path]) -> Path:
    """An existing folder named by ``text`` (absolute, or relative to the checkout) that lies
    under one of ``roots`` once every symlink is resolved; GenFusionError otherwise."""
    text = (text or "").strip()
    if not text:
        raise GenFusionError("no folder given.", hint="Type the path of a folder on the server.")
    if "\x00" in text:
        raise GenFusionError("the folder path holds a NUL character.")
    raw = Path(text).expanduser()
    candidate = raw if raw.is_absolute() else REPO / raw
    resolved_roots = [Path(root).resolve() for root in roots]
    shown = ", ".join(str(root) for root in resolved_roots) or "(none: this server takes uploads only)"
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise GenFusionError(
            f"the folder {text} does not exist here.", hint=f"Folders may only come from: {shown}."
        ) from None
    if not any(resolved == root or resolved.is_relative_to(root) for root in resolved_roots):
        raise GenFusionError(
            f"the folder {text} is outside the folders this server may read.",
            hint=f"Use a folder under {shown}, or upload the capture.",
        )
    if not resolved.is_dir():
        raise GenFusionError(
            f"{text} is a file, not a folder.", hint="Give the folder that holds the capture."
        )
    return resolved


def folder_capture(text: str, roots: Sequence[Path]) -> Capture:
    """A posed scene folder, or a folder of photos, under the allowed roots (used in place)."""
    folder = resolve_allowed(text, roots)
    scene = find_scene_root(folder)
    if scene is not None:
        return Capture(kind="scene", path=scene, source=f"the folder {folder}")
    images = list_folder_images(folder)  # stray non-image files and empty folders are errors
    return _photos(folder, len(images), f"the folder {folder} ({len(images)} photos)")


def find_scene_root(folder: Path) -> Path | None:
    """``folder`` (or its only sub-folder, as zips often wrap one) when it is a posed scene."""
    from genfusion.data.load import detect_format

    for candidate in _scene_candidates(folder):
        try:
            detect_format(candidate)
            return candidate
        except GenFusionError:
            continue
    return None


def _scene_candidates(folder: Path) -> Iterable[Path]:
    yield folder
    entries = [p for p in folder.iterdir() if not is_ignored(p.name)]
    if len(entries) == 1 and entries[0].is_dir():
        yield entries[0]


def _photos(folder: Path, count: int, source: str, minimum: int = 3) -> Capture:
    if count < minimum:
        raise GenFusionError(
            f"{source} holds {count} photo(s); estimating camera poses needs at least {minimum}.",
            hint="Add photos that overlap (every part of the scene seen from 3+ positions).",
        )
    return Capture(kind="photos", path=folder, source=source, num_images=count)


# ----------------------------------------------------------------------------- uploads


def safe_name(name: str) -> str:
    """A file name that is safe to write: the base name only, odd characters replaced."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name.replace("\\", "/")).name).lstrip(".")
    return base[:120] or "upload"


def _kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return "zip"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    raise GenFusionError(
        f"{path.name} is not an image ({', '.join(IMAGE_SUFFIXES)}), a .zip or a video "
        f"({', '.join(VIDEO_SUFFIXES)}).",
        hint="Upload photos, one zip of a capture or photos, or one video.",
    )


def probe_video(path: Path, shown: str) -> None:
    """Refuse a file that does not decode as a video (at least one frame)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        ok = capture.isOpened() and capture.read()[0]
    finally:
        capture.release()
    if not ok:
        raise GenFusionError(
            f"{shown} cannot be read as a video.",
            hint="Upload a complete mp4/mov/avi/mkv/webm file, e.g. re-exported as H.264 mp4.",
        )


def upload_capture(files: Sequence[str | Path], job_dir: Path, limits: UploadLimits | None = None) -> Capture:
    """Check the uploaded ``files`` and lay them out in ``job_dir/upload/``; returns the capture.

    Nothing is written outside ``job_dir``. On error, ``job_dir/upload`` is removed again.
    """
    limits = limits or UploadLimits()
    paths = [Path(f) for f in files if f]
    if not paths:
        raise GenFusionError(
            "nothing was uploaded.", hint="Add photos, a zip or a video, or pick the demo scene."
        )
    if len(paths) > limits.max_files:
        raise GenFusionError(
            f"{len(paths)} files were uploaded; this server takes at most {limits.max_files}."
        )
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise GenFusionError(f"the upload of {missing[0]} did not arrive.", hint="Upload it again.")
    total = sum(p.stat().st_size for p in paths)
    if total > limits.max_total_bytes:
        raise GenFusionError(
            f"the upload holds {total / 1024**2:.0f} MiB, over this server's limit of "
            f"{limits.max_total_bytes / 1024**2:.0f} MiB.",
            hint="Upload fewer or smaller files (e.g. photos at 1600 px).",
        )
    kinds = [_kind_of(p) for p in paths]
    dest = job_dir / UPLOAD_DIR
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        if kinds == ["zip"]:
            return _zip_capture(paths[0], dest, limits)
        if kinds == ["video"]:
            target = dest / safe_name(paths[0].name)
            shutil.copyfile(paths[0], target)
            probe_video(target, paths[0].name)
            return Capture(kind="video", path=target, source=f"the video {paths[0].name}")
        if set(kinds) == {"image"}:
            return _image_capture(paths, dest, limits)
        raise GenFusionError(
            "the upload mixes kinds of files (" + ", ".join(sorted(set(kinds))) + ").",
            hint="Upload either photos, or one zip, or one video.",
        )
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _zip_capture(zip_path: Path, dest: Path, limits: UploadLimits) -> Capture:
    extracted = dest / "extracted"
    extracted.mkdir()
    zip_limits = ZipLimits(max_total_bytes=limits.max_zip_bytes, skip=is_ignored)
    extract_zip(zip_path, extracted, zip_limits)  # refuses zip-slip, links, bombs before writing
    scene = find_scene_root(extracted)
    if scene is not None:
        return Capture(kind="scene", path=scene, source=f"the zip {zip_path.name} (a posed capture)")
    images = list_folder_images(extracted, shown_as=Path(zip_path.name))
    for image in images:
        open_verified_image(image, Path(zip_path.name) / image.relative_to(extracted))
    return _photos(
        extracted, len(images), f"the zip {zip_path.name} ({len(images)} photos)", limits.min_photos
    )


def _image_capture(paths: Sequence[Path], dest: Path, limits: UploadLimits) -> Capture:
    folder = dest / "images"
    folder.mkdir()
    for path in paths:
        name = safe_name(path.name)
        if (folder / name).exists():
            raise GenFusionError(f"two uploaded photos are both named {name}.", hint="Rename one of them.")
        open_verified_image(path, path.name)  # a non-image with an image suffix fails here
        shutil.copyfile(path, folder / name)
    return _photos(folder, len(paths), f"an upload of {len(paths)} photos", limits.min_photos)


SCENE_MARKERS = ("transforms.json", "poses_bounds.npy", "cameras.bin", "cameras.txt")


def describe_upload(files: Sequence[str | Path], limits: UploadLimits | None = None) -> str:
    """What an upload holds, checked without writing anything (a zip's directory is read and
    checked for zip-slip and bombs, not extracted)."""
    from genfusion.data.safezip import check_zip

    limits = limits or UploadLimits()
    paths = [Path(f) for f in files if f]
    if not paths:
        raise GenFusionError(
            "nothing was uploaded.", hint="Add photos, a zip or a video, or pick the demo scene."
        )
    kinds = [_kind_of(p) for p in paths]
    if kinds == ["zip"]:
        members = check_zip(paths[0], ZipLimits(max_total_bytes=limits.max_zip_bytes, skip=is_ignored))
        names = [m.filename for m in members]
        if any(Path(n).name in SCENE_MARKERS for n in names):
            return f"{paths[0].name}: a posed capture ({len(names)} files); it is trained as it is."
        images = [n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
        return (
            f"{paths[0].name}: {len(images)} photos (of {len(names)} files); camera poses are estimated "
            "with pycolmap when the job starts."
        )
    if kinds == ["video"]:
        return f"{paths[0].name}: a video; frames are sampled and posed with pycolmap when the job starts."
    if set(kinds) == {"image"}:
        return f"{len(paths)} photos; camera poses are estimated with pycolmap when the job starts."
    raise GenFusionError(
        "the upload mixes kinds of files (" + ", ".join(sorted(set(kinds))) + ").",
        hint="Upload either photos, or one zip, or one video.",
    )


# ----------------------------------------------------------------------------- summaries


def summary_dict(capture: Capture, downscale: int = 1) -> dict[str, Any]:
    """What ``genfusion inspect`` reports for a posed capture (no image is decoded), or the facts
    known before pose estimation for photos and videos."""
    if capture.kind != "scene":
        return {
            "kind": capture.kind,
            "source": capture.source,
            "path": str(capture.path),
            "images": capture.num_images,
        }
    from genfusion.data.load import load_scene
    from genfusion.data.summary import summarize_scene

    scene = load_scene(capture.path, downscale=downscale, undistort=False, allow_missing=True)
    return summarize_scene(scene)


def summary_text(capture: Capture, downscale: int = 1) -> str:
    """The capture summary shown in the UI (``genfusion inspect``'s text for posed scenes)."""
    if capture.kind == "video":
        return (
            f"{capture.source}: frames are sampled (2 per second, the sharpest of each window) and camera "
            "poses estimated with pycolmap (`genfusion poses`) when the job starts."
        )
    if capture.kind == "photos":
        return (
            f"{capture.source}: camera poses are estimated with pycolmap (`genfusion poses`) when the job "
            "starts; a few minutes for a few dozen photos on a CPU."
        )
    from genfusion.cli.inspect import format_summary

    return f"source:      {capture.source}\n" + format_summary(summary_dict(capture, downscale))


__all__ = [
    "DEMO_SCENE",
    "Capture",
    "UploadLimits",
    "demo_capture",
    "describe_upload",
    "find_scene_root",
    "folder_capture",
    "probe_video",
    "resolve_allowed",
    "safe_name",
    "summary_dict",
    "summary_text",
    "upload_capture",
]
