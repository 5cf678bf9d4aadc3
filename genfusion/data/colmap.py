"""COLMAP sparse models (binary ``*.bin`` and text ``*.txt``): parser and Scene reader.

The parser is our own (``struct``), following COLMAP's ``src/colmap/scene/reconstruction_io``
layouts; pycolmap is used only by the tests to cross-check it. COLMAP stores world-to-camera
poses (qvec w,x,y,z + tvec) in OpenCV camera axes; they become camera-to-world here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from genfusion.data.geometry import intrinsics_matrix, qvec_to_rotmat, validate_pose
from genfusion.data.types import Camera, PointTracks, Scene
from genfusion.errors import GenFusionError

# model id -> (name, number of parameters), as in COLMAP's sensor/models.h
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
MODEL_IDS: dict[str, int] = {name: model_id for model_id, (name, _) in CAMERA_MODELS.items()}
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")


@dataclass
class ColmapCamera:
    """One entry of cameras.bin/txt."""

    camera_id: int  # COLMAP camera id
    model: str  # COLMAP model name, e.g. "OPENCV"
    width: int  # image width in pixels
    height: int  # image height in pixels
    params: np.ndarray  # model parameters in COLMAP's order


@dataclass
class ColmapImage:
    """One entry of images.bin/txt (2D observations are skipped: nothing downstream uses them)."""

    image_id: int  # COLMAP image id
    qvec: np.ndarray  # world-to-camera rotation as a quaternion (w, x, y, z)
    tvec: np.ndarray  # world-to-camera translation
    camera_id: int  # the ColmapCamera this image was taken with
    name: str  # file name relative to the images folder


@dataclass
class ColmapModel:
    """A parsed sparse model."""

    cameras: dict[int, ColmapCamera]  # by camera id
    images: dict[int, ColmapImage]  # by image id
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (P, 3) xyz
    colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))  # (P, 3) RGB
    point_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (P,) point ids
    tracks: list[np.ndarray] = field(default_factory=list)  # per point, the image ids that saw it


def find_model_dir(root: Path) -> Path | None:
    """The folder holding a complete COLMAP model under ``root`` (``sparse/0``, ``sparse`` or the
    folder itself), or None."""
    for candidate in (root / "sparse" / "0", root / "sparse", root):
        if model_extension(candidate) is not None:
            return candidate
    return None


def model_extension(folder: Path) -> str | None:
    """ ".bin" or ".txt" when ``folder`` holds cameras, images and points3D in that form."""
    for ext in (".bin", ".txt"):
        if all((folder / f"{name}{ext}").is_file() for name in ("cameras", "images", "points3D")):
            return ext
    return None


# ----------------------------------------------------------------------------------- binary


def _read(fid: BinaryIO, fmt: str, path: Path) -> tuple:
    size = struct.calcsize("<" + fmt)
    data = fid.read(size)
    if len(data) != size:
        raise GenFusionError(
            "the COLMAP model file ends early (truncated or not a COLMAP binary file).",
            path=path,
            hint="Re-export the model from COLMAP (File > Export model) or use the text format.",
        )
    return struct.unpack("<" + fmt, data)


def _read_cstring(fid: BinaryIO, path: Path) -> str:
    chars = bytearray()
    while True:
        c = fid.read(1)
        if not c:
            _read(fid, "c", path)  # raises the truncation error
        if c == b"\x00":
            return chars.decode("utf-8")
        chars += c


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    with open(path, "rb") as fid:
        (count,) = _read(fid, "Q", path)
        for _ in range(count):
            camera_id, model_id, width, height = _read(fid, "iiQQ", path)
            if model_id not in CAMERA_MODELS:
                raise GenFusionError(
                    f"unknown COLMAP camera model id {model_id}.",
                    path=path,
                    hint="Is this a COLMAP cameras.bin?",
                )
            name, num_params = CAMERA_MODELS[model_id]
            params = np.array(_read(fid, "d" * num_params, path))
            cameras[camera_id] = ColmapCamera(camera_id, name, int(width), int(height), params)
    return cameras


def read_images_binary(path: Path) -> dict[int, ColmapImage]:
    images = {}
    with open(path, "rb") as fid:
        (count,) = _read(fid, "Q", path)
        for _ in range(count):
            values = _read(fid, "idddddddi", path)
            name = _read_cstring(fid, path)
            (num_points2d,) = _read(fid, "Q", path)
            fid.seek(num_points2d * struct.calcsize("<ddq"), 1)  # x, y, point3D id: unused here
            image_id, camera_id = values[0], values[8]
            images[image_id] = ColmapImage(
                image_id, np.array(values[1:5]), np.array(values[5:8]), camera_id, name
            )
    return images


def read_points3d_binary(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """(xyz, rgb, ids, tracks: the image ids that saw each point). Points are parsed from one
    in-memory buffer (unpack_from per point): big models have hundreds of thousands of them, and
    per-point file reads would dominate."""
    data = path.read_bytes()
    if len(data) < 8:
        with open(path, "rb") as fid:
            _read(fid, "Q", path)  # raises the truncation error
    (count,) = struct.unpack_from("<Q", data, 0)
    record = struct.Struct("<QdddBBBdQ")
    track_entry = struct.calcsize("<ii")  # (image id, point2D idx) per observation
    tracks: list[np.ndarray] = []
    ids = np.zeros(count, np.int64)
    xyz = np.zeros((count, 3))
    rgb = np.zeros((count, 3), np.uint8)
    offset = 8
    try:
        for i in range(count):
            values = record.unpack_from(data, offset)
            ids[i], xyz[i], rgb[i] = values[0], values[1:4], values[4:7]
            start, length = offset + record.size, values[8]
            if start + length * track_entry > len(data):
                raise struct.error("truncated track")
            entries = np.frombuffer(data, "<i4", count=2 * length, offset=start)
            tracks.append(np.unique(entries[0::2]).astype(np.int64))
            offset = start + length * track_entry
    except struct.error:
        offset = len(data) + 1
    if offset > len(data):
        with open(path, "rb") as fid:
            fid.seek(len(data))
            _read(fid, "Q", path)  # raises the truncation error
    return xyz, rgb, ids, tracks


# ------------------------------------------------------------------------------------- text


def _text_lines(path: Path) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8") as fid:
        for line in fid:
            line = line.strip()
            if line and not line.startswith("#"):
                rows.append(line.split())
    return rows


def _text_error(path: Path, detail: str) -> GenFusionError:
    return GenFusionError(
        f"cannot parse this COLMAP text file ({detail}).",
        path=path,
        hint="Check the file was written by COLMAP's text export and is not truncated.",
    )


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for row in _text_lines(path):
        try:
            camera_id, model, width, height = int(row[0]), row[1], int(row[2]), int(row[3])
            params = np.array([float(v) for v in row[4:]])
        except (ValueError, IndexError) as err:
            raise _text_error(path, f"line {' '.join(row)!r}: {err}") from None
        if model not in MODEL_IDS:
            raise _text_error(path, f"unknown camera model {model!r}")
        if len(params) != CAMERA_MODELS[MODEL_IDS[model]][1]:
            raise _text_error(
                path, f"camera {camera_id}: {model} takes {CAMERA_MODELS[MODEL_IDS[model]][1]} params"
            )
        cameras[camera_id] = ColmapCamera(camera_id, model, width, height, params)
    return cameras


def read_images_text(path: Path) -> dict[int, ColmapImage]:
    """images.txt has two lines per image (pose line, then observations); the observation line
    may be empty, so lines are parsed by shape rather than by strict alternation."""
    images = {}
    with open(path, encoding="utf-8") as fid:
        lines = [line.rstrip("\n") for line in fid if not line.startswith("#")]
    i = 0
    while i < len(lines):
        row = lines[i].split()
        i += 1
        if not row:
            continue
        if len(row) < 10:
            raise _text_error(path, f"image line {' '.join(row)!r} has {len(row)} fields, expected 10")
        try:
            image_id, camera_id = int(row[0]), int(row[8])
            qvec = np.array([float(v) for v in row[1:5]])
            tvec = np.array([float(v) for v in row[5:8]])
        except ValueError as err:
            raise _text_error(path, f"image line {' '.join(row)!r}: {err}") from None
        images[image_id] = ColmapImage(image_id, qvec, tvec, camera_id, " ".join(row[9:]))
        i += 1  # skip the POINTS2D line that follows every image line
    return images


def read_points3d_text(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """(xyz, rgb, ids, tracks): a line is ``id x y z r g b error (image_id point2d_idx)*``."""
    rows = _text_lines(path)
    try:
        ids = np.array([int(r[0]) for r in rows], np.int64)
        xyz = np.array([[float(v) for v in r[1:4]] for r in rows]).reshape(-1, 3)
        rgb = np.array([[int(v) for v in r[4:7]] for r in rows], np.uint8).reshape(-1, 3)
        tracks = [np.unique(np.array([int(v) for v in r[8::2]], np.int64)) for r in rows]
    except (ValueError, IndexError) as err:
        raise _text_error(path, str(err)) from None
    return xyz, rgb, ids, tracks


def read_model(model_dir: Path) -> ColmapModel:
    """Parse cameras, images and points3D (binary preferred when both forms exist)."""
    ext = model_extension(model_dir)
    if ext is None:
        raise GenFusionError(
            "no COLMAP model here (need cameras, images and points3D as .bin or .txt).",
            path=model_dir,
            hint="Point at the folder that holds sparse/0, or run `genfusion poses` on the photos.",
        )
    if ext == ".bin":
        cameras = read_cameras_binary(model_dir / "cameras.bin")
        images = read_images_binary(model_dir / "images.bin")
        xyz, rgb, ids, tracks = read_points3d_binary(model_dir / "points3D.bin")
    else:
        cameras = read_cameras_text(model_dir / "cameras.txt")
        images = read_images_text(model_dir / "images.txt")
        xyz, rgb, ids, tracks = read_points3d_text(model_dir / "points3D.txt")
    return ColmapModel(cameras, images, xyz, rgb, ids, tracks)


# --------------------------------------------------------------------------- camera models


def colmap_to_opencv(
    model: str, params: np.ndarray, source: Path | str = ""
) -> tuple[np.ndarray, np.ndarray | None]:
    """(K in COLMAP's pixel-corner convention, OpenCV distortion or None) for a COLMAP camera.

    OpenCV coefficient order is (k1, k2, p1, p2[, k3, k4, k5, k6]); FULL_OPENCV is OpenCV's rational
    model with the same meaning. Fisheye and FOV models have no OpenCV pinhole equivalent.
    """
    p = np.asarray(params, dtype=np.float64)
    if model == "SIMPLE_PINHOLE":
        return intrinsics_matrix(p[0], p[0], p[1], p[2]), None
    if model == "PINHOLE":
        return intrinsics_matrix(p[0], p[1], p[2], p[3]), None
    if model == "SIMPLE_RADIAL":
        return intrinsics_matrix(p[0], p[0], p[1], p[2]), np.array([p[3], 0.0, 0.0, 0.0])
    if model == "RADIAL":
        return intrinsics_matrix(p[0], p[0], p[1], p[2]), np.array([p[3], p[4], 0.0, 0.0])
    if model == "OPENCV":
        return intrinsics_matrix(p[0], p[1], p[2], p[3]), p[4:8].copy()
    if model == "FULL_OPENCV":
        return intrinsics_matrix(p[0], p[1], p[2], p[3]), p[4:12].copy()
    raise GenFusionError(
        f"camera model {model} is not supported (supported: {', '.join(SUPPORTED_MODELS)}).",
        path=source or None,
        hint="Fisheye-type cameras: undistort the images first (colmap image_undistorter) and load "
        "the undistorted folder.",
    )


def read_colmap_scene(root: Path, model_dir: Path | None = None) -> Scene:
    """Cameras (full declared resolution, images under ``root/images``), points and colours.

    Images are sorted by name; K is converted to the pixel-centre convention.
    """
    model_dir = model_dir or find_model_dir(root)
    if model_dir is None:
        raise GenFusionError(
            "no COLMAP model found (looked for sparse/0 and sparse with cameras/images/points3D).",
            path=root,
            hint="Point at a COLMAP project folder, or run `genfusion poses` on the photos first.",
        )
    model = read_model(model_dir)
    if not model.images:
        raise GenFusionError(
            "the COLMAP model has no registered images.",
            path=model_dir,
            hint="Re-run the reconstruction; the mapper registered nothing.",
        )
    images_dir = root / "images"
    cameras = []
    for image in sorted(model.images.values(), key=lambda im: im.name):
        if image.camera_id not in model.cameras:
            raise GenFusionError(
                f"image '{image.name}' refers to camera {image.camera_id}, which cameras file lacks.",
                path=model_dir,
                hint="The model is inconsistent; re-export it from COLMAP.",
            )
        cam = model.cameras[image.camera_id]
        K, distortion = colmap_to_opencv(
            cam.model, cam.params, model_dir / f"cameras{model_extension(model_dir)}"
        )
        worldtocam = np.eye(4)
        worldtocam[:3, :3] = qvec_to_rotmat(image.qvec)
        worldtocam[:3, 3] = image.tvec
        if not (np.all(np.isfinite(image.qvec)) and np.all(np.isfinite(image.tvec))):
            camtoworld = np.full((4, 4), np.nan)
        elif np.linalg.norm(image.qvec) < 1e-12:
            camtoworld = np.zeros((4, 4))
        else:
            camtoworld = np.linalg.inv(worldtocam)
        camtoworld = validate_pose(camtoworld, image.name, model_dir / f"images{model_extension(model_dir)}")
        cameras.append(
            Camera(
                camtoworld=camtoworld,
                K=K,
                width=cam.width,
                height=cam.height,
                image_path=images_dir / image.name,
                distortion=distortion,
                model=cam.model,
                name=image.name,
                camera_id=cam.camera_id,
            )
        )
    has_points = len(model.points) > 0
    tracks = None
    if has_points and len(model.tracks) == len(model.points):
        # image ids -> indices of the name-sorted cameras (ids of images not loaded are dropped)
        by_name = sorted(model.images.values(), key=lambda im: im.name)
        index_of = {image.image_id: k for k, image in enumerate(by_name)}
        tracks = PointTracks.from_lists(
            [[index_of[i] for i in track.tolist() if i in index_of] for track in model.tracks]
        )
    return Scene(
        cameras=cameras,
        root=root,
        format="colmap",
        points=model.points if has_points else None,
        point_colors=(model.colors.astype(np.float32) / 255.0) if has_points else None,
        point_tracks=tracks,
    )
