"""The live viewer: one viser server per job, bound to 127.0.0.1 on a free port and reached
through the app's own port (:mod:`app.proxy` forwards ``/viewer/<job id>/`` to it).

What it shows:

- the current Gaussians, streamed while the job trains. The job's ``reconstruct`` events carry a
  :class:`app.tasks.LiveSplats`; at most every ``interval_s`` seconds (and once at the end) the
  training thread copies the parameters to the CPU (a memory copy), and a viewer thread turns
  them into viser's splat buffer and sends it, so training waits only for the copy
  (``benchmarks/bench_viewer.py`` measures the slowdown);
- the input cameras as frusta with their photos (training views grey, test views blue);
- a fusion job's generated views (magenta): the latest round's novel cameras, from its
  ``fusion.round`` event (a finished job's from ``fusion_rounds.json``), with the share of their
  pixels that was unreliable before repair;
- controls: pause / resume streaming, and a render mode: RGB (splats drawn by the browser) or
  depth / alpha / normals / unreliable (the pixels a fusion round would repair, tinted magenta),
  rendered on the server from the browser's camera by the library's rasteriser at a small size,
  only while such a mode is selected;
- a camera-path editor: add a keyframe from the current view, delete the last one, clear, save
  ``camera_path.json`` (nerfstudio format) into the job folder, load it back.

:class:`ViewerHub` owns the viewers: it listens to every job's events, makes a viewer when a job
starts training, makes one on demand for a finished job (read from its folder), and closes the
least recently used viewers of finished jobs beyond ``max_viewers``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.camera_path import Keyframe, keyframe_from_viser, load_keyframes, save_keyframes
from app.fusion_task import read_rounds
from app.jobs import Job, JobManager
from app.tasks import CACHE_DIR, CAMERA_PATH_NAME, LiveSplats, SceneCameras, _loaded_run
from genfusion.data.types import Camera, Scene
from genfusion.errors import GenFusionError
from genfusion.progress import ProgressEvent

logger = logging.getLogger(__name__)

RENDER_MODES = ("RGB (splats)", "depth", "alpha", "normals", "unreliable")
UNRELIABLE_TINT = np.array([255, 0, 200], dtype=np.float32)  # what the fusion loop would repair
TRAIN_COLOR = (200, 200, 200)
TEST_COLOR = (60, 140, 255)
KEYFRAME_COLOR = (255, 150, 0)
GENERATED_COLOR = (230, 60, 200)  # the fusion round's novel views (rendered, repaired, trained on)
_BANNER_LOCK = threading.Lock()


# ----------------------------------------------------------------------------- conversions


def viser_gaussians(
    splats: Mapping[str, torch.Tensor], method: str, max_gaussians: int | None = None
) -> dict[str, np.ndarray]:
    """Raw gsplat-style parameters -> what ``scene.add_gaussian_splats`` takes: centres (N, 3),
    covariances (N, 3, 3), base colours (N, 3) and opacities (N, 1). 2DGS surfels become flat 3D
    Gaussians (as in the .ply export); beyond ``max_gaussians`` the least visible are left out."""
    from genfusion.export.splats import prepare_splats
    from genfusion.splat.projection import quat_to_rotmat
    from genfusion.splat.sh import sh_to_rgb

    data = prepare_splats(splats, method=method)
    opacities = torch.sigmoid(data.opacities)
    means, quats, log_scales, sh0 = data.means, data.quats, data.scales, data.sh0
    if max_gaussians is not None and data.num > max_gaussians:
        importance = opacities * torch.exp(log_scales.sum(dim=1))
        keep = torch.topk(importance, max_gaussians).indices
        means, quats, log_scales, sh0, opacities = (
            t[keep] for t in (means, quats, log_scales, sh0, opacities)
        )
    rotations = quat_to_rotmat(quats)
    variances = torch.exp(2.0 * log_scales)
    covariances = (rotations * variances[:, None, :]) @ rotations.transpose(1, 2)
    return {
        "centers": means.numpy().astype(np.float32),
        "covariances": covariances.numpy().astype(np.float32),
        "rgbs": sh_to_rgb(sh0[:, 0, :]).clamp(0, 1).numpy().astype(np.float32),
        "opacities": opacities[:, None].numpy().astype(np.float32),
    }


def wxyz_of(rotation: np.ndarray) -> np.ndarray:
    import viser.transforms as vtf

    return vtf.SO3.from_matrix(np.asarray(rotation, dtype=np.float64)).wxyz


def vertical_fov(camera: Camera) -> float:
    return 2.0 * math.atan(0.5 * camera.height / camera.fy)


def scene_frame(cameras: list[Camera]) -> tuple[np.ndarray, np.ndarray, float]:
    """(up direction, a point the cameras look at, scene size) from the input cameras: up is the
    mean of the cameras' up axes (-y in OpenCV), the target the point nearest to every optical
    axis (least squares), or the centroid for nearly parallel axes."""
    rotations = np.stack([c.rotation for c in cameras])
    centres = np.stack([c.center for c in cameras])
    up = -rotations[:, :, 1].mean(axis=0)
    up = up / max(np.linalg.norm(up), 1e-9)
    forwards = rotations[:, :, 2]
    system = np.zeros((3, 3))
    rhs = np.zeros(3)
    for centre, forward in zip(centres, forwards, strict=True):
        projector = np.eye(3) - np.outer(forward, forward)
        system += projector
        rhs += projector @ centre
    size = float(np.linalg.norm(centres.max(axis=0) - centres.min(axis=0))) or 1.0
    target = centres.mean(axis=0)
    if np.linalg.cond(system) < 1e6:
        solved = np.linalg.solve(system, rhs)
        if np.linalg.norm(solved - target) < 3 * size:
            target = solved
    return up, target, size


def thumbnail(camera: Camera, max_side: int = 96) -> np.ndarray | None:
    """The camera's photo as a small uint8 image (None when it cannot be read)."""
    import cv2

    from genfusion.data.images import load_image

    try:
        image = load_image(camera)
    except GenFusionError:
        return None
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale < 1.0:
        size = (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def colorize(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A [H, W] array -> [H, W, 3] uint8, percentile-normalised through a blue-yellow ramp."""
    stops = np.array([[0.05, 0.05, 0.3], [0.1, 0.4, 0.8], [0.2, 0.8, 0.6], [0.95, 0.9, 0.25]])
    out = np.zeros((*values.shape, 3), dtype=np.float32)
    if valid.any():
        lo, hi = np.percentile(values[valid], [2, 98])
        t = np.clip((values - lo) / max(hi - lo, 1e-9), 0, 1) * (len(stops) - 1)
        index = np.minimum(t.astype(int), len(stops) - 2)
        frac = (t - index)[..., None]
        out = stops[index] * (1 - frac) + stops[index + 1] * frac
        out[~valid] = 0
    return (out * 255).astype(np.uint8)


def render_mode_image(
    splats: Mapping[str, torch.Tensor], method: str, camera: Camera, mode: str
) -> np.ndarray:
    """Depth, alpha, normals or the unreliable pixels of ``splats`` seen from ``camera``, as a uint8
    image. ``unreliable``: the colour render with the pixels the fusion loop counts as unreliable
    (:func:`genfusion.fusion.expansion.unreliable_mask`: low alpha or no depth) tinted magenta."""
    from genfusion.fusion.expansion import unreliable_mask
    from genfusion.splat.cameras import camera_tensors
    from genfusion.splat.depth_normals import depth_to_normal
    from genfusion.splat.render import render_splats

    viewmats, Ks = camera_tensors([camera], "cpu")
    degree = math.isqrt((splats["shN"].shape[1] if "shN" in splats else 0) + 1) - 1
    with torch.no_grad():
        out = render_splats(splats, viewmats, Ks, camera.width, camera.height, sh_degree=degree, mode=method)
    alpha = out.alpha[0, ..., 0].numpy()
    if mode == "unreliable":
        rgb = out.rgb[0].clamp(0, 1).numpy() * 255
        mask = unreliable_mask(out.alpha[0], out.depth[0]).numpy()
        rgb[mask] = 0.35 * rgb[mask] + 0.65 * UNRELIABLE_TINT
        return rgb.astype(np.uint8)
    if mode == "alpha":
        return (np.repeat(alpha[..., None], 3, axis=2) * 255).astype(np.uint8)
    depth = out.depth[0]
    if mode == "depth":
        return colorize(depth[..., 0].numpy(), alpha > 0.05)
    normals = (
        out.normals
        if out.normals is not None
        else depth_to_normal(depth[None], torch.linalg.inv(viewmats), Ks)
    )
    normals = normals[0].numpy()
    image = ((normals * 0.5 + 0.5) * 255).clip(0, 255).astype(np.uint8)
    image[alpha < 0.05] = 0
    return image


# ----------------------------------------------------------------------------- one viewer


@dataclass
class StreamStats:
    """What streaming cost the training thread (read by the benchmark and the UI)."""

    pushes: int = 0  # snapshots handed to the viewer thread
    copy_seconds: float = 0.0  # time the training thread spent copying parameters
    convert_seconds: float = 0.0  # time the viewer thread spent converting + sending
    last_step: int = 0  # the training step of the last snapshot shown
    last_count: int = 0  # Gaussians in it


class JobViewer:
    """A viser server showing one job."""

    def __init__(
        self,
        job_id: str,
        folder: Path,
        *,
        interval_s: float = 2.0,
        max_gaussians: int = 500_000,
        render_side: int = 192,
    ):
        import viser

        self.job_id = job_id
        self.folder = folder
        self.interval_s = interval_s
        self.max_gaussians = max_gaussians
        self.render_side = render_side
        self.stats = StreamStats()
        with _BANNER_LOCK, contextlib.redirect_stdout(io.StringIO()):  # viser prints its own URL:
            self.server = viser.ViserServer(  # users reach it through /viewer/<job>/ instead
                host="127.0.0.1", port=0, verbose=False, label=f"GenFusion job {job_id[:8]}"
            )
        self.port = int(self.server.get_port())
        self.last_used = time.monotonic()
        self._closed = False
        self._cond = threading.Condition()
        self._pending_splats: tuple[dict[str, torch.Tensor], str, int] | None = None
        self._pending_cameras: SceneCameras | None = None
        self._pending_round: tuple[list[np.ndarray], str] | None = None  # generated cameras, status
        self._generated: list[Any] = []  # the last round's frusta
        self._fov_aspect = (math.radians(50.0), 4 / 3)  # of the input cameras, for generated views
        self._shown: tuple[dict[str, torch.Tensor], str] | None = None  # for server-side render modes
        self._splat_handle: Any = None
        self._start_view: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._status_parts: dict[str, str] = {}
        self._dirty_clients: set[int] = set()
        self._last_offer = -math.inf
        self._frustum_scale = 0.1
        self._render_height = 480
        self.keyframes: list[Keyframe] = []
        self._build_gui()
        self._thread = threading.Thread(target=self._work, name=f"viewer-{job_id[:8]}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ GUI

    def _build_gui(self) -> None:
        gui = self.server.gui
        self.status = gui.add_markdown("Waiting for the job to start training...")
        self.streaming = gui.add_checkbox(
            "Stream while training",
            initial_value=True,
            hint="Pause to look around without updates (training goes on).",
        )
        self.mode = gui.add_dropdown(
            "Render mode",
            RENDER_MODES,
            initial_value=RENDER_MODES[0],
            hint="Depth / alpha / normals are rendered on the server.",
        )
        self.show_cameras_box = gui.add_checkbox("Show input cameras", initial_value=True)
        self.show_generated_box = gui.add_checkbox(
            "Show generated views",
            initial_value=True,
            hint="A fusion job's latest round: the novel views it rendered, repaired and trained on.",
        )

        @self.show_generated_box.on_update
        def _(_event) -> None:
            for frustum in self._generated:
                frustum.visible = self.show_generated_box.value

        @self.mode.on_update
        def _(_event) -> None:
            self._mode_changed()

        @self.show_cameras_box.on_update
        def _(_event) -> None:
            for handle in getattr(self, "_frusta", []):
                handle.visible = self.show_cameras_box.value

        with gui.add_folder("Camera path", expand_by_default=False):
            self.path_status = gui.add_markdown("No keyframes.")
            add = gui.add_button("Add keyframe (current view)")
            delete = gui.add_button("Delete last keyframe")
            clear = gui.add_button("Clear path")
            save = gui.add_button("Save camera_path.json")
            load = gui.add_button("Load camera_path.json")

        @add.on_click
        def _(event) -> None:
            if event.client is None:
                return
            camera = event.client.camera
            self.add_keyframe(keyframe_from_viser(camera.wxyz, camera.position, camera.fov, camera.aspect))

        @delete.on_click
        def _(_event) -> None:
            if self.keyframes:
                self.keyframes.pop()
            self._draw_path()

        @clear.on_click
        def _(_event) -> None:
            self.keyframes.clear()
            self._draw_path()

        @save.on_click
        def _(_event) -> None:
            try:
                path = self.save_camera_path()
                self.path_status.content = f"Saved {len(self.keyframes)} keyframes to `{path.name}`."
            except GenFusionError as err:
                self.path_status.content = f"Not saved: {err}"

        @load.on_click
        def _(_event) -> None:
            try:
                self.load_camera_path()
            except GenFusionError as err:
                self.path_status.content = f"Not loaded: {err}"

        @self.server.on_client_connect
        def _(client) -> None:
            self._place(client)

            @client.camera.on_update
            def _(_camera) -> None:
                if self.mode.value != RENDER_MODES[0]:
                    with self._cond:
                        self._dirty_clients.add(client.client_id)
                        self._cond.notify()

    def _place(self, client: Any) -> None:
        """Put a client's camera at the start view (once the input cameras are known)."""
        if self._start_view is None:
            return
        position, target, up = self._start_view
        client.camera.up_direction = tuple(float(v) for v in up)
        client.camera.position = tuple(float(v) for v in position)
        client.camera.look_at = tuple(float(v) for v in target)

    # ------------------------------------------------------------------ camera path

    def add_keyframe(self, keyframe: Keyframe) -> None:
        self.keyframes.append(keyframe)
        self._draw_path()

    def save_camera_path(self) -> Path:
        """``camera_path.json`` in the job folder, through the keyframes so far."""
        return save_keyframes(self.folder / CAMERA_PATH_NAME, self.keyframes, height=self._render_height)

    def load_camera_path(self) -> None:
        self.keyframes = load_keyframes(self.folder / CAMERA_PATH_NAME)
        self._draw_path()

    def _draw_path(self) -> None:
        scene = self.server.scene
        for handle in getattr(self, "_path_handles", []):
            handle.remove()
        self._path_handles = []
        for index, key in enumerate(self.keyframes):
            self._path_handles.append(
                scene.add_camera_frustum(
                    f"/camera_path/key_{index}",
                    fov=key.fov,
                    aspect=key.aspect,
                    scale=self._frustum_scale * 1.3,
                    color=KEYFRAME_COLOR,
                    wxyz=wxyz_of(key.camtoworld[:3, :3]),
                    position=key.camtoworld[:3, 3],
                )
            )
        if len(self.keyframes) >= 2:
            points = np.stack([k.camtoworld[:3, 3] for k in self.keyframes])
            self._path_handles.append(
                scene.add_spline_catmull_rom(
                    "/camera_path/spline", points, color=KEYFRAME_COLOR, line_width=3.0
                )
            )
        count = len(self.keyframes)
        self.path_status.content = f"{count} keyframe(s)." if count else "No keyframes."

    # ------------------------------------------------------------------ feeding

    def on_event(self, event: ProgressEvent) -> None:
        """A job event (called on the job's thread): cameras and throttled splat snapshots."""
        payload = event.payload
        if isinstance(payload, SceneCameras):
            with self._cond:
                self._pending_cameras = payload
                self._cond.notify()
        elif isinstance(payload, LiveSplats):
            final = event.total is not None and event.step >= event.total
            now = time.monotonic()
            if not final and (not self.streaming.value or now - self._last_offer < self.interval_s):
                return
            self._last_offer = now
            start = time.perf_counter()
            snapshot = payload.take()
            self.stats.copy_seconds += time.perf_counter() - start
            self.stats.pushes += 1
            with self._cond:
                self._pending_splats = (snapshot, payload.method, event.step)
                self._cond.notify()
        elif event.stage == "fusion.round" and isinstance(payload, dict):
            cameras = [np.asarray(c, dtype=np.float64) for c in payload.get("cameras", [])]
            share = event.metrics.get("unreliable_before")
            text = f"Fusion round {int(payload.get('round', 0)) + 1}: {len(cameras)} generated views"
            if share is not None:
                text += f", {100 * share:.0f}% unreliable before repair"
            with self._cond:
                self._pending_round = (cameras, text)
                self._cond.notify()
        if event.stage == "job":
            self._set_status(job=f"**{event.message}**")

    def show_splats(self, splats: Mapping[str, torch.Tensor], method: str, step: int) -> None:
        """Replace the shown Gaussians (any thread)."""
        start = time.perf_counter()
        arrays = viser_gaussians(splats, method, self.max_gaussians)
        self._splat_handle = self.server.scene.add_gaussian_splats(
            "/splats", **arrays, visible=self.mode.value == RENDER_MODES[0]
        )
        self._shown = ({k: v for k, v in splats.items()}, method)
        self.stats.convert_seconds += time.perf_counter() - start
        self.stats.last_step, self.stats.last_count = step, len(arrays["centers"])
        self._set_status(splats=f"step {step}: {self.stats.last_count:,} Gaussians ({method})")
        self._mark_all_dirty()

    def _set_status(self, **parts: str) -> None:
        self._status_parts.update(parts)
        lines = [self._status_parts[k] for k in ("job", "splats", "fusion") if self._status_parts.get(k)]
        self.status.content = "  \n".join(lines) or "Waiting for the job to start training..."

    def show_cameras(
        self, scene: Scene, train_ids: tuple[int, ...] = (), test_ids: tuple[int, ...] = ()
    ) -> None:
        """Frusta with photos for the input cameras; sets the up direction and the start view."""
        cameras = list(scene.cameras)
        if not cameras:
            return
        up, target, size = scene_frame(cameras)
        self._frustum_scale = 0.04 * size
        self._render_height = cameras[0].height
        self._fov_aspect = (vertical_fov(cameras[0]), cameras[0].width / cameras[0].height)
        scene_api = self.server.scene
        scene_api.set_up_direction(tuple(float(v) for v in up))
        start = cameras[train_ids[0] if train_ids else 0]
        position = target + (start.center - target) * 1.6
        self._start_view = (position, target, up)
        self.server.initial_camera.position = tuple(float(v) for v in position)
        self.server.initial_camera.look_at = tuple(float(v) for v in target)
        self.server.initial_camera.up = tuple(float(v) for v in up)
        for client in self.server.get_clients().values():  # connected before the cameras were known
            self._place(client)
        test = set(test_ids)
        self._frusta = []
        for index, camera in enumerate(cameras):
            self._frusta.append(
                scene_api.add_camera_frustum(
                    f"/cameras/{index:04d}",
                    fov=vertical_fov(camera),
                    aspect=camera.width / camera.height,
                    scale=self._frustum_scale,
                    color=TEST_COLOR if index in test else TRAIN_COLOR,
                    image=thumbnail(camera),
                    wxyz=wxyz_of(camera.rotation),
                    position=camera.center,
                    visible=self.show_cameras_box.value,
                )
            )

    def show_generated(self, camtoworlds: list[np.ndarray], text: str) -> None:
        """Frusta for a fusion round's generated views (replacing the previous round's)."""
        for frustum in self._generated:
            frustum.remove()
        fov, aspect = self._fov_aspect
        self._generated = [
            self.server.scene.add_camera_frustum(
                f"/generated/{index:04d}",
                fov=fov,
                aspect=aspect,
                scale=0.8 * self._frustum_scale,
                color=GENERATED_COLOR,
                wxyz=wxyz_of(c2w[:3, :3]),
                position=c2w[:3, 3],
                visible=self.show_generated_box.value,
            )
            for index, c2w in enumerate(camtoworlds)
        ]
        self._set_status(fusion=text)

    # ------------------------------------------------------------------ server-side render modes

    def _mode_changed(self) -> None:
        rgb = self.mode.value == RENDER_MODES[0]
        if self._splat_handle is not None:
            self._splat_handle.visible = rgb
        if rgb:
            for client in self.server.get_clients().values():
                client.scene.set_background_image(None)
        self._mark_all_dirty()

    def _mark_all_dirty(self) -> None:
        if self.mode.value == RENDER_MODES[0]:
            return
        with self._cond:
            self._dirty_clients.update(self.server.get_clients().keys())
            self._cond.notify()

    def _render_for(self, client: Any) -> None:
        if self._shown is None:
            return
        splats, method = self._shown
        camera = client.camera
        height = self.render_side
        keyframe = keyframe_from_viser(camera.wxyz, camera.position, camera.fov, camera.aspect)
        image = render_mode_image(splats, method, keyframe.camera(height), self.mode.value)
        client.scene.set_background_image(image, format="png")

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        while True:
            with self._cond:
                while not (
                    self._closed
                    or self._pending_splats
                    or self._pending_cameras
                    or self._pending_round
                    or self._dirty_clients
                ):
                    self._cond.wait()
                if self._closed:
                    return
                cameras, self._pending_cameras = self._pending_cameras, None
                splats, self._pending_splats = self._pending_splats, None
                generated, self._pending_round = self._pending_round, None
                dirty, self._dirty_clients = self._dirty_clients, set()
            try:
                if cameras is not None:
                    self.show_cameras(cameras.scene, cameras.train_ids, cameras.test_ids)
                if splats is not None:
                    self.show_splats(*splats)
                if generated is not None:
                    self.show_generated(*generated)
                if dirty and self.mode.value != RENDER_MODES[0]:
                    clients = self.server.get_clients()
                    for client_id in dirty:
                        if client_id in clients:
                            self._render_for(clients[client_id])
                    time.sleep(0.2)  # at most ~5 server renders a second per viewer
            except Exception:  # a viewer problem must never reach the job
                logger.exception("viewer of job %s failed to update", self.job_id)

    def load_job_folder(self) -> None:
        """Show a finished job read from its folder: its cameras and its trained Gaussians."""
        from genfusion.data.load import load_scene
        from genfusion.splat.data_loader import split_indices

        run = _loaded_run(self.folder)
        scene_path = Path(run.scene.get("path", ""))
        if scene_path.exists():
            scene = load_scene(
                scene_path, downscale=int(run.scene.get("downscale", 1)), cache_dir=self.folder / CACHE_DIR
            )
            train, test = split_indices(scene, run.config.split)
            with self._cond:
                self._pending_cameras = SceneCameras(scene, tuple(train), tuple(test))
                self._pending_splats = (run.splats, run.method, run.step)
                self._cond.notify()
        else:
            with self._cond:
                self._pending_splats = (run.splats, run.method, run.step)
                self._cond.notify()
        rounds = read_rounds(self.folder)
        if rounds:
            last = rounds[-1]
            share = last["metrics"].get("unreliable_before")
            text = f"Fusion round {last['round'] + 1}: {len(last['cameras'])} generated views"
            text += "" if share is None else f", {100 * share:.0f}% unreliable before repair"
            with self._cond:
                self._pending_round = ([np.asarray(c, dtype=np.float64) for c in last["cameras"]], text)
                self._cond.notify()
        if (self.folder / CAMERA_PATH_NAME).is_file():
            try:
                self.load_camera_path()
            except GenFusionError as err:
                self.path_status.content = f"camera_path.json not loaded: {err}"

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until everything handed to the viewer has been shown (tests, benchmark)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                pending = (self._pending_splats, self._pending_cameras, self._pending_round)
                idle = all(item is None for item in pending)
            if idle:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=2.0)
        self.server.stop()


# ----------------------------------------------------------------------------- all viewers


class ViewerHub:
    """The viewers of all jobs: made when a job trains or when a finished job is opened."""

    def __init__(self, jobs: JobManager, *, max_viewers: int = 4, interval_s: float = 2.0):
        self.jobs = jobs
        self.max_viewers = max_viewers
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._viewers: OrderedDict[str, JobViewer] = OrderedDict()
        jobs.listeners.append(self.on_event)

    def on_event(self, job: Job, event: ProgressEvent) -> None:
        """Every job's events: the viewer is made at the job's ``capture`` event."""
        with self._lock:
            viewer = self._viewers.get(job.id)
        if viewer is None and isinstance(event.payload, SceneCameras):
            viewer = self._make(job)
        if viewer is not None:
            viewer.on_event(event)

    def _make(self, job: Job, *, from_folder: bool = False) -> JobViewer:
        viewer = JobViewer(job.id, job.folder, interval_s=self.interval_s)
        if from_folder:
            try:
                viewer.load_job_folder()
            except GenFusionError as err:
                viewer.status.content = f"Nothing to show: {err}"
        with self._lock:
            old = self._viewers.pop(job.id, None)
            self._viewers[job.id] = viewer
            evict = self._evictable()
        for stale in [old, *evict]:
            if stale is not None and stale is not viewer:
                stale.close()
        return viewer

    def _evictable(self) -> list[JobViewer]:
        """Least recently used viewers of finished jobs beyond the limit (under the lock)."""
        evicted = []
        for job_id in list(self._viewers):
            if len(self._viewers) - len(evicted) <= self.max_viewers:
                break
            try:
                finished = self.jobs.get(job_id).finished
            except GenFusionError:
                finished = True
            if finished:
                evicted.append(self._viewers.pop(job_id))
        return evicted

    def viewer(self, job_id: str) -> JobViewer:
        """The viewer of ``job_id`` (any session: the id is the capability), made on demand."""
        job = self.jobs.get(job_id)
        with self._lock:
            viewer = self._viewers.get(job.id)
            if viewer is not None:
                self._viewers.move_to_end(job.id)
        if viewer is None:
            viewer = self._make(job, from_folder=job.finished)
        viewer.last_used = time.monotonic()
        return viewer

    def port_of(self, job_id: str) -> int | None:
        """The local port of the job's viewer; None for an unknown job."""
        try:
            return self.viewer(job_id).port
        except GenFusionError:
            return None

    def close(self) -> None:
        with self._lock:
            viewers = list(self._viewers.values())
            self._viewers.clear()
        for viewer in viewers:
            viewer.close()


__all__ = [
    "RENDER_MODES",
    "JobViewer",
    "StreamStats",
    "ViewerHub",
    "render_mode_image",
    "scene_frame",
    "viser_gaussians",
]
