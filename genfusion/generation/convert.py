"""Official GenFusion checkpoint (LVDM / PyTorch-Lightning) -> diffusers folders.

``convert_checkpoint("epoch=59-step=34000.ckpt", "checkpoints/genfusion-repair")`` writes
``unet/`` (RepairUNet3DModel), ``image_proj/`` (ImageProjResampler), ``image_encoder/``
(transformers CLIPVisionModel), ``vae/`` (AutoencoderKL), ``scheduler/`` (GenFusionDDIMScheduler)
and ``model_index.json``, atomically (a temporary folder renamed at the end).

Every tensor of the checkpoint is accounted for: mapped into a component (names and shapes
checked against the target model, every target parameter filled), deliberately skipped (the
unused text encoder and the image embedder's text-side leftovers, the CLIP projection), or
validated and dropped (the top-level diffusion schedule buffers). Anything else is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn

from genfusion.atomic import atomic_directory
from genfusion.errors import GenFusionError
from genfusion.generation.convert_keys import clip_in_proj_keys, clip_visual_keys, resampler_key, unet_key
from genfusion.progress import ProgressCallback, ProgressEvent, emit

# checkpoint prefix of each converted component
COMPONENT_PREFIXES: dict[str, str] = {
    "unet": "model.diffusion_model.",
    "image_proj": "image_proj_model.",
    "image_encoder": "embedder.model.visual.",
    "vae": "first_stage_model.",
}
# prefixes stored in the checkpoint but not needed at inference -> why they are skipped
SKIPPED_PREFIXES: dict[str, str] = {
    "cond_stage_model.": "OpenCLIP text encoder (GenFusion feeds no text to the UNet)",
    "embedder.model.": "text-side leftovers of the OpenCLIP image embedder",
}
# the CLIP image projection: stored, but the UNet uses the tokens before it
CLIP_PROJECTION_KEY = "embedder.model.visual.proj"
_CLIP_PROJECTION_REASON = "CLIP image projection (the UNet uses the tokens before it)"
# top-level diffusion schedule buffers: checked against the scheduler, not stored
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "scale_arr",
)
# Lightning wraps DeepSpeed models so that every key of ckpt["module"] starts with this
_DEEPSPEED_PREFIX_LEN = len("_forward_module.")
_EXPECTED = (
    "Expected the GenFusion repair-model checkpoint (Hugging Face Sibo2rr/GenFusion-GenerationModel, "
    "epoch=59-step=34000.ckpt) with tensors under "
    + ", ".join(p + "*" for p in COMPONENT_PREFIXES.values())
    + "."
)


@dataclass
class ComponentConfigs:
    """Architectures of the four converted networks (defaults: the released model)."""

    unet: dict = field(default_factory=dict)  # RepairUNet3DModel config
    image_proj: dict = field(default_factory=dict)  # ImageProjResampler config
    image_encoder: dict = field(default_factory=dict)  # transformers CLIPVisionConfig kwargs
    vae: dict = field(default_factory=dict)  # diffusers AutoencoderKL config

    @classmethod
    def full(cls) -> ComponentConfigs:
        from genfusion.generation.image_encoder import vit_h14_vision_config
        from genfusion.generation.resampler import FULL_RESAMPLER_CONFIG
        from genfusion.generation.unet import FULL_UNET_CONFIG
        from genfusion.generation.vae import LDM3D_VAE_CONFIG

        return cls(
            unet=dict(FULL_UNET_CONFIG),
            image_proj=dict(FULL_RESAMPLER_CONFIG),
            image_encoder=vit_h14_vision_config().to_dict(),
            vae=dict(LDM3D_VAE_CONFIG),
        )


@dataclass
class ConversionResult:
    """Converted state dicts per component plus the accounting of every source key."""

    components: dict[str, dict[str, torch.Tensor]]  # component -> target key -> tensor
    skipped: dict[str, int]  # reason -> number of source tensors skipped for it
    schedule: dict[str, torch.Tensor]  # the top-level schedule buffers found
    consumed: int  # number of source tensors mapped into components


# ----------------------------------------------------------------------------- reading
def _torch_load(path: Path, trust_pickle: bool):
    try:  # memory-mapped: a 10 GB checkpoint is paged in tensor by tensor
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)  # legacy format


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The flat ``{name: tensor}`` of a Lightning ``.ckpt`` (``state_dict``), a DeepSpeed one
    (``module``, 16-character prefix stripped), a plain state dict or a ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise GenFusionError("checkpoint file not found.", path=path, hint=_EXPECTED)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = _torch_load(path, trust_pickle)
    except Exception as err:  # noqa: BLE001 - torch.load fails in many exception types
        if not trust_pickle and "Unsupported global" in str(err):
            raise GenFusionError(
                "the checkpoint holds Python objects besides tensors, which are not loaded by default.",
                path=path,
                hint="If you trust the file, rerun with --trust-checkpoint.",
            ) from err
        raise GenFusionError(
            f"cannot read the checkpoint: not a PyTorch checkpoint, or damaged ({type(err).__name__}).",
            path=path,
            hint=_EXPECTED,
        ) from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("module"), dict):
        state = {k[_DEEPSPEED_PREFIX_LEN:]: v for k, v in obj["module"].items()}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        raise GenFusionError("no state_dict in this file.", path=path, hint=_EXPECTED)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


# ----------------------------------------------------------------------------- mapping
def _target_model(component: str, config: dict) -> nn.Module:
    """The component's model with meta parameters (for names and shapes; no memory)."""
    with init_empty_weights():
        return _build(component, config)


def _build(component: str, config: dict) -> nn.Module:
    if component == "unet":
        from genfusion.generation.unet import RepairUNet3DModel

        return RepairUNet3DModel(**config)
    if component == "image_proj":
        from genfusion.generation.resampler import ImageProjResampler

        return ImageProjResampler(**config)
    if component == "image_encoder":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        return CLIPVisionModel(CLIPVisionConfig(**config))
    if component == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL(**config)
    raise ValueError(component)


_VAE_LEGACY = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def _vae_key(key: str) -> str:
    # checkpoints written by diffusers < 0.14 name the VAE attention query/key/value/proj_attn
    for old, new in _VAE_LEGACY.items():
        key = key.replace(old, new)
    return key


def _fit(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """``tensor`` in ``shape``: equal, or a 1x1 conv weight for a Linear; None if it cannot fit."""
    if tensor.shape == shape:
        return tensor
    squeezed = [d for i, d in enumerate(tensor.shape) if not (i >= len(shape) and d == 1)]
    if tensor.ndim > len(shape) and torch.Size(squeezed) == shape:
        return tensor.reshape(shape)
    return None


def convert_lvdm_state_dict(
    component: str, state: dict[str, torch.Tensor], config: dict, model: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """One component's original tensors (checkpoint prefix removed) -> the target model's state
    dict, with every name mapped, every shape checked and every target key filled."""
    model = model if model is not None else _target_model(component, config)
    target = {k: v.shape for k, v in model.state_dict().items()}
    # transformers < 5 nests the CLIP tower under "vision_model."
    clip_prefix = "vision_model." if any(k.startswith("vision_model.") for k in target) else ""
    prefix = COMPONENT_PREFIXES[component]
    out: dict[str, torch.Tensor] = {}

    def put(key: str, tensor: torch.Tensor, source: str) -> None:
        if key not in target:
            raise GenFusionError(
                f"checkpoint tensor {prefix}{source} has no place in the {component} (mapped to {key!r}).",
                hint=_EXPECTED,
            )
        fitted = _fit(tensor, target[key])
        if fitted is None:
            raise GenFusionError(
                f"checkpoint tensor {prefix}{source} has shape {tuple(tensor.shape)}, the {component} "
                f"expects {tuple(target[key])} for {key!r}: a different model size or architecture.",
                hint=_EXPECTED,
            )
        if key in out:
            raise GenFusionError(f"two checkpoint tensors map to {component} {key!r}.", hint=_EXPECTED)
        out[key] = fitted

    for source, tensor in state.items():
        try:
            if component == "unet":
                put(unet_key(source, model), tensor, source)
            elif component == "image_proj":
                put(resampler_key(source), tensor, source)
            elif component == "vae":
                put(_vae_key(source), tensor, source)
            else:
                qkv = clip_in_proj_keys(source)
                if qkv is not None:
                    if tensor.shape[0] % 3:
                        raise KeyError(source)
                    for key, part in zip(qkv, tensor.chunk(3, dim=0), strict=True):
                        put(clip_prefix + key, part, source)
                else:
                    for key in clip_visual_keys(source):
                        put(clip_prefix + key, tensor, source)
        except KeyError:
            raise GenFusionError(
                f"unexpected checkpoint tensor {prefix}{source}: not part of a GenFusion {component}.",
                hint=_EXPECTED,
            ) from None
    missing = sorted(set(target) - set(out))
    if missing:
        raise GenFusionError(
            f"the checkpoint lacks {len(missing)} of the {len(target)} {component} tensors "
            f"(first: {', '.join(missing[:3])}); the file looks truncated or is another model.",
            hint=_EXPECTED,
        )
    return out


def split_checkpoint(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, int], dict[str, torch.Tensor]]:
    """Sort the checkpoint's tensors into components (prefix removed), skipped and schedule."""
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in COMPONENT_PREFIXES}
    skipped: dict[str, int] = {}
    schedule: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        if key in SCHEDULE_BUFFERS:
            schedule[key] = tensor
            continue
        if key == CLIP_PROJECTION_KEY:
            skipped[_CLIP_PROJECTION_REASON] = skipped.get(_CLIP_PROJECTION_REASON, 0) + 1
            continue
        component = next((c for c, p in COMPONENT_PREFIXES.items() if key.startswith(p)), None)
        if component is not None:
            parts[component][key[len(COMPONENT_PREFIXES[component]) :]] = tensor
            continue
        reason = next((r for p, r in SKIPPED_PREFIXES.items() if key.startswith(p)), None)
        if reason is None:
            unknown.append(key)
        else:
            skipped[reason] = skipped.get(reason, 0) + 1
    if unknown:
        raise GenFusionError(
            f"{len(unknown)} checkpoint tensors belong to no known part (first: {', '.join(unknown[:3])}).",
            hint=_EXPECTED,
        )
    empty = [COMPONENT_PREFIXES[c] for c, p in parts.items() if not p]
    if empty:
        raise GenFusionError(f"the checkpoint has no tensors under {', '.join(empty)}.", hint=_EXPECTED)
    return parts, skipped, schedule


def convert_state_dict(
    state: dict[str, torch.Tensor], configs: ComponentConfigs | None = None
) -> ConversionResult:
    """A whole original state dict -> converted component state dicts (meta tensors work too)."""
    configs = configs or ComponentConfigs.full()
    parts, skipped, schedule = split_checkpoint(state)
    components = {
        name: convert_lvdm_state_dict(name, part, getattr(configs, name)) for name, part in parts.items()
    }
    consumed = sum(len(p) for p in parts.values())
    return ConversionResult(components, skipped, schedule, consumed)


# ----------------------------------------------------------------------------- schedule
def scheduler_from_checkpoint_params(**overrides):
    """The scheduler of the released model (zero-SNR scaled-linear, v-prediction, rescale 0.7)."""
    from genfusion.generation.scheduler import GenFusionDDIMScheduler

    return GenFusionDDIMScheduler(**overrides)


def validate_schedule(schedule: dict[str, torch.Tensor], scheduler) -> None:
    """The checkpoint's betas / alphas_cumprod / scale_arr must be the scheduler's."""
    for name in ("betas", "alphas_cumprod", "scale_arr"):
        if name not in schedule or schedule[name].is_meta:
            continue
        ours = getattr(scheduler, name).double()
        theirs = schedule[name].double().flatten()
        n = min(len(ours), len(theirs))
        if len(theirs) < len(ours) or not torch.allclose(theirs[:n], ours[:n], rtol=1e-4, atol=1e-6):
            raise GenFusionError(
                f"the checkpoint's diffusion schedule ({name}) differs from GenFusion's zero-SNR "
                "scaled-linear schedule with dynamic rescale: this is another model.",
                hint=_EXPECTED,
            )


# ----------------------------------------------------------------------------- writing
def _materialise(component: str, config: dict, state: dict[str, torch.Tensor], dtype: torch.dtype | None):
    with init_empty_weights():  # parameters on meta, buffers real: nothing is randomly initialised
        model = _build(component, config)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def model_index(diffusers_version: str) -> dict:
    """model_index.json of the converted folder (pipeline class by the generation package)."""
    return {
        "_class_name": "GenFusionRepairPipeline",
        "_diffusers_version": diffusers_version,
        "unet": ["genfusion.generation.unet", "RepairUNet3DModel"],
        "image_proj": ["genfusion.generation.resampler", "ImageProjResampler"],
        "image_encoder": ["transformers", "CLIPVisionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["genfusion.generation.scheduler", "GenFusionDDIMScheduler"],
    }


def _check_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise GenFusionError(
            "the output folder already exists.",
            path=out_dir,
            hint="Choose another --out or pass --overwrite.",
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise GenFusionError("the output path is a file, not a folder.", path=out_dir)


def write_converted(
    result: ConversionResult,
    configs: ComponentConfigs,
    out_dir: str | Path,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    source: str = "",
) -> Path:
    """Write the diffusers folders into a temporary sibling of ``out_dir``, then rename it."""
    import diffusers

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise GenFusionError(
            "the output folder already exists.",
            path=out_dir,
            hint="Choose another --out or pass --overwrite.",
        )
    steps = list(result.components) + ["scheduler"]
    with atomic_directory(out_dir) as tmp:  # replaces an --overwrite'd folder only once complete
        for i, name in enumerate(steps):
            emit(progress, ProgressEvent("convert", i, len(steps), f"writing {name}"))
            if name == "scheduler":
                scheduler_from_checkpoint_params().save_pretrained(tmp / "scheduler")
                continue
            model = _materialise(name, getattr(configs, name), result.components[name], dtype)
            model.save_pretrained(tmp / name)
            del model
        (tmp / "model_index.json").write_text(json.dumps(model_index(diffusers.__version__), indent=2) + "\n")
        report = {"source": source, "consumed": result.consumed, "skipped": result.skipped}
        report["schedule_buffers_validated"] = sorted(result.schedule)
        (tmp / "conversion_report.json").write_text(json.dumps(report, indent=2) + "\n")
    emit(progress, ProgressEvent("convert", len(steps), len(steps), f"wrote {out_dir}"))
    return out_dir


def convert_checkpoint(
    ckpt_path: str | Path,
    out_dir: str | Path,
    configs: ComponentConfigs | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    trust_pickle: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Convert the official checkpoint at ``ckpt_path`` into the diffusers folder ``out_dir``.

    ``dtype`` None keeps the checkpoint's precision. Returns ``out_dir``."""
    configs = configs or ComponentConfigs.full()
    _check_output(Path(out_dir), overwrite)  # before reading gigabytes
    emit(progress, ProgressEvent("convert", 0, None, f"reading {ckpt_path}"))
    state = read_checkpoint(ckpt_path, trust_pickle=trust_pickle)
    try:
        result = convert_state_dict(state, configs)
    except GenFusionError as err:
        raise GenFusionError(str(err), path=ckpt_path) from None
    validate_schedule(result.schedule, scheduler_from_checkpoint_params())
    return write_converted(result, configs, out_dir, dtype, overwrite, progress, source=str(ckpt_path))
