"""``genfusion export RUN_DIR --format ply|splat|mesh|video``: a reconstruction run out as a file.

The run is read through ``genfusion.splat.checkpoint.load_run`` (``checkpoint.pt``), or, for a
folder that only has ``splats.ply`` (or a 3DGS .ply from elsewhere), from that file. Meshes fuse
the run's training views and videos fly along its input cameras; both take ``--path`` (a
nerfstudio camera_path.json) instead, and ``--scene`` when the run's capture folder has moved.
Output goes to ``RUN_DIR/exports/`` (or ``--out``), written atomically: a failed export leaves
earlier files as they were.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genfusion.errors import GenFusionError

HELP = "export a run as .ply, .splat, a mesh or a video"
FORMATS = ("ply", "splat", "mesh", "video")
DEFAULT_NAMES = {"ply": "splats.ply", "splat": "splats.splat", "mesh": "mesh.ply", "video": "video.mp4"}
EXPORT_DIR = "exports"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="output folder of genfusion reconstruct"
    )
    parser.add_argument("--format", choices=FORMATS, required=True, help="what to export")
    parser.add_argument("--out", type=Path, help=f"output file (default RUN_DIR/{EXPORT_DIR}/<name>)")
    parser.add_argument(
        "--path", type=Path, help="nerfstudio camera_path.json to render (video) or fuse (mesh)"
    )
    parser.add_argument("--scene", type=Path, help="the capture folder, when it moved since training")
    parser.add_argument("--normals", action="store_true", help="ply: add nx ny nz as the 3DGS writer does")
    parser.add_argument(
        "--mesh-resolution", type=int, default=256, help="mesh: voxels along the longest side"
    )
    parser.add_argument(
        "--alpha-threshold", type=float, default=0.5, help="mesh: min rendered alpha for depth"
    )
    parser.add_argument("--fps", type=float, help="video: frames per second (default: the path's, else 30)")
    parser.add_argument("--frames-per-view", type=int, default=10, help="video: frames between input cameras")
    parser.add_argument(
        "--max-side", type=int, default=960, help="video/mesh renders: longest side in pixels"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to render")


@dataclass
class RunSplats:
    """Gaussians of a run plus what rendering them needs."""

    splats: dict[str, Any]  # gsplat-style raw parameters
    method: str  # "2dgs" | "3dgs"
    source: Path  # the file they were read from
    scene: dict[str, Any] | None  # {"path", "downscale", ...} from the checkpoint, None without one
    split: str | None  # the run's train/test split, None without a checkpoint


def load_run_splats(run_dir: Path) -> RunSplats:
    """The run's Gaussians: checkpoint.pt through load_run, else splats.ply; clear errors."""
    if not run_dir.exists():
        raise GenFusionError(
            "no such run folder", path=run_dir, hint="Pass the --out folder of genfusion reconstruct."
        )
    if run_dir.is_file() and run_dir.suffix == ".ply":
        ply_path: Path | None = run_dir
    elif run_dir.is_dir() and (run_dir / "checkpoint.pt").is_file():
        from genfusion.splat.checkpoint import load_run

        run = load_run(run_dir)
        return RunSplats(
            splats=run.splats, method=run.method, source=run.path, scene=run.scene, split=run.config.split
        )
    else:
        ply_path = run_dir / "splats.ply" if run_dir.is_dir() else None
    if ply_path is None or not ply_path.is_file():
        raise GenFusionError(
            f"{run_dir} holds no checkpoint.pt or splats.ply, so there is nothing to export.",
            hint="Run `genfusion reconstruct SCENE --out DIR` first, then export DIR.",
        )
    from genfusion.export.ply import read_ply, read_ply_info

    info = read_ply_info(ply_path)
    if info.num_gaussians == 0:
        raise GenFusionError(f"{ply_path} holds no Gaussians (an empty run); train again.")
    return RunSplats(
        splats=read_ply(ply_path), method=info.method or "3dgs", source=ply_path, scene=None, split=None
    )


def _scene_cameras(run: RunSplats, scene_arg: Path | None, *, training_only: bool) -> list:
    """The run's input cameras (in scene order): all of them, or the training split's."""
    from genfusion.data import load_scene

    if scene_arg is None and run.scene is None:
        raise GenFusionError(
            f"{run.source} carries no scene information, so the input cameras are unknown.",
            hint="Pass --scene CAPTURE_FOLDER or --path camera_path.json.",
        )
    scene_path = scene_arg or Path(run.scene["path"])
    if not scene_path.exists():
        raise GenFusionError(
            f"the run's scene folder {scene_path} no longer exists.",
            hint="Pass --scene with its new location, or --path camera_path.json.",
        )
    downscale = int(run.scene.get("downscale", 1)) if run.scene else 1
    scene = load_scene(scene_path, downscale=downscale)
    if not training_only or run.split is None:
        return list(scene.cameras)
    from genfusion.splat.data_loader import split_indices

    train, _ = split_indices(scene, run.split)
    return [scene.cameras[i] for i in train]


def _output_path(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return args.out
    base = args.run_dir.parent if args.run_dir.is_file() else args.run_dir
    return base / EXPORT_DIR / DEFAULT_NAMES[args.format]


def run(args: argparse.Namespace) -> int:
    from genfusion.progress import tqdm_progress

    run_data = load_run_splats(args.run_dir)
    out = _output_path(args)
    dropped = 0  # Gaussians left out of a ply/splat for NaN/inf parameters
    if args.format == "ply":
        from genfusion.export.ply import write_ply

        written = write_ply(out, run_data.splats, method=run_data.method, normals=args.normals)
        summary = f"{written.num} Gaussians ({run_data.method}, SH degree {written.sh_degree})"
        dropped = written.dropped
    elif args.format == "splat":
        from genfusion.export.splat_format import write_splat

        written = write_splat(out, run_data.splats, method=run_data.method)
        summary = f"{written.num} Gaussians ({run_data.method}, base colour only)"
        dropped = written.dropped
    else:
        cameras, path_fps = None, None
        if args.path is not None:
            from genfusion.export.camera_path import read_camera_path

            cameras, path_fps = read_camera_path(args.path)
        if args.format == "mesh":
            from genfusion.export.mesh import MeshConfig, export_mesh

            cameras = cameras or _scene_cameras(run_data, args.scene, training_only=True)
            config = MeshConfig(
                resolution=args.mesh_resolution, alpha_threshold=args.alpha_threshold,
                max_side=args.max_side or 640, device=args.device,
            )  # fmt: skip
            with tqdm_progress() as progress:
                result = export_mesh(out, run_data.splats, cameras, method=run_data.method, config=config,
                                     progress=progress)  # fmt: skip
            summary = (
                f"{result.num_vertices} vertices, {result.num_faces} faces from {result.views} views "
                f"(voxel {result.voxel_size:.4g}, grid {'x'.join(map(str, result.grid))})"
            )
        else:
            from genfusion.export.video import VideoConfig, export_video

            interpolate = cameras is None
            cameras = cameras or _scene_cameras(run_data, args.scene, training_only=False)
            config = VideoConfig(
                fps=args.fps or path_fps or 30.0, frames_per_view=args.frames_per_view,
                max_side=args.max_side or 960, device=args.device,
            )  # fmt: skip
            with tqdm_progress() as progress:
                frames = export_video(out, run_data.splats, cameras, method=run_data.method, config=config,
                                      interpolate=interpolate, progress=progress)  # fmt: skip
            summary = f"{frames} frames at {config.fps:g} fps"
    if dropped:
        print(f"note: {dropped} Gaussians with NaN/inf parameters were left out")
    print(f"wrote {out}: {summary}")
    return 0
