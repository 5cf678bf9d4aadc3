"""The fusion loop end to end on a tiny synthetic scene with the weight-free repairer: rounds run
at their steps, generated views reach the trainer with their half-sine weight, events and round
folders are written, a cancelled run resumes from its last round, a repairer returning NaN is
dropped with a warning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from splat.test_trainer import synthetic, tiny_config  # noqa: F401  (pytest puts tests/ on sys.path)

from genfusion.errors import Cancelled
from genfusion.fusion.config import FusionConfig, resolve
from genfusion.fusion.loop import FusionLoop
from genfusion.generation.fallback import FallbackRepairer
from genfusion.generation.repairer import RepairResult, make_repairer


def fusion_config(**overrides) -> FusionConfig:
    reconstruct = tiny_config(method="3dgs", iterations=40, split="masked2", max_gaussians=400)
    values = dict(mode="masked", budget="paper", reconstruct=reconstruct, clip_length=4, event_image_size=16)
    values.update(overrides)
    return resolve(FusionConfig(**values), explicit={"iterations", "split"})


def test_masked_rounds_feed_the_trainer_and_write_their_folders(synthetic, tmp_path):  # noqa: F811
    scene, images = synthetic
    config = fusion_config()
    assert config.rounds == (17, 23, 29, 34)  # 3k..6k of 7k, at the same fractions of 40 steps
    events = []
    repairer = make_repairer("reproject+fallback")
    loop = FusionLoop(
        scene, config, tmp_path / "run", progress=events.append, repairer=repairer, images=images
    )
    metrics = loop.run()
    rounds = [e for e in events if e.stage == "fusion.round"]
    assert [e.step for e in rounds] == [1, 2, 3, 4]
    assert all(e.metrics["used_views"] == 4 for e in rounds)  # the 4 training poses, full frame
    assert rounds[0].payload["frames"][0][0].shape[1] == 16  # small frames for the UI
    assert any(e.stage == "fusion.snapshot" and e.payload["splats"]["means"].shape[1] == 3 for e in events)
    # the last round's views are in the trainer, weighted by a half-sine over (34, 40)
    assert loop.trainer.generated.names()[0].startswith("r03_")
    weight = loop.trainer.generated.weight
    assert (weight.start, weight.stop, weight.shape, weight.peak) == (34, 40, "half_sine", 0.5)
    out = tmp_path / "run"
    summary = json.loads((out / "fusion.json").read_text())
    assert [r["step"] for r in summary["rounds"]] == [17, 23, 29, 34]
    assert sorted(p.name for p in (out / "rounds").iterdir()) == ["00", "01", "02", "03"]
    assert (out / "rounds" / "00" / "frame00.png").is_file()
    lines = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["stage"] == "fusion.round"] == [1, 2, 3, 4]
    assert metrics["psnr_outside"] is not None and (out / "splats.ply").is_file()
    # the views are weighted by the reprojection's confidence, not uniformly
    view = next(iter(loop.trainer.generated.views.values()))
    assert view.weight is not None and 0 <= float(view.weight.min()) < float(view.weight.max()) <= 1


def test_the_fill_supervises_only_the_pixels_it_filled(synthetic, tmp_path):  # noqa: F811
    """Without ``remove_background`` the weight-free fill returns the render unchanged where it was
    reliable; those pixels get weight 0 (no self-distillation) and a frame with nothing filled is
    not added at all."""
    scene, images = synthetic
    events = []
    loop = FusionLoop(
        scene, fusion_config(remove_background=False), tmp_path / "run", progress=events.append,
        repairer=FallbackRepairer(), images=images,
    )  # fmt: skip
    loop.run()
    rounds = [e for e in events if e.stage == "fusion.round"]
    for view in loop.trainer.generated.views.values():
        assert view.weight is not None and set(view.weight.unique().tolist()) <= {0.0, 1.0}
        assert float(view.weight.sum()) > 0
    for event in rounds:
        skipped = event.metrics["views"] - event.metrics["used_views"]
        assert (skipped > 0) == any("nothing to repair" in w for w in event.payload["warnings"])


def test_generated_views_show_the_surface_without_the_background(synthetic, tmp_path):  # noqa: F811
    """With ``remove_background`` (the default) a generated view shows the colour of the surface
    where the black background showed through partly transparent splats, and each pixel weighs at
    least the background's share of it (1 - alpha); holes still weigh 1."""
    from genfusion.fusion.expansion import unreliable_mask

    scene, images = synthetic
    config = fusion_config()
    loop = FusionLoop(scene, config, tmp_path / "run", repairer=FallbackRepairer(), images=images)
    assert config.remove_background is None and loop.clips.removes_background  # automatic: on
    loop.trainer.train(until=config.rounds[0])
    cameras = loop.novel_cameras(0)
    renders = [loop.trainer.render(c) for c in cameras]
    loop.run_round(0)
    views = loop.trainer.generated.views
    assert len(views) == len(cameras)
    partial_pixels = 0
    for j, out in enumerate(renders):
        view = views[f"r00_{j:03d}"]
        alpha, rgb = out.alpha[0, ..., 0].detach(), out.rgb[0].detach().clamp(0, 1)
        depth = torch.where(alpha > 0, out.depth[0, ..., 0], torch.zeros_like(alpha)).detach()
        holes = unreliable_mask(alpha, depth, config.unreliable_alpha).float()
        assert torch.allclose(view.weight, torch.maximum(holes, 1 - alpha), atol=1e-5)
        # where the fill kept the render (alpha >= 0.5) it shows rgb / alpha: the surface colour
        kept = (alpha >= 0.5) & (alpha < 0.98) & (rgb / alpha[..., None] < 0.99).all(-1)
        partial_pixels += int(kept.sum())
        expected = rgb / alpha[..., None]
        assert torch.allclose(view.image[kept], expected[kept], atol=1e-4)
        assert bool((view.image[kept].sum(-1) > rgb[kept].sum(-1)).all())  # brighter than the render
    assert partial_pixels > 20  # the tiny run does leave the background showing through


def test_surface_colour_takes_the_background_out():
    from genfusion.fusion.clips import surface_colour

    generator = torch.Generator().manual_seed(0)
    surface = torch.rand(8, 9, 3, generator=generator)
    alpha = torch.rand(8, 9, generator=generator).clamp_min(0.05)
    alpha[0, 0] = 0.0  # nothing renders: the pixel keeps the composite (a hole for the repairer)
    background = torch.tensor([0.2, 0.5, 1.0])
    composite = surface * alpha[..., None] + background * (1 - alpha[..., None])
    shown = surface_colour(composite, alpha, background)
    assert torch.allclose(shown[1:], surface[1:], atol=1e-5)
    assert torch.allclose(shown[0, 1:], surface[0, 1:], atol=1e-5)
    assert torch.equal(shown[0, 0], composite[0, 0])


def test_cancelled_run_resumes_from_its_last_round(synthetic, tmp_path):  # noqa: F811
    scene, images = synthetic
    config = fusion_config()
    out = tmp_path / "run"
    loop = FusionLoop(scene, config, out, repairer=make_repairer("reproject+fallback"), images=images)
    with pytest.raises(Cancelled):
        loop.run(stop_check=lambda: loop.next_round >= 2 and loop.trainer.step >= 25)
    state = json.loads((out / "fusion_state.json").read_text())
    assert state["next_round"] == 2 and state["step"] == 23
    again = FusionLoop(scene, config, out, repairer=make_repairer("reproject+fallback"), images=images)
    again.resume()
    assert again.trainer.step == 23 and again.trainer.generated.names()[0].startswith("r01_")
    again.run()
    assert [r.index for r in again.reports] == [0, 1, 2, 3]


class NaNRepairer:
    """A broken repairer: every frame it returns is NaN."""

    name = "nan"
    description = "returns NaN (test)"

    def repair(self, clip, *, seed=None, progress=None):
        nan = torch.full_like(clip.rgb, float("nan"))
        return RepairResult(rgb=nan, depth=nan[..., 0], reliable=clip.alpha > 2, repairer=self.name)


def test_a_repairer_returning_nan_is_skipped_with_a_warning(synthetic, tmp_path):  # noqa: F811
    scene, images = synthetic
    events = []
    loop = FusionLoop(
        scene,
        fusion_config(),
        tmp_path / "run",
        progress=events.append,
        repairer=NaNRepairer(),
        images=images,
    )
    metrics = loop.run()
    rounds = [e for e in events if e.stage == "fusion.round"]
    assert all(e.metrics["used_views"] == 0 and e.payload["warnings"] for e in rounds)
    assert len(loop.trainer.generated) == 0 and np.isfinite(metrics["psnr"])


def test_completion_along_a_camera_path_adds_gaussians_where_renders_were_empty(synthetic, tmp_path):  # noqa: F811
    """An orbit wider than the capture sees empty space; expansion fills it from the repaired
    frames, so the unreliable share along the path drops within the round."""
    from genfusion.data.camera_path import write_camera_path
    from genfusion.fusion.trajectory import look_further_path

    scene, images = synthetic
    path_file = tmp_path / "camera_path.json"
    train = [scene.cameras[i] for i in range(0, 8, 2)]
    write_camera_path(path_file, look_further_path(train, 6, distance_scale=1.6), fps=24)
    reconstruct = tiny_config(method="3dgs", iterations=30, split="holdout4", max_gaussians=2_000)
    config = resolve(
        FusionConfig(mode="complete", budget="paper", reconstruct=reconstruct, camera_path=str(path_file),
                     clip_length=3, rounds=(12, 20)),
        explicit={"iterations", "split"},
    )  # fmt: skip
    assert config.expansion and config.views_per_round == 48 and config.lambda_reg == 1.0
    loop = FusionLoop(scene, config, tmp_path / "run", repairer=FallbackRepairer(), images=images)
    before = loop.trainer.num_gaussians
    loop.run()
    first = loop.reports[0]
    assert first.views == 6 and first.added_gaussians > 0
    # measured: 3.9% of the path unreliable before, 0.5% after expansion
    assert first.unreliable_before > 0.02 and first.unreliable_after < 0.5 * first.unreliable_before
    assert loop.trainer.num_gaussians != before


def _in_view(camera, point: np.ndarray) -> bool:
    local = np.linalg.inv(camera.camtoworld) @ np.append(point, 1.0)
    if local[2] <= 0:
        return False
    u, v = (camera.K @ (local[:3] / local[2]))[:2]
    margin = 0.5 * max(camera.width, camera.height)  # the blob is large: keep well clear
    return -margin <= u <= camera.width + margin and -margin <= v <= camera.height + margin


def _looking_at(camera, eye: np.ndarray, target: np.ndarray):
    """``camera`` moved to ``eye`` looking at ``target`` (OpenCV axes)."""
    from dataclasses import replace

    forward = (target - eye) / np.linalg.norm(target - eye)
    helper = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    right = np.cross(forward, helper)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return replace(camera, camtoworld=pose)


def test_the_unreliable_map_counts_what_no_training_view_saw(synthetic, tmp_path):  # noqa: F811
    """A solid blob where no training view looks renders with alpha ~1 but
    was never seen: the map counts it; the fill gets it as a hole only when ``observed_alpha`` is on."""
    from genfusion.fusion.expansion import new_gaussians, unreliable_mask
    from genfusion.splat.append import append_gaussians

    scene, images = synthetic
    for setting, holes_for_repairer in ((None, False), (True, True)):
        config = fusion_config(observed_alpha=setting)
        loop = FusionLoop(
            scene, config, tmp_path / f"run{setting}", repairer=FallbackRepairer(), images=images
        )
        trainer = loop.trainer
        trainer.train(until=10)
        # a blob outside every training window's frustum, and a camera 2 units before it
        centres = np.stack([c.camtoworld[:3, 3] for c in scene.cameras])
        reach = 3.0 * float(np.linalg.norm(centres - centres.mean(0), axis=1).max() + 1.0)
        windows = trainer.split.train_cameras(scene)
        direction = next(d for d in np.vstack([np.eye(3), -np.eye(3)]) if not any(
            _in_view(c, centres.mean(0) + reach * d) for c in windows))  # fmt: skip
        point = centres.mean(0) + reach * direction
        away = _looking_at(scene.cameras[0], point - 2.0 * direction, point)
        centre = torch.as_tensor(point, dtype=torch.float32)[None]
        blob = new_gaussians(centre, torch.tensor([[0.9, 0.1, 0.1]]), trainer.splats["means"].detach(),
                             trainer.config.sh_degree, opacity=0.99)  # fmt: skip
        blob["scales"] = torch.full_like(blob["scales"], float(np.log(1.5)))
        append_gaussians(trainer.splats, trainer.optimizers, trainer.strategy_state, blob)

        pose = scene.cameras[trainer.split.train[0]]
        rendered = loop.clips.render([away, pose])
        alpha = torch.stack([trainer.render(c).alpha[0, ..., 0] for c in (away, pose)])
        seen = rendered.seen_alpha
        solid = alpha[0] > 0.5
        assert float(solid.float().mean()) > 0.8 and float(seen[0].max()) < 0.05  # solid, unseen
        assert float(seen[1].mean()) > 0.5  # the training pose itself: mostly seen
        assert torch.all(seen <= alpha + 1e-6)
        assert torch.allclose(rendered.clip.alpha, seen if holes_for_repairer else alpha, atol=1e-6)
        shown = loop.clips.unreliable_map(rendered, loop.repairer.repair(rendered.clip))
        assert bool(shown[0][solid].all())  # the blob is unreliable ...
        low_alpha = unreliable_mask(alpha[0], rendered.clip.depth[0], config.unreliable_alpha)
        assert not bool(low_alpha[solid].any())  # ... which low alpha alone never says


class RandomNaNRepairer(NaNRepairer):
    """Draws from the global random stream (as a diffusion sampler would), then fails."""

    def repair(self, clip, *, seed=None, progress=None):
        torch.rand(1000)
        return super().repair(clip)


def test_a_round_that_adds_no_view_leaves_training_as_plain(synthetic, tmp_path):  # noqa: F811
    from dataclasses import replace

    from genfusion.splat.trainer import Trainer

    scene, images = synthetic
    config = fusion_config()
    # every Gaussian that grows is split, and a split samples its children at random
    # and splits continue after the first round (17)
    grow = dict(grow_grad2d=1e-9, grow_scale3d=0.0, refine_every=5, refine_stop=39, max_gaussians=4000)
    config = replace(config, reconstruct=replace(config.reconstruct, **grow))
    loop = FusionLoop(scene, config, tmp_path / "run", repairer=RandomNaNRepairer(), images=images)
    loop.run()
    plain = Trainer(scene, config.reconstruct, images=images)
    plain.train()
    # the rounds drew random numbers, yet densification sampled the same children: same splats
    assert loop.trainer.num_gaussians == plain.num_gaussians > 1000
    for name, value in plain.splats.items():
        torch.testing.assert_close(loop.trainer.splats[name], value, rtol=0, atol=0)
