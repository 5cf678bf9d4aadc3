"""The RGB-D repair model: a DynamiCrafter-architecture latent video diffusion model in diffusers.

Modules (imported on demand, so ``import genfusion.generation`` stays light):
``unet`` (RepairUNet3DModel), ``resampler`` (ImageProjResampler), ``image_encoder`` (CLIP
preprocessing and tokens), ``vae`` (the 4-channel RGB-D AutoencoderKL helpers), ``convert``
(official LVDM checkpoint -> diffusers folders). This package never imports ``splat`` or
``fusion``: it sees clips, not Gaussians.
"""
