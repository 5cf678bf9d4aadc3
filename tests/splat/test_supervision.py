"""Generated views fed to a running trainer: the loss sees them (and not their zero-weight pixels),
resume after adding them is exact, bad views are refused; the masked-input split; train(until=)
extension and cancellation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genfusion.errors import Cancelled, GenFusionError
from genfusion.splat import checkpoint as ckpt
from genfusion.splat.supervision import GeneratedView, GeneratedWeight
from genfusion.splat.trainer import Trainer

from .test_trainer import H, W, synthetic, tiny_config  # noqa: F401  (synthetic is a fixture)


def novel_view(trainer: Trainer, name: str = "gen0", *, zero_left: bool = True) -> GeneratedView:
    """A generated view at a test camera: the current render, recoloured (so it teaches something),
    with its rendered depth and a weight map that is 0 on the left half."""
    camera = trainer.scene.cameras[trainer.test_ids[0]]
    out = trainer.render(camera)
    weight = torch.ones(camera.height, camera.width)
    if zero_left:
        weight[:, : camera.width // 2] = 0.0
    return GeneratedView(
        name=name,
        viewmat=torch.as_tensor(camera.worldtocam, dtype=torch.float32),
        K=torch.as_tensor(camera.K, dtype=torch.float32),
        image=(1.0 - out.rgb[0]).clamp(0, 1),
        depth=out.depth[0, ..., 0] * 1.3 + 0.2,  # scale and shift: the invariant loss ignores both
        weight=weight,
    )


def test_generated_view_reaches_the_loss_but_not_its_zero_weight_pixels(synthetic):  # noqa: F811
    scene, images = synthetic
    cfg = tiny_config(method="3dgs", iterations=30, max_gaussians=300)
    trainers = [Trainer(scene, cfg, images=images) for _ in range(2)]
    before = [trainer.train(until=10) for trainer in trainers]
    assert all("generated_l1" not in s.terms and s.generated_view is None for s in before)  # none yet

    base = novel_view(trainers[0])
    other = novel_view(trainers[1])
    # the second view differs from the first only where its weight is zero
    left = base.weight == 0
    other.image[left] = torch.rand(int(left.sum()), 3, generator=torch.Generator().manual_seed(1))
    other.depth[left] = 50.0
    trainers[0].add_generated_views([base])
    trainers[1].add_generated_views([other])
    stats = []
    for trainer in trainers:  # densification's split noise comes from the global RNG: same for both
        torch.manual_seed(5)
        stats.append([trainer.train_step() for _ in range(8)])
    terms = stats[0][0].terms
    assert stats[0][0].generated_view == "gen0"
    assert terms["generated_l1"] > 0.01 and terms["generated_dssim"] > 0 and terms["generated_depth"] >= 0
    assert stats[0][0].loss == pytest.approx(sum(terms.values()), rel=1e-5)
    # ... and the zero-weight pixels changed nothing: the same losses and parameters. (Up to float
    # rounding: two backward passes into one parameter sum in an order the 2-thread CPU kernels do
    # not fix, 6e-8 at worst measured; the pixels themselves move the loss by > 1e-3, see below.)
    np.testing.assert_allclose([s.loss for s in stats[0]], [s.loss for s in stats[1]], rtol=1e-6)
    for name in trainers[0].splats.keys():
        torch.testing.assert_close(trainers[0].splats[name], trainers[1].splats[name], rtol=1e-5, atol=1e-6)
    # the same change on *weighted* pixels does reach the loss
    seen = novel_view(trainers[0], "seen")
    seen.image[~left] = 0.3
    trainers[0].add_generated_views([seen], replace_all=True)
    changed = trainers[0].generated.views["seen"]
    l1_seen = trainers[0]._generated_terms(changed, 1.0, 1, trainers[0].background, 20)[0]["generated_l1"]
    assert abs(float(l1_seen) - stats[0][-1].terms["generated_l1"]) > 1e-3


def test_generated_view_changes_training_and_its_weight_schedule_applies(synthetic):  # noqa: F811
    scene, images = synthetic
    cfg = tiny_config(method="3dgs", iterations=30)
    plain, fed = Trainer(scene, cfg, images=images), Trainer(scene, cfg, images=images)
    plain.train(until=5)
    fed.train(until=5)
    window = GeneratedWeight(peak=2.0, start=7, stop=12, shape="half_sine")
    fed.add_generated_views([novel_view(fed, zero_left=False)], weight=window)
    steps = [fed.train_step() for _ in range(10)]
    used = [s.step - 1 for s in steps if s.generated_view]  # the 0-based steps that trained on it
    assert used == [8, 9, 10, 11]  # sin(0) = 0 at step 7: the half-sine window is (7, 12)
    for _ in range(10):
        plain.train_step()
    assert not torch.equal(plain.splats["means"], fed.splats["means"])


def test_resume_after_adding_generated_views_is_exact(synthetic, tmp_path):  # noqa: F811
    scene, images = synthetic
    path = tmp_path / "checkpoint.pt"
    cfg = tiny_config(method="2dgs", iterations=30, checkpoint_every=0)
    first = Trainer(scene, cfg, images=images, checkpoint_path=path)
    first.train(until=8)
    first.add_generated_views([novel_view(first, "a"), novel_view(first, "b", zero_left=False)])
    first.train(until=14)
    first.save_checkpoint()
    first.train()

    second = Trainer(scene, cfg, images=images, checkpoint_path=path)
    second.load_state(ckpt.load_checkpoint(path))
    assert second.generated.names() == ["a", "b"] and second.step == 14
    second.train()
    for name in first.splats.keys():
        torch.testing.assert_close(first.splats[name], second.splats[name], rtol=0, atol=0)


def test_a_new_round_replaces_the_last_ones_views(synthetic):  # noqa: F811
    scene, images = synthetic
    trainer = Trainer(scene, tiny_config(iterations=10), images=images)
    trainer.add_generated_views([novel_view(trainer, "r0a"), novel_view(trainer, "r0b")])
    trainer.add_generated_views([novel_view(trainer, "r1a")], replace_all=True)
    assert trainer.generated.names() == ["r1a"]
    trainer.add_generated_views([novel_view(trainer, "r1a"), novel_view(trainer, "r1b")])
    assert trainer.generated.names() == ["r1a", "r1b"]


def test_bad_generated_views_are_refused_and_change_nothing(synthetic):  # noqa: F811
    scene, images = synthetic
    trainer = Trainer(scene, tiny_config(iterations=10), images=images)
    trainer.add_generated_views([novel_view(trainer, "kept")])
    wrong_size = novel_view(trainer, "bad")
    wrong_size.weight = torch.ones(H + 1, W)
    with pytest.raises(GenFusionError, match=r"weight map is \(25, 32\) but the image is \(24, 32\)"):
        trainer.add_generated_views([novel_view(trainer, "fine"), wrong_size])
    nan_depth = novel_view(trainer, "nan")
    nan_depth.depth[3, 4] = float("nan")
    with pytest.raises(GenFusionError, match="depth map holds 1 NaN/inf values; mark pixels without depth"):
        trainer.add_generated_views([nan_depth])
    assert trainer.generated.names() == ["kept"]  # the valid view of a refused call was not added


def test_train_until_extends_and_refuses_going_back(synthetic):  # noqa: F811
    scene, images = synthetic
    trainer = Trainer(scene, tiny_config(iterations=10), images=images)
    trainer.train()
    assert trainer.step == 10
    trainer.train(until=16)  # past config.iterations: the run goes on
    assert trainer.step == 16
    with pytest.raises(GenFusionError, match=r"train\(until=12\) is below the current step 16"):
        trainer.train(until=12)
    assert trainer.step == 16


def test_cancel_raises_the_one_cancellation_error_and_keeps_the_step(synthetic):  # noqa: F811
    scene, images = synthetic
    trainer = Trainer(scene, tiny_config(iterations=30), images=images)
    with pytest.raises(Cancelled, match="cancelled at step 7") as info:
        trainer.train(stop_check=lambda: trainer.step >= 7)
    assert info.value.step == 7 and trainer.step == 7
    assert isinstance(info.value, GenFusionError)  # the CLI and the app catch it like any user error
    trainer.train(until=9)
    assert trainer.step == 9


def test_masked_split_trains_only_inside_windows(synthetic):  # noqa: F811
    """Training frames are NaN outside their windows: if one such pixel reached the loss, the run
    would diverge. Test frames are whole and report full / inside / outside PSNR."""
    scene, images = synthetic
    cfg = tiny_config(method="3dgs", iterations=12, split="masked2")
    probe = Trainer(scene, cfg, images=images)
    split = probe.split
    assert split.train == [0, 2, 4, 6] and split.test == [1, 3, 5, 7]
    poisoned = [im.clone() for im in images]
    for i in split.train:
        outside = ~torch.as_tensor(split.windows[i].mask(W, H))
        poisoned[i][outside] = float("nan")
    trainer = Trainer(scene, cfg, images=poisoned)
    assert trainer.train_views.sizes == [(W // 2, H // 2)] * 4  # cropped to the window
    torch.testing.assert_close(trainer.train_views.images[1], split.windows[2].crop(images[2]))
    last = trainer.train()
    assert np.isfinite(last.loss)
    evaluation = trainer.evaluate(keep_renders=False)
    summary = evaluation.to_dict()
    assert summary["num_test_views"] == 4
    for view in evaluation.views:
        assert view.psnr_inside is not None and view.psnr_outside is not None
        # the full-frame MSE is the area-weighted mix of inside (1/4 of the pixels) and outside
        full = 10 ** (-view.psnr / 10)
        mixed = 0.25 * 10 ** (-view.psnr_inside / 10) + 0.75 * 10 ** (-view.psnr_outside / 10)
        assert full == pytest.approx(mixed, rel=1e-4)
    assert summary["psnr_inside"] == pytest.approx(np.mean([v.psnr_inside for v in evaluation.views]))


def test_unmasked_split_is_the_masked_protocol_with_whole_frames(synthetic):  # noqa: F811
    """The ceiling of the masked protocol: the same training and test frames, uncropped, and the
    test windows kept so inside / outside PSNR compare one to one."""
    scene, images = synthetic
    masked = Trainer(scene, tiny_config(method="3dgs", iterations=1, split="masked2"), images=images)
    full = Trainer(scene, tiny_config(method="3dgs", iterations=1, split="unmasked2"), images=images)
    assert (full.split.train, full.split.test) == (masked.split.train, masked.split.test)
    assert full.split.windows == {} and full.split.test_windows == masked.split.test_windows
    assert full.train_views.sizes == [(W, H)] * 4
    assert full.evaluate(keep_renders=False).views[0].psnr_outside is not None


def test_masked_split_on_a_too_small_scene_names_the_problem(synthetic):  # noqa: F811
    scene, images = synthetic
    small = scene.subset([0, 1, 2])
    with pytest.raises(GenFusionError, match=r"masked2 trains on one frame in 2 and needs at least 4 frames"):
        Trainer(small, tiny_config(split="masked2"), images=images[:3])
    with pytest.raises(GenFusionError, match=r"masked4 .* at least 8 frames, the scene has 3"):
        Trainer(small, tiny_config(split="masked4"), images=images[:3])
