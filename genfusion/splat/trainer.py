"""The reconstruction loop: Gaussians fitted to posed photos (2DGS or 3DGS), and to generated
views when a fusion loop adds them.

One step = render one real training view (a fresh random permutation of the views every epoch)
with the 3DGS colour loss plus the 2DGS regularisers; when generated views are present and their
weight (:class:`~genfusion.splat.supervision.GeneratedWeight`) is above zero at this step, also
one generated view, with its per-pixel weights and depth target; then Adam on every parameter,
gsplat's densification strategy around the backward pass (statistics from real views only unless
``densify_on_generated``), and the SH-degree ramp. Every loss term is reported by name.

``Trainer`` owns that state; it never writes files except the checkpoint it is asked to save
(:mod:`genfusion.splat.run` writes the run folder). The checkpoint holds the generated views too,
so resuming after they were added is exact.

Errors: NaN or inf in the loss or the parameters stops the run with :class:`TrainingDiverged`,
naming the last good checkpoint, which is left untouched. ``stop_check()`` returning True raises
:class:`~genfusion.errors.Cancelled` (the project's one cancellation exception); the trainer is
then at its last completed step and may still be evaluated or saved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genfusion.data.types import Camera, Scene
from genfusion.device import resolve_device
from genfusion.errors import Cancelled, GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent, emit
from genfusion.splat import checkpoint as ckpt
from genfusion.splat.cameras import camera_tensors
from genfusion.splat.config import ReconstructConfig, Schedule, schedule_for
from genfusion.splat.data_loader import Views, resolve_split, split_views, view_order
from genfusion.splat.densify import (
    build_strategy,
    densification_of,
    enforce_cap,
    prune_opacity_of,
    reset_opacities,
)
from genfusion.splat.evaluation import Evaluation, ViewMetrics, evaluate_views
from genfusion.splat.gaussians import (
    active_sh_degree,
    create_optimizers,
    create_splats,
    initial_points,
    keep_points_seen_by,
    learning_rates,
    means_lr_at,
    scene_scale_of,
    scene_to_start_from,
)
from genfusion.splat.losses import psnr_of_mse
from genfusion.splat.memory import check_training_memory
from genfusion.splat.objective import generated_view_terms, real_view_terms
from genfusion.splat.render import RenderOutput
from genfusion.splat.supervision import GeneratedView, GeneratedViews, GeneratedWeight

__all__ = [
    "Evaluation",
    "StepStats",
    "Trainer",
    "TrainingDiverged",
    "ViewMetrics",
    "resolve_device",
]


class TrainingDiverged(GenFusionError):
    """NaN/inf appeared during training; the last good checkpoint was kept."""


@dataclass
class StepStats:
    """What one optimisation step measured."""

    step: int  # the step just completed (1-based count of steps done)
    loss: float  # total loss
    psnr: float  # PSNR of the real training view rendered in this step
    num_gaussians: int  # Gaussians after densification
    sh_degree: int  # SH degree used for this step
    terms: dict[str, float] = field(default_factory=dict)  # each loss term's share of ``loss``
    generated_view: str | None = None  # the generated view trained in this step, if any


class Trainer:
    """Stateful 2DGS/3DGS optimisation of one scene.

    ``images`` (optional, one full-frame [H, W, 3] array per camera of ``scene``) skips reading
    the photos, which tests use for synthetic scenes.
    """

    def __init__(
        self,
        scene: Scene,
        config: ReconstructConfig,
        *,
        progress: ProgressCallback | None = None,
        images: list[np.ndarray | torch.Tensor] | None = None,
        scene_info: dict[str, Any] | None = None,
        checkpoint_path: str | Path | None = None,
    ):
        self.config = config
        self.scene = scene
        self.progress = progress
        self.device = resolve_device(config.device)
        self.scene_info = scene_info or {
            "path": str(scene.root),
            "downscale": config.downscale,
            "format": scene.format,
        }
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.last_good_checkpoint_step: int | None = None
        self.schedule: Schedule = schedule_for(config)
        if config.densification == "mcmc" and self.device.type != "cuda":
            raise GenFusionError(
                "--densification mcmc needs a CUDA GPU (gsplat's MCMC relocation is a CUDA kernel); "
                "use --densification default on CPU"
            )

        self.split = resolve_split(scene, config.split)
        self.train_ids, self.test_ids = list(self.split.train), list(self.split.test)
        self.scene_scale = scene_scale_of(scene.subset(self.train_ids))

        torch.manual_seed(config.seed)
        # a capture without sparse points gets them triangulated at its poses (init_points)
        start = scene_to_start_from(scene, config.init_points, photos=images is None, progress=progress)
        sparse_note = ""
        if config.split.startswith("sparse") and start.has_points:
            start, sparse_note = keep_points_seen_by(start, self.train_ids)
        points, colors, self.init_note = initial_points(
            start.subset(self.train_ids),
            random_count=config.init_random_points,
            max_points=config.max_init_points,
            extent=config.init_extent,
            scene_scale=self.scene_scale,
            seed=config.seed,
        )
        if start.has_points and not scene.has_points:
            self.init_note = start.notes[-1].rstrip(".")  # triangulated: how many, from what
        if sparse_note:
            self.init_note = f"{self.init_note}; {sparse_note}"
        # refuse before decoding images or allocating Gaussians
        check_training_memory(
            num_gaussians=max(len(points), 1),
            cameras=self.split.train_cameras(scene) + self.split.test_cameras(scene),
            method=config.method,
            device=self.device,
            limit_gb=config.memory_limit_gb,
            max_gaussians=config.max_gaussians,
            downscale=config.downscale,
        )
        self.train_views: Views
        self.test_views: Views
        self.train_views, self.test_views = split_views(scene, self.split, self.device, images)
        self.generated = GeneratedViews()

        self.splats = create_splats(
            points,
            colors,
            sh_degree=config.sh_degree,
            init_opacity=config.init_opacity,
            init_scale=config.init_scale,
            seed=config.seed,
            device=self.device,
        )
        self.base_lrs = learning_rates(config, self.scene_scale)
        self.optimizers = create_optimizers(self.splats, self.base_lrs)
        self.strategy = build_strategy(config, self.schedule, self.device)
        self.strategy.check_sanity(self.splats, self.optimizers)
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.scene_scale)
        self.step = 0  # steps completed
        self.elapsed = 0.0  # seconds spent in train() so far (kept across resume)
        self.background = torch.tensor(config.background, dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------ state

    @property
    def num_gaussians(self) -> int:
        return int(self.splats["means"].shape[0])

    def checkpoint(self) -> dict[str, Any]:
        """The current state in checkpoint format (see :mod:`genfusion.splat.checkpoint`)."""
        contents = ckpt.checkpoint_dict(
            method=self.config.method,
            step=self.step,
            sh_degree=self.config.sh_degree,
            splats=self.splats,
            optimizers=self.optimizers,
            strategy_state=self.strategy_state,
            config=self.config,
            scene=self.scene_info,
        )
        contents["elapsed"] = float(self.elapsed)
        contents["generated"] = self.generated.to_state()
        return contents

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the checkpoint atomically and remember it as the last good one."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path given")
        self._check_finite_parameters()
        ckpt.save_checkpoint(path, self.checkpoint())
        self.last_good_checkpoint_step = self.step
        return path

    def load_state(self, contents: dict[str, Any]) -> None:
        """Continue from a checkpoint (already validated by ``load_checkpoint``)."""
        if contents["method"] != self.config.method:
            raise GenFusionError(
                f"checkpoint holds a {contents['method']} run but this run is {self.config.method}; "
                f"use --method {contents['method']}"
            )
        if int(contents["sh_degree"]) != self.config.sh_degree:
            raise GenFusionError(
                f"checkpoint has SH degree {contents['sh_degree']} but the config asks for "
                f"{self.config.sh_degree}; use --sh-degree {contents['sh_degree']}"
            )
        for name, value in contents["splats"].items():
            self.splats[name] = torch.nn.Parameter(value.to(self.device).clone())
        self.optimizers = create_optimizers(self.splats, self.base_lrs)
        for name, optimizer in self.optimizers.items():
            state = contents.get("optimizers", {}).get(name)
            if state is not None:
                optimizer.load_state_dict(state)
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.scene_scale)
        for key, value in contents.get("strategy_state", {}).items():
            self.strategy_state[key] = value.to(self.device) if isinstance(value, torch.Tensor) else value
        if "rng" in contents and "torch" in contents["rng"]:
            torch.set_rng_state(contents["rng"]["torch"])
        self.generated.load_state(contents.get("generated", {}), self.device)
        self.step = int(contents["step"])
        self.elapsed = float(contents.get("elapsed", 0.0))
        self.last_good_checkpoint_step = self.step

    # ------------------------------------------------------------------ generated views

    def add_generated_views(
        self,
        views: list[GeneratedView],
        *,
        replace_all: bool = False,
        weight: GeneratedWeight | None = None,
    ) -> None:
        """Supervise with ``views`` from the next step on (same name = replaced; ``replace_all``
        drops every earlier generated view, as a new fusion round does). ``weight`` sets how much
        generated views count from now on (default: keep the current weight, initially 1)."""
        moved = [
            GeneratedView(
                name=v.name,
                viewmat=v.viewmat.to(self.device, torch.float32),
                K=v.K.to(self.device, torch.float32),
                image=v.image.to(self.device, torch.float32),
                depth=None if v.depth is None else v.depth.to(self.device, torch.float32),
                weight=None if v.weight is None else v.weight.to(self.device, torch.float32),
                depth_mode=v.depth_mode,
            )
            for v in views
        ]
        self.generated.add(moved, replace_all=replace_all)
        if weight is not None:
            self.generated.weight = weight

    # ------------------------------------------------------------------ rendering

    def _render_matrices(
        self,
        viewmat: torch.Tensor,
        K: torch.Tensor,
        width: int,
        height: int,
        sh_degree: int | None,
        background: torch.Tensor,
    ) -> RenderOutput:
        from genfusion.splat.render import render_splats

        return render_splats(
            self.splats,
            viewmat[None],
            K[None],
            width,
            height,
            sh_degree=sh_degree,
            mode=self.config.method,
            background=background[None],
            backend=self.config.backend,
            near_plane=self.config.near_plane,
            far_plane=self.config.far_plane,
        )

    def _render(self, views: Views, index: int, sh_degree: int, background: torch.Tensor) -> RenderOutput:
        width, height = views.sizes[index]
        return self._render_matrices(
            views.viewmats[index], views.Ks[index], width, height, sh_degree, background
        )

    @torch.no_grad()
    def render(self, camera: Camera, *, sh_degree: int | None = None) -> RenderOutput:
        """Render any camera from the current splats (no gradients), at the full SH degree unless
        ``sh_degree`` says otherwise, on the run's background colour."""
        viewmats, Ks = camera_tensors([camera], self.device)
        degree = self.config.sh_degree if sh_degree is None else sh_degree
        return self._render_matrices(viewmats[0], Ks[0], camera.width, camera.height, degree, self.background)

    def _step_background(self) -> torch.Tensor:
        if not self.config.random_background:
            return self.background
        generator = torch.Generator().manual_seed(self.config.seed * 7_919 + self.step)
        return torch.rand(3, generator=generator).to(self.device)

    # ------------------------------------------------------------------ one step

    def _generated_terms(
        self, view: GeneratedView, weight: float, sh_degree: int, background: torch.Tensor, step: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Render one generated view: its weighted loss terms and the render's meta."""
        out = self._render_matrices(view.viewmat, view.K, view.width, view.height, sh_degree, background)
        return generated_view_terms(out, view, weight, self.config, self.schedule, step), out.meta

    def train_step(self) -> StepStats:
        """One optimisation step on one real training view (plus one generated view when any
        are present and weigh something at this step)."""
        cfg, step = self.config, self.step
        for name, optimizer in self.optimizers.items():
            if name == "means":
                optimizer.param_groups[0]["lr"] = means_lr_at(
                    step, self.base_lrs["means"], cfg.means_lr_final, cfg.iterations
                )
        index = view_order(len(self.train_views), step, cfg.seed)
        target = self.train_views.images[index][None]
        sh_degree = active_sh_degree(step, cfg.sh_degree, self.schedule.sh_degree_interval)
        background = self._step_background()
        out = self._render(self.train_views, index, sh_degree, background)
        meta = out.meta
        meta.setdefault("gaussian_ids", None)
        self.strategy.step_pre_backward(self.splats, self.optimizers, self.strategy_state, step, meta)

        terms = real_view_terms(out, target, cfg, self.schedule, step, self.splats)

        generated_weight = self.generated.weight.at(step) if len(self.generated) else 0.0
        generated = self.generated.pick(step, cfg.seed) if generated_weight > 0 else None
        generated_meta = None
        if generated is not None:
            generated_terms, generated_meta = self._generated_terms(
                generated, generated_weight, sh_degree, background, step
            )
            terms.update(generated_terms)
            if cfg.densify_on_generated and densification_of(cfg) != "mcmc":
                generated_meta.setdefault("gaussian_ids", None)
                self.strategy.step_pre_backward(
                    self.splats, self.optimizers, self.strategy_state, step, generated_meta
                )

        loss = torch.stack(list(terms.values())).sum()
        if not torch.isfinite(loss):
            bad = [name for name, value in terms.items() if not torch.isfinite(value)]
            raise self._diverged(f"the loss became {loss.item()} at step {step + 1} (terms {bad})")
        loss.backward()

        for optimizer in self.optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if generated_meta is not None and cfg.densify_on_generated and densification_of(cfg) != "mcmc":
            if step < self.schedule.refine_stop:  # the generated view's gradients join the statistics
                self.strategy._update_state(self.splats, self.strategy_state, generated_meta, packed=False)
        # densify after the Adam step, as gsplat's trainers do with the gradients just used
        self._densify(step, meta)
        self.step = step + 1
        with torch.no_grad():
            mse = ((out.rgb.detach().clamp(0, 1) - target) ** 2).mean()
        return StepStats(
            step=self.step,
            loss=float(loss.detach()),
            psnr=psnr_of_mse(mse),
            num_gaussians=self.num_gaussians,
            sh_degree=sh_degree,
            terms={name: float(value.detach()) for name, value in terms.items()},
            generated_view=None if generated is None else generated.name,
        )

    def _densify(self, step: int, meta: dict[str, Any]) -> None:
        cfg, schedule = self.config, self.schedule
        if cfg.densification == "mcmc":
            lr = self.optimizers["means"].param_groups[0]["lr"]
            self.strategy.step_post_backward(
                self.splats, self.optimizers, self.strategy_state, step, meta, lr=lr
            )
            return
        self.strategy.step_post_backward(self.splats, self.optimizers, self.strategy_state, step, meta)
        if step in schedule.reset_steps:
            reset_opacities(self.splats, self.optimizers, self.strategy_state, prune_opacity_of(cfg) * 2.0)
        enforce_cap(self.splats, self.optimizers, self.strategy_state, cfg.max_gaussians)
        if self.num_gaussians == 0:
            raise self._diverged(f"every Gaussian was pruned by step {step + 1}")

    def _check_finite_parameters(self) -> None:
        for name, value in self.splats.items():
            if not torch.isfinite(value).all():
                raise self._diverged(f"parameter {name!r} holds NaN/inf at step {self.step}")

    def _diverged(self, what: str) -> TrainingDiverged:
        if self.last_good_checkpoint_step is not None and self.checkpoint_path is not None:
            kept = (
                f"the last good checkpoint (step {self.last_good_checkpoint_step}) is kept at "
                f"{self.checkpoint_path}; resume from it with --resume and lower learning rates"
            )
        else:
            kept = "no checkpoint had been saved yet"
        return TrainingDiverged(
            f"training stopped: {what}; {kept}. Try lowering --means-lr / --opacities-lr, or check the "
            "input poses."
        )

    # ------------------------------------------------------------------ loops

    def train(self, until: int | None = None, *, stop_check=None) -> StepStats | None:
        """Run steps until ``until`` (default: ``config.iterations``; larger values extend the
        run: the position learning rate stays at its final value and no densification happens
        past the schedule), emitting progress every ``log_every`` steps and saving the checkpoint
        every ``checkpoint_every`` steps (when a checkpoint path was given).

        ``stop_check()`` returning True raises :class:`~genfusion.errors.Cancelled` between two
        steps; the trainer keeps its last completed step.
        """
        cfg = self.config
        until = cfg.iterations if until is None else int(until)
        if until < self.step:
            raise GenFusionError(
                f"train(until={until}) is below the current step {self.step}; a run cannot go back. "
                f"Give until >= {self.step} (e.g. {self.step + cfg.log_every})"
            )
        last: StepStats | None = None
        losses: list[float] = []
        term_sums: dict[str, float] = {}
        start = time.perf_counter() - self.elapsed
        while self.step < until:
            if stop_check is not None and stop_check():
                raise Cancelled(
                    f"training was cancelled at step {self.step} of {until}",
                    step=self.step,
                    hint="The trainer keeps that step: save or evaluate it, or call train() again.",
                )
            last = self.train_step()
            losses.append(last.loss)
            for name, value in last.terms.items():
                term_sums[name] = term_sums.get(name, 0.0) + value
            self.elapsed = time.perf_counter() - start
            if last.step % cfg.log_every == 0 or last.step == until:
                self._check_finite_parameters()
                metrics = {
                    "loss": float(np.mean(losses)),
                    "psnr": last.psnr,
                    "num_gaussians": float(last.num_gaussians),
                    "sh_degree": float(last.sh_degree),
                    "num_generated_views": float(len(self.generated)),
                }
                metrics.update({f"loss_{k}": v / len(losses) for k, v in term_sums.items()})
                emit(
                    self.progress,
                    ProgressEvent(
                        stage="reconstruct",
                        step=last.step,
                        total=max(until, cfg.iterations),
                        message=f"{cfg.method} step {last.step}",
                        metrics=metrics,
                    ),
                )
                losses.clear()
                term_sums.clear()
            if (
                self.checkpoint_path is not None
                and cfg.checkpoint_every > 0
                and last.step % cfg.checkpoint_every == 0
            ):
                self.save_checkpoint()
        return last

    @torch.no_grad()
    def evaluate(self, views: Views | None = None, *, keep_renders: bool = True) -> Evaluation:
        """PSNR / SSIM / LPIPS of every test view (or ``views``) at the full SH degree; inside /
        outside-window PSNR too for the masked protocol's test views."""
        views = self.test_views if views is None else views

        def render_view(views: Views, index: int) -> torch.Tensor:
            return self._render(views, index, self.config.sh_degree, self.background).rgb[0].clamp(0, 1)

        evaluation = evaluate_views(render_view, views, keep_renders=keep_renders)
        emit(self.progress, ProgressEvent(stage="reconstruct.eval", step=len(views), total=len(views)))
        return evaluation
