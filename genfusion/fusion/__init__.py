"""Stage 2 of GenFusion, cyclic fusion: render RGB-D clips along novel camera paths, repair them
with the video diffusion model (or the weight-free fallback), and let the repaired frames
supervise (and, for scene completion, expand) the reconstruction, round after round."""
