"""Cameras -> renderer tensors: world-to-camera and K stacked as float32 on the device."""

from __future__ import annotations

import numpy as np
import torch

from genfusion.splat.cameras import camera_tensors

from .test_gaussians import ring_scene


def test_camera_tensors_stack_worldtocam_and_K():
    cameras = ring_scene(n=3).cameras
    viewmats, Ks = camera_tensors(cameras, "cpu")
    assert viewmats.shape == (3, 4, 4) and Ks.shape == (3, 3, 3)
    assert viewmats.dtype == Ks.dtype == torch.float32
    np.testing.assert_allclose(viewmats[1].numpy(), np.linalg.inv(cameras[1].camtoworld), atol=1e-6)
    np.testing.assert_allclose(Ks[2].numpy(), cameras[2].K)


def test_no_cameras_give_empty_stacks():
    viewmats, Ks = camera_tensors([], torch.device("cpu"))
    assert viewmats.shape == (0, 4, 4) and Ks.shape == (0, 3, 3)
