"""The app as users meet it: ``python launch.py`` on a free port, driven through ``gradio_client``
and a headless Chromium, on the demo fox at a tiny resolution (downscale 8: 34x60 pixels).

One server serves the whole module (start-up dominates); each test uses its own clients, so
their sessions and jobs are separate as two users' would be.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "assets" / "demo" / "fox"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--enable-unsafe-swiftshader",
]
TINY = {"downscale": 8, "init_random_points": 2000, "method": "3dgs"}  # 34x60 pixels
FINISHED = ("done", "failed", "cancelled", "interrupted")
# Steps of the browser test's job. README's picture is this test's page screenshot, saved only when
# asked (tests never write into the checkout): GENFUSION_APP_SHOT=docs/images/app.png
# GENFUSION_APP_SHOT_ITERATIONS=600 python -m pytest tests/app -k chromium
ITERATIONS = int(os.environ.get("GENFUSION_APP_SHOT_ITERATIONS", "40"))

gradio_client = pytest.importorskip("gradio_client")
Client, handle_file = gradio_client.Client, gradio_client.handle_file


@dataclass
class RunningApp:
    url: str
    jobs_root: Path
    process: subprocess.Popen
    log: Path

    def healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(self.url + "healthz", timeout=5).json()["ok"] is True
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def job_folders(self) -> list[str]:
        return sorted(p.name for p in self.jobs_root.iterdir() if p.is_dir())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> RunningApp:
    base = tmp_path_factory.mktemp("app")
    jobs_root, log = base / "jobs", base / "server.log"
    port = _free_port()
    command = [
        sys.executable, "launch.py", "--port", str(port), "--jobs-root", str(jobs_root), "--max-jobs", "2",
        "--viewer-interval", "0.5", "--folder-root", str(REPO / "assets"),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1", GRADIO_ANALYTICS_ENABLED="False")
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env)
    app = RunningApp(f"http://127.0.0.1:{port}/", jobs_root, process, log)
    deadline = time.monotonic() + 120
    while not app.healthy():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the app did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield app
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert process.returncode is not None


def _client(app: RunningApp, folder: Path) -> Client:
    folder.mkdir(parents=True, exist_ok=True)
    return Client(app.url, verbose=False, download_files=str(folder))


def _wait(client: Client, job: str, *, until=FINISHED, timeout: float = 180, check=None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.predict(job, api_name="/status")
        if status["state"] in until or (check is not None and check(status)):
            return status
        assert time.monotonic() < deadline, f"job {job} still {status['state']}: {status['message']}"
        time.sleep(0.5)


def _zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and ".genfusion_cache" not in path.parts:
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    return out


def _render_check(ply: str) -> float:
    """Render the downloaded .ply at a demo camera; returns the PSNR against the photo."""
    from genfusion.data import load_image, load_scene
    from genfusion.export.ply import read_ply, read_ply_info
    from genfusion.splat.cameras import camera_tensors
    from genfusion.splat.render import render_splats

    splats, info = read_ply(ply), read_ply_info(ply)
    assert info.num_gaussians > 100
    assert all(torch.isfinite(v).all() for v in splats.values())
    camera = load_scene(DEMO, downscale=8, undistort=True, cache_dir=Path(ply).parent / "cache").cameras[0]
    viewmats, Ks = camera_tensors([camera], "cpu")
    with torch.no_grad():
        out = render_splats(
            splats, viewmats, Ks, camera.width, camera.height, sh_degree=info.sh_degree, mode="3dgs"
        )
    rgb = out.rgb[0].clamp(0, 1).numpy()
    assert out.alpha.mean() > 0.5 and rgb.std() > 0.02  # something is drawn, and not a flat colour
    photo = load_image(camera)
    return float(-10 * np.log10(((rgb - photo) ** 2).mean()))


# ----------------------------------------------------------------------------- a whole job


def test_a_whole_job_upload_run_wait_download(app_server, tmp_path):
    client = _client(app_server, tmp_path / "client")
    upload = _zip_folder(DEMO, tmp_path / "fox.zip")
    summary = client.predict("upload", [handle_file(str(upload))], api_name="/inspect")
    assert "posed capture" in summary
    job = client.predict(
        source="upload", files=[handle_file(str(upload))], iterations=40, **TINY, api_name="/run"
    )
    status = _wait(client, job)
    assert status["state"] == "done", status["message"]
    assert status["test_metrics"]["num_test_views"] == 9 and status["test_metrics"]["psnr"] > 8
    events = client.predict(job, 0, api_name="/events")
    steps = [e["step"] for e in events if e["stage"] == "reconstruct"]
    assert steps[-1] == 40 and all(
        "psnr" in e["metrics"] for e in events if e["stage"] == "reconstruct" and e["step"]
    )
    files = [Path(f) for f in client.predict(job, api_name="/downloads")]
    assert sorted(f.suffix for f in files) == [".ply", ".splat", ".zip"]
    psnr = _render_check(str(next(f for f in files if f.suffix == ".ply")))
    assert psnr > 9.0
    with zipfile.ZipFile(next(f for f in files if f.suffix == ".zip")) as archive:
        names = set(archive.namelist())
    assert {"run/checkpoint.pt", "run/splats.ply", "run/metrics.json", "run/config.json"} <= names
    assert client.predict(api_name="/jobs")[0]["id"] == job
    # the job's files stayed in its folder: the upload, the capture, the cache, the run
    folder = app_server.jobs_root / job
    assert {p.name for p in folder.iterdir()} >= {
        "upload",
        "run",
        "exports",
        "cache",
        "job.json",
        "events.jsonl",
    }
    assert json.loads((folder / "run" / "config.json").read_text())["iterations"] == 40


# ----------------------------------------------------------------------------- two users


def test_two_clients_run_side_by_side_and_a_cancel_disturbs_neither(app_server, tmp_path):
    alice, bob = _client(app_server, tmp_path / "alice"), _client(app_server, tmp_path / "bob")
    job_a = alice.predict(source="demo", iterations=30, seed=0, **TINY, api_name="/run")
    job_b = bob.predict(source="demo", iterations=30, seed=1, **TINY, api_name="/run")
    status_a, status_b = _wait(alice, job_a), _wait(bob, job_b)
    assert status_a["state"] == status_b["state"] == "done"
    assert (
        status_a["started"] < status_b["finished"] and status_b["started"] < status_a["finished"]
    )  # overlapped
    ply_a = [f for f in alice.predict(job_a, api_name="/downloads") if f.endswith(".ply")][0]
    ply_b = [f for f in bob.predict(job_b, api_name="/downloads") if f.endswith(".ply")][0]
    assert Path(ply_a).read_bytes() != Path(ply_b).read_bytes()  # separate runs, separate outputs
    # sessions are isolated: neither lists, reads or cancels the other's job
    assert [j["id"] for j in alice.predict(api_name="/jobs")] == [job_a]
    for call in ("/status", "/cancel", "/downloads"):
        with pytest.raises(Exception, match="no job"):
            bob.predict(job_a, api_name=call)

    long_job = alice.predict(source="demo", iterations=20_000, **TINY, api_name="/run")
    short_job = bob.predict(source="demo", iterations=40, seed=2, **TINY, api_name="/run")
    _wait(alice, long_job, check=lambda s: (s.get("progress") or {}).get("stage") == "reconstruct"
          and s["progress"]["step"] >= 10)  # fmt: skip
    asked = time.monotonic()
    alice.predict(long_job, api_name="/cancel")
    cancelled = _wait(alice, long_job, timeout=30)
    assert cancelled["state"] == "cancelled" and time.monotonic() - asked < 15
    finished = _wait(bob, short_job)
    assert finished["state"] == "done" and finished["test_metrics"]["iterations"] == 40
    # the cancelled run folder is consistent: a loadable checkpoint and .ply of its last step, no metrics
    from genfusion.export.ply import read_ply_info
    from genfusion.splat.checkpoint import load_checkpoint

    run = app_server.jobs_root / long_job / "run"
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    assert 10 <= checkpoint["step"] < 20_000 and not (run / "metrics.json").exists()
    assert read_ply_info(run / "splats.ply").num_gaussians == checkpoint["splats"]["means"].shape[0]


# ----------------------------------------------------------------------------- fusion


def test_a_completion_follows_the_camera_path_of_another_job(app_server, tmp_path):
    """A path drawn (here: uploaded) on one job steers a ``complete`` run started from it."""
    from app.camera_path import Keyframe, save_keyframes
    from genfusion.data import load_scene
    from genfusion.data.camera_path import read_camera_path

    client = _client(app_server, tmp_path / "client")
    first = client.predict(source="demo", iterations=5, **TINY, api_name="/run")
    assert _wait(client, first)["state"] == "done"
    cameras = load_scene(DEMO, downscale=8, cache_dir=tmp_path / "cache").cameras
    keys = [Keyframe(c.camtoworld, fov=0.9, aspect=c.width / c.height) for c in cameras[10:40:10]]
    path = save_keyframes(tmp_path / "camera_path.json", keys, height=60)
    assert "saved to the job" in client.predict(first, handle_file(str(path)), api_name="/set_camera_path")
    job = client.predict(source="demo", mode="complete", from_job=first, iterations=40, budget="preview",
                         repairer="reproject+fallback", clip_length=4, views_per_round=6, **TINY,
                         api_name="/run")  # fmt: skip
    status = _wait(client, job)
    assert status["state"] == "done", status["message"]
    assert status["fusion"]["rounds_done"] == status["fusion"]["rounds_total"] >= 2
    folder = app_server.jobs_root / job
    resolved = json.loads((folder / "run" / "fusion_config.json").read_text())
    assert resolved["mode"] == "complete" and resolved["path"] == "file"
    assert resolved["camera_path"] == str(folder / "camera_path.json")  # the job's own copy
    frames, _ = read_camera_path(folder / "camera_path.json")
    keep = np.linspace(0, len(frames) - 1, 6).round().astype(int)  # the even subsample of 6 views
    expected = np.stack([frames[i].center for i in keep])
    for record in json.loads((folder / "fusion_rounds.json").read_text())["rounds"]:
        centers = np.asarray(record["cameras"])[:, :3, 3]
        assert np.allclose(centers, expected, atol=1e-4)
    events = client.predict(job, 0, api_name="/events")
    assert [e["stage"] for e in events].count("fusion.round") == status["fusion"]["rounds_total"]


# ----------------------------------------------------------------------------- bad input


def test_bad_input_gets_a_message_and_the_server_keeps_serving(app_server, tmp_path):
    client = _client(app_server, tmp_path / "client")
    before = app_server.job_folders()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("photos/a.jpg", (DEMO / "images" / "0001.jpg").read_bytes())
        archive.writestr("../../../escaped_by_zip_slip.jpg", b"x" * 100)
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    broken_video = tmp_path / "clip.mp4"
    broken_video.write_bytes(os.urandom(2048))
    cases = [
        ({"source": "upload", "files": [handle_file(str(evil))]}, "unsafe"),
        ({"source": "upload", "files": [handle_file(str(text))]}, "not an image|[Ii]nvalid file"),
        ({"source": "upload", "files": [handle_file(str(broken_video))]}, "cannot be read as a video"),
        ({"source": "demo", "iterations": -5}, "--iterations"),
        ({"source": "demo", "downscale": 0}, "--downscale"),
        ({"source": "folder", "folder": "/etc"}, "outside"),
        ({"source": "folder", "folder": str(REPO / "genfusion")}, "outside"),
        ({"source": "demo", "mode": "masked", "repairer": "diffusion"}, "diffusion repair model"),
        ({"source": "demo", "mode": "complete", "rounds": "30 20"}, "--rounds must increase"),
    ]
    for kwargs, message in cases:
        with pytest.raises(Exception, match=message):
            client.predict(**kwargs, api_name="/run")
        assert app_server.healthy()
    with pytest.raises(Exception, match="not a job id"):
        client.predict("../../etc/passwd", api_name="/status")
    assert app_server.job_folders() == before  # refused inputs leave no job folder
    for parent in (tmp_path, app_server.jobs_root, app_server.jobs_root.parent, REPO):
        assert not (parent / "escaped_by_zip_slip.jpg").exists()
    bad_path = tmp_path / "camera_path.json"
    bad_path.write_text("{not json")
    job = client.predict(source="demo", iterations=5, **TINY, api_name="/run")
    with pytest.raises(Exception, match="not valid JSON"):
        client.predict(job, handle_file(str(bad_path)), api_name="/set_camera_path")
    assert _wait(client, job)["state"] == "done"


# ----------------------------------------------------------------------------- in a browser


def _settled(page, path: Path, *, region: tuple[int, int, int, int], unlike: np.ndarray | None = None,
             timeout: float = 60.0) -> np.ndarray:  # fmt: skip
    """Screenshot ``page`` until ``region`` (x0, y0, x1, y1) shows something (not one flat colour),
    differs from ``unlike`` if given, and holds still between two shots (software WebGL under load
    takes a while to draw and sort the splats); returns the region."""
    from PIL import Image

    deadline = time.monotonic() + timeout
    previous = None
    while True:
        page.screenshot(path=str(path))
        x0, y0, x1, y1 = region
        now = np.asarray(Image.open(path).convert("RGB")).astype(int)[y0:y1, x0:x1]
        drawn = now.reshape(-1, 3).std(axis=0).min() > 10
        changed = unlike is None or np.abs(now - unlike).max(axis=-1).mean() > 2
        if previous is not None and drawn and changed and np.abs(now - previous).mean() < 1.0:
            return now
        assert time.monotonic() < deadline, f"the view in {path.name} never settled"
        previous = now
        page.wait_for_timeout(1000)


@pytest.mark.browser
def test_the_page_and_the_viewer_in_headless_chromium(app_server, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from PIL import Image

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1250})
            began = time.monotonic()

            def mark(what: str) -> None:  # where the time goes (shown with pytest -s)
                print(f"browser test: {what} at {time.monotonic() - began:.1f} s", flush=True)

            page.goto(app_server.url)
            summary = page.get_by_label("Capture summary (genfusion inspect)")
            sync_api.expect(summary).to_have_value(
                re.compile("format: +transforms"), timeout=30_000
            )  # the demo
            mark("page loaded")
            page.get_by_label("method  (--method)").click()
            page.get_by_role("option", name="3dgs").click()
            page.get_by_label("iterations  (--iterations)").fill(str(ITERATIONS))
            page.get_by_label("downscale  (--downscale)").fill("8")
            page.get_by_text("Advanced settings").click()
            page.get_by_label("init random points  (--init-random-points)").fill("2000")
            page.get_by_role("button", name="Run", exact=True).click()
            job_box = page.get_by_label("Job id")
            sync_api.expect(job_box).to_have_value(re.compile(r"[0-9a-f]{24}"), timeout=30_000)
            mark("job started")
            job = job_box.input_value()
            record = app_server.jobs_root / job / "job.json"
            deadline = time.monotonic() + 180 + ITERATIONS
            while json.loads(record.read_text())["state"] not in FINISHED:
                assert time.monotonic() < deadline
                time.sleep(0.5)
            assert json.loads(record.read_text())["state"] == "done"
            sync_api.expect(page.get_by_text("Test views: PSNR")).to_be_visible(timeout=30_000)
            mark("job done on the page")
            frame = page.frame_locator("iframe[title='live viewer']")
            sync_api.expect(frame.get_by_text("Gaussians")).to_be_visible(timeout=30_000)
            iframe_src = page.locator("iframe[title='live viewer']").evaluate("e => e.src")
            assert iframe_src == f"{app_server.url}viewer/{job}/"  # the viewer comes through the app's port
            page.get_by_text("Advanced settings").click()  # closed again, for the picture
            notice = frame.get_by_text("Software WebGL rendering detected")
            if notice.count():  # headless Chromium renders WebGL in software; viser says so
                frame.locator("button:near(:text('Software WebGL rendering detected'))").first.click()
            page.mouse.move(5, 5)  # over the page, not the viewer (where the wheel zooms)
            page.mouse.wheel(0, -10_000)
            shot = tmp_path / "page.png"
            _settled(page, shot, region=(700, 560, 1300, 1100))  # the viewer inside the page
            mark("page picture taken")
            if os.environ.get("GENFUSION_APP_SHOT"):
                readme_image = REPO / os.environ["GENFUSION_APP_SHOT"]
                readme_image.parent.mkdir(parents=True, exist_ok=True)
                Image.open(shot).convert("RGB").save(readme_image, optimize=True)
            page.close()  # its viewer keeps rendering in software otherwise

            viewer = browser.new_page(viewport={"width": 800, "height": 560})  # software WebGL: keep it small
            viewer.goto(f"{app_server.url}viewer/{job}/")
            sync_api.expect(viewer.get_by_text("Show input cameras")).to_be_visible(timeout=30_000)
            sync_api.expect(viewer.get_by_text("Gaussians")).to_be_visible(timeout=30_000)
            mark("viewer connected")
            with_cameras = tmp_path / "viewer_cameras.png"
            first = _settled(viewer, with_cameras, region=(0, 160, 450, 560))
            viewer.get_by_text("Show input cameras").click()
            splats_only = tmp_path / "viewer_splats.png"
            _settled(viewer, splats_only, region=(0, 160, 450, 560), unlike=first)
            mark("viewer screenshots taken")
        finally:
            browser.close()

    # the 3D view left of viser's panel, without its "software WebGL" notice (top left)
    scene_a = np.asarray(Image.open(with_cameras).convert("RGB")).astype(int)[:, :450]
    scene_b = np.asarray(Image.open(splats_only).convert("RGB")).astype(int)[:, :450]
    scene_a[:160, :320] = scene_b[:160, :320] = 0
    # frusta: hiding the input cameras changes many pixels, the bluish test-view frusta among them
    changed = np.abs(scene_a - scene_b).max(axis=-1) > 60
    bluish = (scene_a[..., 2] - scene_a[..., 0]) > 30
    assert changed.sum() > 1000 and (changed & bluish).sum() > 50, (changed.sum(), (changed & bluish).sum())
    # splats: with the cameras hidden, the view is still full of varied colour; an empty viewer is
    # >99% near-white there (measured; rows 160-480 skip the notice and the axes in the corner)
    view = scene_b[160:480]
    distinct = len(np.unique(view.reshape(-1, 3) // 8, axis=0))
    near_white = (np.abs(view - 255).max(axis=-1) < 20).mean()
    assert view.reshape(-1, 3).std(axis=0).min() > 8 and distinct > 100 and near_white < 0.5, (
        view.reshape(-1, 3).std(axis=0),
        distinct,
        near_white,
    )
