"""Checkpoints of a reconstruction run: save, load, resume, and ``load_run`` for the exports.

Format (``checkpoint.pt``, written with ``torch.save``, readable with ``weights_only=True``)::

    {
      "format_version": 1,                 # bumped on any incompatible change
      "genfusion_version": "0.1.0",        # the package that wrote it (informative)
      "method": "2dgs" | "3dgs",           # how the Gaussians are rendered
      "step": int,                         # optimisation steps completed
      "sh_degree": int,                    # highest SH degree stored (shN has (d+1)^2-1 rows)
      "splats": {name: tensor},            # means [N,3], quats [N,4] wxyz, scales [N,3] log,
                                           # opacities [N] logit, sh0 [N,1,3], shN [N,K-1,3]; CPU
      "optimizers": {name: Adam state_dict},
      "strategy_state": {...},             # gsplat strategy running state (grad2d, count, ...)
      "config": dict,                      # ReconstructConfig.to_dict()
      "scene": {"path": str, "downscale": int, "format": str},
      "rng": {"torch": ByteTensor},        # global torch RNG (densification noise) for exact resume
      "elapsed": float,                    # seconds of training so far (Trainer)
      "generated": {"views": [...], "weight": {...}},  # generated views (image, depth, weight map,
                                           # viewmat, K; CPU float32) and their GeneratedWeight,
                                           # so a resume after a fusion round trains on the same pixels
    }

Everything the run needs to continue bit-for-bit is in it: the view order and random backgrounds
are derived from (seed, step), the position learning rate from the step, and the global RNG state
(used by gsplat's split) is stored. The file is written to a temporary name and renamed, so an
interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genfusion.atomic import atomic_path
from genfusion.errors import GenFusionError
from genfusion.splat.config import ReconstructConfig
from genfusion.splat.gaussians import PARAMETER_NAMES

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def _version() -> str:
    from genfusion import __version__

    return __version__


def checkpoint_dict(
    *,
    method: str,
    step: int,
    sh_degree: int,
    splats: torch.nn.ParameterDict | dict[str, torch.Tensor],
    optimizers: dict[str, torch.optim.Optimizer],
    strategy_state: dict[str, Any],
    config: ReconstructConfig,
    scene: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint contents (tensors moved to CPU) in format version 1."""

    def to_cpu(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().cpu()
        if isinstance(value, dict):
            return {k: to_cpu(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(to_cpu(v) for v in value)
        return value

    return {
        "format_version": FORMAT_VERSION,
        "genfusion_version": _version(),
        "method": method,
        "step": int(step),
        "sh_degree": int(sh_degree),
        "splats": {name: splats[name].detach().cpu().clone() for name in splats.keys()},
        "optimizers": {name: to_cpu(opt.state_dict()) for name, opt in optimizers.items()},
        "strategy_state": to_cpu(dict(strategy_state)),
        "config": config.to_dict(),
        "scene": dict(scene),
        "rng": {"torch": torch.get_rng_state()},
    }


def save_checkpoint(path: str | Path, contents: dict[str, Any]) -> Path:
    """Write ``contents`` to ``path`` atomically (temporary file in the same folder + rename)."""
    with atomic_path(path) as tmp:
        torch.save(contents, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, *, expected_method: str | None = None) -> dict[str, Any]:
    """Read and check a checkpoint; any problem is a :class:`GenFusionError` saying what it is
    and what was expected."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise GenFusionError(
            "no checkpoint here", path=path, hint="Run `genfusion reconstruct SCENE --out DIR` first."
        )
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise GenFusionError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {str(err)[:200]})",
            hint="Delete it and train again, or point to a checkpoint.pt written by genfusion reconstruct.",
        ) from None
    if not isinstance(contents, dict) or "format_version" not in contents:
        raise GenFusionError(
            f"{path} is not a GenFusion checkpoint (no format_version); expected a checkpoint.pt "
            "written by `genfusion reconstruct`",
        )
    version = contents["format_version"]
    if version != FORMAT_VERSION:
        raise GenFusionError(
            f"{path} has checkpoint format version {version} (written by genfusion "
            f"{contents.get('genfusion_version', '?')}); this genfusion ({_version()}) reads format "
            f"version {FORMAT_VERSION}. Use the matching genfusion version, or train again into a new "
            "--out folder."
        )
    missing = [k for k in ("method", "step", "sh_degree", "splats", "config") if k not in contents]
    missing += [f"splats.{n}" for n in PARAMETER_NAMES if n not in contents.get("splats", {})]
    if missing:
        raise GenFusionError(
            f"{path} is an incomplete checkpoint (missing {', '.join(missing)}); train again."
        )
    if expected_method is not None and contents["method"] != expected_method:
        raise GenFusionError(
            f"{path} holds a {contents['method']} reconstruction but {expected_method} was asked for; "
            f"resume with --method {contents['method']}, or train {expected_method} into a new --out folder."
        )
    return contents


@dataclass
class LoadedRun:
    """A finished (or interrupted) reconstruction, as the exports and later stages need it."""

    path: Path  # the checkpoint file read
    method: str  # "2dgs" or "3dgs"
    step: int  # optimisation steps completed
    sh_degree: int  # highest SH degree stored
    splats: dict[str, torch.Tensor]  # parameter name -> CPU tensor (layout in the module docstring)
    config: ReconstructConfig  # the settings the run used
    scene: dict[str, Any]  # {"path": str, "downscale": int, "format": str}

    @property
    def num_gaussians(self) -> int:
        return int(self.splats["means"].shape[0])


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load the Gaussians of a ``genfusion reconstruct`` output folder (or a checkpoint file)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise GenFusionError("no such run folder", path=run_dir, hint="Check the path given to --out.")
    contents = load_checkpoint(run_dir)
    if contents["splats"]["means"].shape[0] == 0:
        raise GenFusionError(
            f"{run_dir} holds a run with no Gaussians left (everything was pruned); train again, "
            "e.g. with more iterations or --init-random-points."
        )
    path = run_dir / CHECKPOINT_NAME if run_dir.is_dir() else run_dir
    return LoadedRun(
        path=path,
        method=contents["method"],
        step=int(contents["step"]),
        sh_degree=int(contents["sh_degree"]),
        splats=dict(contents["splats"]),
        config=ReconstructConfig.from_dict(contents["config"]),
        scene=dict(contents.get("scene", {})),
    )
