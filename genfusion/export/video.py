"""An mp4 fly-through of the splats: along the input trajectory (smoothly interpolated) or a
given camera path. H.264, yuv420p, even frame sizes (what every browser and player accepts)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genfusion.atomic import atomic_path
from genfusion.data.camera_path import even_size, interpolate_cameras, resize_camera
from genfusion.data.types import Camera
from genfusion.device import resolve_device
from genfusion.errors import GenFusionError
from genfusion.export.splats import sh_degree_of
from genfusion.progress import ProgressCallback, ProgressEvent, emit
from genfusion.splat.cameras import camera_tensors


@dataclass
class VideoConfig:
    """How the video is rendered and encoded."""

    fps: float = 30.0  # frames per second of the mp4
    frames_per_view: int = 10  # input trajectory: frames per gap between consecutive input cameras
    num_frames: int | None = None  # input trajectory: total frames (overrides frames_per_view)
    max_side: int = 960  # longest frame side in pixels (frames are scaled down to it, never up)
    quality: int = 8  # imageio-ffmpeg quality, 0 (worst) .. 10 (best)
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # colour behind the splats
    sh_degree: int | None = None  # SH degree to render; None = all the splats store
    device: str = "auto"  # "auto" (CUDA when present) | "cpu" | "cuda"


def to_uint8(frame: Tensor | np.ndarray) -> np.ndarray:
    """HxWx3 float in [0, 1] -> HxWx3 uint8 (rounded)."""
    array = frame.detach().cpu().numpy() if isinstance(frame, Tensor) else np.asarray(frame)
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_frames(
    splats: Mapping[str, Tensor],
    cameras: list[Camera],
    *,
    method: str,
    sh_degree: int | None = None,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    device: str = "auto",
    progress: ProgressCallback | None = None,
    stage: str = "export.video",
) -> Iterator[np.ndarray]:
    """Render each camera (one at a time, so memory stays flat) -> HxWx3 float32 in [0, 1]."""
    from genfusion.splat.render import render_splats

    target = resolve_device(device)
    params = {k: v.detach().to(target, torch.float32) for k, v in splats.items()}
    degree = sh_degree_of(params) if sh_degree is None else sh_degree
    bg = torch.tensor(background, dtype=torch.float32, device=target)
    for index, camera in enumerate(cameras):
        viewmat, K = camera_tensors([camera], target)
        with torch.no_grad():
            out = render_splats(
                params, viewmat, K, camera.width, camera.height, sh_degree=degree, mode=method, background=bg
            )
        emit(progress, ProgressEvent(stage=stage, step=index + 1, total=len(cameras)))
        yield out.rgb[0].clamp(0.0, 1.0).cpu().numpy()


def render_depth_frames(
    splats: Mapping[str, Tensor],
    cameras: list[Camera],
    *,
    method: str,
    device: str = "auto",
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Like :func:`render_frames`, with depth: (rgb [H, W, 3], depth [H, W], alpha [H, W]) per
    camera, depth 0 where nothing was rendered (what a repairer takes)."""
    from genfusion.splat.render import render_splats

    target = resolve_device(device)
    params = {k: v.detach().to(target, torch.float32) for k, v in splats.items()}
    degree = sh_degree_of(params)
    for camera in cameras:
        viewmat, K = camera_tensors([camera], target)
        with torch.no_grad():
            out = render_splats(
                params, viewmat, K, camera.width, camera.height, sh_degree=degree, mode=method
            )
        alpha = out.alpha[0, ..., 0]
        depth = torch.where(alpha > 0, out.depth[0, ..., 0], torch.zeros_like(alpha))
        yield out.rgb[0].clamp(0, 1).cpu().numpy(), depth.cpu().numpy(), alpha.cpu().numpy()


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], *, fps: float = 30.0, quality: int = 8) -> int:
    """Encode HxWx3 frames (float in [0,1] or uint8, even sizes) to an H.264 mp4, atomically.

    Returns the number of frames written. Nothing is left at ``path`` if encoding fails.
    """
    import imageio.v2 as imageio

    count = 0
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(
            str(tmp), format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
            quality=quality, macro_block_size=2,  # 2, not the default 16: keep the exact size
            ffmpeg_log_level="error",
        )  # fmt: skip
        try:
            for frame in frames:
                image = frame if frame.dtype == np.uint8 else to_uint8(frame)
                if image.shape[0] % 2 or image.shape[1] % 2:
                    raise ValueError(f"frame of {image.shape[1]}x{image.shape[0]}: H.264 needs even sizes")
                writer.append_data(image)
                count += 1
        finally:
            writer.close()
        if count == 0:
            raise GenFusionError("no frames to write.", path=path)
    return count


def trajectory_cameras(cameras: list[Camera], config: VideoConfig) -> list[Camera]:
    """The smooth input-trajectory path at the video size (first camera's aspect)."""
    width, height = even_size(cameras[0].width, cameras[0].height, config.max_side)
    total = config.num_frames or max(1, (len(cameras) - 1) * config.frames_per_view + 1)
    return interpolate_cameras(cameras, total, width=width, height=height)


def path_cameras(cameras: list[Camera], config: VideoConfig) -> list[Camera]:
    """Cameras of a given path, resized to an even frame size within ``max_side``."""
    width, height = even_size(cameras[0].width, cameras[0].height, config.max_side)
    return [resize_camera(c, width, height) for c in cameras]


def export_video(
    path: str | Path,
    splats: Mapping[str, Tensor],
    cameras: list[Camera],
    *,
    method: str,
    config: VideoConfig | None = None,
    interpolate: bool = True,
    progress: ProgressCallback | None = None,
) -> int:
    """Render ``splats`` along ``cameras`` into an mp4 at ``path``; returns the frame count.

    ``interpolate=True`` treats ``cameras`` as keyframes (the input trajectory) and flies smoothly
    through them; ``False`` renders exactly the given cameras (a camera path).
    """
    config = config or VideoConfig()
    if not cameras:
        raise GenFusionError("no cameras to render a video along.")
    frames_cameras = trajectory_cameras(cameras, config) if interpolate else path_cameras(cameras, config)
    frames = render_frames(
        splats, frames_cameras, method=method, sh_degree=config.sh_degree,
        background=config.background, device=config.device, progress=progress,
    )  # fmt: skip
    return write_mp4(path, frames, fps=config.fps, quality=config.quality)
