"""The reconstruction loop: Gaussians fitted to posed photos (2DGS or 3DGS).

One step = render one training view (a fresh random permutation of the views every epoch), the
3DGS colour loss plus the 2DGS regularisers, Adam on every parameter, gsplat's densification
strategy around the backward pass, and the SH-degree ramp. ``Trainer`` owns that state; it never
writes files except the checkpoint it is asked to save (the CLI writes everything else).

NaN or inf in the loss or the parameters stops the run with a :class:`TrainingDiverged` error
that names the last good checkpoint, which is left untouched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genfusion.data.types import Scene
from genfusion.errors import GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent, emit
from genfusion.splat import checkpoint as ckpt
from genfusion.splat.config import ReconstructConfig, Schedule, schedule_for
from genfusion.splat.data_loader import Views, make_views, split_indices, view_order
from genfusion.splat.densify import build_strategy, enforce_cap, reset_opacities
from genfusion.splat.gaussians import (
    active_sh_degree,
    create_optimizers,
    create_splats,
    initial_points,
    learning_rates,
    means_lr_at,
    scene_scale_of,
)
from genfusion.splat.losses import (
    distortion_loss,
    normal_consistency_loss,
    photometric_loss,
    psnr_of_mse,
)
from genfusion.splat.memory import check_training_memory


class TrainingDiverged(GenFusionError):
    """NaN/inf appeared during training; the last good checkpoint was kept."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenFusionError("--device cuda was asked for but this machine has no CUDA GPU; use --device cpu")
    return torch.device(name)


@dataclass
class StepStats:
    """What one optimisation step measured."""

    step: int  # the step just completed (1-based count of steps done)
    loss: float  # total loss
    psnr: float  # PSNR of the training view rendered in this step
    num_gaussians: int  # Gaussians after densification
    sh_degree: int  # SH degree used for this step


@dataclass
class ViewMetrics:
    """Metrics of one test view."""

    name: str  # camera name
    psnr: float  # dB
    ssim: float  # 11x11 Gaussian window
    lpips: float | None  # LPIPS-VGG, None when the backbone weights are absent


@dataclass
class Evaluation:
    """Test-view metrics and renders at the end of a run."""

    views: list[ViewMetrics]  # per test view
    renders: list[np.ndarray] = field(default_factory=list)  # [H, W, 3] float32, same order
    targets: list[np.ndarray] = field(default_factory=list)  # ground truth, same order
    lpips_note: str = ""  # why LPIPS is None, when it is

    def mean(self, key: str) -> float | None:
        values = [getattr(v, key) for v in self.views]
        if not values or any(v is None for v in values):
            return None
        return float(np.mean(values))


class Trainer:
    """Stateful 2DGS/3DGS optimisation of one scene.

    ``images`` (optional, one [H, W, 3] array per camera of ``scene``) skips reading the photos,
    which tests use for synthetic scenes.
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

        self.train_ids, self.test_ids = split_indices(scene, config.split)
        train_cams = [scene.cameras[i] for i in self.train_ids]
        test_cams = [scene.cameras[i] for i in self.test_ids]
        self.scene_scale = scene_scale_of(scene.subset(self.train_ids))

        torch.manual_seed(config.seed)
        points, colors, self.init_note = initial_points(
            scene.subset(self.train_ids),
            random_count=config.init_random_points,
            max_points=config.max_init_points,
            extent=config.init_extent,
            scene_scale=self.scene_scale,
            seed=config.seed,
        )
        # refuse before decoding images or allocating Gaussians
        check_training_memory(
            num_gaussians=max(len(points), 1),
            cameras=train_cams + test_cams,
            method=config.method,
            device=self.device,
            limit_gb=config.memory_limit_gb,
            max_gaussians=config.max_gaussians,
            downscale=config.downscale,
        )
        self.train_views: Views = make_views(
            train_cams, self.device, [images[i] for i in self.train_ids] if images is not None else None
        )
        self.test_views: Views = make_views(
            test_cams, self.device, [images[i] for i in self.test_ids] if images is not None else None
        )

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
        self.step = int(contents["step"])
        self.elapsed = float(contents.get("elapsed", 0.0))
        self.last_good_checkpoint_step = self.step

    # ------------------------------------------------------------------ one step

    def _render(self, views: Views, index: int, sh_degree: int, background: torch.Tensor):
        from genfusion.splat.render import render_splats

        width, height = views.sizes[index]
        return render_splats(
            self.splats,
            views.viewmats[index : index + 1],
            views.Ks[index : index + 1],
            width,
            height,
            sh_degree=sh_degree,
            mode=self.config.method,
            background=background[None],
            backend=self.config.backend,
            near_plane=self.config.near_plane,
            far_plane=self.config.far_plane,
        )

    def _step_background(self) -> torch.Tensor:
        if not self.config.random_background:
            return self.background
        generator = torch.Generator().manual_seed(self.config.seed * 7_919 + self.step)
        return torch.rand(3, generator=generator).to(self.device)

    def train_step(self) -> StepStats:
        """One optimisation step on one training view."""
        cfg, schedule, step = self.config, self.schedule, self.step
        for name, optimizer in self.optimizers.items():
            if name == "means":
                optimizer.param_groups[0]["lr"] = means_lr_at(
                    step, self.base_lrs["means"], cfg.means_lr_final, cfg.iterations
                )
        index = view_order(len(self.train_views), step, cfg.seed)
        target = self.train_views.images[index][None]
        sh_degree = active_sh_degree(step, cfg.sh_degree, cfg.sh_degree_interval)
        out = self._render(self.train_views, index, sh_degree, self._step_background())
        meta = out.meta
        meta.setdefault("gaussian_ids", None)
        self.strategy.step_pre_backward(self.splats, self.optimizers, self.strategy_state, step, meta)

        loss = photometric_loss(out.rgb, target, cfg.lambda_dssim)
        if cfg.method == "2dgs":
            if cfg.normal_lambda > 0 and step >= schedule.normal_start and out.normals is not None:
                loss = loss + cfg.normal_lambda * normal_consistency_loss(
                    out.normals, out.surf_normals, out.alpha
                )
            if cfg.distortion_lambda > 0 and step >= schedule.distortion_start and out.distortion is not None:
                loss = loss + cfg.distortion_lambda * distortion_loss(out.distortion, out.depth)
        if cfg.densification == "mcmc":  # gsplat's MCMC regularisers keep the budget usable
            loss = loss + 0.01 * torch.sigmoid(self.splats["opacities"]).mean()
            loss = loss + 0.01 * torch.exp(self.splats["scales"]).mean()
        if not torch.isfinite(loss):
            raise self._diverged(f"the loss became {loss.item()} at step {step + 1}")
        loss.backward()

        for optimizer in self.optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
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
        if 0 < step < schedule.refine_stop and step % schedule.reset_every == 0:
            reset_opacities(self.splats, self.optimizers, self.strategy_state, self.strategy.prune_opa * 2.0)
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
        """Run steps until ``until`` (default: ``config.iterations``), emitting progress every
        ``log_every`` steps and saving the checkpoint every ``checkpoint_every`` steps (when a
        checkpoint path was given). ``stop_check()`` returning True stops early (cancel)."""
        cfg = self.config
        until = cfg.iterations if until is None else min(until, cfg.iterations)
        last: StepStats | None = None
        losses: list[float] = []
        start = time.perf_counter() - self.elapsed
        while self.step < until:
            if stop_check is not None and stop_check():
                break
            last = self.train_step()
            losses.append(last.loss)
            self.elapsed = time.perf_counter() - start
            if last.step % cfg.log_every == 0 or last.step == until:
                self._check_finite_parameters()
                emit(
                    self.progress,
                    ProgressEvent(
                        stage="reconstruct",
                        step=last.step,
                        total=cfg.iterations,
                        message=f"{cfg.method} step {last.step}",
                        metrics={
                            "loss": float(np.mean(losses)),
                            "psnr": last.psnr,
                            "num_gaussians": float(last.num_gaussians),
                            "sh_degree": float(last.sh_degree),
                        },
                    ),
                )
                losses.clear()
            if (
                self.checkpoint_path is not None
                and cfg.checkpoint_every > 0
                and last.step % cfg.checkpoint_every == 0
            ):
                self.save_checkpoint()
        return last

    @torch.no_grad()
    def evaluate(self, views: Views | None = None, *, keep_renders: bool = True) -> Evaluation:
        """PSNR / SSIM / LPIPS of every test view (or ``views``) at the full SH degree."""
        from genfusion.eval import metrics

        views = self.test_views if views is None else views
        results: list[ViewMetrics] = []
        renders: list[np.ndarray] = []
        targets: list[np.ndarray] = []
        lpips_note = ""
        for i in range(len(views)):
            out = self._render(views, i, self.config.sh_degree, self.background)
            rgb = out.rgb[0].clamp(0, 1)
            target = views.images[i]
            values = metrics.compute_metrics(rgb, target)
            lpips_note = lpips_note or (values["lpips_note"] or "")
            results.append(
                ViewMetrics(
                    name=views.names[i],
                    psnr=float(values["psnr"]),
                    ssim=float(values["ssim"]),
                    lpips=None if values["lpips"] is None else float(values["lpips"]),
                )
            )
            if keep_renders:
                renders.append(rgb.cpu().numpy())
                targets.append(target.cpu().numpy())
        emit(self.progress, ProgressEvent(stage="reconstruct.eval", step=len(views), total=len(views)))
        return Evaluation(views=results, renders=renders, targets=targets, lpips_note=lpips_note)
