"""Exports of a reconstruction: 3DGS ``.ply``, antimatter15 ``.splat``, a TSDF mesh, an mp4.

Submodules are imported on use (``from genfusion.export.ply import write_ply``) so that reading a
``.ply`` never pays for the renderer or video encoder.
"""
