"""GenFusionRepairPipeline: artifact-prone RGB-D renders + a reference photo -> repaired RGB-D clip.

The sampling follows the original extrapolator (DDIM 25 steps, eta 1, CFG 3.2 with rescale 0.7
on v, unconditional branch = the context of an all-zero reference with the *same* c_concat,
fs 30, start from pure noise), with these engineering changes that do not change the maths:

* classifier-free guidance as ONE batched UNet forward (cond and uncond stacked on the batch);
* SDPA attention (the UNet's default), fp16/bf16 weights on CUDA (the VAE is kept in fp32 when
  its config asks for an upcast), optional ``torch.compile`` of the UNet (:meth:`compile_unet`);
* trajectories longer than one window are repaired as overlapping windows (windows.py): all
  windows share one disparity normalisation and one per-frame noise field, each window's first
  frames are pinned to the previous window's result during the first part of sampling
  ("inpainting" by latent replacement), and the decoded windows are cross-faded;
* output depth: the model's depth channel is normalised disparity, so it is fitted to the
  rendered disparity by least squares (affine, exact for min-max normalisation) on reliable
  pixels and inverted; ``depth_alignment="depth"`` instead applies the original
  ``1/((d+1)/2 + 1e-6)`` mapping and fits scale/shift in depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from genfusion.device import resolve_device
from genfusion.errors import GenFusionError
from genfusion.generation.depth import (
    align_depth,
    clip_disparity_to_depth,
    depth_to_clip_disparity,
    reliable_mask,
    resize_nearest,
)
from genfusion.generation.image_encoder import encode_reference
from genfusion.generation.repairer import RepairClip, RepairResult
from genfusion.generation.scheduler import GenFusionDDIMScheduler, guided_velocity
from genfusion.generation.vae import decode_clip, encode_clip
from genfusion.generation.windows import Window, blend_windows, pad_frames, plan_windows
from genfusion.progress import ProgressCallback, ProgressEvent, emit


@dataclass
class GenFusionRepairPipelineOutput(BaseOutput):
    """Repaired clip (numpy or torch, following ``output_type``)."""

    rgb: Any  # [T, H, W, 3] in [0, 1] (per clip when a batch was given: [B, T, H, W, 3])
    depth: Any  # [T, H, W] in the input depth's units ([B, T, H, W] for a batch)


@dataclass
class _Conditioning:
    """Everything that stays fixed while one trajectory is sampled."""

    c_concat: torch.Tensor  # [1, 4, T, h, w] scaled latents of the artifact-prone RGB-D frames
    context: torch.Tensor  # [2, L, D]: conditional context, then the all-zero-reference context
    fs: int  # frame-stride condition


class GenFusionRepairPipeline(DiffusionPipeline):
    """RGB-D video repair with the GenFusion (DynamiCrafter-architecture) model."""

    model_cpu_offload_seq = "image_encoder->image_proj->vae->unet->vae"

    def __init__(self, unet, image_proj, image_encoder, vae, scheduler: GenFusionDDIMScheduler):
        super().__init__()
        self.register_modules(
            unet=unet, image_proj=image_proj, image_encoder=image_encoder, vae=vae, scheduler=scheduler
        )
        self._compiled_unet: torch.nn.Module | None = None

    # ------------------------------------------------------------------------------ helpers
    @property
    def spatial_multiple(self) -> int:
        """Frame sides must be multiples of this (VAE downsampling x UNet downsampling)."""
        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        unet_factor = 2 ** (len(self.unet.config.channel_mult) - 1)
        return vae_factor * unet_factor

    def compile_unet(self, **compile_kwargs: Any) -> None:
        """Use ``torch.compile(unet)`` for sampling (the registered module stays uncompiled for saving)."""
        self._compiled_unet = torch.compile(self.unet, **compile_kwargs)

    def _vae_dtype(self) -> torch.dtype:
        # fp16 overflows in the SD-style VAE; its config asks for an fp32 upcast (as diffusers does).
        if self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            self.vae.to(torch.float32)
        return self.vae.dtype

    @torch.no_grad()
    def encode_context(self, reference: torch.Tensor) -> torch.Tensor:
        """Reference [1, 3, H, W] in [-1, 1] -> [2, L, D]: its context and the all-zero-image context.

        The unconditional context is Resampler(CLIP(zeros)), not a zero tensor (quirk 7); both go
        through the encoder as one batch.
        """
        images = torch.cat([reference, torch.zeros_like(reference)])
        tokens = encode_reference(self.image_encoder, images)
        proj_dtype = next(self.image_proj.parameters()).dtype
        return self.image_proj(tokens.to(proj_dtype))

    @torch.no_grad()
    def guided_velocity_batched(
        self,
        latents: torch.Tensor,
        timestep: int,
        cond: _Conditioning,
        guidance_scale: float,
        guidance_rescale: float,
        c_concat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One batched UNet forward for both CFG branches, then guidance + rescale on v (fp32)."""
        unet = self._compiled_unet or self.unet
        dtype = self.unet.dtype
        c_concat = cond.c_concat if c_concat is None else c_concat
        x = torch.cat([latents, c_concat], dim=1).to(dtype)
        sample = torch.cat([x, x])
        t = torch.full((2,), int(timestep), device=latents.device, dtype=torch.long)
        fs = torch.full((2,), int(cond.fs), device=latents.device, dtype=torch.long)
        v = unet(sample, t, cond.context.to(dtype), fs=fs).float()
        return guided_velocity(v[:1], v[1:], guidance_scale, guidance_rescale)

    # ------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_window(
        self,
        cond: _Conditioning,
        *,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.2,
        guidance_rescale: float = 0.7,
        eta: float = 1.0,
        latents: torch.Tensor | None = None,
        step_noise: Any = None,
        generator: torch.Generator | None = None,
        known_latents: torch.Tensor | None = None,
        known_until: float = 0.8,
        on_step: Any = None,
    ) -> torch.Tensor:
        """DDIM-sample one window's latents [1, 4, T, h, w] (float32).

        ``latents``: the initial noise x_T (drawn from ``generator`` when None). ``step_noise``:
        a callable ``i -> noise`` or a list of per-step N(0,1) draws (parity / shared noise).
        ``known_latents`` [1, 4, k, h, w]: clean latents of the window's first k frames (the
        previous window's result); they replace those frames, re-noised to the current level,
        for the first ``known_until`` fraction of the steps.
        """
        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps, device=cond.c_concat.device, eta=eta)
        shape = cond.c_concat.shape
        device = cond.c_concat.device

        def draw() -> torch.Tensor:
            gen_device = generator.device if generator is not None else device
            return torch.randn(shape, generator=generator, device=gen_device).to(device)

        x = draw() if latents is None else latents.to(device=device, dtype=torch.float32)
        timesteps = scheduler.timesteps
        end_scale = float(scheduler.ddim_arrays()["scale_arr_prev"][0])
        pinned_steps = int(round(known_until * len(timesteps))) if known_latents is not None else 0
        if known_latents is not None:
            known_clean = known_latents.float() / end_scale
            k = known_clean.shape[2]

            def pin(sample: torch.Tensor, t: int) -> torch.Tensor:
                noise = draw()[:, :, :k]
                sample = sample.clone()
                sample[:, :, :k] = scheduler.add_noise(known_clean, noise, t)
                return sample

            x = pin(x, int(timesteps[0]))
        for i, t in enumerate(timesteps):
            v = self.guided_velocity_batched(x, int(t), cond, guidance_scale, guidance_rescale)
            if callable(step_noise):
                noise = step_noise(i)
            elif step_noise is not None:
                noise = step_noise[i]
            else:
                noise = draw() if eta > 0 else None
            x = scheduler.step(v, t, x, variance_noise=noise).prev_sample
            if i + 1 < pinned_steps:
                x = pin(x, scheduler.previous_timestep(int(t)))
            if on_step is not None:
                on_step(i, x)
        return x

    # ------------------------------------------------------------------------------ inputs
    def _model_size(self, size: tuple[int, int], height: int | None, width: int | None) -> tuple[int, int]:
        m = self.spatial_multiple
        h = height or max(m, int(round(size[0] / m)) * m)
        w = width or max(m, int(round(size[1] / m)) * m)
        if h % m or w % m:
            raise GenFusionError(f"height and width must be multiples of {m}, got {h}x{w}.")
        return h, w

    @staticmethod
    def _as_clips(rgb: Any, depth: Any, alpha: Any) -> list[RepairClip]:
        """Accept [T, H, W, 3] or [B, T, 3, H, W] colour with matching depth/alpha."""
        rgb_t, depth_t, alpha_t = _as_tensor(rgb), _as_tensor(depth), _as_tensor(alpha)
        if rgb_t.ndim == 5:
            if rgb_t.shape[2] != 3:
                raise GenFusionError(f"batched rgb must be [B, T, 3, H, W], got {list(rgb_t.shape)}.")
            depth_t = depth_t.squeeze(2) if depth_t.ndim == 5 else depth_t
            alpha_t = alpha_t.squeeze(2) if alpha_t.ndim == 5 else alpha_t
            if (
                depth_t.ndim != 4
                or alpha_t.ndim != 4
                or len(depth_t) != len(rgb_t)
                or len(alpha_t) != len(rgb_t)
            ):
                raise GenFusionError(
                    "batched depth and alpha must be [B, T, H, W] matching rgb [B, T, 3, H, W]."
                )
            return [
                RepairClip.from_arrays(r.permute(0, 2, 3, 1), d, a)
                for r, d, a in zip(rgb_t, depth_t, alpha_t, strict=True)
            ]
        return [RepairClip.from_arrays(rgb_t, depth_t, alpha_t)]

    # ------------------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        rgb: Any,
        depth: Any,
        alpha: Any,
        reference: Any = None,
        *,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.2,
        guidance_rescale: float = 0.7,
        eta: float = 1.0,
        fs: int = 30,
        generator: torch.Generator | None = None,
        window: int = 16,
        overlap: int = 4,
        known_until: float = 0.8,
        height: int | None = None,
        width: int | None = None,
        alpha_threshold: float = 0.5,
        depth_alignment: Literal["disparity", "depth"] = "disparity",
        vae_batch: int = 1,
        output_type: Literal["np", "pt"] = "np",
        progress: ProgressCallback | None = None,
    ) -> GenFusionRepairPipelineOutput:
        """Repair RGB-D renders along a camera path.

        rgb [T, H, W, 3] (or [B, T, 3, H, W]) in [0, 1]; depth and alpha [T, H, W] ([B, T, H, W]);
        reference [H', W', 3] in [0, 1], a real photo near the path (None: the input frame with
        the most reliable pixels). Longer than ``window`` frames: overlapping windows, see the
        module docstring. Depth is returned in the input's units, aligned on pixels with
        alpha >= ``alpha_threshold`` and depth > 0. ``vae_batch``: frames per VAE call (1, as the
        original, needs the least memory; more is faster).
        """
        clips = self._as_clips(rgb, depth, alpha)
        if reference is not None and len(clips) > 1:
            ref_t = _as_tensor(reference)
            references = list(ref_t) if ref_t.ndim == 4 else [ref_t] * len(clips)
        else:
            references = [reference] * len(clips)
        results = []
        for clip, ref in zip(clips, references, strict=True):
            if ref is not None:
                clip.reference = RepairClip.from_arrays(
                    clip.rgb[:1], clip.depth[:1], clip.alpha[:1], reference=ref
                ).reference
            results.append(
                self._repair_clip(
                    clip,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    guidance_rescale=guidance_rescale,
                    eta=eta,
                    fs=fs,
                    generator=generator,
                    window=window,
                    overlap=overlap,
                    known_until=known_until,
                    height=height,
                    width=width,
                    alpha_threshold=alpha_threshold,
                    depth_alignment=depth_alignment,
                    vae_batch=vae_batch,
                    progress=progress,
                )
            )
        rgb_out = torch.stack([r[0] for r in results]) if len(results) > 1 else results[0][0]
        depth_out = torch.stack([r[1] for r in results]) if len(results) > 1 else results[0][1]
        if output_type == "np":
            return GenFusionRepairPipelineOutput(rgb=rgb_out.cpu().numpy(), depth=depth_out.cpu().numpy())
        return GenFusionRepairPipelineOutput(rgb=rgb_out, depth=depth_out)

    def _repair_clip(self, clip: RepairClip, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.unet.device
        num_frames, size = clip.num_frames, clip.size
        h, w = self._model_size(size, kw["height"], kw["width"])
        rgb = clip.rgb.permute(0, 3, 1, 2).to(device)  # [T, 3, H, W]
        depth = clip.depth.to(device)
        reliable = reliable_mask(depth, clip.alpha.to(device), kw["alpha_threshold"])
        if clip.reference is not None:
            ref = clip.reference.permute(2, 0, 1)[None].to(device)
        else:  # the most complete render stands in for a real photo
            ref = rgb[int(reliable.flatten(1).sum(1).argmax())][None]
        rgb_in = F.interpolate(
            torch.nan_to_num(rgb, nan=0.0), size=(h, w), mode="bilinear", align_corners=False
        )
        depth_in = resize_nearest(depth, (h, w))

        windows = plan_windows(num_frames, kw["window"], kw["overlap"])
        # One disparity normalisation for the whole path, so windows (and pinned latents) agree;
        # for a single window this is exactly the original per-clip normalisation.
        disparity, _ = depth_to_clip_disparity(depth_in)
        rgbd = torch.cat([rgb_in.clamp(0, 1) * 2 - 1, disparity[:, None]], dim=1)  # [T, 4, h, w]
        rgbd = pad_frames(rgbd, kw["window"])  # short clips: repeat the last frame
        vae_dtype = self._vae_dtype()
        generator = kw["generator"]
        c_concat_all = encode_clip(
            self.vae,
            rgbd.transpose(0, 1)[None].to(vae_dtype),
            generator=generator,
            frames_per_batch=kw["vae_batch"],
        )
        c_concat_all = c_concat_all.float()
        context = self.encode_context(ref * 2 - 1)

        shared_noise = _SharedNoise(c_concat_all.shape, generator, device) if len(windows) > 1 else None
        total = len(windows) * kw["num_inference_steps"]
        outputs_rgb, outputs_disp = [], []
        previous: tuple[Window, torch.Tensor] | None = None
        for wi, win in enumerate(windows):
            stop = max(win.stop, win.start + kw["window"]) if len(windows) == 1 else win.stop
            cond = _Conditioning(c_concat_all[:, :, win.start : stop], context, kw["fs"])
            known = None
            if previous is not None:
                prev_win, prev_latents = previous
                shared = prev_win.stop - win.start
                known = prev_latents[:, :, win.start - prev_win.start :]
                assert known.shape[2] == shared
            latents = step_noise = None
            if shared_noise is not None:
                latents = shared_noise.initial(win.start, stop)
                step_noise = shared_noise.stepper(win.start, stop)

            def on_step(i: int, _x: torch.Tensor, wi: int = wi) -> None:
                done = wi * kw["num_inference_steps"] + i + 1
                emit(
                    kw["progress"],
                    ProgressEvent("repair.diffusion", done, total, f"window {wi + 1}/{len(windows)}"),
                )

            final = self.sample_window(
                cond,
                num_inference_steps=kw["num_inference_steps"],
                guidance_scale=kw["guidance_scale"],
                guidance_rescale=kw["guidance_rescale"],
                eta=kw["eta"],
                latents=latents,
                step_noise=step_noise,
                generator=generator,
                known_latents=known,
                known_until=kw["known_until"],
                on_step=on_step,
            )
            previous = (Window(win.start, stop), final)
            rgb_dec, disp_dec = decode_clip(self.vae, final.to(vae_dtype), frames_per_batch=kw["vae_batch"])
            outputs_rgb.append(rgb_dec[0].transpose(0, 1).float()[: win.length])  # [t, 3, h, w]
            outputs_disp.append(disp_dec[0, 0].float()[: win.length])  # [t, h, w]
        rgb_model = blend_windows(outputs_rgb, windows, num_frames)
        disp_model = blend_windows(outputs_disp, windows, num_frames)

        rgb_out = F.interpolate(rgb_model, size=size, mode="bilinear", align_corners=False)
        rgb_out = ((rgb_out.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
        disp_out = F.interpolate(disp_model[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        depth_out = _aligned_depth(disp_out, depth, reliable, kw["depth_alignment"])
        return rgb_out.cpu(), depth_out.cpu()


def _as_tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))


def _aligned_depth(
    model_disparity: torch.Tensor, depth: torch.Tensor, reliable: torch.Tensor, mode: str
) -> torch.Tensor:
    """The model's depth channel -> depth in the scene's units (fit on ``reliable`` pixels)."""
    if mode == "depth":  # the original's output mapping, then scale/shift in depth
        aligned, _ = align_depth(clip_disparity_to_depth(model_disparity), depth, reliable)
        return aligned
    if mode != "disparity":
        raise GenFusionError(f"unknown depth_alignment {mode!r}; use 'disparity' or 'depth'.")
    normalised = (model_disparity.clamp(-1, 1) + 1) / 2
    target = torch.where(
        reliable, 1.0 / torch.where(reliable, depth, torch.ones_like(depth)), torch.zeros_like(depth)
    )
    disparity, _ = align_depth(normalised, target, reliable)
    if reliable.any():
        # nothing may lie beyond a tenth of the farthest trusted disparity (keeps depth finite)
        disparity = disparity.clamp_min(float(target[reliable].min()) * 0.1)
    return 1.0 / disparity


class _SharedNoise:
    """One noise field per frame of the whole path, so overlapping windows start (and step) alike."""

    def __init__(self, shape: torch.Size, generator: torch.Generator | None, device: torch.device):
        gen_device = generator.device if generator is not None else device
        seed_gen = generator if generator is not None else torch.Generator(gen_device).manual_seed(0)
        self.base_seed = int(torch.randint(0, 2**62, (1,), generator=seed_gen, device=gen_device))
        self.shape, self.device, self.gen_device = shape, device, gen_device
        self._cache: dict[int, torch.Tensor] = {}

    def _field(self, index: int) -> torch.Tensor:
        if index not in self._cache:
            gen = torch.Generator(self.gen_device).manual_seed(self.base_seed + index)
            self._cache = {
                index: torch.randn(self.shape, generator=gen, device=self.gen_device).to(self.device)
            }
        return self._cache[index]

    def initial(self, start: int, stop: int) -> torch.Tensor:
        return self._field(0)[:, :, start:stop]

    def stepper(self, start: int, stop: int):
        return lambda i: self._field(i + 1)[:, :, start:stop]


class DiffusionRepairer:
    """The :class:`~genfusion.generation.repairer.Repairer` interface over the pipeline."""

    name = "diffusion"

    def __init__(self, pipeline: GenFusionRepairPipeline, source: str, call_options: dict | None = None):
        self.pipeline = pipeline
        self.call_options = dict(call_options or {})  # defaults for every __call__ (steps, guidance...)
        self.description = f"GenFusion video diffusion repair model from {source}"

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        call_options: dict | None = None,
    ) -> DiffusionRepairer:
        device = resolve_device(device or "auto")
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        pipeline = GenFusionRepairPipeline.from_pretrained(str(folder), torch_dtype=dtype)
        pipeline.to(device)
        return cls(pipeline, str(folder), call_options)

    def repair(
        self, clip: RepairClip, *, seed: int | None = None, progress: ProgressCallback | None = None
    ) -> RepairResult:
        clip.validate()
        device = self.pipeline.unet.device
        generator = torch.Generator(device).manual_seed(seed) if seed is not None else None
        options = {**self.call_options}
        threshold = options.get("alpha_threshold", 0.5)
        out = self.pipeline(
            clip.rgb,
            clip.depth,
            clip.alpha,
            clip.reference,
            generator=generator,
            output_type="pt",
            progress=progress,
            **options,
        )
        reliable = reliable_mask(clip.depth, clip.alpha, threshold)
        warnings = [] if reliable.any() else ["no reliable pixel: depth could not be aligned to the scene"]
        return RepairResult(
            rgb=out.rgb,
            depth=out.depth,
            reliable=reliable,
            repairer=self.name,
            usable=bool(reliable.any()),
            warnings=warnings,
        )


__all__ = [
    "DiffusionRepairer",
    "GenFusionRepairPipeline",
    "GenFusionRepairPipelineOutput",
]
