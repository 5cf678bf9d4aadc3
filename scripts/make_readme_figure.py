"""Make README's picture: the demo fox reconstructed on CPU (held-out photo | render | depth).

    genfusion poses assets/demo/fox/images --out /tmp/foxsfm --matcher sequential
    python scripts/make_readme_figure.py --scene /tmp/foxsfm

Trains on the demo fox (every 8th view held out) with the CPU rasteriser and writes one PNG; it
prints the test PSNR that the figure's caption quotes. The demo's transforms.json has no sparse
points, so the figure uses the same photos posed by ``genfusion poses`` (SfM points initialise
the Gaussians far better than random ones in a short CPU run).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from genfusion.data import load_scene
from genfusion.splat.config import ReconstructConfig
from genfusion.splat.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def depth_to_colour(depth: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Turbo-coloured inverse depth, black where nothing was rendered; [H, W, 3] in [0, 1]."""
    valid = (alpha > 0.5) & (depth > 0)
    disparity = np.where(valid, 1.0 / np.maximum(depth, 1e-6), 0.0)
    lo, hi = np.percentile(disparity[valid], [2, 98]) if valid.any() else (0.0, 1.0)
    scaled = np.clip((disparity - lo) / max(hi - lo, 1e-6), 0, 1)
    coloured = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    return np.where(valid[..., None], coloured / 255.0, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=REPO / "assets" / "demo" / "fox")
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--method", default="3dgs", choices=["2dgs", "3dgs"])
    parser.add_argument("--downscale", type=int, default=4, help="of the 270x480 demo images")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "fox_reconstruction.png")
    args = parser.parse_args()

    scene = load_scene(args.scene, downscale=args.downscale)
    config = ReconstructConfig(
        method=args.method, iterations=args.iterations, downscale=args.downscale, split="holdout8"
    )
    trainer = Trainer(scene, config)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    evaluation = trainer.evaluate()
    view = int(np.argmax([v.psnr for v in evaluation.views]))
    index = trainer.test_ids[view]

    # depth of that view, rendered once more (evaluation keeps colour only)
    views = trainer.test_views
    with torch.no_grad():
        out = trainer._render(views, view, trainer.config.sh_degree, torch.zeros(3, device=trainer.device))
    depth = out.depth[0, ..., 0].cpu().numpy()
    alpha = out.alpha[0, ..., 0].cpu().numpy()

    panels = [evaluation.targets[view], evaluation.renders[view], depth_to_colour(depth, alpha)]
    figure = np.concatenate([np.clip(p, 0, 1) for p in panels], axis=1)
    scale = max(1, 480 // figure.shape[0])
    figure = cv2.resize(figure, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), (figure[..., ::-1] * 255).round().astype(np.uint8))
    print(
        f"{args.out}: view {scene.cameras[index].name}, {args.method}, "
        f"{args.iterations} its in {seconds:.0f} s, "
        f"test PSNR mean {evaluation.mean('psnr'):.2f} dB (this view {evaluation.views[view].psnr:.2f} dB), "
        f"{trainer.num_gaussians} Gaussians"
    )


if __name__ == "__main__":
    main()
