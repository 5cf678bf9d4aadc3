"""Adding Gaussians to a running optimisation (content expansion) without disturbing it.

gsplat's strategies grow the model only by duplicating existing Gaussians
(``strategy/ops.py``: ``duplicate`` / ``split`` through ``_update_param_with_optimizer``); new
Gaussians from elsewhere need the same bookkeeping, or the next Adam step and the next
densification break (shape mismatches) or, worse, silently mix up rows:

- every parameter of the ``ParameterDict`` gets the new rows appended (a new ``Parameter``, as
  gsplat does, so the optimizer must be pointed at it);
- each Adam state keeps its moments for the old rows and gets zeros for the new ones (``step``
  is per tensor and stays), exactly what gsplat gives duplicates;
- the strategy's running per-Gaussian statistics (``grad2d``, ``count``, ``radii``, any tensor
  whose first dimension is the Gaussian count) get zeros: a new Gaussian has not been seen yet.
  Entries not yet created (gsplat allocates them lazily, ``None``) and tensors of another length
  (MCMC's ``binoms`` table) are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

# strategy-state entries that are not per-Gaussian even if their length happens to match
SHARED_STATE_KEYS = frozenset({"binoms", "scene_scale"})


def _check_new(splats: torch.nn.ParameterDict, new: Mapping[str, Tensor]) -> int:
    """The number of new Gaussians, after checking ``new`` fits ``splats`` name by name."""
    missing, extra = set(splats.keys()) - set(new), set(new) - set(splats.keys())
    if missing or extra:
        raise ValueError(f"new Gaussians must have exactly the parameters {sorted(splats.keys())}; "
                         f"missing {sorted(missing)}, unexpected {sorted(extra)}")  # fmt: skip
    counts = {name: int(value.shape[0]) for name, value in new.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"new Gaussians disagree on their count: {counts}")
    for name, value in new.items():
        if tuple(value.shape[1:]) != tuple(splats[name].shape[1:]):
            raise ValueError(
                f"new {name!r} has rows of shape {tuple(value.shape[1:])}, the splats "
                f"{tuple(splats[name].shape[1:])}"
            )
    return next(iter(counts.values()))


def _per_row(key: str, value: Any, count: int) -> bool:
    """Whether an optimizer-state entry holds one row per Gaussian (Adam's moments; not ``step``)."""
    return key != "step" and isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == count


def _zeros_after(value: Tensor, added: int) -> Tensor:
    return torch.cat([value, value.new_zeros((added, *value.shape[1:]))])


@torch.no_grad()
def append_gaussians(
    splats: torch.nn.ParameterDict,
    optimizers: dict[str, torch.optim.Optimizer],
    strategy_state: dict[str, Any],
    new: Mapping[str, Tensor],
) -> int:
    """Append ``new`` Gaussians (a dict in the splats' layout, e.g. from
    :func:`genfusion.fusion.expansion.new_gaussians`) to ``splats`` in place, extending every
    optimizer's state and the strategy's running state so training continues seamlessly.

    Returns the number added. ``new`` tensors are moved to each parameter's device and dtype.
    """
    added = _check_new(splats, new)
    if added == 0:
        return 0
    old_count = int(splats["means"].shape[0])
    for name in list(splats.keys()):
        old = splats[name]
        rows = new[name].detach().to(device=old.device, dtype=old.dtype)
        param = torch.nn.Parameter(
            torch.cat([old.detach(), rows]).contiguous(), requires_grad=old.requires_grad
        )
        splats[name] = param
        optimizer = optimizers.get(name)
        if optimizer is None:
            continue
        for group in optimizer.param_groups:
            if not any(p is old for p in group["params"]):
                continue
            state = optimizer.state.pop(old, None)
            group["params"] = [param if p is old else p for p in group["params"]]
            if state is not None:
                optimizer.state[param] = {
                    key: _zeros_after(value, added) if _per_row(key, value, old_count) else value
                    for key, value in state.items()
                }
    for key, value in list(strategy_state.items()):
        if key in SHARED_STATE_KEYS or not isinstance(value, Tensor) or value.dim() == 0:
            continue
        if value.shape[0] == old_count:
            strategy_state[key] = _zeros_after(value, added)
    return added


__all__ = ["SHARED_STATE_KEYS", "append_gaussians"]
