"""Tiled 2DGS rasteriser (placeholder: delegates to the dense reference until the tiled one lands)."""

from genfusion.splat.dense_reference import dense_rasterize_2dgs as rasterize_2dgs  # noqa: F401
