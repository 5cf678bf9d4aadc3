"""Novel camera paths for the fusion rounds: where the repair model is asked to look.

Pure functions of :class:`~genfusion.data.types.Camera` lists (OpenCV axes, camera-to-world 4x4),
one per protocol of method.md:

- :func:`ellipse_path` (sparse views): an ellipse fitted to the input camera centres, around the
  scene's focus, every camera looking at it, tilted differently each round so that successive
  rounds repair different views;
- :func:`full_frame_path` (masked input): the training poses at full frame, the field of view the
  masked windows never showed;
- :func:`orbit_path` and :func:`look_further_path` (scene completion): around the focus at a
  chosen elevation, and backed away from the captured views so regions never seen come into view;
- :func:`interpolate_path`: a smooth path through the inputs (the spline of
  :mod:`genfusion.data.camera_path`, which also reads and writes user paths).

Every generated camera is virtual: it links to no image file (so nothing downstream can load
pixels a protocol must not see) and is named ``<kind>_r<round>_f<frame>``, e.g.
``ellipse_r02_f017``, so frames of different rounds never collide. Intrinsics come from one
reference input camera; :meth:`Camera.resized` renders a path at another size.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy.spatial.transform import Rotation

from genfusion.data.camera_path import interpolate_cameras
from genfusion.data.splits import Split
from genfusion.data.types import Camera, Scene
from genfusion.errors import GenFusionError

GOLDEN_ANGLE_DEG = 180.0 * (3.0 - math.sqrt(5.0))  # ~137.5 degrees: successive rounds never line up
MIN_AXIS_RATIO = 0.1  # an ellipse axis is at least this fraction of the other (collinear captures loop)
PARALLEL_AXES = (
    1e-4  # optical axes count as parallel below this (smallest eigenvalue of the normal matrix / N)
)


def frame_name(kind: str, round_index: int, frame: int) -> str:
    """``ellipse_r02_f017``: the name of frame ``frame`` of round ``round_index``'s ``kind`` path."""
    return f"{kind}_r{round_index:02d}_f{frame:03d}"


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _perpendicular(n: np.ndarray) -> np.ndarray:
    """Some unit vector perpendicular to the unit vector ``n``."""
    helper = np.eye(3)[int(np.argmin(np.abs(n)))]
    return _unit(np.cross(n, helper))


def _check(cameras: list[Camera], count: int | None = None) -> None:
    if not cameras:
        raise GenFusionError("no input cameras to build a camera path from.")
    if count is not None and count < 1:
        raise GenFusionError(f"a camera path needs at least one frame (got {count}).")


def camera_up(cameras: list[Camera]) -> np.ndarray:
    """The mean up direction of the cameras in world coordinates (OpenCV: up is the image's -y)."""
    _check(cameras)
    ups = -np.stack([c.rotation[:, 1] for c in cameras])
    mean = ups.mean(axis=0)
    return _unit(mean) if np.linalg.norm(mean) > 1e-6 else _unit(ups[0])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world at ``eye`` looking at ``target``, its image's -y as close to ``up``
    as the view direction allows (looking straight along ``up``, any roll is taken)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    if np.linalg.norm(z) < 1e-12:
        raise GenFusionError("a path camera sits exactly on the point it should look at.")
    z = _unit(z)
    x = np.cross(z, up)  # right = forward x up (OpenCV: y down)
    x = _unit(x) if np.linalg.norm(x) > 1e-6 else _perpendicular(z)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, np.cross(z, x), z, eye
    return c2w


def _virtual(reference: Camera, c2w: np.ndarray, name: str) -> Camera:
    """A camera with ``reference``'s intrinsics and image size at pose ``c2w``, linked to no file."""
    return Camera(
        camtoworld=c2w, K=reference.K.copy(), width=reference.width, height=reference.height, name=name
    )


def _along(
    reference: Camera, points: np.ndarray, focus: np.ndarray, up: np.ndarray, kind: str, round_index: int
) -> list[Camera]:
    """Cameras at ``points`` looking at ``focus``, upright along ``up``, named frame by frame."""
    return [
        _virtual(reference, look_at(p, focus, up), frame_name(kind, round_index, i))
        for i, p in enumerate(points)
    ]


def _reference(cameras: list[Camera], index: int) -> Camera:
    if not -len(cameras) <= index < len(cameras):
        raise GenFusionError(f"reference camera {index} is out of range for {len(cameras)} cameras.")
    return cameras[index]


def interpolate_path(
    cameras: list[Camera],
    count: int,
    *,
    round_index: int = 0,
    width: int | None = None,
    height: int | None = None,
) -> list[Camera]:
    """``count`` cameras moving smoothly through ``cameras`` in order (spline through the centres,
    slerp of rotations, even speed; see :func:`genfusion.data.camera_path.interpolate_cameras`),
    at ``width`` x ``height`` (default: the first camera's size)."""
    _check(cameras, count)
    width = width or cameras[0].width
    height = height or cameras[0].height
    frames = interpolate_cameras(cameras, count, width=width, height=height)
    return [replace(c, name=frame_name("interp", round_index, i)) for i, c in enumerate(frames)]


def scene_focus(cameras: list[Camera], *, fallback_distance: float | None = None) -> np.ndarray:
    """The point the cameras look at: least-squares closest to all optical axes, (3,).

    It minimises the summed squared distance to the axes (lines through each centre along its
    view direction). When the axes are (nearly) parallel, or the point lands behind the cameras
    (diverging axes of a forward-facing capture), there is no such focus; then it is the mean
    centre moved along the mean view direction by ``fallback_distance`` (default: the median
    distance of the centres from their mean, or 1 for a single camera position).
    """
    _check(cameras)
    centres = np.stack([c.center for c in cameras])
    dirs = np.stack([_unit(c.rotation[:, 2]) for c in cameras])
    projectors = (
        np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]
    )  # I - d d^T, onto each axis' normal plane
    A = projectors.sum(axis=0)
    b = np.einsum("nij,nj->i", projectors, centres)
    if np.linalg.eigvalsh(A).min() > PARALLEL_AXES * len(cameras):
        focus = np.linalg.solve(A, b)
        if np.median(np.einsum("nj,nj->n", focus - centres, dirs)) > 0:
            return focus
    mean = centres.mean(axis=0)
    distance = fallback_distance
    if distance is None:
        distance = float(np.median(np.linalg.norm(centres - mean, axis=1)))
        distance = distance if distance > 1e-9 else 1.0
    view = dirs.mean(axis=0)
    view = _unit(view) if np.linalg.norm(view) > 1e-6 else dirs[0]
    return mean + distance * view


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    return Rotation.from_rotvec(math.radians(degrees) * _unit(axis)).as_matrix()


def _camera_plane(centres: np.ndarray, up: np.ndarray, focus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normal, major axis) of the plane that best fits the centres (PCA), normal towards ``up``.

    Fewer than three distinct, non-collinear centres define no plane: then the normal is ``up``
    and the major axis the centres' main direction (or the direction from the focus) in that plane.
    """
    spread = centres - centres.mean(axis=0)
    _, s, Vt = np.linalg.svd(spread, full_matrices=True)
    if len(centres) >= 3 and s[0] > 1e-9 and s[1] > 1e-6 * s[0]:
        normal, major = Vt[2], Vt[0]
    else:
        normal = up
        major = Vt[0] if s[0] > 1e-9 else centres[0] - focus
    if normal @ up < 0:
        normal = -normal
    major = major - (major @ normal) * normal
    major = _unit(major) if np.linalg.norm(major) > 1e-9 else _perpendicular(normal)
    return normal, major


def ellipse_tilt(
    normal: np.ndarray,
    major: np.ndarray,
    tilt_deg: float,
    round_index: int,
    round_tilt_deg: float,
) -> np.ndarray:
    """The rotation (3x3) applied to the fitted ellipse about the focus in round ``round_index``.

    First ``tilt_deg`` about the ellipse's major axis (the same every round), then, from round 1
    on, ``round_tilt_deg`` about an in-plane axis whose azimuth advances by the golden angle each
    round: every round sees the scene from a differently tilted plane, and the tilt never exceeds
    ``|tilt_deg| + |round_tilt_deg|`` however many rounds there are.
    """
    base = _rotation(major, tilt_deg)
    if round_index <= 0 or round_tilt_deg == 0:
        return base
    a1, a2 = base @ major, base @ np.cross(normal, major)
    azimuth = math.radians(GOLDEN_ANGLE_DEG * round_index)
    axis = math.cos(azimuth) * a1 + math.sin(azimuth) * a2
    return _rotation(axis, round_tilt_deg) @ base


def ellipse_path(
    cameras: list[Camera],
    count: int = 85,
    tilt_deg: float = 0.0,
    round_index: int = 0,
    *,
    round_tilt_deg: float = 10.0,
    radius_scale: float = 1.0,
    reference: int = 0,
    focus: np.ndarray | None = None,
) -> list[Camera]:
    """GenFusion's sparse-view novel views: ``count`` cameras on an ellipse around the scene.

    The ellipse lies in the plane fitted to the camera centres (PCA), centred on the focus
    (:func:`scene_focus`) projected onto that plane; its axes follow the centres' main
    directions, each half-axis the 90th percentile of the centres' offsets along it (times
    ``radius_scale``). It is then tilted about the focus by :func:`ellipse_tilt` (``tilt_deg``,
    plus ``round_tilt_deg`` on a new axis each round). Every camera looks at the focus with the
    cameras' mean up vector; the path starts at the angle of ``cameras[reference]`` and uses its
    intrinsics.
    """
    _check(cameras, count)
    ref = _reference(cameras, reference)
    centres = np.stack([c.center for c in cameras])
    up = camera_up(cameras)
    focus = scene_focus(cameras) if focus is None else np.asarray(focus, dtype=np.float64)
    normal, major = _camera_plane(centres, up, focus)
    minor = np.cross(normal, major)
    origin = focus + ((centres.mean(axis=0) - focus) @ normal) * normal
    offsets = centres - origin
    x, y = offsets @ major, offsets @ minor
    radii = np.array([np.percentile(np.abs(x), 90), np.percentile(np.abs(y), 90)])
    if radii.max() < 1e-9:  # every centre on the focus' axis: circle at the cameras' distance
        radii[:] = max(float(np.linalg.norm(centres.mean(axis=0) - focus)), 1e-3)
    radii = np.maximum(radii, MIN_AXIS_RATIO * radii.max()) * radius_scale
    start = (ref.center - origin) @ np.stack([major, minor], axis=1) / radii
    theta = math.atan2(start[1], start[0]) + 2.0 * math.pi * np.arange(count) / count
    points = origin + radii[0] * np.cos(theta)[:, None] * major + radii[1] * np.sin(theta)[:, None] * minor
    tilt = ellipse_tilt(normal, major, tilt_deg, round_index, round_tilt_deg)
    points = focus + (points - focus) @ tilt.T
    return _along(ref, points, focus, up, "ellipse", round_index)


def full_frame_path(scene: Scene, split: Split, *, round_index: int = 0) -> list[Camera]:
    """The masked protocol's field-of-view extrapolation: every training pose of ``split`` at full
    frame (``scene.cameras[i]``, not the cropped window camera), in ``split.train`` order.

    The cameras link to no image: the full photo of a training view is exactly what the masked
    protocol hides, so no consumer of the path may be able to load it.
    """
    bad = [i for i in split.train if not 0 <= i < len(scene)]
    if bad:
        raise GenFusionError(
            f"split training indices {bad[:5]} are outside the scene's {len(scene)} cameras.",
            hint="Make the split from this scene.",
        )
    if not split.train:
        raise GenFusionError("the split has no training views to extrapolate from.")
    return [
        replace(
            scene.cameras[i],
            name=frame_name("fullframe", round_index, k),
            image_path=None,
            source_K=None,
            source_distortion=None,
            cache_dir=None,
        )
        for k, i in enumerate(split.train)
    ]


def orbit_path(
    cameras: list[Camera],
    count: int,
    elevation_deg: float | None = None,
    radius_scale: float = 1.0,
    *,
    arc_deg: float = 360.0,
    round_index: int = 0,
    reference: int = 0,
    focus: np.ndarray | None = None,
) -> list[Camera]:
    """``count`` cameras on a circle around the focus, looking at it, for scene completion.

    The circle is horizontal (perpendicular to the cameras' mean up), at ``elevation_deg`` above
    the focus (default: the cameras' median elevation), with radius ``radius_scale`` x the median
    distance of the cameras from the focus. It starts at the azimuth of ``cameras[reference]``
    and sweeps ``arc_deg`` (a full turn leaves out the repeated end point).
    """
    _check(cameras, count)
    ref = _reference(cameras, reference)
    up = camera_up(cameras)
    focus = scene_focus(cameras) if focus is None else np.asarray(focus, dtype=np.float64)
    offsets = np.stack([c.center for c in cameras]) - focus
    distances = np.linalg.norm(offsets, axis=1)
    radius = radius_scale * float(np.median(distances))
    if radius <= 1e-9:
        raise GenFusionError("the cameras sit on the focus point; an orbit needs a radius.")
    if elevation_deg is None:
        heights = (offsets @ up) / np.maximum(distances, 1e-12)
        elevation_deg = math.degrees(math.asin(float(np.clip(np.median(heights), -1.0, 1.0))))
    level = (ref.center - focus) - ((ref.center - focus) @ up) * up
    east = _unit(level) if np.linalg.norm(level) > 1e-9 else _perpendicular(up)
    north = np.cross(up, east)
    full_turn = abs(abs(arc_deg) - 360.0) < 1e-9
    steps = np.arange(count) / (count if full_turn or count == 1 else count - 1)
    azimuth = np.radians(arc_deg) * steps
    elevation = math.radians(elevation_deg)
    horizontal = np.cos(azimuth)[:, None] * east + np.sin(azimuth)[:, None] * north
    points = focus + radius * (math.cos(elevation) * horizontal + math.sin(elevation) * up)
    return _along(ref, points, focus, up, "orbit", round_index)


def look_further_path(
    cameras: list[Camera],
    count: int,
    distance_scale: float = 1.5,
    *,
    focal_scale: float = 1.0,
    ramp: bool = False,
    round_index: int = 0,
    focus: np.ndarray | None = None,
) -> list[Camera]:
    """The input trajectory backed away from the scene, for scene completion: what lies around and
    behind what was captured comes into view.

    The smooth path through the inputs (:func:`interpolate_path`) with each camera dollied
    backwards along its own optical axis, so its distance to the focus plane grows by
    ``distance_scale`` (orientation unchanged); ``focal_scale`` < 1 widens the field of view on
    top. With ``ramp`` the dolly grows from none at the first frame to the full amount at the
    last, so a clip starts on views the reconstruction knows.
    """
    _check(cameras, count)
    if distance_scale <= 0 or focal_scale <= 0:
        raise GenFusionError(
            f"distance_scale and focal_scale must be positive (got {distance_scale}, {focal_scale})."
        )
    focus = scene_focus(cameras) if focus is None else np.asarray(focus, dtype=np.float64)
    typical = float(np.median([np.linalg.norm(c.center - focus) for c in cameras])) or 1.0
    amounts = np.linspace(0.0, 1.0, count) if ramp and count > 1 else np.ones(count)
    out = []
    for i, camera in enumerate(interpolate_path(cameras, count)):
        forward = camera.rotation[:, 2]
        depth = max(float((focus - camera.center) @ forward), 0.1 * typical)  # focus behind: typical floor
        c2w = camera.camtoworld.copy()
        c2w[:3, 3] -= amounts[i] * (distance_scale - 1.0) * depth * forward
        K = camera.K.copy()
        K[0, 0] *= focal_scale
        K[1, 1] *= focal_scale
        out.append(replace(camera, camtoworld=c2w, K=K, name=frame_name("further", round_index, i)))
    return out


__all__ = [
    "camera_up",
    "ellipse_path",
    "ellipse_tilt",
    "frame_name",
    "full_frame_path",
    "interpolate_path",
    "look_at",
    "look_further_path",
    "orbit_path",
    "scene_focus",
]
