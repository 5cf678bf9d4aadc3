"""Unposed photos, a zip or a video -> camera poses with pycolmap, as a COLMAP folder.

``estimate_poses(input, out_dir)`` runs the classic COLMAP pipeline on the CPU:

1. ingest (:mod:`genfusion.data.ingest`): a clean folder of verified images;
2. SIFT feature extraction, one camera shared by every image (a phone capture) by default;
3. matching: sequential for video frames (neighbours in time overlap), exhaustive for small
   unordered photo sets (every pair), sequential with a wide window for large photo sets;
4. incremental mapping; the model with the most registered images is kept;
5. ``out_dir/images/`` + ``out_dir/sparse/0/`` (binary), the layout the COLMAP reader loads,
   plus ``out_dir/sfm_report.json`` (registered / unregistered images, settings, timings).

Everything is produced in a temp folder inside ``out_dir`` and moved into place only on success,
so a failed or cancelled (``stop_check``) run leaves no half-written model, and nothing is
written outside ``out_dir``. When the input's photos already are ``out_dir/images`` they are
verified and used where they are, and only ``sparse/0`` is added.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from genfusion.data.ingest import IngestConfig, IngestResult, ingest, list_folder_images, open_verified_image
from genfusion.errors import Cancelled, GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent, emit

MATCHERS = ("auto", "exhaustive", "sequential")
# COLMAP camera models worth offering for photos (the fisheye ones need a dedicated reader).
CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
REPORT_NAME = "sfm_report.json"


@dataclass
class SfMConfig:
    """Settings of the unposed path (feature extraction, matching, mapping)."""

    ingest: IngestConfig = field(default_factory=IngestConfig)  # how uploads become images
    matcher: str = "auto"  # "auto", "exhaustive" or "sequential" (auto: see choose_matcher)
    exhaustive_max_images: int = 40  # auto: photo sets up to this size match every pair (n^2 pairs)
    sequential_overlap: int = 10  # sequential: match each image with this many successors
    camera_model: str = "SIMPLE_RADIAL"  # COLMAP model; OPENCV for strong lens distortion
    single_camera: bool = True  # one camera for all images (one phone); False: one per image
    max_num_features: int = 8192  # SIFT features per image (fewer: faster, less robust)
    max_image_size: int = 3200  # SIFT runs on images downscaled to this long side
    num_threads: int = 0  # CPU threads; 0 = every core this process may use
    min_registered: int = 3  # fewer registered images than this is an error
    random_seed: int = 0  # mapper seed, for repeatable results
    overwrite: bool = False  # replace an existing images/ and sparse/ in out_dir


@dataclass
class SfMReport:
    """What a run did, saved as ``out_dir/sfm_report.json``."""

    input: str  # what the user passed
    input_kind: str  # "folder", "zip", "video" or "in-place"
    num_images: int  # images given to SfM
    registered: list[str]  # image names with a pose
    unregistered: list[str]  # image names SfM could not place
    matcher: str  # the matcher actually used
    camera_model: str  # COLMAP camera model
    num_points: int  # sparse points in the kept model
    num_models: int  # models the mapper produced (the largest is kept)
    mean_reprojection_error: float  # pixels
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time
    notes: list[str] = field(default_factory=list)  # remarks (blurry frames skipped, ...)

    @property
    def num_registered(self) -> int:
        return len(self.registered)


def available_threads() -> int:
    """Cores this process may run on (respects CPU affinity / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def choose_matcher(requested: str, input_kind: str, num_images: int, exhaustive_max_images: int) -> str:
    """Sequential for video frames, exhaustive for small photo sets, sequential otherwise."""
    if requested not in MATCHERS:
        raise GenFusionError(f"unknown matcher '{requested}'.", hint=f"Use one of {', '.join(MATCHERS)}.")
    if requested != "auto":
        return requested
    if input_kind == "video":
        return "sequential"
    return "exhaustive" if num_images <= exhaustive_max_images else "sequential"


def read_report(colmap_dir: str | Path) -> dict:
    """The ``sfm_report.json`` a run left in ``colmap_dir`` (as a plain dict)."""
    return json.loads((Path(colmap_dir) / REPORT_NAME).read_text())


@contextmanager
def _quiet_pycolmap() -> Iterator[None]:
    """Silence pycolmap's log lines below FATAL: progress goes through ProgressEvent, and its
    failures ("Failed to create any sparse model") become our own GenFusionError."""
    import pycolmap

    previous = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = max(previous, int(pycolmap.logging.FATAL))
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = previous


def _prefixed(progress: ProgressCallback | None, prefix: str) -> ProgressCallback | None:
    """A callback that forwards events with ``prefix`` added to their stage names."""
    if progress is None:
        return None
    return lambda event: progress(replace(event, stage=prefix + event.stage))


def _check_sizes(ingested: IngestResult, single_camera: bool, shown: Path) -> None:
    """One shared camera needs one image size; name the first image that differs."""
    if not single_camera or not ingested.names:
        return
    first = ingested.names[0]
    for name in ingested.names[1:]:
        if ingested.sizes[name] != ingested.sizes[first]:
            w, h = ingested.sizes[name]
            w0, h0 = ingested.sizes[first]
            raise GenFusionError(
                f"image {name} is {w}x{h} but {first} is {w0}x{h0}; one shared camera needs one size.",
                path=shown,
                hint="Use photos from one camera at one orientation, or run with one camera per image"
                " (--per-image-cameras).",
            )


def _in_place_images(source: Path, out_dir: Path, config: SfMConfig, progress) -> IngestResult | None:
    """When the input's photos already are ``out_dir/images``, verify them and use them as they
    are (the common "add sparse/ to my folder" case); None otherwise."""
    if not source.is_dir():
        return None
    target = (out_dir / "images").resolve()
    photos = list_folder_images(source) if target.is_dir() else []
    if not photos or photos[0].parent.resolve() != target:
        return None
    if config.ingest.max_size:
        raise GenFusionError(
            "cannot downscale photos in place.",
            path=target,
            hint="Choose another --out folder, or leave out --max-size.",
        )
    sizes = {}
    for index, photo in enumerate(photos):
        image, _, rotated = open_verified_image(photo, photo)
        if rotated:
            raise GenFusionError(
                "needs its EXIF rotation applied, which cannot be done in place.",
                path=photo,
                hint="Choose another --out folder so the photos are copied upright.",
            )
        sizes[photo.name] = image.size
        emit(progress, ProgressEvent("ingest", index + 1, len(photos), f"checked {photo.name}"))
    return IngestResult(images_dir=target, names=[p.name for p in photos], kind="in-place", sizes=sizes)


@dataclass
class _Run:
    """What every stage of one run needs."""

    config: SfMConfig  # the user's settings
    threads: int  # CPU threads for pycolmap
    progress: ProgressCallback | None  # stage-prefixed progress callback
    token: Any  # pycolmap.CancellationToken, cancelled when stop_check() says so


@contextmanager
def _cancellation(stop_check: Callable[[], bool] | None) -> Iterator[Any]:
    """A pycolmap cancellation token, cancelled by a watcher thread as soon as ``stop_check()``
    returns True (pycolmap's long C++ calls cannot poll Python themselves)."""
    import pycolmap

    token = pycolmap.CancellationToken()
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(0.1):
            if stop_check():
                token.cancel()
                return

    watcher = threading.Thread(target=watch, daemon=True) if stop_check else None
    if watcher:
        watcher.start()
    try:
        yield token
    finally:
        finished.set()
        if watcher:
            watcher.join()


def _cancelled_error() -> Cancelled:
    return Cancelled("pose estimation was cancelled; nothing was written.", hint="Start it again when ready.")


def _extract(run: _Run, database: Path, images: Path, names: list[str]) -> None:
    """SIFT features into the database, in chunks so progress advances per image group."""
    import pycolmap

    config, threads, progress = run.config, run.threads, run.progress

    extraction = pycolmap.FeatureExtractionOptions(num_threads=threads, max_image_size=config.max_image_size)
    extraction.sift.max_num_features = config.max_num_features
    # A chunk per call keeps all threads busy while still reporting progress ~25 times.
    chunk = max(2 * threads, math.ceil(len(names) / 25))
    mode = pycolmap.CameraMode.SINGLE if config.single_camera else pycolmap.CameraMode.PER_IMAGE
    emit(progress, ProgressEvent("extract", 0, len(names), "SIFT features"))
    for start in range(0, len(names), chunk):
        reader = pycolmap.ImageReaderOptions(camera_model=config.camera_model)
        if config.single_camera and start > 0:
            reader.existing_camera_id = 1  # later chunks reuse the first chunk's camera
        pycolmap.extract_features(
            database,
            images,
            image_names=names[start : start + chunk],
            camera_mode=mode,
            reader_options=reader,
            extraction_options=extraction,
            device=pycolmap.Device.cpu,
            cancellation_token=run.token,
        )
        done = min(start + chunk, len(names))
        emit(progress, ProgressEvent("extract", done, len(names), f"{done}/{len(names)} images"))


def _match(run: _Run, database: Path, matcher: str, num_images: int) -> None:
    """Exhaustive or sequential SIFT matching plus geometric verification."""
    import pycolmap

    config, threads, progress = run.config, run.threads, run.progress

    emit(progress, ProgressEvent("match", 0, 1, f"{matcher} matching of {num_images} images"))
    matching = pycolmap.FeatureMatchingOptions(num_threads=threads)
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(
            database, matching_options=matching, device=pycolmap.Device.cpu, cancellation_token=run.token
        )
    else:
        pairing = pycolmap.SequentialPairingOptions(
            overlap=config.sequential_overlap, quadratic_overlap=True, loop_detection=False
        )
        pycolmap.match_sequential(
            database,
            matching_options=matching,
            pairing_options=pairing,
            device=pycolmap.Device.cpu,
            cancellation_token=run.token,
        )
    emit(progress, ProgressEvent("match", 1, 1, "matched"))


def _map(run: _Run, database: Path, images: Path, models_dir: Path, total: int) -> dict:
    """Incremental mapping; returns every model found (index -> pycolmap.Reconstruction)."""
    import pycolmap

    config, threads, progress = run.config, run.threads, run.progress

    options = pycolmap.IncrementalPipelineOptions(
        num_threads=threads,
        random_seed=config.random_seed,
        # The default (10) silently drops small models; our floor is min_registered.
        min_model_size=max(2, config.min_registered),
    )
    attempts = [0]

    def on_next_image() -> None:  # called each time the mapper tries to place another image
        attempts[0] += 1
        step = min(attempts[0] + 1, total)  # the initial pair registers two images at once
        emit(progress, ProgressEvent("map", step, total, "registering images"))

    emit(progress, ProgressEvent("map", 0, total, "initial pair"))
    models = pycolmap.incremental_mapping(
        database, images, models_dir, options, next_image_callback=on_next_image, cancellation_token=run.token
    )
    emit(progress, ProgressEvent("map", total, total, "mapped"))
    return models


def _too_few_error(registered: int, total: int, matcher: str, kind: str, source: Path) -> GenFusionError:
    tips = [
        "photos with more overlap (each spot seen from 3+ nearby viewpoints)",
        "more photos",
        "sharper / higher-resolution photos (leave out --max-size or raise it)",
    ]
    if kind == "video":
        tips.append("a higher --fps so neighbouring frames overlap more")
    tips.append(
        "--matcher exhaustive"
        if matcher == "sequential"
        else "--matcher sequential if the photos are in order"
    )
    return GenFusionError(
        f"structure from motion placed only {registered} of {total} images (at least 3 are needed).",
        path=source,
        hint="Try " + "; ".join(tips) + ".",
    )


def estimate_poses(
    input: str | Path,
    out_dir: str | Path,
    *,
    config: SfMConfig | None = None,
    progress: ProgressCallback | None = None,
    stop_check: Callable[[], bool] | None = None,
) -> Path:
    """Estimate poses for a folder / zip of photos or a video; returns the COLMAP folder
    (``out_dir``, holding ``images/``, ``sparse/0/`` and ``sfm_report.json``).

    Progress stages: sfm.ingest, sfm.extract, sfm.match, sfm.map, sfm.write. ``stop_check()``
    returning True cancels the run (a GenFusionError says so; nothing is left behind).
    """
    config = config or SfMConfig()
    progress = _prefixed(progress, "sfm.")
    source, out_dir = Path(input), Path(out_dir)
    if config.camera_model not in CAMERA_MODELS:
        raise GenFusionError(
            f"unknown camera model '{config.camera_model}'.", hint=f"Use one of {', '.join(CAMERA_MODELS)}."
        )
    if config.matcher not in MATCHERS:
        raise GenFusionError(
            f"unknown matcher '{config.matcher}'.", hint=f"Use one of {', '.join(MATCHERS)}."
        )
    if not source.exists():
        raise GenFusionError("does not exist.", path=source, hint="Check the path and try again.")
    threads = config.num_threads or available_threads()

    created_out_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".sfm-", dir=out_dir))
    ok = False
    try:
        with _cancellation(stop_check) as token:
            result = _estimate(source, out_dir, work, _Run(config, threads, progress, token), stop_check)
        ok = True
        return result
    except InterruptedError:  # pycolmap's answer to a cancelled token
        raise _cancelled_error() from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not ok and created_out_dir and out_dir.exists() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a failed run into a new folder leaves nothing behind


def _estimate(
    source: Path, out_dir: Path, work: Path, run: _Run, stop_check: Callable[[], bool] | None
) -> Path:
    """The body of :func:`estimate_poses`, working inside ``work``."""
    config, progress = run.config, run.progress
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    ingested = _in_place_images(source, out_dir, config, progress)
    if ingested is None:
        for existing in ("images", "sparse"):
            if (out_dir / existing).exists() and not config.overwrite:
                raise GenFusionError(
                    "already exists.",
                    path=out_dir / existing,
                    hint="Choose an empty --out folder, or pass --overwrite to replace it.",
                )
        ingested = ingest(source, work, config=config.ingest, progress=progress)
    elif (out_dir / "sparse").exists() and not config.overwrite:
        raise GenFusionError(
            "already exists.", path=out_dir / "sparse", hint="Pass --overwrite to replace it."
        )
    _check_sizes(ingested, config.single_camera, source)
    seconds["ingest"] = time.perf_counter() - clock
    images, names = ingested.images_dir, ingested.names
    matcher = choose_matcher(config.matcher, ingested.kind, len(names), config.exhaustive_max_images)
    if stop_check is not None and stop_check():
        raise _cancelled_error()

    database = work / "database.db"
    with _quiet_pycolmap():
        clock = time.perf_counter()
        _extract(run, database, images, names)
        seconds["extract"] = time.perf_counter() - clock
        clock = time.perf_counter()
        _match(run, database, matcher, len(names))
        seconds["match"] = time.perf_counter() - clock
        clock = time.perf_counter()
        (work / "models").mkdir()
        models = _map(run, database, images, work / "models", len(names))
        seconds["map"] = time.perf_counter() - clock

    best = max(models.values(), key=lambda m: m.num_reg_images(), default=None)
    registered = best.num_reg_images() if best is not None else 0
    if registered < config.min_registered:
        raise _too_few_error(registered, len(names), matcher, ingested.kind, source)

    emit(progress, ProgressEvent("write", 0, 1, "writing sparse/0"))
    clock = time.perf_counter()
    sparse = work / "sparse" / "0"
    sparse.mkdir(parents=True)
    best.write_binary(sparse)
    seconds["write"] = time.perf_counter() - clock
    posed = {image.name for image in best.images.values() if image.has_pose}
    registered_names = [name for name in names if name in posed]
    report = SfMReport(
        input=str(source),
        input_kind=ingested.kind,
        num_images=len(names),
        registered=registered_names,
        unregistered=[name for name in names if name not in posed],
        matcher=matcher,
        camera_model=config.camera_model,
        num_points=best.num_points3D(),
        num_models=len(models),
        mean_reprojection_error=float(best.compute_mean_reprojection_error()),
        seconds=seconds,
        notes=list(ingested.notes),
    )
    if report.unregistered:
        report.notes.append(f"{len(report.unregistered)} image(s) could not be placed and are left out")
    if len(models) > 1:
        report.notes.append(f"the mapper found {len(models)} separate models; kept the largest")
    (work / REPORT_NAME).write_text(json.dumps(asdict(report), indent=2))

    _move_into_place(work, out_dir, move_images=ingested.kind != "in-place")
    emit(progress, ProgressEvent("write", 1, 1, f"{registered}/{len(names)} images registered"))
    return out_dir


def _move_into_place(work: Path, out_dir: Path, *, move_images: bool) -> None:
    """Swap the finished results into ``out_dir``; replaced ones go to ``work`` to be deleted."""
    trash = work / "replaced"
    trash.mkdir()
    entries = ["sparse", REPORT_NAME] + (["images"] if move_images else [])
    for entry in entries:
        if (out_dir / entry).exists():
            (out_dir / entry).rename(trash / entry)
        (work / entry).rename(out_dir / entry)
