"""Stage 2 of GenFusion: the reconstruction and the repairer improving each other in a loop.

At each round step (:mod:`genfusion.fusion.schedule`) the loop

1. renders RGB-D clips along the round's novel camera path (:mod:`genfusion.fusion.trajectory`),
2. repairs them (:mod:`genfusion.generation`: the diffusion model, or the weight-free repairer),
3. optionally adds Gaussians where the renders were unreliable (:mod:`genfusion.fusion.expansion`),
4. hands the repaired frames to the trainer as generated views, with their depth and a half-sine
   weight over the round's window; they replace the previous round's (or decay, ``keep_previous``),

and trains on real plus generated views until the next round. Densification statistics come from
the real views only (the trainer's default).

Observability: every round emits :class:`~genfusion.progress.ProgressEvent` values with a payload
the app streams (stage ``fusion.round``: small rendered / repaired frames and unreliable masks,
counts, loss terms, test metrics; ``fusion.snapshot``: the splats, throttled), and writes
``rounds/NN/`` (frames side by side, ``round.json``) and a line to ``events.jsonl``.

Run folder (``genfusion fuse --out DIR``): the reconstruction's files (:mod:`genfusion.splat.run`:
``checkpoint.pt``, ``splats.ply``, ``metrics.json``, ``renders/``, ``config.json``), plus
``fusion.json`` (the resolved FusionConfig and one summary per round), ``rounds/`` and
``events.jsonl``. The checkpoint is saved after each round, with that round's generated views in
it, and ``fusion_state.json`` names the last round done, so a cancelled run resumes from its last
round (``--resume``) and an interrupted one never leaves a half-written round.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genfusion.atomic import atomic_directory, write_json_atomic
from genfusion.data.types import Camera, Scene
from genfusion.errors import GenFusionError
from genfusion.fusion.clips import ClipRenderer, RenderedClip
from genfusion.fusion.config import FusionConfig
from genfusion.fusion.schedule import round_weight
from genfusion.generation.repairer import RepairClip, Repairer, make_repairer
from genfusion.progress import ProgressCallback, ProgressEvent, emit
from genfusion.splat.supervision import GeneratedView
from genfusion.splat.trainer import Trainer

STATE_NAME = "fusion_state.json"
SUMMARY_NAME = "fusion.json"
EVENTS_NAME = "events.jsonl"
ROUNDS_NAME = "rounds"


@dataclass
class RoundReport:
    """What one generation round did (a line of ``fusion.json``, the metrics of its event)."""

    index: int  # 0-based round number
    step: int  # training step at which the round ran
    views: int  # novel views rendered
    used_views: int  # generated views handed to the trainer (unusable clips are skipped)
    unreliable_before: float  # share of unreliable pixels along the path when the round started
    unreliable_after: float  # the same after content expansion (equal without it)
    added_gaussians: int  # Gaussians added by content expansion
    num_gaussians: int  # Gaussians after the round
    seconds: dict[str, float] = field(default_factory=dict)  # render / repair / expansion time
    warnings: list[str] = field(default_factory=list)  # documented fallbacks taken
    test_psnr: float | None = None  # test views, when the scene has them, at the round's start
    test_psnr_outside: float | None = None  # masked protocol: outside the windows


def _cuda_devices(device: torch.device) -> list[int]:
    """The CUDA device whose random stream a forked block must restore (none on CPU)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _small(image: torch.Tensor, long_side: int) -> np.ndarray:
    """[H, W, C] in [0, 1] -> uint8, resized so its long side is at most ``long_side``."""
    import cv2

    array = (image.detach().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    h, w = array.shape[:2]
    scale = long_side / max(h, w)
    if scale < 1:
        array = cv2.resize(
            array, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    return array if array.ndim == 3 else array[..., None]


class FusionLoop:
    """One fusion run on a scene: a :class:`Trainer` plus the rounds that feed it.

    ``config`` must be resolved (:func:`genfusion.fusion.config.resolve`). ``images`` (one full
    frame per camera) skips reading photos (tests). ``repairer`` defaults to ``make_repairer``.
    """

    def __init__(
        self,
        scene: Scene,
        config: FusionConfig,
        out_dir: str | Path,
        *,
        progress: ProgressCallback | None = None,
        repairer: Repairer | None = None,
        images: list[np.ndarray | torch.Tensor] | None = None,
        scene_info: dict[str, Any] | None = None,
    ):
        if config.rounds is None:
            raise ValueError("FusionLoop needs a resolved FusionConfig (genfusion.fusion.config.resolve)")
        self.config = config
        self.scene = scene
        self.out_dir = Path(out_dir)
        self._progress = progress
        self.events_path = self.out_dir / EVENTS_NAME
        self.trainer = Trainer(
            scene,
            config.reconstruct,
            progress=self._emit,
            images=images,
            scene_info=scene_info,
            checkpoint_path=self.out_dir / "checkpoint.pt",
        )
        self.repairer = repairer or make_repairer(config.repairer, config.weights_dir)
        self.clips = ClipRenderer(self.trainer, scene, config, self.repairer)
        self.reports: list[RoundReport] = []
        self.next_round = 0
        self._last_snapshot = -math.inf
        self.out_dir.mkdir(parents=True, exist_ok=True)  # only once the trainer accepted the run

    # ------------------------------------------------------------------ events

    def _emit(self, event: ProgressEvent) -> None:
        """Forward to the caller and append a JSON line (payload arrays are left out)."""
        emit(self._progress, event)
        if event.stage == "fusion.snapshot" or not self.out_dir.is_dir():
            return  # the run folder exists once the trainer accepted the run (triangulation is before)
        line = {
            "time": round(time.time(), 3),
            "stage": event.stage,
            "step": event.step,
            "total": event.total,
            "message": event.message,
            "metrics": event.metrics,
        }
        with open(self.events_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, allow_nan=True) + "\n")

    def _snapshot(self, force: bool = False) -> None:
        """A throttled copy of the splats for live viewers (stage ``fusion.snapshot``)."""
        now = time.monotonic()
        if self._progress is None or (not force and now - self._last_snapshot < self.config.snapshot_every_s):
            return
        self._last_snapshot = now
        splats = {k: v.detach().cpu().clone() for k, v in self.trainer.splats.items()}
        emit(
            self._progress,
            ProgressEvent(
                "fusion.snapshot",
                self.trainer.step,
                self.config.reconstruct.iterations,
                f"{self.trainer.num_gaussians} Gaussians",
                payload={"splats": splats, "method": self.config.reconstruct.method},
            ),
        )

    # ------------------------------------------------------------------ novel views

    def novel_cameras(self, index: int) -> list[Camera]:
        """The cameras of round ``index``'s path, at the scene's full-frame resolution."""
        from genfusion.fusion import trajectory

        cfg, scene, split = self.config, self.scene, self.trainer.split
        train_cameras = [scene.cameras[i] for i in split.train]
        count = cfg.views_per_round
        path = cfg.path
        if path == "auto":  # completion: the user's path when given, else an ellipse
            path = "file" if cfg.camera_path else "ellipse"
        if path == "training":
            cameras = trajectory.full_frame_path(scene, split)
        elif path == "ellipse":
            cameras = trajectory.ellipse_path(
                train_cameras, count=count or 85, tilt_deg=cfg.tilt_deg * index, round_index=index
            )
        elif path == "orbit":
            cameras = trajectory.orbit_path(train_cameras, count=count or 48)
        elif path == "interpolate":
            cameras = trajectory.interpolate_path(train_cameras, count=count or 48)
        else:
            from genfusion.data.camera_path import read_camera_path

            reference = train_cameras[0]  # paths are rendered at the capture's resolution
            cameras = [
                c.resized(reference.width, reference.height)
                for c in read_camera_path(Path(cfg.camera_path))[0]
            ]
        if count is not None and len(cameras) > count:  # an even subsample keeps the path's extent
            keep = np.linspace(0, len(cameras) - 1, count).round().astype(int)
            cameras = [cameras[i] for i in keep]
        return cameras

    # ------------------------------------------------------------------ one round

    def run_round(self, index: int) -> RoundReport:
        """Render, repair, (expand), and hand the round's views to the trainer."""
        cfg, trainer = self.config, self.trainer
        step = trainer.step
        cameras = self.novel_cameras(index)
        emit(
            self._progress,
            ProgressEvent(
                "fusion.round.start", index, len(cfg.rounds), f"round {index + 1}: {len(cameras)} views"
            ),
        )
        test = self._test_metrics()
        seconds = {"render": 0.0, "repair": 0.0, "expansion": 0.0}
        views: list[GeneratedView] = []
        warnings: list[str] = []
        frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        unreliable_before, added, skipped_empty = [], 0, 0
        for start in range(0, len(cameras), cfg.clip_length):
            chunk = cameras[start : start + cfg.clip_length]
            t0 = time.perf_counter()
            rendered = self.clips.render(chunk)
            clip = rendered.clip
            t1 = time.perf_counter()
            result = self.repairer.repair(clip, seed=cfg.reconstruct.seed * 1_000 + index * 97 + start)
            t2 = time.perf_counter()
            seconds["render"] += t1 - t0
            seconds["repair"] += t2 - t1
            warnings += result.warnings
            masks = self.clips.unreliable_map(rendered, result)
            unreliable_before.append(float(masks.float().mean()))
            finite = torch.isfinite(result.rgb).all(dim=-1).all(dim=(1, 2)) & torch.isfinite(
                result.depth
            ).all(dim=(1, 2))
            if not result.usable or not bool(finite.any()):
                warnings.append(f"round {index + 1}: clip at view {start} was not usable and is skipped")
                continue
            if not bool(finite.all()):
                warnings.append(
                    f"round {index + 1}: {int((~finite).sum())} repaired frames held NaN and were dropped"
                )
            for j, camera in enumerate(chunk):
                if not bool(finite[j]):
                    continue
                if cfg.expansion:
                    t3 = time.perf_counter()
                    added += self._expand(camera, clip, result, j, index)
                    seconds["expansion"] += time.perf_counter() - t3
                view = self._generated_view(camera, rendered, result, j, f"r{index:02d}_{start + j:03d}")
                if view.weight is not None and not bool(view.weight.gt(0).any()):
                    skipped_empty += 1  # nothing in this frame to learn from
                    continue
                views.append(view)
                if len(frames) < 8:
                    size = cfg.event_image_size
                    frames.append(
                        (
                            _small(clip.rgb[j], size),
                            _small(result.rgb[j], size),
                            _small(masks[j, ..., None].float(), size),
                        )
                    )
        if skipped_empty:
            warnings.append(
                f"round {index + 1}: {skipped_empty} frames had nothing to repair and were not added"
            )
        if cfg.keep_previous:
            self._decay_previous()
        if views:
            trainer.add_generated_views(
                views,
                replace_all=not cfg.keep_previous,
                weight=round_weight(cfg.rounds, index, cfg.reconstruct.iterations, cfg.lambda_reg),
            )
        after = (
            self.clips.unreliable_fraction(cameras) if added else float(np.mean(unreliable_before or [0.0]))
        )
        report = RoundReport(
            index=index,
            step=step,
            views=len(cameras),
            used_views=len(views),
            unreliable_before=float(np.mean(unreliable_before or [0.0])),
            unreliable_after=after,
            added_gaussians=added,
            num_gaussians=trainer.num_gaussians,
            seconds={k: round(v, 3) for k, v in seconds.items()},
            warnings=warnings,
            test_psnr=test.get("psnr"),
            test_psnr_outside=test.get("psnr_outside"),
        )
        self._write_round(report, frames)
        metrics = {
            "views": float(report.views),
            "used_views": float(report.used_views),
            "unreliable_before": report.unreliable_before,
            "unreliable_after": report.unreliable_after,
            "added_gaussians": float(added),
            "num_gaussians": float(report.num_gaussians),
            **{f"seconds_{k}": v for k, v in report.seconds.items()},
            **{f"test_{k}": v for k, v in test.items() if v is not None},
        }
        self._emit(
            ProgressEvent(
                "fusion.round",
                index + 1,
                len(cfg.rounds),
                f"round {index + 1}/{len(cfg.rounds)} at step {step}: {len(views)} views"
                + (f", {added} Gaussians added" if added else ""),
                metrics=metrics,
                payload={
                    "round": index,
                    "frames": frames,
                    "warnings": warnings,
                    "cameras": [c.camtoworld.tolist() for c in cameras],
                },
            )
        )
        self._snapshot(force=True)
        self.reports.append(report)
        return report

    def _generated_weight(self, rendered: RenderedClip, result, j: int) -> torch.Tensor | None:
        """Per-pixel weight of frame ``j``: the repairer's confidence when it has one; for the
        weight-free fill the clip's holes (alpha below ``unreliable_alpha`` or no depth: elsewhere
        its smooth guess scores below the render); None (all pixels) for a model that repaints.
        With ``remove_background`` at least the background's share of the pixel (1 - alpha), the
        part the repair changed (fox, masked 1/2: fill 18.53 -> 19.32 dB; weight 1 everywhere,
        the render teaching itself too: 19.25)."""
        from genfusion.fusion.expansion import unreliable_mask

        clip = rendered.clip
        confidence = getattr(result, "confidence", None)
        if confidence is not None:
            weight = torch.nan_to_num(confidence[j].float(), nan=0.0).clamp(0, 1)
        elif result.repairer == "fallback":
            weight = unreliable_mask(clip.alpha[j], clip.depth[j], self.config.unreliable_alpha).float()
        else:
            return None
        if self.clips.removes_background:
            alpha = rendered.rendered_alpha[j].float()  # not the seen alpha the repairer may get
            shown_through = 1 - torch.nan_to_num(alpha, nan=0.0).clamp(0, 1)
            weight = torch.maximum(weight, shown_through)
        return weight

    def _generated_view(
        self, camera: Camera, rendered: RenderedClip, result, j: int, name: str
    ) -> GeneratedView:
        from genfusion.splat.cameras import camera_tensors

        viewmats, Ks = camera_tensors([camera], "cpu")
        depth = result.depth[j].clamp_min(0) if self.config.generated_depth else None
        weight = self._generated_weight(rendered, result, j)
        return GeneratedView(
            name=name,
            viewmat=viewmats[0],
            K=Ks[0],
            image=result.rgb[j].clamp(0, 1),
            depth=depth,
            weight=weight,
            depth_mode="invariant",
        )

    def _decay_previous(self) -> None:
        """keep_previous: every earlier view's weight map shrinks by ``previous_decay``."""
        for view in self.trainer.generated.views.values():
            base = (
                view.weight
                if view.weight is not None
                else torch.ones(view.height, view.width, device=view.image.device)
            )
            view.weight = base * self.config.previous_decay

    def _expand(self, camera: Camera, clip: RepairClip, result, j: int, index: int) -> int:
        """Content expansion for one frame: new Gaussians where the render was unreliable."""
        from genfusion.fusion.expansion import align_depth, new_gaussians, sample_expansion, unreliable_mask
        from genfusion.splat.append import append_gaussians

        cfg = self.config
        alpha, rendered = clip.alpha[j], clip.depth[j]
        mask = unreliable_mask(alpha, rendered, cfg.unreliable_alpha)
        if not bool(mask.any()):
            return 0
        alignment = align_depth(result.depth[j], rendered, alpha > cfg.align_alpha)
        if not alignment.fitted:  # too little overlap to place generated depth: add nothing here
            return 0
        aligned = alignment.aligned
        generator = torch.Generator().manual_seed(cfg.reconstruct.seed * 7_777 + index * 131 + j)
        points, colors = sample_expansion(
            result.rgb[j],
            aligned,
            mask & (aligned > 0),
            camera,
            fraction=cfg.expansion_fraction,
            generator=generator,
        )
        if len(points) == 0:
            return 0
        trainer = self.trainer
        new = new_gaussians(points, colors, trainer.splats["means"].detach().cpu(), cfg.reconstruct.sh_degree)
        new = {k: v.to(trainer.device) for k, v in new.items()}
        return append_gaussians(trainer.splats, trainer.optimizers, trainer.strategy_state, new)

    def _test_metrics(self) -> dict[str, float | None]:
        if not len(self.trainer.test_views):
            return {}
        evaluation = self.trainer.evaluate(keep_renders=False)
        return {
            "psnr": evaluation.mean("psnr"),
            "ssim": evaluation.mean("ssim"),
            "psnr_outside": evaluation.mean("psnr_outside"),
            "psnr_inside": evaluation.mean("psnr_inside"),
        }

    def _write_round(self, report: RoundReport, frames) -> None:
        """``rounds/NN/``: rendered | repaired | unreliable per frame, and ``round.json``; whole."""
        import imageio.v3 as iio

        with atomic_directory(self.out_dir / ROUNDS_NAME / f"{report.index:02d}") as folder:
            for k, (rendered, repaired, mask) in enumerate(frames):
                mask_rgb = np.repeat(mask, 3, axis=-1)
                iio.imwrite(
                    folder / f"frame{k:02d}.png", np.concatenate([rendered, repaired, mask_rgb], axis=1)
                )
            write_json_atomic(folder / "round.json", report.__dict__)

    # ------------------------------------------------------------------ the run

    def resume(self) -> None:
        """Continue from the checkpoint and ``fusion_state.json`` of ``out_dir``."""
        from genfusion.splat import checkpoint as ckpt

        state_path = self.out_dir / STATE_NAME
        if not state_path.is_file():
            raise GenFusionError(
                f"{self.out_dir} holds no fusion run to resume ({STATE_NAME} is missing); "
                "start it without --resume"
            )
        state = json.loads(state_path.read_text(encoding="utf-8"))
        self.trainer.load_state(ckpt.load_checkpoint(self.out_dir / "checkpoint.pt"))
        self.next_round = int(state["next_round"])
        self.reports = [RoundReport(**r) for r in state.get("reports", [])]

    def _save_state(self) -> None:
        self.trainer.save_checkpoint()
        write_json_atomic(
            self.out_dir / STATE_NAME,
            {
                "next_round": self.next_round,
                "step": self.trainer.step,
                "reports": [r.__dict__ for r in self.reports],
            },
        )

    def run(self, stop_check=None) -> dict[str, Any]:
        """Train with every remaining round, then evaluate and write the run folder; returns the
        metrics. ``stop_check()`` returning True raises :class:`~genfusion.errors.Cancelled`; the
        folder then holds the last completed round (resumable)."""
        from genfusion.splat.run import run_metrics, write_run

        cfg, trainer = self.config, self.trainer
        while self.next_round < len(cfg.rounds):
            trainer.train(until=cfg.rounds[self.next_round], stop_check=stop_check)
            # the round draws its own random numbers (repairers, expansion samples) from a forked
            # stream, so training continues on the stream a plain run would have: a round that
            # adds no view leaves the run bit-identical to plain (densification samples globally)
            with torch.random.fork_rng(devices=_cuda_devices(trainer.device)):
                self.run_round(self.next_round)
            self.next_round += 1
            self._save_state()
        trainer.train(until=cfg.reconstruct.iterations, stop_check=stop_check)
        trainer.save_checkpoint()
        self._snapshot(force=True)
        evaluation = trainer.evaluate()
        write_run(self.out_dir, trainer, evaluation)
        metrics = run_metrics(trainer, evaluation)
        summary = {
            "config": cfg.to_dict(),
            "repairer": getattr(self.repairer, "description", ""),
            "rounds": [r.__dict__ for r in self.reports],
            "metrics": {k: v for k, v in metrics.items() if k != "views"},
        }
        write_json_atomic(self.out_dir / SUMMARY_NAME, summary)
        self._emit(
            ProgressEvent(
                "fusion.done",
                len(cfg.rounds),
                len(cfg.rounds),
                "fusion finished",
                metrics={
                    k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v is not None
                },
            )
        )
        return metrics
