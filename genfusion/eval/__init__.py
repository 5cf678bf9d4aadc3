"""Evaluation: image metrics (PSNR, SSIM, LPIPS-VGG); protocols and reports build on these."""

from genfusion.eval.lpips import LpipsConfig
from genfusion.eval.metrics import compute_metrics, lpips, mean_metrics, psnr, ssim

__all__ = ["LpipsConfig", "compute_metrics", "lpips", "mean_metrics", "psnr", "ssim"]
