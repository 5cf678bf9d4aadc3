"""The app's parts without a server: settings from the config, captures and bad input, the job
manager (queue, cancel, isolation, restart), camera paths, and the splat conversion of the viewer.

(No ``__init__.py`` in tests/app: a package named ``app`` there would shadow the real ``app``.)
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app import capture, params  # noqa: E402
from app.camera_path import Keyframe, keyframes_path, load_keyframes, save_keyframes  # noqa: E402
from app.jobs import JobManager, check_job_id  # noqa: E402
from app.studio import Studio, StudioSettings  # noqa: E402
from genfusion.errors import Cancelled, GenFusionError  # noqa: E402
from genfusion.progress import ProgressEvent  # noqa: E402
from genfusion.splat.config import ReconstructConfig  # noqa: E402

DEMO = REPO / "assets" / "demo" / "fox"


# ----------------------------------------------------------------------------- settings


def test_every_config_field_has_a_widget_spec_with_help():
    names = [item.name for item in params.config_specs()]
    assert names == list(ReconstructConfig.__dataclass_fields__)
    assert all(item.doc for item in params.config_specs())
    assert set(params.COMMON_FIELDS) <= set(names)


def test_widget_defaults_give_the_default_config():
    values = {}
    for item in params.config_specs():
        default = params.format_vector(item.default) if item.kind == "sequence" else item.default
        values[item.name] = default
    assert params.config_from_values(values, params.AppLimits()) == ReconstructConfig()


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"iterations": 0}, "--iterations"),
        ({"iterations": 10**9}, "limit"),
        ({"downscale": "eight"}, "--downscale"),
        ({"log_every": 0}, "--log-every"),
        ({"init_opacity": 1.5}, "--init-opacity"),
        ({"method": "4dgs"}, "--method"),
        ({"background": "1 1"}, "--background"),
        ({"split": "holdout1"}, "holdout"),
        ({"no_such_flag": 1}, "unknown setting"),
    ],
)
def test_out_of_range_settings_are_refused_with_the_flag_named(values, needle):
    with pytest.raises(GenFusionError, match=needle):
        params.config_from_values(values, params.AppLimits(max_iterations=100_000))


def test_optional_fields_left_empty_mean_automatic():
    config = params.config_from_values({"refine_every": "", "prune_opacity": None, "iterations": "50"})
    assert config.refine_every is None and config.prune_opacity is None and config.iterations == 50


# ----------------------------------------------------------------------------- captures


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 80, 20)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_zip_slip_is_refused_and_nothing_is_written_outside(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    evil = _zip(tmp_path / "evil.zip", {"photos/a.png": _png_bytes(), "../../escaped.png": _png_bytes()})
    with pytest.raises(GenFusionError, match="unsafe"):
        capture.upload_capture([evil], job)
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path.parent / "escaped.png").exists()
    assert not (job / "upload").exists()  # cleaned up


def test_non_image_uploads_are_refused(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(GenFusionError, match="notes.txt is not an image"):
        capture.upload_capture([text], job)
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"not a jpeg at all")
    others = [tmp_path / f"{i}.png" for i in range(2)]
    for other in others:
        other.write_bytes(_png_bytes())
    with pytest.raises(GenFusionError, match="not a readable image"):
        capture.upload_capture([*others, fake], job)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 1000)
    with pytest.raises(GenFusionError, match="cannot be read as a video"):
        capture.upload_capture([video], job)
    with pytest.raises(GenFusionError, match="mixes"):
        capture.upload_capture([others[0], video], job)
    with pytest.raises(GenFusionError, match="at least 3"):
        capture.upload_capture(others, job)
    assert not (job / "upload").exists()


def test_a_zipped_posed_scene_becomes_a_scene_capture(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    members = {f"fox/{p.relative_to(DEMO)}": p.read_bytes() for p in DEMO.rglob("*") if p.is_file()}
    archive = _zip(tmp_path / "fox.zip", {k: v for k, v in members.items() if ".genfusion_cache" not in k})
    result = capture.upload_capture([archive], job)
    assert result.kind == "scene" and result.path.is_relative_to(job / "upload")
    assert "transforms" in capture.summary_text(result, 8)
    assert "posed capture" in capture.describe_upload([archive])


def test_server_folders_only_under_the_allowed_roots(tmp_path):
    roots = [REPO / "assets"]
    assert capture.folder_capture("assets/demo/fox", roots).kind == "scene"
    with pytest.raises(GenFusionError, match="outside"):
        capture.folder_capture(str(tmp_path), roots)
    with pytest.raises(GenFusionError, match="outside"):
        capture.folder_capture("assets/../genfusion", roots)
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)  # a link inside the root that leads out of it
    with pytest.raises(GenFusionError, match="outside"):
        capture.folder_capture(str(allowed / "escape"), [allowed])
    with pytest.raises(GenFusionError, match="does not exist"):
        capture.folder_capture("assets/no_such_folder", roots)


# ----------------------------------------------------------------------------- jobs


def _looping_task(steps: int, started: threading.Event | None = None, delay: float = 0.02):
    def task(progress, stop_check):
        if started is not None:
            started.set()
        for step in range(1, steps + 1):
            if stop_check():
                raise Cancelled(f"cancelled at step {step}", step=step)
            time.sleep(delay)
            progress(ProgressEvent("reconstruct", step, steps, f"step {step}", metrics={"psnr": float(step)}))
        return {"steps": steps}

    return task


def test_queue_runs_at_most_max_concurrent_and_cancel_is_prompt(tmp_path):
    manager = JobManager(tmp_path, max_concurrent=1)
    started = threading.Event()
    long_job = manager.create("alice", "reconstruct", "long")
    manager.submit(long_job, _looping_task(10_000, started))
    waiting = manager.create("alice", "reconstruct", "short")
    manager.submit(waiting, _looping_task(3))
    assert started.wait(5)
    time.sleep(0.1)
    assert waiting.state == "queued" and manager.queue_position(waiting.id) == 0
    begin = time.monotonic()
    manager.cancel(long_job.id, "alice")
    manager.wait(long_job.id, timeout=5)
    assert long_job.state == "cancelled" and time.monotonic() - begin < 2.0
    manager.wait(waiting.id, timeout=5)
    assert waiting.state == "done" and waiting.record.result == {"steps": 3}
    lines = (waiting.folder / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines][:3] == [1, 2, 3]
    assert json.loads((waiting.folder / "job.json").read_text())["state"] == "done"


def test_cancel_of_a_queued_job_never_starts_it(tmp_path):
    manager = JobManager(tmp_path, max_concurrent=1)
    blocker = manager.create("a", "reconstruct", "blocker")
    manager.submit(blocker, _looping_task(10_000))
    queued = manager.create("a", "reconstruct", "queued")
    manager.submit(queued, _looping_task(3))
    manager.cancel(queued.id, "a")
    assert queued.state == "cancelled" and queued.events() == []
    manager.shutdown(timeout=5)
    assert blocker.state == "cancelled"


def test_sessions_see_only_their_own_jobs(tmp_path):
    manager = JobManager(tmp_path)
    job = manager.create("alice", "reconstruct", "mine")
    manager.submit(job, _looping_task(1))
    manager.wait(job.id, timeout=5)
    assert [j.id for j in manager.list_jobs("alice")] == [job.id]
    assert manager.list_jobs("bob") == []
    with pytest.raises(GenFusionError, match="no job"):
        manager.get(job.id, "bob")
    with pytest.raises(GenFusionError, match="no job"):
        manager.cancel(job.id, "bob")
    assert len(job.id) == 24 and job.id != manager.create("alice", "x", "y").id
    for bad in ("../etc", "", "A" * 24, job.id + "0"):
        with pytest.raises(GenFusionError, match="not a job id"):
            check_job_id(bad)


def test_a_restart_lists_finished_jobs_again(tmp_path):
    first = JobManager(tmp_path)
    done = first.create("alice", "reconstruct", "done")
    first.submit(done, _looping_task(2))
    first.wait(done.id, timeout=5)
    running = first.create("alice", "reconstruct", "running")
    running.record.state = "running"  # as a crash would leave it
    running.save()
    second = JobManager(tmp_path)
    states = {j.id: j.state for j in second.list_jobs("alice")}
    assert states == {done.id: "done", running.id: "interrupted"}
    assert [e["step"] for e in second.get(done.id).events()] == [1, 2, 1]  # 2 steps + the final "job" event


def test_task_errors_become_messages_and_bugs_an_error_log(tmp_path):
    manager = JobManager(tmp_path)

    def user_error(progress, stop_check):
        raise GenFusionError("the photos do not overlap; take more photos")

    def bug(progress, stop_check):
        raise ZeroDivisionError("oops")

    first = manager.create("a", "reconstruct", "1")
    manager.submit(first, user_error)
    second = manager.create("a", "reconstruct", "2")
    manager.submit(second, bug)
    manager.wait(first.id, timeout=5)
    manager.wait(second.id, timeout=5)
    assert first.state == "failed" and "do not overlap" in first.record.message
    assert second.state == "failed" and "internal error" in second.record.message
    assert "ZeroDivisionError" in (second.folder / "error.log").read_text()


def test_refused_input_leaves_no_job_folder(tmp_path):
    studio = Studio(
        StudioSettings(jobs_root=tmp_path / "jobs", folder_roots=(REPO / "assets",)), viewers=False
    )
    text = tmp_path / "readme.txt"
    text.write_text("x")
    for kwargs in (
        {"source": "upload", "files": [str(text)], "folder": None, "settings": {}},
        {"source": "folder", "files": None, "folder": str(tmp_path), "settings": {}},
        {"source": "demo", "files": None, "folder": None, "settings": {"iterations": -1}},
    ):
        with pytest.raises(GenFusionError):
            studio.run("alice", mode="reconstruct", **kwargs)
    for settings, needle in (
        ({"repairer": "diffusion"}, "needs the diffusion repair model"),  # not installed in tests
        ({"rounds": "30 20"}, "--rounds must increase"),
        ({"iterations": 40, "rounds": "50"}, "outside the run"),
        ({"clip_length": 500}, "limit"),
        ({"no_such_flag": 1}, "unknown setting"),
    ):
        with pytest.raises(GenFusionError, match=needle):
            studio.run("alice", "demo", None, None, "masked", settings)
    assert [p.name for p in (tmp_path / "jobs").iterdir() if not p.name.startswith(".")] == []
    studio.close()


# ----------------------------------------------------------------------------- camera paths


def test_keyframes_round_trip_through_camera_path_json(tmp_path):
    rotation = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    keys = []
    for x in (0.0, 1.0, 2.0):
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = rotation, (x, 0.5, -1.0)
        keys.append(Keyframe(c2w, fov=0.8, aspect=1.5))
    path = save_keyframes(tmp_path / "camera_path.json", keys, height=100)
    from genfusion.data.camera_path import read_camera_path

    frames, fps = read_camera_path(path)
    assert len(frames) > len(keys) and fps == pytest.approx(24.0)
    loaded = load_keyframes(path)
    assert len(loaded) == 3
    for a, b in zip(keys, loaded, strict=True):
        np.testing.assert_allclose(a.camtoworld, b.camtoworld, atol=1e-9)
        assert a.fov == pytest.approx(b.fov) and a.aspect == pytest.approx(b.aspect, rel=1e-2)
    keyframes_path(path).unlink()
    assert len(load_keyframes(path)) == len(frames)


def test_a_malformed_camera_path_upload_is_refused(tmp_path):
    studio = Studio(StudioSettings(jobs_root=tmp_path / "jobs"), viewers=False)
    job = studio.jobs.create("alice", "reconstruct", "j")
    bad = tmp_path / "camera_path.json"
    bad.write_text(json.dumps({"camera_path": [{"camera_to_world": [1, 2, 3], "fov": 50}]}))
    with pytest.raises(GenFusionError, match="camera_path.json"):
        studio.set_camera_path("alice", job.id, str(bad))
    assert not (job.folder / "camera_path.json").exists()
    studio.close()


# ----------------------------------------------------------------------------- viewer


def test_viser_gaussians_are_valid_covariances_and_flat_for_2dgs():
    from app.viewer_render import viser_gaussians

    n = 50
    generator = torch.Generator().manual_seed(0)
    splats = {
        "means": torch.randn(n, 3, generator=generator),
        "quats": torch.randn(n, 4, generator=generator),
        "scales": torch.randn(n, 3, generator=generator) - 3,
        "opacities": torch.randn(n, generator=generator),
        "sh0": torch.randn(n, 1, 3, generator=generator),
        "shN": torch.zeros(n, 15, 3),
    }
    for method in ("3dgs", "2dgs"):
        out = viser_gaussians(splats, method)
        assert out["centers"].shape == (n, 3) and out["opacities"].shape == (n, 1)
        cov = out["covariances"].astype(np.float64)
        np.testing.assert_allclose(cov, cov.transpose(0, 2, 1), atol=1e-7)
        eig = np.linalg.eigvalsh(cov)
        assert (eig[:, 0] > -1e-6 * eig[:, 2]).all()  # positive semi-definite up to float32 rounding
        if method == "2dgs":
            assert (eig[:, 0] <= 1e-5 * eig[:, 2]).all()  # a flat disc
        assert ((out["rgbs"] >= 0) & (out["rgbs"] <= 1)).all()
    assert viser_gaussians(splats, "3dgs", max_gaussians=10)["centers"].shape == (10, 3)


def test_the_scene_frame_looks_at_what_the_cameras_look_at():
    from app.viewer_render import scene_frame
    from genfusion.data import load_scene

    scene = load_scene(DEMO, downscale=8, undistort=False)
    up, target, size = scene_frame(scene.cameras)
    centres = np.stack([c.center for c in scene.cameras])
    assert abs(np.linalg.norm(up) - 1) < 1e-9 and size > 0
    # every camera looks towards the target (positive depth along its optical axis)
    depths = [(target - c.center) @ c.rotation[:, 2] for c in scene.cameras]
    assert min(depths) > 0 and np.linalg.norm(target - centres.mean(axis=0)) < size
