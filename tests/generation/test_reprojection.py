"""The reprojection repairer on scenes of known geometry (a textured plane, an occluding card, ray
cast exactly): colours land on the right pixels, occluded points are never coloured from photos
that cannot see them, confidence falls where photos disagree, uncovered pixels go to the next
stage; make_repairer's chains; and the fusion loop passing cameras and using confidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from splat.test_trainer import synthetic, tiny_config  # noqa: F401  (pytest puts tests/ on sys.path)

from genfusion.data.types import Camera
from genfusion.errors import GenFusionError
from genfusion.generation.fallback import FallbackRepairer
from genfusion.generation.photo_bank import PhotoBank, backproject_depth, depth_normals
from genfusion.generation.repairer import RepairClip, Repairer, RepairResult, make_repairer
from genfusion.generation.reproject_frame import blend_consistent, reproject_frame
from genfusion.generation.reprojection import ReprojectionRepairer
from genfusion.generation.reprojection_config import ReprojectionConfig

W, H = 48, 36
PLANE_Z = 4.0  # the textured plane z = 4 (world), seen by cameras near the origin looking along +z
CARD = (-0.25, 0.25, -0.25, 0.25, 2.0)  # occluding card: x0, x1, y0, y1, z (red)


def texture(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smooth colour of the plane at world (x, y): three different slow waves."""
    return torch.stack(
        [
            0.5 + 0.4 * torch.sin(3.0 * x),
            0.5 + 0.4 * torch.cos(2.5 * y),
            0.5 + 0.3 * torch.sin(2.0 * (x + y)),
        ],
        dim=-1,
    )


def camera(x: float, y: float = 0.0, yaw_deg: float = 0.0, w: int = W, h: int = H) -> Camera:
    """A pinhole at (x, y, 0) looking along +z, turned by ``yaw_deg`` about the y axis."""
    a = np.radians(yaw_deg)
    c2w = np.eye(4)
    c2w[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    c2w[:3, 3] = [x, y, 0.0]
    K = np.array([[40.0, 0, w / 2], [0, 40.0, h / 2], [0, 0, 1]])
    return Camera(camtoworld=c2w, K=K, width=w, height=h)


def cast(cam: Camera, card: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact image [H, W, 3] and z-depth [H, W] of the plane (and the red card) seen by ``cam``."""
    c2w = torch.tensor(cam.camtoworld, dtype=torch.float64)
    K = torch.tensor(cam.K, dtype=torch.float64)
    v, u = torch.meshgrid(
        torch.arange(cam.height, dtype=torch.float64) + 0.5,
        torch.arange(cam.width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    rays = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    world = rays @ c2w[:3, :3].T  # direction per unit camera z
    origin = c2w[:3, 3]
    t = (PLANE_Z - origin[2]) / world[..., 2]  # camera z-depth = t (rays have camera z = 1)
    hit = origin + t[..., None] * world
    image = texture(hit[..., 0], hit[..., 1])
    depth = t.clone()
    if card:
        x0, x1, y0, y1, zc = CARD
        tc = (zc - origin[2]) / world[..., 2]
        hc = origin + tc[..., None] * world
        on = (hc[..., 0] >= x0) & (hc[..., 0] <= x1) & (hc[..., 1] >= y0) & (hc[..., 1] <= y1) & (tc > 0)
        image[on] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        depth[on] = tc[on]
    return image.float(), depth.float()


def bank_of(cameras: list[Camera], card: bool = False, edit=None) -> PhotoBank:
    images, depths = zip(*(cast(c, card) for c in cameras), strict=True)
    images = [im.clone() for im in images]
    if edit is not None:
        edit(images)
    return PhotoBank.build(list(images), cameras, list(depths))


def clip_of(cameras: list[Camera], card: bool = False, render_noise: float = 0.0) -> RepairClip:
    rgb, depth = zip(*(cast(c, card) for c in cameras), strict=True)
    rgb = torch.stack(rgb)
    if render_noise:
        rgb = (rgb + render_noise * torch.randn(rgb.shape, generator=torch.Generator().manual_seed(0))).clamp(
            0, 1
        )
    return RepairClip(
        rgb=rgb, depth=torch.stack(depth), alpha=torch.ones(len(cameras), H, W), cameras=cameras
    )


def matrices(cam: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(cam.K, dtype=torch.float32), torch.tensor(cam.camtoworld, dtype=torch.float32)


# ------------------------------------------------------------------------------------ geometry


def test_backprojection_and_normals_of_a_plane():
    cam = camera(0.3, yaw_deg=10)
    _, depth = cast(cam)
    K, c2w = matrices(cam)
    points, valid = backproject_depth(depth, K, c2w)
    assert valid.all()
    assert torch.allclose(points[..., 2], torch.full_like(depth, PLANE_Z), atol=1e-4)
    normals = depth_normals(points, valid, c2w[:3, 3])
    assert torch.allclose(normals, torch.tensor([0.0, 0.0, -1.0]).expand_as(normals), atol=1e-4)


def test_colours_land_on_the_right_pixels():
    """Three photos from other places and angles: the novel view gets the plane's true colours."""
    sources = [camera(-0.4), camera(0.5, 0.1, yaw_deg=8), camera(0.1, -0.3, yaw_deg=-6)]
    bank = bank_of(sources)
    novel = camera(0.15, 0.05, yaw_deg=4)
    truth, depth = cast(novel)
    K, c2w = matrices(novel)
    frame = reproject_frame(depth, K, c2w, bank, ReprojectionConfig())
    covered = frame.covered
    assert covered.float().mean() > 0.8  # the photos overlap most of the novel view
    error = (frame.rgb - truth).abs().amax(-1)
    assert float(error[covered].mean()) < 0.01 and float(error[covered].max()) < 0.05
    # pixels seen by all three photos agree, so confidence is high there
    assert float(frame.confidence[frame.views == 3].mean()) > 0.9
    # a translated copy (colours landing one pixel off) would be far worse than what we got
    shifted = (torch.roll(truth, 1, dims=1) - truth).abs().amax(-1)
    assert float(shifted[covered].mean()) > 5 * float(error[covered].mean())


def test_same_camera_returns_the_photo():
    cam = camera(0.2)
    bank = bank_of([cam])
    truth, depth = cast(cam)
    K, c2w = matrices(cam)
    frame = reproject_frame(depth, K, c2w, bank, ReprojectionConfig())
    assert frame.covered.all()
    assert torch.allclose(frame.rgb, truth, atol=1e-5)


def test_occluded_points_are_not_filled_from_a_photo_that_cannot_see_them():
    """The source sees a red card in front of the plane; the novel camera, far to the side, sees the
    plane behind it. Without a second photo those plane points stay uncovered (never red); with a
    photo that sees them they take its (true) colour."""
    occluded_source = camera(0.0)
    novel = camera(1.0, yaw_deg=12)
    truth, depth = cast(novel, card=True)
    assert not (truth == torch.tensor([1.0, 0.0, 0.0])).all(-1).any()  # the card is out of the novel view
    K, c2w = matrices(novel)
    # plane points of the novel view that hide behind the card in the source
    points, _ = backproject_depth(depth, K, c2w)
    x0, x1, y0, y1, zc = CARD
    s = zc / PLANE_Z  # the card's shadow from the origin onto the plane, scaled
    hidden = (points[..., 0] * s >= x0) & (points[..., 0] * s <= x1)
    hidden &= (points[..., 1] * s >= y0) & (points[..., 1] * s <= y1)
    assert hidden.sum() > 30

    frame = reproject_frame(depth, K, c2w, bank_of([occluded_source], card=True), ReprojectionConfig())
    red = (frame.rgb[..., 0] > 0.9) & (frame.rgb[..., 1] < 0.1)
    assert not (red & frame.covered).any()
    assert not frame.covered[hidden].any()
    u = 40.0 * points[..., 0] / points[..., 2] + W / 2  # where the source (at the origin) sees them
    v = 40.0 * points[..., 1] / points[..., 2] + H / 2
    in_source = (u > 1) & (u < W - 1) & (v > 1) & (v < H - 1)
    assert frame.covered[~hidden & in_source].float().mean() > 0.95  # the rest is brought over

    # a depth test switched off in effect (huge tolerance) would paint the card on the plane: the
    # check is what prevents it
    loose = reproject_frame(
        depth, K, c2w, bank_of([occluded_source], card=True), ReprojectionConfig(depth_tolerance=10.0)
    )
    assert ((loose.rgb[..., 0] > 0.9) & loose.covered)[hidden].float().mean() > 0.5

    seeing = camera(0.9, yaw_deg=10)  # sees the plane behind the card
    frame = reproject_frame(
        depth, K, c2w, bank_of([occluded_source, seeing], card=True), ReprojectionConfig()
    )
    assert frame.covered[hidden].float().mean() > 0.9
    assert float((frame.rgb - truth).abs().amax(-1)[hidden & frame.covered].max()) < 0.05


def test_confidence_falls_where_views_disagree():
    """Three photos; in one of them a patch of the plane is repainted (a reflection, a passer-by):
    there the blend follows the two that agree, and confidence drops."""
    sources = [camera(-0.3), camera(0.3), camera(0.0, 0.3)]

    def repaint(images):
        images[2][10:26, 14:34] = torch.tensor([0.1, 0.9, 0.1])

    bank = bank_of(sources, edit=repaint)
    novel = camera(0.0, 0.1)
    truth, depth = cast(novel)
    K, c2w = matrices(novel)
    frame = reproject_frame(depth, K, c2w, bank, ReprojectionConfig())
    # novel pixels whose point lands in the repainted patch of source 2
    points, _ = backproject_depth(depth, K, c2w)
    src = sources[2]
    cam_pts = (points - torch.tensor(src.center, dtype=torch.float32)) @ torch.tensor(
        src.rotation, dtype=torch.float32
    )
    u = 40.0 * cam_pts[..., 0] / cam_pts[..., 2] + W / 2
    v = 40.0 * cam_pts[..., 1] / cam_pts[..., 2] + H / 2
    patch = (u >= 15) & (u < 33) & (v >= 11) & (v < 25)  # a pixel inside the edit's border
    clean = frame.covered & ~((u >= 12) & (u < 36) & (v >= 8) & (v < 28)) & (frame.views == 3)
    assert patch.sum() > 50 and clean.sum() > 50
    assert float(frame.confidence[clean].mean()) > 0.9
    assert float(frame.confidence[patch].mean()) < 0.8 * float(frame.confidence[clean].mean())
    # the two agreeing photos win: the repainted green never reaches the output there
    assert float((frame.rgb - truth).abs().amax(-1)[patch].max()) < 0.05


def test_blend_with_two_disagreeing_views_has_half_agreement():
    colours = torch.tensor([[[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]])  # [S=2, P=1, 3]
    weights = torch.tensor([[1.0], [0.9]])
    colour, agreeing, share, views = blend_consistent(colours, weights, 0.08)
    assert torch.allclose(colour, torch.zeros(1, 3), atol=1e-4)  # the heavier view wins, no grey mix
    assert abs(float(share) - 1.0 / 1.9) < 1e-3 and int(views) == 1


# ------------------------------------------------------------------------------------ the repairer


def test_repairer_chain_fills_only_what_no_photo_sees():
    sources = [camera(-0.2), camera(0.2)]
    repairer = ReprojectionRepairer(FallbackRepairer(), ReprojectionConfig(uncovered="next"), reason="test")
    assert isinstance(repairer, Repairer) and repairer.name == "reproject+fallback"
    images, depths = zip(*(cast(c) for c in sources), strict=True)
    repairer.set_photos(list(images), sources, list(depths))
    novel = [camera(0.0, yaw_deg=35), camera(0.05, yaw_deg=30)]  # turned: part of it is unseen
    clip = clip_of(novel, render_noise=0.2)  # a poor render: photos must replace it
    result = repairer.repair(clip)
    truth = torch.stack([cast(c)[0] for c in novel])
    frames = repairer.reproject(clip)
    covered = torch.stack([f.covered for f in frames])
    assert 0.2 < covered.float().mean() < 0.95
    error = (result.rgb - truth).abs().amax(-1)
    assert float(error[covered].mean()) < 0.02  # real photo colours where covered
    noisy = (clip.rgb - truth).abs().amax(-1)
    assert float(error[covered].mean()) < 0.2 * float(noisy[covered].mean())
    # what no photo sees was filled (from the photo-repaired pixels), not left as the noisy render
    assert float((result.rgb - clip.rgb).abs().amax(-1)[~covered].mean()) > 0.1
    assert result.confidence is not None and result.unreliable is not None
    cfg = repairer.config
    assert torch.allclose(
        result.confidence[~covered], torch.full_like(result.confidence[~covered], cfg.fill_confidence)
    )
    assert float(result.confidence[covered].mean()) > 0.8
    # unreliable: every uncovered pixel, and covered ones where the noisy render disagrees
    assert result.unreliable[~covered].all() and result.unreliable[covered].float().mean() > 0.3
    assert torch.equal(result.depth, clip.depth)  # the render's depth was valid everywhere


def test_with_the_fill_a_covering_render_is_kept_and_never_supervised():
    """uncovered="auto" before the weight-free fill: where no photo sees the surface but the
    render covers it, the render stays (the fill would only blur it) with confidence 0; covered
    pixels still carry the photos with their own confidence."""
    sources = [camera(-0.2), camera(0.2)]
    repairer = ReprojectionRepairer(FallbackRepairer(), reason="test")
    images, depths = zip(*(cast(c) for c in sources), strict=True)
    repairer.set_photos(list(images), sources, list(depths))
    clip = clip_of([camera(0.0, yaw_deg=35)], render_noise=0.2)
    result = repairer.repair(clip)
    covered = repairer.reproject(clip)[0].covered[None]
    assert 0.2 < covered.float().mean() < 0.95
    assert torch.equal(result.rgb[~covered], clip.rgb.clamp(0, 1)[~covered])
    assert float(result.confidence[~covered].abs().max()) == 0.0
    assert float(result.confidence[covered].mean()) > 0.8


def test_reproject_alone_keeps_the_render_and_without_photos_passes_clips_on():
    novel = [camera(0.0, yaw_deg=35)]
    clip = clip_of(novel)
    alone = ReprojectionRepairer(reason="test")
    assert alone.name == "reproject"
    result = alone.repair(clip)  # no photo bank yet
    assert torch.equal(result.rgb, clip.rgb) and result.confidence is None
    assert any("no photo bank" in w for w in result.warnings)
    sources = [camera(0.0)]
    alone.set_photos([cast(sources[0])[0]], sources, [cast(sources[0])[1]])
    result = alone.repair(clip)
    frames = alone.reproject(clip)
    assert torch.equal(result.rgb[0][~frames[0].covered], clip.rgb[0][~frames[0].covered])
    no_cameras = RepairClip(rgb=clip.rgb, depth=clip.depth, alpha=clip.alpha)
    chained = ReprojectionRepairer(FallbackRepairer())
    chained.set_photos([cast(sources[0])[0]], sources, [cast(sources[0])[1]])
    passed = chained.repair(no_cameras)
    assert passed.repairer == "reproject+fallback" and any("no cameras" in w for w in passed.warnings)


def test_clip_cameras_must_match_the_frames():
    rgb, depth = cast(camera(0.0))
    with pytest.raises(GenFusionError, match="cameras"):
        RepairClip.from_arrays(rgb[None], depth[None], torch.ones(1, H, W), cameras=[camera(0), camera(1)])
    with pytest.raises(GenFusionError, match="frames are"):
        RepairClip.from_arrays(rgb[None], depth[None], torch.ones(1, H, W), cameras=[camera(0, w=10)])


def test_masked_windows_as_photos_with_shifted_principal_points():
    """A photo bank of cropped windows (the masked protocol's training views) lands colours as the
    full frames would."""
    from genfusion.data.splits import CropWindow

    full = [camera(-0.3), camera(0.3)]
    windows = [CropWindow(4, 3, W // 2, H // 2), CropWindow(20, 15, W // 2, H // 2)]
    cams = [win.camera(c) for win, c in zip(windows, full, strict=True)]
    images, depths = zip(*(cast(c) for c in cams), strict=True)
    bank = PhotoBank.build(list(images), cams, list(depths))
    novel = camera(0.0)
    truth, depth = cast(novel)
    K, c2w = matrices(novel)
    frame = reproject_frame(depth, K, c2w, bank, ReprojectionConfig())
    assert 0.2 < frame.covered.float().mean() < 0.8  # only what the windows saw
    assert float((frame.rgb - truth).abs().amax(-1)[frame.covered].max()) < 0.05


def test_make_repairer_chains(tmp_path):
    auto = make_repairer("auto", weights_dir=tmp_path / "none")
    assert auto.name == "fallback"  # without weights the fill alone (bench_fusion.py: no worse)
    assert "does not exist" in auto.description and "reproject+fallback" in auto.description
    assert make_repairer("reproject").name == "reproject"
    assert make_repairer("reproject+fallback").name == "reproject+fallback"
    with pytest.raises(GenFusionError, match="genfusion download"):
        make_repairer("reproject+diffusion", weights_dir=tmp_path / "none")
    tuned = make_repairer("reproject+fallback", reprojection_options={"max_sources": 3})
    assert tuned.config.max_sources == 3


def test_hybrid_feeds_the_diffusion_stage_the_reprojected_clip():
    """With a (stand-in) diffusion stage the model sees the photo-repaired colours, not the raw
    render, and its output is used where no photo sees the pixel."""

    class Recorder:
        name = "diffusion"
        description = "stand-in diffusion model"

        def __init__(self):
            self.seen = None

        def repair(self, clip, *, seed=None, progress=None):
            self.seen = clip
            grey = torch.full_like(clip.rgb, 0.5)
            return RepairResult(rgb=grey, depth=clip.depth, reliable=clip.alpha > 0.5, repairer=self.name)

    model = Recorder()
    repairer = ReprojectionRepairer(model)
    assert repairer.name == "reproject+diffusion"
    sources = [camera(-0.2), camera(0.2)]
    images, depths = zip(*(cast(c) for c in sources), strict=True)
    repairer.set_photos(list(images), sources, list(depths))
    clip = clip_of([camera(0.0, yaw_deg=35)], render_noise=0.3)
    result = repairer.repair(clip)
    covered = repairer.reproject(clip)[0].covered
    truth = cast(clip.cameras[0])[0]
    fed = model.seen.rgb[0]
    assert float((fed - truth).abs().amax(-1)[covered].max()) < 0.05  # photos, not the noisy render
    assert torch.allclose(result.rgb[0][~covered], torch.full_like(result.rgb[0][~covered], 0.5))
    assert torch.allclose(result.confidence[0][~covered], torch.tensor(repairer.config.diffusion_confidence))


# ------------------------------------------------------------------------------------ the loop


def test_the_loop_passes_cameras_refreshes_photos_and_weights_by_confidence(synthetic, tmp_path):  # noqa: F811
    from genfusion.fusion.config import FusionConfig, resolve
    from genfusion.fusion.loop import FusionLoop

    scene, images = synthetic

    class Spy(ReprojectionRepairer):
        def __init__(self):
            super().__init__(FallbackRepairer(), reason="test")
            self.clips, self.results, self.banks = [], [], 0

        def set_photos(self, *args, **kwargs):
            self.banks += 1
            super().set_photos(*args, **kwargs)

        def repair(self, clip, **kwargs):
            result = super().repair(clip, **kwargs)
            self.clips.append(clip)
            self.results.append(result)
            return result

    reconstruct = tiny_config(method="3dgs", iterations=40, split="masked2", max_gaussians=400)
    config = resolve(
        FusionConfig(
            mode="masked", budget="paper", reconstruct=reconstruct, clip_length=4, event_image_size=16
        ),
        explicit={"iterations", "split"},
    )
    spy = Spy()
    events = []
    loop = FusionLoop(scene, config, tmp_path / "run", progress=events.append, repairer=spy, images=images)
    loop.run()
    assert spy.banks == len(config.rounds)  # fresh photo depths every round
    train_cameras = loop.trainer.split.train_cameras(scene)
    assert len(spy.bank) == len(train_cameras)
    assert spy.bank.sizes[0].tolist() == [train_cameras[0].width, train_cameras[0].height]  # windows
    clip = spy.clips[-1]
    assert clip.cameras is not None and len(clip.cameras) == clip.num_frames
    assert (clip.cameras[0].width, clip.cameras[0].height) == (
        scene.cameras[0].width,
        scene.cameras[0].height,
    )
    last = spy.results[-1]
    views = list(loop.trainer.generated.views.values())
    assert all(v.weight is not None for v in views)
    # the confidence, raised to the background's share where the splats let it through
    # (remove_background, on without the diffusion model; the clip's alpha is the rendered one)
    expected = torch.maximum(last.confidence[-1], 1 - clip.alpha[-1].clamp(0, 1))
    assert torch.allclose(views[-1].weight.cpu(), expected, atol=1e-6)
    assert bool((expected > last.confidence[-1]).any())  # both terms matter in this scene
    # the events show the repairer's unreliable map
    rounds = [e for e in events if e.stage == "fusion.round"]
    assert rounds[-1].metrics["unreliable_before"] > 0
    mask = rounds[-1].payload["frames"][0][2]
    assert mask.shape[:2] == rounds[-1].payload["frames"][0][0].shape[:2]
    assert "repair.reproject" not in {e.stage for e in events}  # repair progress is not forwarded
