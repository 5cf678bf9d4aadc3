"""LLFF ``poses_bounds.npy`` reader.

Each row holds a 3x5 matrix ``[R | t | hwf]`` (camera-to-world, camera axes [down, right, back])
followed by the near and far depth bounds. ``hwf`` describes the full-resolution ``images/``;
the photos are paired with rows by sorted file name, as the original LLFF/NeRF loaders do, from
the ``images_N`` folder that matches the wanted downscale (K is rescaled to the files' size by the
loader).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genfusion.data.geometry import intrinsics_matrix, validate_pose
from genfusion.data.images import choose_factor, downscaled_folders, list_images
from genfusion.data.transforms import POINTS_NAME, read_ply_points
from genfusion.data.types import Camera, Scene
from genfusion.errors import GenFusionError

POSES_NAME = "poses_bounds.npy"


def llff_to_opencv(pose: np.ndarray) -> np.ndarray:
    """3x4 LLFF camera-to-world ([down, right, back] axes) -> 4x4 OpenCV (right, down, forward)."""
    c2w = np.eye(4)
    c2w[:3, 0] = pose[:3, 1]
    c2w[:3, 1] = pose[:3, 0]
    c2w[:3, 2] = -pose[:3, 2]
    c2w[:3, 3] = pose[:3, 3]
    return c2w


def opencv_to_llff(camtoworld: np.ndarray) -> np.ndarray:
    """Inverse of :func:`llff_to_opencv` (3x4)."""
    return np.stack([camtoworld[:3, 1], camtoworld[:3, 0], -camtoworld[:3, 2], camtoworld[:3, 3]], axis=1)


def read_llff_scene(root: Path, downscale: int = 1) -> Scene:
    path = root / POSES_NAME
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise GenFusionError(
            f"cannot read poses_bounds.npy ({err}).",
            path=path,
            hint="Re-create it with LLFF's imgs2poses.py.",
        ) from None
    if data.ndim != 2 or data.shape[1] != 17 or len(data) == 0:
        raise GenFusionError(
            f"poses_bounds.npy has shape {data.shape}, expected (N, 17).",
            path=path,
            hint="Re-create it with LLFF's imgs2poses.py.",
        )
    folders = downscaled_folders(root / "images")
    factor = choose_factor(folders, downscale)
    if factor is None:
        raise GenFusionError(
            "no images/ or images_N/ folder beside poses_bounds.npy.",
            path=root,
            hint="Put the photos in images/ (or images_4/, images_8/ downscales).",
        )
    folder = folders[factor]
    files = list_images(folder)
    notes = []
    if factor != downscale:
        notes.append(f"downscale {downscale} asked; read {folder.name}/ (the closest folder available).")
    if len(files) != len(data):
        raise GenFusionError(
            f"{folder.name}/ holds {len(files)} images but poses_bounds.npy has {len(data)} poses.",
            path=folder,
            hint="LLFF pairs photos with poses by sorted name: keep exactly the posed photos in the folder.",
        )
    poses = data[:, :15].reshape(-1, 3, 5)
    cameras = []
    for pose, file in zip(poses, files, strict=True):
        height, width, focal = (float(v) for v in pose[:, 4])
        if not (np.isfinite([height, width, focal]).all() and height > 0 and width > 0 and focal > 0):
            raise GenFusionError(
                f"the pose of frame '{file.name}' has an invalid hwf column ({height}, {width}, {focal}).",
                path=path,
                hint="Re-create poses_bounds.npy with LLFF's imgs2poses.py.",
            )
        K = intrinsics_matrix(focal, focal, width / 2.0, height / 2.0)
        cameras.append(
            Camera(
                camtoworld=validate_pose(llff_to_opencv(pose), file.name, path),
                K=K,
                width=int(round(width)),
                height=int(round(height)),
                image_path=file,
                model="SIMPLE_PINHOLE",
                name=file.name,
                camera_id=1,
            )
        )
    points = colors = None
    if (root / POINTS_NAME).is_file():  # LLFF has no points of its own; genfusion triangulate adds them
        points, colors = read_ply_points(root / POINTS_NAME, path)
        notes.append(f"sparse points from {POINTS_NAME} (genfusion triangulate).")
    return Scene(
        cameras=cameras,
        root=root,
        format="llff",
        points=points,
        point_colors=colors,
        near_far=data[:, 15:17].astype(np.float64),
        notes=notes,
    )
