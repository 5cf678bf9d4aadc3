"""Tiled 3DGS rasteriser (placeholder: delegates to the dense reference until the tiled one lands)."""

from genfusion.splat.dense_reference import dense_rasterize_3dgs as rasterize_3dgs  # noqa: F401
