"""The RGB-D repair model: a DynamiCrafter-architecture latent video diffusion model in diffusers.

Network modules (imported on demand, so ``import genfusion.generation`` stays light):
``unet`` (RepairUNet3DModel, built from ``unet_blocks`` and ``attention``), ``resampler``
(ImageProjResampler), ``image_encoder`` (CLIP preprocessing and tokens), ``vae`` (the 4-channel
RGB-D AutoencoderKL helpers), ``convert`` + ``convert_keys`` (official LVDM checkpoint ->
diffusers folders), ``tiny_models`` (a tiny fake release checkpoint from the parity fixtures).
This package never imports ``splat`` or ``fusion``: it sees clips, not Gaussians.
"""
