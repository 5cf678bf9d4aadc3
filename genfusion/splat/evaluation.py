"""Test-view metrics of a reconstruction: PSNR / SSIM / LPIPS per view and their means.

Views of the masked-input protocol carry a window (the region the moving crop passed through at
that frame): there PSNR is also reported inside the window (what nearby training frames saw) and
outside it (pure extrapolation), because the outside is where fusion has to earn its keep.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genfusion.data.splits import CropWindow
from genfusion.splat.data_loader import Views


@dataclass
class ViewMetrics:
    """Metrics of one test view."""

    name: str  # camera name
    psnr: float  # dB, full frame
    ssim: float  # 11x11 Gaussian window
    lpips: float | None  # LPIPS-VGG, None when the backbone weights are absent
    psnr_inside: float | None = None  # dB inside the view's masked-protocol window (None: no window)
    psnr_outside: float | None = None  # dB outside that window


@dataclass
class Evaluation:
    """Test-view metrics and renders at the end of a run."""

    views: list[ViewMetrics]  # per test view
    renders: list[np.ndarray] = field(default_factory=list)  # [H, W, 3] float32, same order
    targets: list[np.ndarray] = field(default_factory=list)  # ground truth, same order
    lpips_note: str = ""  # why LPIPS is None, when it is

    def mean(self, key: str) -> float | None:
        """Mean of one metric over the views (None when any view lacks it, or there are none)."""
        values = [getattr(v, key) for v in self.views]
        if not values or any(v is None for v in values):
            return None
        return float(np.mean(values))

    def to_dict(self) -> dict[str, Any]:
        """The metrics part of ``metrics.json``: means, per-view values, the LPIPS note."""
        summary: dict[str, Any] = {
            "psnr": self.mean("psnr"),
            "ssim": self.mean("ssim"),
            "lpips": self.mean("lpips"),
            "lpips_note": self.lpips_note or None,
        }
        if any(v.psnr_inside is not None for v in self.views):
            summary["psnr_inside"] = self.mean("psnr_inside")
            summary["psnr_outside"] = self.mean("psnr_outside")
        summary["views"] = [dataclasses.asdict(v) for v in self.views]
        summary["num_test_views"] = len(self.views)
        return summary


def region_psnr(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float | None:
    """PSNR (dB) over the pixels of ``[H, W, 3]`` images where the ``[H, W]`` mask is True."""
    count = int(mask.sum())
    if count == 0:
        return None
    mse = float(((rendered - target) ** 2)[mask].mean())
    return float("inf") if mse <= 0 else -10.0 * float(np.log10(mse))


def window_mask(window: CropWindow, width: int, height: int, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(window.mask(width, height), device=device)


RenderView = Callable[[Views, int], torch.Tensor]  # (views, index) -> [H, W, 3] in [0, 1]


@torch.no_grad()
def evaluate_views(render_view: RenderView, views: Views, *, keep_renders: bool = True) -> Evaluation:
    """Metrics of every view rendered by ``render_view``."""
    from genfusion.eval import metrics

    results: list[ViewMetrics] = []
    renders: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    lpips_note = ""
    for i in range(len(views)):
        rgb = render_view(views, i)
        target = views.images[i]
        values = metrics.compute_metrics(rgb, target)
        lpips_note = lpips_note or (values["lpips_note"] or "")
        inside = outside = None
        window = views.window(i)
        if window is not None:
            width, height = views.sizes[i]
            mask = window_mask(window, width, height, rgb.device)
            inside, outside = region_psnr(rgb, target, mask), region_psnr(rgb, target, ~mask)
        results.append(
            ViewMetrics(
                name=views.names[i],
                psnr=float(values["psnr"]),
                ssim=float(values["ssim"]),
                lpips=None if values["lpips"] is None else float(values["lpips"]),
                psnr_inside=inside,
                psnr_outside=outside,
            )
        )
        if keep_renders:
            renders.append(rgb.cpu().numpy())
            targets.append(target.cpu().numpy())
    return Evaluation(views=results, renders=renders, targets=targets, lpips_note=lpips_note)
