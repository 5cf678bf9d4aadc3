"""Image files: header sizes (no decoding), validated decoding, ``load_image`` with lazy
undistortion + downscaling and an on-disk cache, and the ``images_N`` folder choice.

Decoding uses PIL, which (unlike cv2.imread) raises on truncated files and does not apply EXIF
rotation, matching what COLMAP and the pose files assume.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from genfusion.atomic import atomic_path
from genfusion.data.geometry import resize_camera
from genfusion.data.types import Camera
from genfusion.data.undistort import undistort_pixels
from genfusion.errors import GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent, emit

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CACHE_VERSION = 2  # bump when load_image's processing changes, to invalidate old cache entries
# Cache entries are raw uint8 .npy (W*H*3 bytes each): reading one takes ~4 ms for 1080x1920,
# where a PNG entry took 70-170 ms, slower than redoing decode + undistortion (~80 ms).


def is_image_name(path: Path | str) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by extension, hidden files skipped), sorted by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and is_image_name(p) and not p.name.startswith(".")
    )


def _missing(path: Path) -> GenFusionError:
    return GenFusionError(
        "image file not found.", path=path, hint="Restore the file or remove its frame from the pose file."
    )


def _not_an_image(path: Path, detail: str) -> GenFusionError:
    return GenFusionError(
        f"is not a readable image ({detail}).",
        path=path,
        hint="Replace it with the original photo, or remove it (and its frame) from the capture.",
    )


def read_image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header only; raises GenFusionError for missing/non-image files."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return int(img.size[0]), int(img.size[1])
    except FileNotFoundError:
        raise _missing(path) from None
    except UnidentifiedImageError:
        raise _not_an_image(path, "unknown or corrupt file format") from None
    except OSError as err:
        raise _not_an_image(path, str(err)) from None


def decode_image(path: Path) -> np.ndarray:
    """The whole image as uint8 (H, W, 3) RGB; truncated/corrupt files raise GenFusionError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # forces a full decode: truncated data raises here
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey -> 8-bit RGB
                grey = (np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise _missing(path) from None
    except UnidentifiedImageError:
        raise _not_an_image(path, "unknown or corrupt file format") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL's decoders use all three
        raise _not_an_image(path, f"corrupt or truncated: {err}") from None


def _cache_path(camera: Camera) -> Path | None:
    if camera.cache_dir is None or camera.image_path is None:
        return None
    stat = camera.image_path.stat()
    key = json.dumps(
        [
            CACHE_VERSION,
            str(camera.image_path.resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            None if camera.source_K is None else camera.source_K.round(9).tolist(),
            None if camera.source_distortion is None else camera.source_distortion.round(12).tolist(),
            camera.K.round(9).tolist(),
            camera.width,
            camera.height,
        ]
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:20]
    return camera.cache_dir / f"{camera.image_path.stem}-{digest}.npy"


def _read_cached(path: Path, width: int, height: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        rgb = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged entry is simply recomputed
    if rgb.dtype != np.uint8 or rgb.shape != (height, width, 3):
        return None
    return rgb


def _write_cached(path: Path, rgb: np.ndarray) -> None:
    """Atomic write (temp file + rename) so a crash never leaves a half-written cache entry."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fid:
            np.save(fid, np.ascontiguousarray(rgb, dtype=np.uint8), allow_pickle=False)
    except OSError:
        pass  # a read-only or full disk only costs speed (atomic_path removed the temporary)


def _check_aspect(camera: Camera, file_w: int, file_h: int) -> None:
    """The file must be the camera's image at some scale (rounding of downscaled sizes allowed)."""
    if abs(file_w * camera.height - file_h * camera.width) > max(file_w, file_h, camera.width, camera.height):
        raise GenFusionError(
            f"has size {file_w}x{file_h}, which is not a scaled copy of the {camera.width}x{camera.height} "
            "image its camera expects.",
            path=camera.image_path,
            hint="Use images of the size the pose file was made for, or fix w/h in the pose file.",
        )


def load_image_uint8(camera: Camera) -> np.ndarray:
    """The camera's pixels as uint8 (height, width, 3) RGB: decoded, undistorted (when the camera
    says so), resized with cv2.INTER_AREA to (width, height), and cached when it was processed."""
    if camera.image_path is None:
        raise GenFusionError(
            f"camera '{camera.name}' has no image file (a virtual camera).",
            hint="Render it instead of loading it.",
        )
    cache = _cache_path(camera) if camera.image_path.is_file() else None
    if cache is not None:
        cached = _read_cached(cache, camera.width, camera.height)
        if cached is not None:
            return cached
    rgb = decode_image(camera.image_path)
    file_h, file_w = rgb.shape[:2]
    _check_aspect(camera, file_w, file_h)
    processed = False
    if camera.source_distortion is not None:
        source_K = camera.source_K if camera.source_K is not None else camera.K
        # undistort at the file's resolution (sharpest), into this camera's K rescaled to it
        full_res = resize_camera(camera, file_w, file_h)
        rgb = undistort_pixels(rgb, source_K, camera.source_distortion, full_res.K)
        processed = True
    if (file_w, file_h) != (camera.width, camera.height):
        rgb = cv2.resize(rgb, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
        processed = True
    if processed and cache is not None:
        _write_cached(cache, rgb)
    return np.ascontiguousarray(rgb)


def load_image(camera: Camera | Path | str) -> np.ndarray:
    """The camera's image as float32 (height, width, 3) in [0, 1] (see :func:`load_image_uint8`).

    Given a path instead of a camera it returns the file exactly as stored: no undistortion and
    no resizing, so pass the camera whenever the pixels must match its K.
    """
    if isinstance(camera, str | Path):
        return decode_image(Path(camera)).astype(np.float32) / 255.0
    return load_image_uint8(camera).astype(np.float32) / 255.0


def verify_images(cameras: Iterable[Camera], progress: ProgressCallback | None = None) -> None:
    """Fully decode every camera's file (catches truncated images up front, which header checks
    cannot); raises the first GenFusionError met."""
    cameras = list(cameras)
    for i, camera in enumerate(cameras):
        if camera.image_path is not None:
            decode_image(camera.image_path)
        emit(progress, ProgressEvent("data.verify", i + 1, len(cameras), camera.name))


_DOWNSCALED = re.compile(r"^(?P<base>.+)_(?P<factor>\d+)$")


def downscaled_folders(base: Path) -> dict[int, Path]:
    """{factor: folder}: ``base`` itself as factor 1 (when it exists) and its ``base_N`` siblings."""
    folders = {1: base} if base.is_dir() else {}
    if base.parent.is_dir():
        for sibling in base.parent.iterdir():
            match = _DOWNSCALED.match(sibling.name)
            if match and match["base"] == base.name and sibling.is_dir() and int(match["factor"]) > 1:
                folders[int(match["factor"])] = sibling
    return folders


def choose_factor(available: Iterable[int], downscale: int) -> int | None:
    """Which ``images_N`` to read for a wanted ``downscale``: exactly N when present, else the
    largest N below it (then resized on load), else the finest there is (lower resolution than
    asked; the loader notes it). None when nothing is available."""
    factors = sorted(set(available))
    if not factors:
        return None
    if downscale in factors:
        return downscale
    finer = [f for f in factors if f < downscale]
    return max(finer) if finer else min(factors)
