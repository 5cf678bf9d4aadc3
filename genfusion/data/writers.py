"""Write a Scene back out: COLMAP text or binary model, nerfstudio-flavoured transforms.json, and
the images as ``load_image`` produces them.

Cameras are written as they are: write a scene loaded with ``undistort=False`` to describe the
original photos, or an undistorted scene together with :func:`export_images` to describe
undistorted copies. Every file is written to a temporary name and renamed, so an interrupted
write never leaves a half-written model.
"""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from genfusion.atomic import atomic_path, write_bytes_atomic, write_json_atomic
from genfusion.data.colmap import MODEL_IDS
from genfusion.data.geometry import opencv_to_opengl, rotmat_to_qvec
from genfusion.data.images import load_image_uint8
from genfusion.data.transforms import POINTS_NAME
from genfusion.data.types import Camera, Scene
from genfusion.errors import GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent, emit


def colmap_camera_params(camera: Camera) -> tuple[str, np.ndarray]:
    """(COLMAP model, params) for a camera (COLMAP shares the project's pixel convention)."""
    fx, fy = camera.fx, camera.fy
    cx, cy = camera.cx, camera.cy
    d = camera.distortion
    if d is None:
        return "PINHOLE", np.array([fx, fy, cx, cy])
    if len(d) == 4:
        return "OPENCV", np.array([fx, fy, cx, cy, *d])
    if len(d) <= 8:
        full = np.zeros(8)
        full[: len(d)] = d
        return "FULL_OPENCV", np.array([fx, fy, cx, cy, *full])
    raise GenFusionError(
        f"camera '{camera.name}' has {len(d)} distortion coefficients; COLMAP models hold at most 8.",
        hint="Undistort the scene (load_scene(..., undistort=True)) before writing it.",
    )


def _colmap_entries(scene: Scene) -> tuple[list[tuple], list[tuple]]:
    """Cameras (id, model, w, h, params) de-duplicated by intrinsics, and images
    (id, qvec, tvec, camera id, name); names are file names relative to the images folder."""
    camera_ids: dict[tuple, int] = {}
    cameras, images = [], []
    for image_id, camera in enumerate(scene.cameras, start=1):
        model, params = colmap_camera_params(camera)
        key = (model, camera.width, camera.height, *params.tolist())
        if key not in camera_ids:
            camera_ids[key] = len(camera_ids) + 1
            cameras.append((camera_ids[key], model, camera.width, camera.height, params))
        worldtocam = np.linalg.inv(camera.camtoworld)
        name = camera.image_path.name if camera.image_path is not None else camera.name
        images.append(
            (image_id, rotmat_to_qvec(worldtocam[:3, :3]), worldtocam[:3, 3], camera_ids[key], name)
        )
    return cameras, images


def _points(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    if not scene.has_points:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    colors = scene.point_colors if scene.point_colors is not None else np.full((len(scene.points), 3), 0.5)
    return scene.points, np.clip(np.round(np.asarray(colors) * 255.0), 0, 255).astype(np.uint8)


def write_colmap_text(scene: Scene, model_dir: Path | str) -> Path:
    """cameras.txt, images.txt, points3D.txt into ``model_dir`` (e.g. ``<scene>/sparse/0``)."""
    model_dir = Path(model_dir)
    cameras, images = _colmap_entries(scene)
    xyz, rgb = _points(scene)
    fmt = "{:.17g}".format

    def cams(tmp: Path) -> None:
        lines = [
            "# Camera list with one line of data per camera:",
            "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        ]
        lines += [
            f"{cid} {model} {w} {h} " + " ".join(map(fmt, params)) for cid, model, w, h, params in cameras
        ]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def imgs(tmp: Path) -> None:
        lines = [
            "# Image list with two lines of data per image:",
            "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        ]
        for iid, q, t, cid, name in images:
            lines += [f"{iid} " + " ".join(map(fmt, [*q, *t])) + f" {cid} {name}", ""]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def pts(tmp: Path) -> None:
        lines = [
            "# 3D point list with one line of data per point:",
            "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]",
        ]
        lines += [
            f"{i + 1} " + " ".join(map(fmt, p)) + " {} {} {} -1".format(*c)
            for i, (p, c) in enumerate(zip(xyz, rgb, strict=True))
        ]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")

    for name, write in (("cameras.txt", cams), ("images.txt", imgs), ("points3D.txt", pts)):
        with atomic_path(model_dir / name) as tmp:
            write(tmp)
    return model_dir


def write_colmap_binary(scene: Scene, model_dir: Path | str) -> Path:
    """cameras.bin, images.bin, points3D.bin into ``model_dir`` (COLMAP's little-endian layout)."""
    model_dir = Path(model_dir)
    cameras, images = _colmap_entries(scene)
    xyz, rgb = _points(scene)

    def cams(tmp: Path) -> None:
        with open(tmp, "wb") as fid:
            fid.write(struct.pack("<Q", len(cameras)))
            for cid, model, w, h, params in cameras:
                fid.write(struct.pack("<iiQQ", cid, MODEL_IDS[model], w, h))
                fid.write(struct.pack(f"<{len(params)}d", *params))

    def imgs(tmp: Path) -> None:
        with open(tmp, "wb") as fid:
            fid.write(struct.pack("<Q", len(images)))
            for iid, q, t, cid, name in images:
                fid.write(struct.pack("<idddddddi", iid, *q, *t, cid))
                fid.write(name.encode("utf-8") + b"\x00")
                fid.write(struct.pack("<Q", 0))  # no 2D observations

    def pts(tmp: Path) -> None:
        with open(tmp, "wb") as fid:
            fid.write(struct.pack("<Q", len(xyz)))
            for i, (p, c) in enumerate(zip(xyz, rgb, strict=True)):
                fid.write(struct.pack("<QdddBBBdQ", i + 1, *p, *c, -1.0, 0))

    for name, write in (("cameras.bin", cams), ("images.bin", imgs), ("points3D.bin", pts)):
        with atomic_path(model_dir / name) as tmp:
            write(tmp)
    return model_dir


def _transforms_intrinsics(camera: Camera) -> dict[str, float]:
    d = np.zeros(5)
    if camera.distortion is not None:
        if len(camera.distortion) > 5 and np.any(camera.distortion[5:]):
            raise GenFusionError(
                f"camera '{camera.name}' uses OpenCV's rational distortion (not in transforms.json).",
                hint="Undistort the scene (load_scene(..., undistort=True)) before writing it.",
            )
        d[: min(5, len(camera.distortion))] = camera.distortion[:5]
    out = {
        "fl_x": camera.fx,
        "fl_y": camera.fy,
        "cx": camera.cx,
        "cy": camera.cy,
        "w": camera.width,
        "h": camera.height,
    }
    if camera.distortion is not None:
        out.update(k1=d[0], k2=d[1], p1=d[2], p2=d[3], k3=d[4])
    return out


def write_transforms(scene: Scene, json_path: Path | str, *, image_dir: Path | None = None) -> Path:
    """A nerfstudio-style transforms.json (OpenGL camera axes). Frame paths are relative to the
    json; with ``image_dir`` they point at ``image_dir/<file name>`` instead of the original files.
    Sparse points go to ``sparse_pc.ply`` beside it (``ply_file_path``)."""
    json_path = Path(json_path)
    intrinsics = [_transforms_intrinsics(c) for c in scene.cameras]
    shared = all(i == intrinsics[0] for i in intrinsics)
    meta: dict = {"camera_model": "OPENCV"}
    if shared:
        meta.update(intrinsics[0])
    if scene.aabb_scale is not None:
        meta["aabb_scale"] = scene.aabb_scale
    frames = []
    for camera, intr in zip(scene.cameras, intrinsics, strict=True):
        image = (image_dir / camera.image_path.name) if image_dir is not None else camera.image_path
        frame = {
            "file_path": os.path.relpath(Path(image).absolute(), json_path.parent.absolute()).replace(
                os.sep, "/"
            ),
            "transform_matrix": opencv_to_opengl(camera.camtoworld).tolist(),
        }
        if not shared:
            frame.update(intr)
        frames.append(frame)
    meta["frames"] = frames
    if scene.has_points:
        ply_path = write_points_ply(json_path.parent / POINTS_NAME, scene.points, scene.point_colors)
        meta["ply_file_path"] = ply_path.name
    write_json_atomic(json_path, meta)
    return json_path


def write_points_ply(path: Path | str, points: np.ndarray, colors: np.ndarray | None) -> Path:
    """Sparse points (and RGB in [0, 1], grey when None) as a binary point-cloud .ply, the file
    nerfstudio's ``ply_file_path`` names; written atomically."""
    from plyfile import PlyData, PlyElement

    path = Path(path)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    colors = np.full_like(points, 0.5) if colors is None else np.asarray(colors)
    rgb = np.clip(np.round(colors * 255.0), 0, 255).astype(np.uint8)
    vertex = np.empty(
        len(points),
        dtype=[("x", "f8"), ("y", "f8"), ("z", "f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    vertex["x"], vertex["y"], vertex["z"] = points.T
    vertex["red"], vertex["green"], vertex["blue"] = rgb.T
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))
    return path


def export_images(
    scene: Scene, out_dir: Path | str, *, ext: str = ".png", progress: ProgressCallback | None = None
) -> Scene:
    """Write every camera's image, as ``load_image`` returns it, to ``out_dir/<file stem><ext>``,
    and return the scene with its cameras pointing at those files (ready for the writers)."""
    out_dir = Path(out_dir)
    cameras = []
    for i, camera in enumerate(scene.cameras):
        rgb = load_image_uint8(camera)
        target = out_dir / (Path(camera.image_path).stem + ext)
        ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise GenFusionError(f"cannot encode images as {ext}.", hint="Use .png or .jpg.")
        write_bytes_atomic(target, data.tobytes())
        cameras.append(
            replace(camera, image_path=target, source_K=None, source_distortion=None, cache_dir=None)
        )
        emit(progress, ProgressEvent("data.export_images", i + 1, len(scene.cameras), camera.name))
    return replace(scene, cameras=cameras)
