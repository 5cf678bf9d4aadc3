"""Video -> sharp frames: sampling rate, blur rejection, frame caps, unreadable files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from genfusion.data.ingest import IngestConfig, ingest
from genfusion.data.video import fit_long_side, sample_video, sharpness
from genfusion.errors import GenFusionError

NATIVE_FPS = 10


def _fox_frames(fox_dir: Path, count: int, size: tuple[int, int] = (108, 192)) -> list[np.ndarray]:
    """``count`` consecutive fox photos, downscaled (BGR)."""
    paths = sorted((fox_dir / "images").glob("*.jpg"))[:count]
    return [cv2.resize(cv2.imread(str(p)), size, interpolation=cv2.INTER_AREA) for p in paths]


def _write_video(path: Path, frames: list[np.ndarray], fps: int = NATIVE_FPS) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _blur(frame: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(frame, (0, 0), 4.0)


def test_sharpness_ranks_blur_below_sharp(fox_dir: Path):
    frame = _fox_frames(fox_dir, 1)[0]
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert sharpness(cv2.cvtColor(_blur(frame), cv2.COLOR_BGR2GRAY)) < 0.2 * sharpness(gray)


def test_fit_long_side():
    assert fit_long_side(1080, 1920, 480) == (270, 480)
    assert fit_long_side(100, 50, 480) == (100, 50)  # never upscales
    assert fit_long_side(100, 50, None) == (100, 50)


def test_sharpest_frame_of_each_window_is_kept(fox_dir: Path, tmp_path: Path):
    frames = _fox_frames(fox_dir, 20)
    # 2 s of video at 10 fps sampled at 5 fps: windows of 2 frames. Blur the first frame of
    # window 3 (frame 6): its partner (frame 7) must win.
    frames[6] = _blur(frames[6])
    video = _write_video(tmp_path / "walk.mp4", frames)
    out = tmp_path / "frames"
    out.mkdir()
    events = []
    samples = sample_video(video, out, fps=5.0, progress=events.append)
    assert samples.frames_read == 20
    assert events[-1].step == events[-1].total == 20
    assert [e.step for e in events] == sorted(e.step for e in events)
    assert len(samples.names) == 10
    indices = [int(name[6:12]) for name in samples.names]
    assert indices[3] == 7, indices
    assert all(2 * w <= i <= 2 * w + 1 for w, i in enumerate(indices))
    assert sorted(p.name for p in out.iterdir()) == samples.names  # losers deleted again


def test_blurry_window_is_dropped_and_frames_capped(fox_dir: Path, tmp_path: Path):
    frames = _fox_frames(fox_dir, 12)
    frames[5] = _blur(frames[5])
    video = _write_video(tmp_path / "walk.mp4", frames)
    out = tmp_path / "frames"
    out.mkdir()
    # One frame per window: frame 5 has no sharper partner, so the relative test drops it.
    samples = sample_video(video, out, fps=NATIVE_FPS)
    assert samples.skipped_blurry == 1
    assert "frame_000005.jpg" not in samples.names
    assert len(samples.names) == 11
    median = np.median(list(samples.sharpness.values()))
    assert min(samples.sharpness.values()) > 0.35 * median

    capped = tmp_path / "capped"
    capped.mkdir()
    few = sample_video(video, capped, fps=NATIVE_FPS, max_frames=4, max_size=96)
    assert len(few.names) == 4
    assert few.names[0] == "frame_000000.jpg" and few.names[-1] == "frame_000011.jpg"
    assert set(few.sizes.values()) == {(54, 96)}
    assert len(list(capped.iterdir())) == 4


def test_ingest_video_end_to_end(fox_dir: Path, tmp_path: Path):
    video = _write_video(tmp_path / "clip.MOV", _fox_frames(fox_dir, 10))
    result = ingest(video, tmp_path / "out", config=IngestConfig(fps=2.5))
    assert result.kind == "video"
    assert result.video_frames_read == 10
    assert len(result.names) == 3  # 1 s of video at 2.5 fps: windows 0, 1, 2 (frames 0-3, 4-7, 8-9)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["images"]


def test_unreadable_video(tmp_path: Path):
    bogus = tmp_path / "holiday.mp4"
    bogus.write_bytes(np.random.default_rng(0).bytes(50_000))
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(GenFusionError) as err:
        ingest(bogus, tmp_path / "out")
    message = str(err.value)
    assert str(bogus) in message and "re-export" in message.lower()
    assert {p.name for p in tmp_path.iterdir()} == before  # out/ removed again


def test_zero_fps_is_rejected(tmp_path: Path, fox_dir: Path):
    video = _write_video(tmp_path / "v.mp4", _fox_frames(fox_dir, 2))
    with pytest.raises(GenFusionError, match="fps"):
        ingest(video, tmp_path / "out", config=IngestConfig(fps=0))
