"""Fusion jobs without a server: a masked run on the demo through the Studio (rounds, frames,
cameras, metrics, the resolved config), a cancel that leaves a resumable run folder, and the
viewer drawing a round's generated views.

(No ``__init__.py`` in tests/app: a package named ``app`` there would shadow the real ``app``.)
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.fusion_task import CONFIG_NAME, read_rounds  # noqa: E402
from app.studio import Studio, StudioSettings  # noqa: E402
from app.tasks import RUN_DIR  # noqa: E402
from genfusion.progress import ProgressEvent  # noqa: E402

DEMO = REPO / "assets" / "demo" / "fox"
# 34x60 pixels, few steps; the reprojection carries the demo's photos into the path
TINY = {"downscale": 8, "init_random_points": 500, "method": "3dgs", "budget": "preview",
        "repairer": "reproject+fallback", "clip_length": 4}  # fmt: skip
FINISHED = ("done", "failed", "cancelled", "interrupted")


def _studio(tmp_path: Path) -> Studio:
    return Studio(StudioSettings(jobs_root=tmp_path / "jobs"), viewers=False)


def _wait(studio: Studio, job: str, until=FINISHED, timeout: float = 300, check=None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = studio.status("alice", job)
        if status["state"] in until or (check is not None and check(status)):
            return status
        assert time.monotonic() < deadline, f"job still {status['state']}: {status['message']}"
        time.sleep(0.2)


def test_a_masked_fusion_job_runs_its_rounds_and_shows_them(tmp_path):
    studio = _studio(tmp_path)
    try:
        job = studio.run("alice", "demo", None, None, "masked", {**TINY, "iterations": 40})
        status = _wait(studio, job)
        assert status["state"] == "done", status["message"]
        fusion = status["fusion"]
        assert fusion["mode"] == "masked" and fusion["rounds_done"] == fusion["rounds_total"] == 4
        assert "4 rounds at steps" in fusion["plan"] and "reprojection" in fusion["plan"]
        last = fusion["last_round"]
        assert last["round"] == 4 and last["used_views"] > 0 and 0.0 < last["unreliable_before"] <= 1.0
        test = status["test_metrics"]
        assert test["iterations"] == 40 and test["psnr_outside"] is not None and test["psnr"] > 8.0
        folder = studio.jobs.get(job, "alice").folder
        # the settings typed on the page win over the mode's preset; the mode keeps its protocol
        resolved = json.loads((folder / RUN_DIR / CONFIG_NAME).read_text())
        assert resolved["mode"] == "masked" and resolved["reconstruct"]["split"] == "masked2"
        assert resolved["reconstruct"]["iterations"] == 40 and resolved["reconstruct"]["downscale"] == 8
        rounds = read_rounds(folder)
        assert [r["round"] for r in rounds] == [0, 1, 2, 3]
        assert all(np.asarray(r["cameras"]).shape[1:] == (4, 4) and r["cameras"] for r in rounds)
        frames = studio.rounds("alice", job)
        assert frames and frames[0][1].startswith("round 4") and Path(frames[0][0]).is_file()
        names = {p.name for p in studio.downloads("alice", job)}
        assert {"splats.ply", "splats.splat"} <= names
        assert {"fusion.json", "fusion_state.json", "rounds", "metrics.json"} <= {
            p.name for p in (folder / RUN_DIR).iterdir()
        }
    finally:
        studio.close()


def test_a_cancelled_fusion_job_keeps_its_last_round_and_resumes(tmp_path):
    from genfusion.data import load_scene
    from genfusion.fusion.config import FusionConfig
    from genfusion.fusion.loop import FusionLoop

    studio = _studio(tmp_path)
    try:
        settings = {**TINY, "iterations": 200, "rounds": "20 190"}
        job = studio.run("alice", "demo", None, None, "masked", settings)
        _wait(studio, job, check=lambda s: (s.get("fusion") or {}).get("rounds_done", 0) >= 1)
        studio.cancel("alice", job)
        status = _wait(studio, job)
        assert status["state"] == "cancelled"
        assert "1 of 2 rounds done" in status["message"] and "--resume" in status["message"]
        run_dir = studio.jobs.get(job, "alice").folder / RUN_DIR
        assert (run_dir / "splats.ply").is_file() and (run_dir / "checkpoint.pt").is_file()
    finally:
        studio.close()
    # what the message promises: the run folder goes on from its last round to the end
    config = FusionConfig.from_dict(json.loads((run_dir / CONFIG_NAME).read_text()))
    scene = load_scene(DEMO, downscale=8, cache_dir=tmp_path / "cache")
    loop = FusionLoop(scene, config, run_dir)
    loop.resume()
    assert loop.next_round == 1 and loop.trainer.step >= 20
    metrics = loop.run()
    assert metrics["iterations"] == 200 and [r.step for r in loop.reports] == [20, 190]


def test_the_viewer_draws_a_rounds_generated_views(tmp_path):
    from app.viewer import JobViewer
    from app.viewer_render import GENERATED_COLOR

    viewer = JobViewer("a" * 24, tmp_path, interval_s=0.0)
    try:
        cameras = [np.eye(4) for _ in range(3)]
        for index, camera in enumerate(cameras):
            camera[:3, 3] = (index, 0.0, 1.0)
        payload = {"round": 1, "warnings": [], "cameras": [c.tolist() for c in cameras]}
        event = ProgressEvent("fusion.round", 30, 4, "round 2/4", {"unreliable_before": 0.4}, payload=payload)
        viewer.on_event(event)
        assert viewer.wait_idle(30)
        assert len(viewer._generated) == 3
        assert np.allclose(viewer._generated[2].position, (2.0, 0.0, 1.0))
        assert tuple(viewer._generated[0].color) == GENERATED_COLOR
        assert "Fusion round 2: 3 generated views, 40% unreliable" in viewer.status.content
        viewer.on_event(ProgressEvent("fusion.round", 40, 4, "", {}, payload={**payload, "cameras": []}))
        assert viewer.wait_idle(30) and viewer._generated == []  # replaced, not piled up
    finally:
        viewer.close()


def test_the_unreliable_render_mode_tints_what_no_gaussian_covers():
    from app.viewer_render import UNRELIABLE_TINT, render_mode_image
    from genfusion.data.types import Camera

    # a wall of opaque Gaussians in front of the left half of the view, nothing on the right
    ys, xs = np.meshgrid(np.linspace(-1.0, 1.0, 21), np.linspace(-2.6, -0.05, 24), indexing="ij")
    n = xs.size
    splats = {
        "means": torch.tensor(np.stack([xs.ravel(), ys.ravel(), np.full(n, 3.0)], 1), dtype=torch.float32),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        "scales": torch.full((n, 3), math.log(0.08)),
        "opacities": torch.full((n,), 6.0),
        "sh0": torch.full((n, 1, 3), 0.5),
        "shN": torch.zeros(n, 0, 3),
    }
    K = np.array([[40.0, 0.0, 32.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]])
    camera = Camera(camtoworld=np.eye(4), K=K, width=64, height=48)
    image = render_mode_image(splats, "3dgs", camera, "unreliable").astype(float)
    tint = 0.65 * UNRELIABLE_TINT
    left, right = image[12:36, 4:28], image[12:36, 40:60]
    assert np.abs(right - tint).max() < 2.0  # empty: all tint over a black render
    assert np.abs(left - tint).mean(axis=-1).min() > 60  # covered: the render itself
