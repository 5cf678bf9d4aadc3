"""``load_scene``: detect a capture's format, read it, and settle every camera's pixels.

After loading, each camera describes exactly the image :func:`genfusion.data.load_image` returns:
the resolution asked for (``downscale``), pinhole when ``undistort`` is on. No pixels are decoded
here, only image headers (sizes), so loading is fast; undistortion and resizing happen lazily per
image and are cached on disk.

Missing images: a pose file naming files that do not exist is an error listing the first few,
unless ``allow_missing=True``, which drops those frames, keeps their names in
``scene.missing_images`` and adds a note. All frames missing is always an error.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

from genfusion.data.colmap import find_model_dir, read_colmap_scene
from genfusion.data.geometry import resize_camera
from genfusion.data.images import choose_factor, downscaled_folders, is_image_name, read_image_size
from genfusion.data.llff import POSES_NAME, read_llff_scene
from genfusion.data.transforms import TRANSFORMS_NAME, read_transforms_scene
from genfusion.data.types import Camera, Scene
from genfusion.data.undistort import undistort_camera
from genfusion.errors import GenFusionError

FORMATS = ("colmap", "transforms", "llff")
CACHE_FOLDER = ".genfusion_cache"  # default cache, inside the scene's own folder
_LOOKED_FOR = (
    "a COLMAP model (sparse/0/ or sparse/ with cameras, images, points3D as .bin or .txt), "
    "a transforms.json (nerfstudio / instant-ngp) or an LLFF poses_bounds.npy"
)
_MISSING_LISTED = 5  # how many missing files an error message names


def detect_format(path: Path | str) -> str:
    """ "colmap", "transforms" or "llff" from a folder's contents (that order of preference when
    several are present), or from a transforms.json / poses_bounds.npy file given directly."""
    path = Path(path)
    if not path.exists():
        raise GenFusionError("does not exist.", path=path, hint="Check the path of the scene folder.")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "transforms"
        if path.name == POSES_NAME:
            return "llff"
        raise GenFusionError(
            f"is a file, not a scene; looked for {_LOOKED_FOR}.",
            path=path,
            hint="Point at the scene folder (or at its transforms.json).",
        )
    if find_model_dir(path) is not None:
        return "colmap"
    if (path / TRANSFORMS_NAME).is_file():
        return "transforms"
    if (path / POSES_NAME).is_file():
        return "llff"
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise GenFusionError(
            f"the folder is empty; looked for {_LOOKED_FOR}.",
            path=path,
            hint="Copy the capture into it, or point at the folder that holds it.",
        )
    has_photos = any(is_image_name(p) for p in entries) or any(
        p.is_dir() and any(is_image_name(q) for q in p.iterdir()) for p in entries
    )
    hint = (
        "These look like unposed photos: run `genfusion poses` on them to estimate camera poses first."
        if has_photos
        else "Point at the folder that holds the capture."
    )
    raise GenFusionError(f"is not a scene folder; looked for {_LOOKED_FOR}.", path=path, hint=hint)


def _read(root: Path, fmt: str, downscale: int, json_path: Path | None) -> Scene:
    if fmt == "colmap":
        return read_colmap_scene(root)
    if fmt == "transforms":
        return read_transforms_scene(root, json_path)
    if fmt == "llff":
        return read_llff_scene(root, downscale)
    raise GenFusionError(f"unknown format {fmt!r}.", hint=f"Use one of {', '.join(FORMATS)}.")


def _use_images_subdir(scene: Scene, images_subdir: str) -> list[Camera]:
    folder = scene.root / images_subdir
    if not folder.is_dir():
        raise GenFusionError(
            f"images_subdir '{images_subdir}' does not exist.",
            path=folder,
            hint="Give an existing folder name.",
        )
    return [replace(c, image_path=folder / Path(c.image_path).name) for c in scene.cameras]


def _use_downscaled_folders(cameras: list[Camera], downscale: int) -> tuple[list[Camera], list[str]]:
    """Point each camera at ``images_N`` (the folder matching ``downscale``) when one exists."""
    notes, out = [], []
    choices: dict[Path, tuple[int | None, dict[int, Path]]] = {}
    for camera in cameras:
        base = camera.image_path.parent
        if base not in choices:
            folders = downscaled_folders(base)
            choices[base] = (choose_factor(folders, downscale), folders)
            factor = choices[base][0]
            if factor not in (None, 1):
                notes.append(
                    f"reading {folders[factor].name}/ instead of {base.name}/ (downscale {downscale})."
                )
        factor, folders = choices[base]
        if factor not in (None, 1):
            candidate = folders[factor] / camera.image_path.name
            if candidate.is_file():
                camera = replace(camera, image_path=candidate)
        out.append(camera)
    return out, notes


def _drop_missing(scene: Scene, allow_missing: bool, source: Path) -> Scene:
    missing = [i for i, c in enumerate(scene.cameras) if not c.image_path.is_file()]
    if not missing:
        return scene
    names = [str(scene.cameras[i].image_path) for i in missing]
    listed = ", ".join(names[:_MISSING_LISTED]) + (" ..." if len(names) > _MISSING_LISTED else "")
    if len(missing) == len(scene.cameras):
        raise GenFusionError(
            f"none of the {len(names)} images it references exist (e.g. {names[0]}).",
            path=source,
            hint="Put the photos where the pose file expects them (paths are relative to it).",
        )
    if not allow_missing:
        raise GenFusionError(
            f"references {len(names)} of {len(scene.cameras)} images that do not exist: {listed}.",
            path=source,
            hint="Restore those files, remove their frames from the pose file, or load with "
            "allow_missing=True (CLI: --allow-missing) to skip them.",
        )
    keep = [i for i in range(len(scene.cameras)) if i not in set(missing)]
    out = scene.subset(keep)
    out.missing_images = [scene.cameras[i].name for i in missing]
    out.notes = [*scene.notes, f"skipped {len(missing)} frames whose images are missing: {listed}."]
    return out


def _check_sizes(cameras: list[Camera]) -> list[tuple[int, int]]:
    """File sizes from headers; images sharing a camera must all have the same size."""
    sizes = [read_image_size(c.image_path) for c in cameras]
    by_camera: dict[int, list[int]] = defaultdict(list)
    for i, camera in enumerate(cameras):
        by_camera[camera.camera_id].append(i)
    for indices in by_camera.values():
        counts = Counter(sizes[i] for i in indices)
        if len(counts) > 1:
            (common, n_common), *_ = counts.most_common()
            odd = next(i for i in indices if sizes[i] != common)
            w, h = sizes[odd]
            raise GenFusionError(
                f"is {w}x{h} but {n_common} other images of the same camera are {common[0]}x{common[1]}.",
                path=cameras[odd].image_path,
                hint="Images sharing one camera's intrinsics must have one size: resize or re-export this "
                "photo, or give it its own intrinsics in the pose file.",
            )
    return sizes


def _check_file_matches(camera: Camera, file_w: int, file_h: int) -> None:
    if abs(file_w * camera.height - file_h * camera.width) > max(camera.width, camera.height, file_w, file_h):
        raise GenFusionError(
            f"is {file_w}x{file_h}, but the pose file declares {camera.width}x{camera.height} images "
            "(not a scaled copy).",
            path=camera.image_path,
            hint="Use the images the poses were estimated on, or fix the declared size (w/h).",
        )


def _default_cache(root: Path, notes: list[str]) -> Path | None:
    if os.access(root, os.W_OK):
        return root / CACHE_FOLDER
    notes.append(f"{root} is read-only: processed images are not cached (pass cache_dir to cache them).")
    return None


def load_scene(
    path: Path | str,
    *,
    downscale: int = 1,
    undistort: bool = True,
    cache_dir: Path | None = None,
    images_subdir: str | None = None,
    allow_missing: bool = False,
    format: str | None = None,
) -> Scene:
    """Read a capture folder (COLMAP, transforms.json or LLFF, detected from its contents).

    downscale: wanted resolution divisor; ``images_N`` folders are used when present, otherwise
        images are resized on load (never upsampled: a note says when less was available).
    undistort: turn distorted cameras into pinhole ones (images undistorted lazily on load).
    cache_dir: where processed images are cached; default ``<scene>/.genfusion_cache``.
    images_subdir: read photos from this folder of the scene instead of the format's default.
    allow_missing: skip frames whose photos are missing instead of raising.
    format: force "colmap", "transforms" or "llff" instead of detecting it.
    """
    path = Path(path)
    if int(downscale) < 1:
        raise GenFusionError(f"downscale must be 1 or more (got {downscale}).", hint="Use 1, 2, 4 or 8.")
    downscale = int(downscale)
    fmt = format or detect_format(path)
    json_path = path if path.is_file() and fmt == "transforms" else None
    root = path.parent if path.is_file() else path
    scene = _read(root, fmt, downscale, json_path)
    source = {"colmap": find_model_dir(root) or root, "transforms": json_path or root / TRANSFORMS_NAME}.get(
        fmt, root / POSES_NAME
    )
    notes = list(scene.notes)
    cameras = scene.cameras
    if images_subdir is not None:
        cameras = _use_images_subdir(scene, images_subdir)
    if fmt != "llff":  # the LLFF reader already chose its images_N folder (names differ per folder)
        cameras, folder_notes = _use_downscaled_folders(cameras, downscale)
        notes += folder_notes
    scene = _drop_missing(replace(scene, cameras=cameras, notes=notes), allow_missing, source)
    notes = list(scene.notes)
    sizes = _check_sizes(scene.cameras)
    cache = Path(cache_dir) if cache_dir is not None else _default_cache(root, notes)
    settled = []
    lower_res_noted = False
    for camera, (file_w, file_h) in zip(scene.cameras, sizes, strict=True):
        _check_file_matches(camera, file_w, file_h)
        want_w = max(1, round(camera.width / downscale))
        want_h = max(1, round(camera.height / downscale))
        if want_w > file_w:  # never upsample: the files are smaller than asked
            if not lower_res_noted:
                notes.append(
                    f"images on disk are {file_w}x{file_h}, smaller than the {want_w}x{want_h} asked."
                )
                lower_res_noted = True
            want_w, want_h = file_w, file_h
        camera = resize_camera(camera, file_w, file_h)  # K now describes the file as stored
        if undistort:
            camera = undistort_camera(camera)
        camera = resize_camera(camera, want_w, want_h)
        settled.append(replace(camera, cache_dir=cache))
    return replace(scene, cameras=settled, notes=notes)
