"""Which torch device a run uses: the one meaning of ``--device auto|cpu|cuda`` for training,
exports and the repair model.

Ground level (imports nothing from the package but the error type), so every layer can use it.
"""

from __future__ import annotations

import torch

from genfusion.errors import GenFusionError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` (or a
    ``torch.device``) as given.

    Asking for CUDA on a machine without it is a :class:`GenFusionError` naming ``--device cpu``,
    raised here rather than as torch's error at the first tensor moved.
    """
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise GenFusionError(f"unknown device {name!r}; use --device auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenFusionError(
            f"--device {name} was asked for but this machine has no CUDA GPU; use --device cpu"
        )
    return device
