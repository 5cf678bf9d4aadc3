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

This module holds :class:`JobViewer`, one job's viewer and its state; what it draws (pure
conversions and server-side renders) is in :mod:`app.viewer_render`, and :class:`app.viewer_hub.ViewerHub`
owns the viewers of all jobs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.camera_path import Keyframe, keyframe_from_viser, load_keyframes, save_keyframes
from app.fusion_task import read_rounds
from app.tasks import CACHE_DIR, CAMERA_PATH_NAME, LiveSplats, SceneCameras, _loaded_run
from app.viewer_render import (
    GENERATED_COLOR,
    KEYFRAME_COLOR,
    RENDER_MODES,
    TEST_COLOR,
    TRAIN_COLOR,
    render_mode_image,
    scene_frame,
    thumbnail,
    vertical_fov,
    viser_gaussians,
    wxyz_of,
)
from genfusion.data.types import Scene
from genfusion.errors import GenFusionError
from genfusion.progress import ProgressEvent

logger = logging.getLogger(__name__)

_BANNER_LOCK = threading.Lock()


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


__all__ = ["JobViewer", "StreamStats"]
