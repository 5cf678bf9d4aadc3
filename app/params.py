"""Reconstruction and fusion settings as UI controls, generated from the config dataclasses.

The fields come from :func:`genfusion.flags.field_specs`, the same description the CLI builds its
``--flags`` from (kind, default, choices, the comment beside the field as help, the ``# ---
section ---`` above it), so the app and ``genfusion reconstruct --help`` never disagree.
:func:`config_from_values` turns widget (or API) values into a config through
:func:`genfusion.flags.dataclass_from_args`, i.e. exactly as if they had been typed as flags;
every problem is a :class:`GenFusionError` that names the flag.

Fusion jobs add the top-level fields of :class:`~genfusion.fusion.config.FusionConfig`
(:func:`fusion_specs`; the nested reconstruction is the ReconstructConfig widgets above).
:func:`fusion_config_from_values` builds the unresolved config, and :func:`explicit_fields` names
the reconstruction settings that differ from their defaults: only those win over the mode's
preset and the budget (``genfusion fuse`` treats the flags typed on its command line the same
way), so a page left at its defaults runs the mode as published, sized by the budget.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from functools import cache
from pathlib import PurePath
from typing import Any

from genfusion.errors import GenFusionError
from genfusion.flags import FieldSpec, dataclass_from_args, field_specs
from genfusion.fusion.config import FusionConfig
from genfusion.splat.config import ReconstructConfig

# Shown above the accordion, in this order; everything else goes into "Advanced settings".
COMMON_FIELDS = ("method", "iterations", "downscale")

# The automatic schedule has no number: such fields take an empty box.
AUTOMATIC = "automatic"


@cache
def config_specs() -> tuple[FieldSpec, ...]:
    """Every setting of :class:`ReconstructConfig`, in declaration order."""
    return tuple(field_specs(ReconstructConfig))


def spec(name: str) -> FieldSpec:
    """The spec of one field."""
    for item in config_specs():
        if item.name == name:
            return item
    raise KeyError(name)


def section_title(item: FieldSpec) -> str:
    """``"densification (gsplat DefaultStrategy; ...)"`` -> ``"densification"``."""
    return item.section.split("(")[0].strip() or "settings"


def label_of(item: FieldSpec) -> str:
    return item.name.replace("_", " ")


def format_vector(values: Any) -> str:
    """``(0.0, 0.0, 0.0)`` -> ``"0 0 0"`` (what a sequence text box shows)."""
    return " ".join(f"{v:g}" for v in values)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", AUTOMATIC, "none"))


def _scalar(item: FieldSpec, value: Any) -> Any:
    kind = item.value_type
    if kind in (int, float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise GenFusionError(f"{item.flag} must be a number, got {value!r}.") from None
        if not math.isfinite(number):
            raise GenFusionError(f"{item.flag} must be a finite number, got {value!r}.")
        if kind is int:
            if number != int(number):
                raise GenFusionError(f"{item.flag} must be a whole number, got {value!r}.")
            return int(number)
        return number
    if isinstance(kind, type) and issubclass(kind, PurePath):
        return kind(str(value))
    text = str(value).strip()
    if not text:
        raise GenFusionError(f"{item.flag} needs a value ({item.doc}).")
    return text


def coerce(item: FieldSpec, value: Any) -> Any:
    """A widget's (or an API caller's) value -> the field's Python value (None = automatic for
    optional fields, an optional bool's "automatic" included); GenFusionError if unusable."""
    if _empty(value) and (item.kind != "bool" or item.optional):
        if item.optional:
            return None
        raise GenFusionError(f"{item.flag} needs a value ({item.doc}); it was left empty.")
    if item.kind == "bool":
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise GenFusionError(f"{item.flag} must be true or false, got {value!r}.")
            return lowered in ("true", "1", "yes")
        return bool(value)
    if item.kind == "choice":
        if value not in item.choices:
            raise GenFusionError(
                f"{item.flag} must be one of {', '.join(map(str, item.choices))}, got {value!r}."
            )
        return value
    if item.kind == "sequence":
        parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
        if isinstance(item.nargs, int) and len(parts) != item.nargs:
            raise GenFusionError(
                f"{item.flag} needs {item.nargs} numbers separated by spaces, got {value!r}."
            )
        container = item.container or tuple
        return container(_scalar(item, part) for part in parts)
    return _scalar(item, value)


def config_from_values(values: dict[str, Any], limits: AppLimits | None = None) -> ReconstructConfig:
    """A validated config from widget values keyed by field name (missing fields keep their
    defaults), built as the CLI builds it from flags; then the app's ``limits`` are checked."""
    known = {item.name: item for item in config_specs()}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise GenFusionError(f"unknown setting(s) {', '.join(unknown)}; see `genfusion reconstruct --help`.")
    given = argparse.Namespace(**{item.dest: None for item in known.values()})
    for name, value in values.items():
        setattr(given, known[name].dest, coerce(known[name], value))
    try:
        config = dataclass_from_args(ReconstructConfig, given)
    except (TypeError, ValueError) as err:
        raise GenFusionError(f"the settings do not make a valid run ({err}).") from None
    if limits is not None:
        limits.check(config)
    return config


def check_ranges(config: ReconstructConfig) -> None:
    """Ranges ``ReconstructConfig.validate`` does not check yet (a zero ``log_every`` would divide
    by zero mid-run, a negative learning rate diverges): refused before a job starts."""
    positive = ("log_every", "init_random_points", "max_init_points", "max_gaussians", "mcmc_cap")
    non_negative = (
        "checkpoint_every",
        "memory_limit_gb",
        "reset_recovery",
        "means_lr",
        "means_lr_final",
        "scales_lr",
        "quats_lr",
        "opacities_lr",
        "sh0_lr",
        "shN_lr",
        "normal_lambda",
        "distortion_lambda",
        "depth_lambda",
        "grow_grad2d",
        "grow_scale3d",
        "prune_scale3d",
        "init_extent",
        "init_scale",
        "near_plane",
        "seed",
    )
    unit = ("lambda_dssim", "generated_dssim")
    for name in positive:
        if getattr(config, name) < 1:
            raise GenFusionError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}."
            )
    for name in non_negative:
        if getattr(config, name) < 0:
            raise GenFusionError(
                f"--{name.replace('_', '-')} must not be negative, got {getattr(config, name)}."
            )
    for name in unit:
        if not 0 <= getattr(config, name) <= 1:
            raise GenFusionError(
                f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(config, name)}."
            )
    if not 0 < config.init_opacity < 1:
        raise GenFusionError(f"--init-opacity must be in (0, 1), got {config.init_opacity}.")
    if config.far_plane <= config.near_plane:
        raise GenFusionError(f"--far-plane must be beyond --near-plane ({config.near_plane}).")
    if not all(0 <= c <= 1 for c in config.background):
        raise GenFusionError(
            f"--background needs RGB values in [0, 1], got {format_vector(config.background)}."
        )


# ----------------------------------------------------------------------------- fusion settings

# FusionConfig fields without a widget: the mode is the page's Mode choice, the camera path is the
# job's camera_path.json, and the repair model's folder is this server's (never a caller's path).
FUSION_HIDDEN = ("mode", "camera_path", "weights_dir")
# Shown in the fusion box, in this order; the other fusion fields go into its accordion.
FUSION_COMMON = ("budget", "rounds", "lambda_reg", "repairer")


@cache
def fusion_specs() -> tuple[FieldSpec, ...]:
    """The fusion loop's own settings (FusionConfig's top-level fields, less FUSION_HIDDEN)."""
    return tuple(
        item for item in field_specs(FusionConfig) if len(item.path) == 1 and item.name not in FUSION_HIDDEN
    )


def fusion_spec(name: str) -> FieldSpec:
    for item in fusion_specs():
        if item.name == name:
            return item
    raise KeyError(name)


def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Widget / API values -> (ReconstructConfig values, FusionConfig values); unknown names are
    refused."""
    reconstruct = {item.name for item in config_specs()}
    fusion = {item.name for item in fusion_specs()}
    unknown = sorted(set(values) - reconstruct - fusion)
    if unknown:
        raise GenFusionError(
            f"unknown setting(s) {', '.join(unknown)}; see `genfusion reconstruct --help` and "
            "`genfusion fuse --help`."
        )
    return (
        {k: v for k, v in values.items() if k in reconstruct},
        {k: v for k, v in values.items() if k in fusion},
    )


def explicit_fields(config: ReconstructConfig) -> set[str]:
    """The reconstruction settings that differ from their defaults: what a fusion run keeps
    over its mode's preset and budget (see the module docstring)."""
    default = ReconstructConfig()
    return {item.name for item in config_specs() if getattr(config, item.name) != getattr(default, item.name)}


def fusion_config_from_values(
    mode: str,
    values: dict[str, Any],
    reconstruct: ReconstructConfig,
    *,
    camera_path: str | None = None,
    weights_dir: str | None = None,
) -> FusionConfig:
    """An unresolved FusionConfig from fusion widget values (missing ones keep their defaults),
    built as ``genfusion fuse`` builds it from flags."""
    known = {item.name: item for item in fusion_specs()}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise GenFusionError(f"unknown fusion setting(s) {', '.join(unknown)}; see `genfusion fuse --help`.")
    given = argparse.Namespace(**{item.dest: None for item in known.values()})
    for name, value in values.items():
        setattr(given, known[name].dest, coerce(known[name], value))
    fields = {"mode": mode, "reconstruct": reconstruct, "camera_path": camera_path}
    if weights_dir is not None:
        fields["weights_dir"] = weights_dir
    try:
        base = FusionConfig(**fields)
        return dataclass_from_args(FusionConfig, given, base)
    except (TypeError, ValueError) as err:
        raise GenFusionError(f"the fusion settings do not make a valid run ({err}).") from None


@dataclass(frozen=True)
class AppLimits:
    """What this server accepts (a shared Space needs tighter limits than a laptop)."""

    max_iterations: int = 100_000  # refuse longer runs
    max_gaussians: int = 3_000_000  # refuse a higher --max-gaussians cap
    allowed_devices: tuple[str, ...] = ("auto", "cpu", "cuda")  # devices a caller may ask for

    def check(self, config: ReconstructConfig) -> None:
        """Raise :class:`GenFusionError` for a config this server does not run."""
        check_ranges(config)
        if config.iterations > self.max_iterations:
            raise GenFusionError(
                f"--iterations {config.iterations} is above this server's limit of {self.max_iterations}.",
                hint="Ask for fewer iterations, or run `genfusion reconstruct` locally.",
            )
        if config.max_gaussians > self.max_gaussians:
            raise GenFusionError(
                f"--max-gaussians {config.max_gaussians} is above this server's limit "
                f"of {self.max_gaussians}."
            )
        if config.device not in self.allowed_devices:
            raise GenFusionError(
                f"--device {config.device} is not available here; use {', '.join(self.allowed_devices)}."
            )

    def check_fusion(self, config: FusionConfig) -> None:
        """The reconstruction's limits (after the preset and budget were applied) plus the sizes
        of what every round renders and sends."""
        self.check(config.reconstruct)
        for name, limit in (("views_per_round", 1_000), ("clip_length", 64), ("event_image_size", 512)):
            value = getattr(config, name)
            if value is not None and value > limit:
                raise GenFusionError(
                    f"--{name.replace('_', '-')} {value} is above this server's limit of {limit}."
                )
        if config.rounds is not None and len(config.rounds) > 50:
            raise GenFusionError(f"--rounds lists {len(config.rounds)} rounds; this server runs at most 50.")
        for name in ("tilt_deg", "snapshot_every_s"):
            value = getattr(config, name)
            if not math.isfinite(value) or (name == "snapshot_every_s" and value < 0):
                raise GenFusionError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}.")


# Quality-vs-speed presets: only fields of ReconstructConfig, so a preset is a set of flags.
PRESETS: dict[str, dict[str, Any]] = {
    "preview": {"iterations": 300, "downscale": 8},
    "balanced": {"iterations": 2_000, "downscale": 4},
    "quality": {"iterations": 7_000, "downscale": 2},
    "reference": {"iterations": 30_000, "downscale": 1},
}


def preset_note(name: str) -> str:
    """``"--iterations 300 --downscale 8"``: what a preset sets, as CLI flags."""
    return " ".join(f"{spec(k).flag} {v}" for k, v in PRESETS[name].items())


__all__ = [
    "AUTOMATIC",
    "COMMON_FIELDS",
    "PRESETS",
    "FUSION_COMMON",
    "FUSION_HIDDEN",
    "AppLimits",
    "check_ranges",
    "coerce",
    "config_from_values",
    "config_specs",
    "explicit_fields",
    "fusion_config_from_values",
    "fusion_spec",
    "fusion_specs",
    "format_vector",
    "label_of",
    "preset_note",
    "section_title",
    "spec",
    "split_values",
]
