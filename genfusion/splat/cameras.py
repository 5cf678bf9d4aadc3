"""Cameras as the tensors the renderer takes: world-to-camera matrices and pixel intrinsics.

One place for the conversion, so training views, exports and the fusion loop build them the same
way (float32, OpenCV axes, the camera's own ``K``, no copies of the numpy arrays kept).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from genfusion.data.types import Camera


def camera_tensors(cameras: list[Camera], device: torch.device | str) -> tuple[Tensor, Tensor]:
    """``(viewmats [V, 4, 4], Ks [V, 3, 3])``, float32 on ``device``, in the order of ``cameras``.

    ``viewmats`` are world-to-camera (``Camera.worldtocam``), ``Ks`` intrinsics in pixels. An
    empty list gives ``[0, 4, 4]`` and ``[0, 3, 3]`` (a split without test views).
    """
    if not cameras:
        return torch.zeros(0, 4, 4, device=device), torch.zeros(0, 3, 3, device=device)
    # stack in numpy first: one host-to-device copy per tensor, not one per camera
    viewmats = torch.as_tensor(np.stack([c.worldtocam for c in cameras]), dtype=torch.float32)
    Ks = torch.as_tensor(np.stack([c.K for c in cameras]), dtype=torch.float32)
    return viewmats.to(device), Ks.to(device)
