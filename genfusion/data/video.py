"""Video -> a folder of sharp frames, for the unposed path.

Frames are grouped into windows of 1/fps seconds of video; in each window only the sharpest
frame (variance of the Laplacian) is kept, and kept frames still far blurrier than the median
kept frame (a whole window of motion blur) are dropped too. Decoding goes through OpenCV's
FFmpeg backend, so mp4/mov/avi/mkv/webm all work.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genfusion.errors import GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent, emit

ImageSize = tuple[int, int]  # (width, height)
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


@dataclass
class VideoSamples:
    """The frames :func:`sample_video` kept."""

    names: list[str]  # file names written, in time order
    sizes: dict[str, ImageSize]  # name -> (width, height)
    sharpness: dict[str, float]  # name -> variance of the Laplacian
    frames_read: int  # frames decoded in total
    skipped_blurry: int  # windows dropped because even their best frame was blurry
    notes: list[str] = field(default_factory=list)  # remarks worth showing the user


def fit_long_side(width: int, height: int, max_size: int | None) -> ImageSize:
    """(width, height) scaled down so the long side is at most ``max_size`` (never up)."""
    if not max_size or max(width, height) <= max_size:
        return width, height
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian of a grayscale image: low for blurry frames."""
    import cv2

    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


@dataclass
class _Candidate:
    """The sharpest frame seen so far in one sampling window."""

    window: int  # index of the 1/fps-second window
    frame_index: int  # index of the frame in the video
    sharpness: float  # variance of the Laplacian (after any downscale)
    image: np.ndarray | None  # BGR pixels until written to disk, then None


def _read_frames(video: Path) -> Iterator[tuple[int, float, int | None, np.ndarray]]:
    """(frame index, native fps, frame count or None, BGR frame) per decodable frame."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise GenFusionError(
                "cannot be opened as a video.",
                path=video,
                hint="Check that the file is a complete mp4/mov/avi/mkv/webm video, or re-export it"
                " as H.264 mp4.",
            )
        native_fps = capture.get(cv2.CAP_PROP_FPS)
        if not np.isfinite(native_fps) or native_fps <= 0:
            native_fps = 30.0  # some containers do not say; phones record at ~30
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield index, float(native_fps), (count if count > 0 else None), frame
            index += 1
        if index == 0:
            raise GenFusionError(
                "has no decodable frames.",
                path=video,
                hint="Re-export the video as H.264 mp4 and try again.",
            )
    finally:
        capture.release()


def sample_video(
    video: Path,
    dst_dir: Path,
    *,
    fps: float = 2.0,
    max_frames: int | None = None,
    max_size: int | None = None,
    min_relative_sharpness: float = 0.35,
    jpeg_quality: int = 95,
    progress: ProgressCallback | None = None,
) -> VideoSamples:
    """Write the sharpest frame of each 1/fps-second window of ``video`` into ``dst_dir``.

    Each window's winner is written as soon as the window closes, so memory holds one frame
    per window, not the whole video; frames dropped afterwards are deleted again.
    """
    import cv2

    if fps <= 0:
        raise GenFusionError(f"the sampling rate must be positive (got fps={fps}).", hint="Use e.g. --fps 2.")
    candidates: list[_Candidate] = []
    digits = 6

    def name_of(candidate: _Candidate) -> str:
        return f"frame_{candidate.frame_index:0{digits}d}.jpg"

    def flush(candidate: _Candidate) -> None:
        path = dst_dir / name_of(candidate)
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        if not cv2.imwrite(str(path), candidate.image, params):
            raise GenFusionError("could not write a video frame.", path=path, hint="Check free disk space.")
        candidate.image = None
        candidates.append(candidate)

    current: _Candidate | None = None
    frames_read = 0
    for index, native_fps, frame_count, frame in _read_frames(video):
        frames_read += 1
        window = int(index * fps / native_fps)
        width, height = fit_long_side(frame.shape[1], frame.shape[0], max_size)
        if (width, height) != (frame.shape[1], frame.shape[0]):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        score = sharpness(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        if current is None or window != current.window:
            if current is not None:
                flush(current)
            current = _Candidate(window, index, score, frame)
        elif score > current.sharpness:
            current = _Candidate(window, index, score, frame)
        if index % 10 == 0 or index + 1 == frame_count:
            emit(progress, ProgressEvent("ingest", index + 1, frame_count, f"reading frame {index + 1}"))
    assert current is not None  # _read_frames raises when there are no frames
    flush(current)
    # The container's frame count is only an estimate: close the stage on what was really read.
    emit(progress, ProgressEvent("ingest", frames_read, frames_read, f"sampled {len(candidates)} frames"))

    # Windows whose best frame is still far blurrier than the typical one (fast pans, motion
    # blur across the whole window) hurt SfM more than a gap in the sequence does.
    median = float(np.median([c.sharpness for c in candidates]))
    kept = [c for c in candidates if c.sharpness >= min_relative_sharpness * median]
    skipped_blurry = len(candidates) - len(kept)
    notes = []
    if skipped_blurry:
        notes.append(f"skipped {skipped_blurry} blurry sample(s)")
    if max_frames and len(kept) > max_frames:
        picks = np.unique(np.linspace(0, len(kept) - 1, max_frames).round().astype(int))
        notes.append(f"kept {len(picks)} of {len(kept)} sampled frames (max_frames)")
        kept = [kept[i] for i in picks]
    kept_names = {name_of(c) for c in kept}
    for candidate in candidates:
        if name_of(candidate) not in kept_names:
            (dst_dir / name_of(candidate)).unlink()

    names = [name_of(c) for c in kept]
    sizes = {}
    for name in names:
        with open(dst_dir / name, "rb") as handle:  # cheap header read, no decode
            from PIL import Image

            sizes[name] = Image.open(handle).size
    return VideoSamples(
        names=names,
        sizes=sizes,
        sharpness={name_of(c): c.sharpness for c in kept},
        frames_read=frames_read,
        skipped_blurry=skipped_blurry,
        notes=notes,
    )
