"""``genfusion render RUN --path camera_path.json [--repair]``: a video of any path from a run.

Without ``--repair`` the frames are the splats' renders. With it they go through the repairer as a
final post-render pass, a clip of ``--clip-length`` frames at a time (Difix3D+ repairs frame by
frame; ours is a video model, so consecutive frames stay consistent), and the mp4 shows the
repaired frames (``--side-by-side``: render | repaired). Written atomically as H.264.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genfusion.errors import GenFusionError

HELP = "render a camera path from a run as mp4, optionally repaired"


@dataclass
class RenderOptions:
    """Settings of ``genfusion render``."""

    path: Path  # nerfstudio camera_path.json to render along (genfusion fuse / the viewer write these)
    out: Path | None = None  # the mp4 to write; None = RUN/exports/<path name>[_repaired].mp4
    repair: bool = False  # pass the frames through the repairer (a final post-render pass)
    repairer: Literal["auto", "diffusion", "fallback"] = "auto"  # auto: the diffusion model when installed
    weights_dir: str = "checkpoints/genfusion-repair"  # folder of the converted repair model
    clip_length: int = 16  # frames repaired together
    side_by_side: bool = False  # with --repair: write render | repaired side by side
    fps: float | None = None  # frames per second; None = the camera path's, else 30
    max_side: int | None = 960  # cap the longer image side (pixels), keeping the aspect
    device: str = "auto"  # auto (CUDA when present), cpu or cuda


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genfusion.flags import add_dataclass_arguments

    parser.add_argument("run_dir", type=Path, help="a run folder (genfusion reconstruct / fuse --out)")
    add_dataclass_arguments(parser, RenderOptions, title="render settings")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from genfusion.cli.export import load_run_splats
    from genfusion.data.camera_path import even_size, read_camera_path
    from genfusion.export.video import render_depth_frames, to_uint8, write_mp4
    from genfusion.flags import dataclass_from_args
    from genfusion.fusion.clips import surface_colour
    from genfusion.generation.repairer import RepairClip, make_repairer

    options: RenderOptions = dataclass_from_args(RenderOptions, args)
    if options.clip_length < 2:
        raise GenFusionError(f"--clip-length must be at least 2, got {options.clip_length}")
    run_data = load_run_splats(args.run_dir)
    cameras, path_fps = read_camera_path(options.path)
    if options.max_side:
        cameras = [c.resized(*even_size(c.width, c.height, options.max_side)) for c in cameras]
    else:
        cameras = [c.resized(*even_size(c.width, c.height)) for c in cameras]
    suffix = "_repaired" if options.repair else ""
    out = options.out or Path(args.run_dir) / "exports" / f"{options.path.stem}{suffix}.mp4"
    repairer = make_repairer(options.repairer, options.weights_dir) if options.repair else None
    if repairer is not None:
        print(f"genfusion render: {repairer.description}", flush=True)

    def frames():
        rendered = render_depth_frames(
            run_data.splats, cameras, method=run_data.method, device=options.device
        )
        batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for item in rendered:
            batch.append(item)
            if len(batch) == options.clip_length:
                yield from _finish(batch)
                batch = []
        if batch:
            yield from _finish(batch)

    def _finish(batch):
        rgb = torch.from_numpy(np.stack([b[0] for b in batch]))
        if repairer is None:
            yield from (to_uint8(frame) for frame in rgb)
            return
        alpha = torch.from_numpy(np.stack([b[2] for b in batch]))
        # a weight-free repairer sees the surface's own colour: the black background showing
        # through partly transparent splats is repaired like a hole (as in the fusion loop's
        # clips); the diffusion model was fine-tuned on raw renders and gets them
        shown = rgb if "diffusion" in repairer.name else surface_colour(rgb, alpha, torch.zeros(3))
        clip = RepairClip(
            rgb=shown,
            depth=torch.from_numpy(np.stack([b[1] for b in batch])),
            alpha=alpha,
        )
        result = repairer.repair(clip)
        fixed = result.rgb if result.usable else rgb
        for before, after in zip(rgb, fixed, strict=True):
            frame = torch.cat([before, after], dim=1) if options.side_by_side else after
            yield to_uint8(frame)

    count = write_mp4(out, frames(), fps=options.fps or path_fps or 30.0)
    print(f"{out}: {count} frames")
    return 0
