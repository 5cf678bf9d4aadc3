"""Sparse points for a posed capture that has none: SIFT matches triangulated at the known poses.

COLMAP captures come with sparse points and 3DGS starts from them; instant-ngp / nerfstudio
``transforms.json`` and LLFF ``poses_bounds.npy`` captures usually do not, and random
initialisation is the weak link there (measured on the fox, masked 1/2, 1,500 steps: 15.70 dB from
random points, 16.85 dB from COLMAP's points; with them the reprojection repairer gains 1.7 dB
instead of 0.02 dB, because the renders' depth is right). ``triangulate_points(scene)`` keeps the
poses and intrinsics as they are and only adds points, with pycolmap:

1. each photo as its camera sees it (undistorted, pinhole), at most ``max_image_size`` pixels on
   the long side, written as PNG into a temp folder;
2. SIFT features, one COLMAP camera per group of photos sharing intrinsics (the known K);
3. matching (exhaustive for small sets, sequential with a wide window otherwise) with geometric
   verification;
4. ``pycolmap.triangulate_points`` into a reconstruction holding the known poses (no bundle
   adjustment, so the points live in the capture's own world frame);
5. points seen by at least ``min_track_length`` photos with a mean reprojection error under
   ``max_reprojection_error`` pixels are kept, with their colours.

Nothing is written outside the temp folder, which is removed whatever happens.
:func:`genfusion.data.writers.write_points_ply` gives the result a home next to the pose file
(:data:`genfusion.data.transforms.POINTS_NAME`, nerfstudio's ``sparse_pc.ply``), where the
transforms and LLFF readers pick it up.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from genfusion.data.images import load_image_uint8, read_image_size
from genfusion.data.types import Camera, Scene
from genfusion.errors import Cancelled, GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent, emit


@dataclass
class TriangulateConfig:
    """Settings of :func:`triangulate_points`."""

    max_image_size: int = 1600  # long side SIFT sees; photos are never upscaled
    max_num_features: int = 8192  # SIFT features per photo
    exhaustive_max_images: int = 40  # up to this many photos every pair is matched, else sequential
    sequential_overlap: int = 15  # sequential matching: each photo against this many successors
    min_track_length: int = 2  # photos that must see a point for it to be kept
    max_reprojection_error: float = 2.0  # pixels; points reprojecting worse are dropped
    min_points: int = 50  # fewer kept points than this is an error (random init is better then)
    num_threads: int = 0  # CPU threads; 0 = every core this process may use


@dataclass
class TriangulatedPoints:
    """What :func:`triangulate_points` found."""

    points: np.ndarray  # (P, 3) float64 world positions, in the capture's frame
    colors: np.ndarray  # (P, 3) float32 RGB in [0, 1]
    num_images: int  # photos used
    mean_track_length: float  # photos per kept point
    mean_reprojection_error: float  # pixels, over the kept points
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time


def _feature_camera(camera: Camera, max_size: int) -> Camera:
    """``camera`` at the resolution SIFT runs on: its file's size (or its own when larger)
    capped at ``max_size`` on the long side, keeping the aspect ratio."""
    width, height = camera.width, camera.height
    if camera.image_path is not None and camera.image_path.is_file():
        file_w, file_h = read_image_size(camera.image_path)
        if abs(file_w / file_h - width / height) < 0.01:  # the same photo, stored larger
            width, height = max(width, file_w), max(height, file_h)
    scale = min(1.0, max_size / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return camera if size == (camera.width, camera.height) else camera.resized(*size)


def _pose(camera: Camera):
    import pycolmap

    worldtocam = camera.worldtocam
    return pycolmap.Rigid3d(pycolmap.Rotation3d(worldtocam[:3, :3]), worldtocam[:3, 3])


def _check(stop_check: Callable[[], bool] | None) -> None:
    if stop_check is not None and stop_check():
        raise Cancelled("triangulation was cancelled; nothing was written.", hint="Start it again.")


def triangulate_points(
    scene: Scene,
    *,
    config: TriangulateConfig | None = None,
    progress: ProgressCallback | None = None,
    stop_check: Callable[[], bool] | None = None,
) -> TriangulatedPoints:
    """Sparse points of ``scene`` from its photos at their known poses (see the module docstring).

    Progress stages: points.images, points.extract, points.match, points.triangulate.
    """
    from genfusion.data.sfm import SfMConfig, _cancellation, _prefixed, _Run, available_threads

    config = config or TriangulateConfig()
    cameras = [c for c in scene.cameras if c.image_path is not None and c.image_path.is_file()]
    if len(cameras) < 2:
        raise GenFusionError(
            f"triangulation needs at least 2 photos on disk; the scene has {len(cameras)}.",
            path=scene.root,
            hint="Check the capture's image folder, or train from random points.",
        )
    threads = config.num_threads or available_threads()
    work = Path(tempfile.mkdtemp(prefix="genfusion-points-"))
    try:
        with _cancellation(stop_check) as token:
            # sfm's stages (matching, cancellation) serve here too; only their settings differ
            matching = SfMConfig(sequential_overlap=config.sequential_overlap, num_threads=threads)
            run = _Run(matching, threads, _prefixed(progress, "points."), token)
            return _triangulate(cameras, work, config, run, stop_check)
    except InterruptedError:  # pycolmap's answer to a cancelled token
        raise Cancelled("triangulation was cancelled; nothing was written.", hint="Start it again.") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _triangulate(
    cameras: list[Camera],
    work: Path,
    config: TriangulateConfig,
    run,
    stop_check: Callable[[], bool] | None,
) -> TriangulatedPoints:
    """The body of :func:`triangulate_points`, working inside ``work``; ``run`` is sfm's
    ``_Run`` (threads, ``points.``-prefixed progress, cancellation token)."""
    import pycolmap

    from genfusion.data.sfm import _match, _quiet_pycolmap, choose_matcher

    progress = run.progress

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    images_dir = work / "images"
    images_dir.mkdir()
    feature_cameras, names = [], []
    for i, camera in enumerate(cameras):
        _check(stop_check)
        feature_camera = _feature_camera(camera, config.max_image_size)
        # decoded for SIFT once: not worth a copy in the capture's image cache
        rgb = load_image_uint8(replace(feature_camera, cache_dir=None))
        name = f"{i:06d}.png"
        cv2.imwrite(str(images_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        feature_cameras.append(feature_camera)
        names.append(name)
        emit(progress, ProgressEvent("images", i + 1, len(cameras), camera.name))
    seconds["images"] = time.perf_counter() - clock

    database = work / "database.db"
    with _quiet_pycolmap():
        clock = time.perf_counter()
        _extract_with_known_intrinsics(database, images_dir, names, feature_cameras, config, run)
        emit(progress, ProgressEvent("extract", 1, 1, f"SIFT features of {len(names)} photos"))
        seconds["extract"] = time.perf_counter() - clock
        _check(stop_check)
        clock = time.perf_counter()
        matcher = choose_matcher("auto", "folder", len(names), config.exhaustive_max_images)
        _match(run, database, matcher, len(names))
        seconds["match"] = time.perf_counter() - clock
        _check(stop_check)
        clock = time.perf_counter()
        reconstruction = _known_poses(database, names, feature_cameras)
        (work / "model").mkdir()
        options = pycolmap.IncrementalPipelineOptions(num_threads=run.threads)
        reconstruction = pycolmap.triangulate_points(
            reconstruction,
            database,
            images_dir,
            work / "model",
            options=options,
            cancellation_token=run.token,
        )
        emit(progress, ProgressEvent("triangulate", 1, 1, f"{reconstruction.num_points3D()} points"))
        seconds["triangulate"] = time.perf_counter() - clock
    return _kept_points(reconstruction, config, len(names), seconds)


def _extract_with_known_intrinsics(
    database: Path,
    images_dir: Path,
    names: list[str],
    cameras: list[Camera],
    config: TriangulateConfig,
    run,
) -> None:
    """SIFT into ``database``; photos sharing intrinsics share one PINHOLE camera holding them."""
    import pycolmap

    extraction = pycolmap.FeatureExtractionOptions(
        num_threads=run.threads, max_image_size=config.max_image_size
    )
    extraction.sift.max_num_features = config.max_num_features
    groups: dict[tuple, list[str]] = {}
    for name, camera in zip(names, cameras, strict=True):
        intrinsics = np.round([camera.fx, camera.fy, camera.K[0, 2], camera.K[1, 2]], 6)
        key = (camera.width, camera.height, *intrinsics)
        groups.setdefault(key, []).append(name)
    for key, group in groups.items():
        reader = pycolmap.ImageReaderOptions(
            camera_model="PINHOLE", camera_params=",".join(f"{v:.6f}" for v in key[2:])
        )
        pycolmap.extract_features(
            database,
            images_dir,
            image_names=group,
            camera_mode=pycolmap.CameraMode.SINGLE,
            reader_options=reader,
            extraction_options=extraction,
            device=pycolmap.Device.cpu,
            cancellation_token=run.token,
        )


def _known_poses(database: Path, names: list[str], cameras: list[Camera]):
    """A pycolmap reconstruction with the database's cameras and images at the known poses."""
    import pycolmap

    by_name = dict(zip(names, cameras, strict=True))
    reconstruction = pycolmap.Reconstruction()
    db = pycolmap.Database.open(database)
    try:
        added: set[int] = set()
        for entry in db.read_all_images():
            camera = by_name[entry.name]
            if entry.camera_id not in added:
                reconstruction.add_camera_with_trivial_rig(
                    pycolmap.Camera(
                        model="PINHOLE",
                        width=camera.width,
                        height=camera.height,
                        params=[camera.fx, camera.fy, camera.K[0, 2], camera.K[1, 2]],
                        camera_id=entry.camera_id,
                    )
                )
                added.add(entry.camera_id)
            image = pycolmap.Image(name=entry.name, camera_id=entry.camera_id, image_id=entry.image_id)
            reconstruction.add_image_with_trivial_frame(image, _pose(camera))
    finally:
        db.close()
    return reconstruction


def _kept_points(reconstruction, config: TriangulateConfig, num_images: int, seconds) -> TriangulatedPoints:
    """The well-observed, well-reprojecting points, or an error saying why there are too few."""
    points, colors, tracks, errors = [], [], [], []
    for point in reconstruction.points3D.values():
        length = point.track.length()
        if length >= config.min_track_length and point.error <= config.max_reprojection_error:
            points.append(point.xyz)
            colors.append(point.color)
            tracks.append(length)
            errors.append(point.error)
    if len(points) < config.min_points:
        raise GenFusionError(
            f"only {len(points)} points could be triangulated from {num_images} photos at their poses "
            f"(need {config.min_points}).",
            hint="The photos overlap too little, are too blurry, or the poses are off; "
            "training starts from random points then.",
        )
    return TriangulatedPoints(
        points=np.asarray(points, dtype=np.float64),
        colors=np.asarray(colors, dtype=np.float32) / 255.0,
        num_images=num_images,
        mean_track_length=float(np.mean(tracks)),
        mean_reprojection_error=float(np.mean(errors)),
        seconds=seconds,
    )


POINTS_CACHE_FOLDER = "points"  # inside a capture's cache folder: triangulated points, by content


def _cache_key(cameras: list[Camera], config: TriangulateConfig) -> str:
    """A digest of what the points depend on: every photo's file, pose, intrinsics and size, and
    the settings (so an edited pose file or other settings never reuse stale points)."""
    import hashlib

    digest = hashlib.sha256(repr(sorted(vars(config).items())).encode())
    for camera in cameras:
        stat = camera.image_path.stat()
        digest.update(f"{camera.image_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        for array in (camera.camtoworld, camera.K, camera.source_K, camera.source_distortion):
            if array is not None:
                digest.update(np.ascontiguousarray(array, dtype=np.float64).round(9).tobytes())
        digest.update(f"{camera.width}x{camera.height}".encode())
    return digest.hexdigest()[:20]


def scene_with_points(
    scene: Scene,
    *,
    required: bool = False,
    config: TriangulateConfig | None = None,
    progress: ProgressCallback | None = None,
    stop_check: Callable[[], bool] | None = None,
) -> Scene:
    """``scene`` itself when it has sparse points, else a copy with points triangulated at its
    poses (cached in the photos' cache folder, keyed by their content, so a capture pays once).

    When triangulation cannot help (photos not on disk, too few points) the scene comes back
    without points and a note saying so, and training starts from random points; with
    ``required`` that is an error instead.
    """
    from genfusion.data.transforms import read_ply_points
    from genfusion.data.writers import write_points_ply

    if scene.has_points:
        return scene
    config = config or TriangulateConfig()
    on_disk = [c for c in scene.cameras if c.image_path is not None and c.image_path.is_file()]
    cache_dir = next((c.cache_dir for c in on_disk if c.cache_dir is not None), None)
    cached = None
    if cache_dir is not None and len(on_disk) >= 2:
        cached = Path(cache_dir) / POINTS_CACHE_FOLDER / f"{_cache_key(on_disk, config)}.ply"
        if cached.is_file():
            points, colors = read_ply_points(cached, cached)
            note = f"{len(points)} sparse points triangulated at the known poses (cached)."
            return replace(scene, points=points, point_colors=colors, notes=[*scene.notes, note])
        failed = cached.with_suffix(".failed")
        if failed.is_file() and not required:  # a capture triangulation cannot help is tried once
            return replace(scene, notes=[*scene.notes, failed.read_text()])
    try:
        found = triangulate_points(scene, config=config, progress=progress, stop_check=stop_check)
    except Cancelled:
        raise
    except GenFusionError as err:
        if required:
            raise
        note = f"no sparse points: triangulation at the known poses failed ({err})"
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.with_suffix(".failed").write_text(note)
        return replace(scene, notes=[*scene.notes, note])
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_points_ply(cached, found.points, found.colors)
    note = (
        f"{len(found.points)} sparse points triangulated at the known poses from {found.num_images} "
        f"photos (track {found.mean_track_length:.1f} photos, error {found.mean_reprojection_error:.2f} px)."
    )
    return replace(scene, points=found.points, point_colors=found.colors, notes=[*scene.notes, note])
