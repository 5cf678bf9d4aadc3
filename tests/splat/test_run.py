"""The run folder: ``reconstruct`` writes it, ``read_run`` reads it back, a failed write keeps the
previous outputs, and absent or broken folders are clear errors."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from genfusion.errors import GenFusionError
from genfusion.splat import checkpoint as ckpt
from genfusion.splat.config import ReconstructConfig
from genfusion.splat.gaussians import create_splats
from genfusion.splat.run import read_run, reconstruct, run_metrics, write_run
from genfusion.splat.trainer import Evaluation, ViewMetrics

from .test_checkpoint import make_contents
from .test_gaussians import ring_scene
from .test_trainer import H, W, synthetic, tiny_config  # noqa: F401  (synthetic: a fixture)

LAYOUT = {"checkpoint.pt", "splats.ply", "metrics.json", "renders", "config.json"}


@pytest.fixture(scope="module")
def photo_scene(synthetic, tmp_path_factory):  # noqa: F811
    """The synthetic scene with its images saved as PNG files, which is how reconstruct reads a
    capture (it has no in-memory image path)."""
    scene, images = synthetic
    folder = tmp_path_factory.mktemp("photos")
    cameras = []
    for camera, image in zip(scene.cameras, images, strict=True):
        path = folder / f"{camera.name}.png"
        iio.imwrite(path, (image.numpy() * 255 + 0.5).astype(np.uint8))
        cameras.append(replace(camera, image_path=path))
    return replace(scene, cameras=cameras, root=folder)


def stub_trainer(num_views: int = 6, n: int = 30) -> SimpleNamespace:
    """What write_run and run_metrics read of a Trainer, without training."""
    splats = create_splats(
        np.random.rand(n, 3), np.random.rand(n, 3), sh_degree=1, init_opacity=0.1, init_scale=1.0, seed=0
    )
    return SimpleNamespace(
        config=ReconstructConfig(method="3dgs", sh_degree=1, device="cpu"),
        device=torch.device("cpu"),
        splats=splats,
        step=7,
        elapsed=1.23456,
        num_gaussians=n,
        train_views=SimpleNamespace(sizes=[(W, H)] * num_views),
        init_note="30 random points",
        scene_scale=2.2,
    )


def evaluation_of(names: list[str], value: float = 0.25, cls: type[Evaluation] = Evaluation) -> Evaluation:
    """An evaluation of ``names`` with flat grey renders of ``value``."""
    return cls(
        views=[ViewMetrics(name=name, psnr=20.0 + i, ssim=0.5, lpips=None) for i, name in enumerate(names)],
        renders=[np.full((H, W, 3), value, np.float32) for _ in names],
        targets=[np.zeros((H, W, 3), np.float32) for _ in names],
        lpips_note="no VGG weights",
    )


def test_reconstruct_writes_a_folder_that_reads_back(photo_scene, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(method="3dgs", iterations=12)
    metrics = reconstruct(photo_scene, config, out, quiet=True)
    assert {p.name for p in out.iterdir()} == LAYOUT
    assert not [p for p in out.rglob(".*")], "temporary files were left behind"

    folder = read_run(out)
    assert folder.path == out and folder.metrics == metrics
    assert folder.config == json.loads(json.dumps(config.to_dict()))
    assert folder.run.step == 12 and folder.run.method == "3dgs"
    assert folder.run.num_gaussians == metrics["num_gaussians"] > 0
    assert metrics["iterations"] == 12 and metrics["device"] == "cpu" and metrics["backend"] == "torch"
    assert metrics["num_train_views"] == 6 and metrics["num_test_views"] == 2
    assert metrics["resolution"] == [W, H] and metrics["psnr"] == pytest.approx(
        np.mean([v["psnr"] for v in metrics["views"]])
    )

    from genfusion.export.ply import read_ply

    assert read_ply(folder.splats_path)["means"].shape[0] == metrics["num_gaussians"]
    renders = sorted(folder.renders_dir.iterdir())
    assert [p.name for p in renders] == [f"{v['name']}.png" for v in metrics["views"]]
    assert iio.imread(renders[0]).shape == (H, 2 * W, 3)  # render | ground truth


def test_refused_run_leaves_no_folder(tmp_path):
    big = ring_scene(n=8, near_far=True)
    big.cameras = [c.scaled(60) for c in big.cameras]  # 3840x2880, refused before any image is read
    out = tmp_path / "run"
    with pytest.raises(GenFusionError, match=r"needs about .* GiB"):
        reconstruct(big, tiny_config(memory_limit_gb=1.0), out, quiet=True)
    assert not out.exists()


def test_run_metrics_keeps_every_evaluation_key_then_adds_the_run():
    class Richer(Evaluation):
        def to_dict(self):
            return {**super().to_dict(), "psnr_masked": 31.0}

    evaluation = evaluation_of(["a", "b"], cls=Richer)
    metrics = run_metrics(stub_trainer(), evaluation)
    assert list(metrics)[: len(evaluation.to_dict())] == list(evaluation.to_dict())
    assert metrics["psnr_masked"] == 31.0 and metrics["psnr"] == 20.5 and metrics["lpips"] is None
    assert metrics["views"] == evaluation.to_dict()["views"] and metrics["views"][1]["psnr"] == 21.0
    assert {k: metrics[k] for k in list(metrics)[len(evaluation.to_dict()) :]} == {
        "num_train_views": 6, "iterations": 7, "time_s": 1.235, "num_gaussians": 30, "method": "3dgs",
        "backend": "torch", "device": "cpu", "init": "30 random points", "scene_scale": 2.2,
        "resolution": [W, H],
    }  # fmt: skip


def test_failed_write_keeps_the_previous_outputs_and_renders_swap_whole(tmp_path, monkeypatch):
    trainer = stub_trainer()
    write_run(tmp_path, trainer, evaluation_of(["a", "b"]))
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    real = iio.imwrite
    calls = []

    def fail_second(path, image, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(path, image, **kwargs)

    monkeypatch.setattr(iio, "imwrite", fail_second)
    with pytest.raises(OSError, match="disk full"):
        write_run(tmp_path, trainer, evaluation_of(["c", "d"], value=0.75))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.rglob(".*")]

    write_run(tmp_path, trainer, evaluation_of(["c"]))  # the old renders go, not merged
    assert [p.name for p in (tmp_path / "renders").iterdir()] == ["c.png"]
    assert json.loads((tmp_path / "metrics.json").read_text())["num_test_views"] == 1


def test_absent_or_broken_folders_are_clear_errors(tmp_path):
    with pytest.raises(GenFusionError, match="no such run folder"):
        read_run(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(GenFusionError, match="not a run folder"):
        read_run(tmp_path / "file")
    with pytest.raises(GenFusionError, match="no checkpoint here"):
        read_run(tmp_path)

    ckpt.save_checkpoint(tmp_path / "checkpoint.pt", make_contents())
    with pytest.raises(GenFusionError, match=r"no metrics.json: the run did not finish.*--resume"):
        read_run(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(GenFusionError, match=r"metrics.json is not readable metrics.*--resume"):
        read_run(tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(GenFusionError, match="holds list, not the metrics of a run"):
        read_run(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(GenFusionError, match="no config.json"):
        read_run(tmp_path)
