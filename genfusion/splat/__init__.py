"""Gaussian splats: parameters, the renderer (gsplat on CUDA, our tiled torch rasteriser on CPU),
losses, densification and training."""

from genfusion.splat.render import RenderOutput, activate_splats, render, render_splats

__all__ = ["RenderOutput", "activate_splats", "render", "render_splats"]
