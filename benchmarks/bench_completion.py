"""Scene completion on the demo along an orbit that leaves the captured views
-> benchmarks/results/completion.json.

``genfusion fuse assets/demo/fox --mode complete --path orbit`` at the CPU preview budget (3DGS,
1,500 steps, about 120 pixels on the long side, 48 orbit views per round, the default repairer),
and what issue "Cyclic fusion" asks of it:

- the share of unreliable pixels along the path at the start of each round (the map the viewer
  shows: nothing renders, or no photo saw what renders), which should fall round after round, and
  the same share on the finished splats;
- holes in the exported ``splats.ply`` where the path looked: every orbit view is rendered from
  the file itself, and pixels with alpha below 0.1 or no depth (``unreliable_mask``) are counted;
- the plain reconstruction with the same settings and seed, through the same two measures, so the
  rounds' effect is a difference within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genfusion.data import load_scene  # noqa: E402
from genfusion.data.camera_path import write_camera_path  # noqa: E402
from genfusion.data.types import Camera  # noqa: E402
from genfusion.export.ply import read_ply  # noqa: E402
from genfusion.export.splats import sh_degree_of  # noqa: E402
from genfusion.fusion.clips import ClipRenderer  # noqa: E402
from genfusion.fusion.config import FusionConfig, resolve  # noqa: E402
from genfusion.fusion.expansion import unreliable_mask  # noqa: E402
from genfusion.fusion.loop import FusionLoop  # noqa: E402
from genfusion.fusion.trajectory import look_further_path  # noqa: E402
from genfusion.generation.fallback import FallbackRepairer  # noqa: E402
from genfusion.splat.cameras import camera_tensors  # noqa: E402
from genfusion.splat.render import render_splats  # noqa: E402
from genfusion.splat.run import write_run  # noqa: E402
from genfusion.splat.trainer import Trainer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "completion.json"
DEMO = REPO / "assets" / "demo" / "fox"


@torch.no_grad()
def holes_along(ply_path: Path, cameras: list[Camera], method: str) -> dict[str, float]:
    """Share of path pixels where the exported splats render nothing (alpha < 0.1 or no depth),
    the worst view's share, and the mean alpha."""
    splats = read_ply(ply_path)
    degree = sh_degree_of(splats)
    shares, alphas = [], []
    for camera in cameras:
        viewmat, K = camera_tensors([camera], "cpu")
        out = render_splats(splats, viewmat, K, camera.width, camera.height, sh_degree=degree, mode=method)
        alpha = out.alpha[0, ..., 0]
        depth = torch.where(alpha > 0, out.depth[0, ..., 0], torch.zeros_like(alpha))
        shares.append(float(unreliable_mask(alpha, depth).float().mean()))
        alphas.append(float(alpha.mean()))
    return {
        "hole_share": round(sum(shares) / len(shares), 5),
        "worst_view_hole_share": round(max(shares), 5),
        "mean_alpha": round(sum(alphas) / len(alphas), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=DEMO)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: reproducible)")
    parser.add_argument(
        "--path",
        choices=("orbit", "further"),
        default="orbit",
        help="orbit: the 48-view orbit at the cameras' distance; further: the capture's own path "
        "backed away to twice its distance, so what lies around it comes into view",
    )
    parser.add_argument(
        "--remove-background", choices=("auto", "on", "off"), default="auto", help="FusionConfig field"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    remove = {"auto": None, "on": True, "off": False}[args.remove_background]
    base = FusionConfig(mode="complete", budget="preview", path="orbit", remove_background=remove)
    base.reconstruct.device = "cpu"
    cache = Path(tempfile.gettempdir()) / "genfusion-bench-cache"
    probe = load_scene(args.scene, cache_dir=cache / "full")
    if args.path == "further":  # a user path: the camera_path.json a viewer would have drawn
        path_file = Path(tempfile.mkdtemp()) / "camera_path.json"
        write_camera_path(path_file, look_further_path(probe.cameras, 48, distance_scale=2.0))
        base = replace(base, path="file", camera_path=str(path_file))
    config = resolve(base, explicit={"device"}, long_side=max(max(c.width, c.height) for c in probe.cameras))
    scene = load_scene(
        args.scene,
        downscale=config.reconstruct.downscale,
        cache_dir=cache / f"fusion-{config.reconstruct.downscale}",
    )
    results: dict = {"machine": platform.platform(), "torch": torch.__version__, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        plain = Trainer(scene, config.reconstruct)
        start = time.perf_counter()
        plain.train()
        plain_seconds = time.perf_counter() - start
        plain_evaluation = plain.evaluate()
        write_run(Path(tmp) / "plain", plain, plain_evaluation)
        loop = FusionLoop(scene, config, Path(tmp) / "fused")
        start = time.perf_counter()
        metrics = loop.run()
        fused_seconds = time.perf_counter() - start
        path = loop.novel_cameras(0)
        results.update(
            scene=args.scene.name,
            path=args.path,
            remove_background=args.remove_background,
            resolution=[scene.cameras[0].width, scene.cameras[0].height],
            iterations=config.reconstruct.iterations,
            rounds=list(config.rounds),
            path_views=len(path),
            repairer=loop.repairer.description,
            unreliable_per_round=[round(r.unreliable_before, 4) for r in loop.reports],
            added_gaussians_per_round=[r.added_gaussians for r in loop.reports],
            test_psnr_per_round=[r.test_psnr for r in loop.reports],
            unreliable_final=round(loop.clips.unreliable_fraction(path), 4),
            fused={
                "seconds": round(fused_seconds, 1),
                "psnr": metrics.get("psnr"),
                "num_gaussians": metrics["num_gaussians"],
                **holes_along(Path(tmp) / "fused" / "splats.ply", path, config.reconstruct.method),
            },
            plain={
                "seconds": round(plain_seconds, 1),
                "psnr": plain_evaluation.mean("psnr"),
                "num_gaussians": plain.num_gaussians,
                # the same map on the plain splats: what the rounds had to start from at the end
                "unreliable": round(
                    ClipRenderer(plain, scene, config, FallbackRepairer()).unreliable_fraction(path), 4
                ),
                **holes_along(Path(tmp) / "plain" / "splats.ply", path, config.reconstruct.method),
            },
        )
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
