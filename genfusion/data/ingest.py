"""Uploads in: a folder of photos, a .zip of photos or a video -> one clean folder of images.

This is the first step of the unposed path (see :mod:`genfusion.data.sfm`). Whatever the user
hands us, the result is a flat folder of decodable images with natural-sorted, unique names,
written atomically (a temp folder inside the output folder, renamed on success):

- a folder: its image files (or those of its ``images/`` sub-folder); any other visible file is
  an error, since silently skipping a user's file hides mistakes;
- a zip: checked *before* extraction against zip-slip (absolute or ``..`` member paths) and zip
  bombs (total declared size, per-member compression ratio), then extracted while counting the
  bytes actually written, because a crafted archive can lie in its central directory;
- a video: frames sampled at ``fps`` per second of video; within each sampling window only the
  sharpest frame (variance of the Laplacian) is kept, and kept frames far blurrier than the
  typical kept frame are dropped.

Images are copied byte for byte when nothing needs changing (keeping EXIF, whose focal length
COLMAP uses as a prior) and re-encoded when they need an EXIF rotation applied, a downscale, or
a format COLMAP may not read.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from genfusion.data.safezip import ZipLimits, extract_zip
from genfusion.data.video import VIDEO_SUFFIXES, ImageSize, fit_long_side, sample_video
from genfusion.errors import GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent, emit

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# Formats written unchanged; anything else is re-encoded as PNG so every COLMAP build reads it.
PASSTHROUGH_SUFFIXES = (".jpg", ".jpeg", ".png")
# Operating-system litter that is never a user's file: skipped silently everywhere.
IGNORED_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}


@dataclass
class IngestConfig:
    """How uploads are turned into a folder of images."""

    fps: float = 2.0  # video: frames kept per second of video (one per sampling window)
    max_frames: int | None = None  # video: keep at most this many frames, spread evenly
    max_size: int | None = None  # downscale so the long side is at most this many pixels
    min_relative_sharpness: float = 0.35  # video: drop kept frames below this x the median sharpness
    max_zip_bytes: int = 4 * 1024**3  # zip: refuse archives declaring more uncompressed bytes
    max_zip_ratio: float = 200.0  # zip: refuse members compressed more than this (bomb sign)
    ratio_check_min_bytes: int = 1024**2  # zip: members smaller than this skip the ratio check
    jpeg_quality: int = 95  # quality of re-encoded / extracted video frames


@dataclass
class IngestResult:
    """What :func:`ingest` produced."""

    images_dir: Path  # the folder holding the clean images
    names: list[str]  # image file names inside ``images_dir``, in capture order
    kind: str  # "folder", "zip" or "video"
    sizes: dict[str, ImageSize] = field(default_factory=dict)  # name -> (width, height)
    sharpness: dict[str, float] = field(default_factory=dict)  # video: name -> Laplacian variance
    video_frames_read: int = 0  # video: frames decoded in total
    video_frames_skipped_blurry: int = 0  # video: kept windows dropped as too blurry
    notes: list[str] = field(default_factory=list)  # remarks worth showing the user


# ----------------------------------------------------------------------------- small helpers


def natural_key(name: str) -> list:
    """Sort key that orders 'img2' before 'img10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_ignored(name: str) -> bool:
    """Hidden files, macOS resource forks and OS thumbnails: never the user's photos."""
    base = name.rstrip("/").split("/")[-1]
    return base.startswith(".") or base.startswith("._") or base.lower() in IGNORED_NAMES


def input_kind(path: Path) -> str:
    """'folder', 'zip' or 'video' for a user's input; a clear error otherwise."""
    if not path.exists():
        raise GenFusionError("does not exist.", path=path, hint="Check the path and try again.")
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return "zip"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise GenFusionError(
        f"is not a folder, a .zip or a video ({', '.join(VIDEO_SUFFIXES)}).",
        path=path,
        hint="Pass a folder of photos, a zip of photos or a video file.",
    )


# ----------------------------------------------------------------------------- images


def open_verified_image(path: Path, shown_as: str | Path):
    """Fully decode an image with PIL (truncated files fail here): returns (upright PIL image,
    raw EXIF bytes or None, whether an EXIF rotation was applied); errors name ``shown_as``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            exif = image.info.get("exif")
            rotated = image.getexif().get(0x0112, 1) not in (0, 1)  # EXIF orientation tag
            upright = ImageOps.exif_transpose(image) if rotated else image.copy()
            return upright, exif, rotated
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise GenFusionError(
            f"is not a readable image ({err}).",
            path=shown_as,
            hint="Remove or replace the corrupt file and try again.",
        ) from None


def write_clean_image(
    src: Path, dst_dir: Path, name: str, config: IngestConfig, shown_as: str | Path
) -> tuple[str, ImageSize]:
    """Verify ``src`` decodes and put it into ``dst_dir``; returns (written name, (w, h)).

    Copied byte for byte when possible; re-encoded (same name stem) when it needs an EXIF
    rotation, a downscale or a format change.
    """
    image, exif, rotated = open_verified_image(src, shown_as)
    size = fit_long_side(image.width, image.height, config.max_size)
    suffix = Path(name).suffix.lower()
    if not rotated and size == image.size and suffix in PASSTHROUGH_SUFFIXES:
        shutil.copyfile(src, dst_dir / name)
        return name, size
    from PIL import Image

    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    if suffix in (".jpg", ".jpeg"):
        out_name = name
        image.save(dst_dir / out_name, quality=config.jpeg_quality, exif=_exif_without_rotation(exif))
    else:
        out_name = str(Path(name).with_suffix(".png"))
        image.save(dst_dir / out_name)
    return out_name, size


def _exif_without_rotation(exif: bytes | None) -> bytes:
    """EXIF bytes with the orientation tag reset (the pixels are already upright)."""
    if not exif:
        return b""
    from PIL import Image

    tags = Image.Exif()
    tags.load(exif)
    tags[0x0112] = 1
    return tags.tobytes()


def _image_root(folder: Path) -> Path:
    """The folder whose files are the photos: ``folder`` itself when it holds images, else its
    ``images/`` sub-folder (a scene folder), else its only sub-folder (a zip that wraps
    everything in one directory)."""
    entries = [p for p in folder.iterdir() if not is_ignored(p.name)]
    if any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in entries):
        return folder
    if (folder / "images").is_dir():
        return folder / "images"
    dirs = [p for p in entries if p.is_dir()]
    if len(dirs) == 1 and not any(p.is_file() for p in entries):
        return _image_root(dirs[0])
    return folder


def list_folder_images(folder: Path, shown_as: Path | None = None) -> list[Path]:
    """Image files of a folder in natural order; errors for empty folders and stray files."""
    shown_root = shown_as or folder
    root = _image_root(folder)
    images, strays = [], []
    for path in root.iterdir():
        if is_ignored(path.name) or path.is_dir():
            continue
        (images if path.suffix.lower() in IMAGE_SUFFIXES else strays).append(path)
    if strays:
        stray = sorted(strays, key=lambda p: natural_key(p.name))[0]
        raise GenFusionError(
            f"is not an image ({', '.join(IMAGE_SUFFIXES)}), but lies among the photos"
            f" ({len(strays)} such file(s)).",
            path=shown_root / stray.relative_to(folder),
            hint="Move every non-image file out of the folder (or zip) and try again.",
        )
    if not images:
        raise GenFusionError(
            "contains no images.",
            path=shown_root,
            hint=f"Put the photos ({', '.join(IMAGE_SUFFIXES)}) directly in the folder, or in an"
            " images/ sub-folder.",
        )
    return sorted(images, key=lambda p: natural_key(p.name))


def copy_images(
    sources: list[Path],
    dst_dir: Path,
    config: IngestConfig,
    progress: ProgressCallback | None,
    shown_root: Path,
    source_root: Path,
) -> tuple[list[str], dict[str, ImageSize]]:
    """Verify and copy every image; names stay unique after any format change."""
    names: list[str] = []
    sizes: dict[str, ImageSize] = {}
    for index, src in enumerate(sources):
        shown = shown_root / src.relative_to(source_root)
        name, size = write_clean_image(src, dst_dir, src.name, config, shown)
        if name in sizes:  # e.g. a.webp and a.png both became a.png
            raise GenFusionError(
                f"clashes with another photo named {name} after conversion.",
                path=shown,
                hint="Rename one of the two files.",
            )
        names.append(name)
        sizes[name] = size
        emit(progress, ProgressEvent("ingest", index + 1, len(sources), f"checked {src.name}"))
    return names, sizes


# ----------------------------------------------------------------------------- entry point


def ingest(
    source: str | Path,
    out_dir: str | Path,
    *,
    config: IngestConfig | None = None,
    progress: ProgressCallback | None = None,
    images_subdir: str = "images",
) -> IngestResult:
    """Turn a folder, zip or video into ``out_dir/<images_subdir>/``, atomically.

    Everything is written to a temp folder inside ``out_dir`` and renamed into place only when
    every image has been verified, so a failure leaves ``out_dir`` as it was.
    """
    config = config or IngestConfig()
    source = Path(source)
    out_dir = Path(out_dir)
    kind = input_kind(source)
    final = out_dir / images_subdir
    if final.exists():
        raise GenFusionError(
            "already exists.", path=final, hint="Choose an empty output folder or remove it first."
        )
    created_out_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ingest-", dir=out_dir))
    ok = False
    try:
        staged = work / "images"
        staged.mkdir()
        if kind == "video":
            samples = sample_video(
                source,
                staged,
                fps=config.fps,
                max_frames=config.max_frames,
                max_size=config.max_size,
                min_relative_sharpness=config.min_relative_sharpness,
                jpeg_quality=config.jpeg_quality,
                progress=progress,
            )
            result = IngestResult(
                images_dir=staged,
                names=samples.names,
                kind="video",
                sizes=samples.sizes,
                sharpness=samples.sharpness,
                video_frames_read=samples.frames_read,
                video_frames_skipped_blurry=samples.skipped_blurry,
                notes=samples.notes,
            )
        else:
            if kind == "zip":
                extracted = work / "extracted"
                extracted.mkdir()
                limits = ZipLimits(
                    max_total_bytes=config.max_zip_bytes,
                    max_ratio=config.max_zip_ratio,
                    ratio_check_min_bytes=config.ratio_check_min_bytes,
                    skip=is_ignored,
                )
                extract_zip(source, extracted, limits)
                folder, shown = extracted, source
            else:
                folder, shown = source, source
            sources = list_folder_images(folder, shown_as=shown)
            root = _image_root(folder)
            names, sizes = copy_images(
                sources, staged, config, progress, shown / root.relative_to(folder), root
            )
            result = IngestResult(images_dir=staged, names=names, kind=kind, sizes=sizes)
        staged.rename(final)
        result.images_dir = final
        ok = True
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not ok and created_out_dir and not any(out_dir.iterdir()):
            out_dir.rmdir()  # leave no trace of a failed run
