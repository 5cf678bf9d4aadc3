"""The training objective as named terms: pure functions of one render and its targets.

Each function returns ``{name: weighted term}``, so the trainer sums them into the loss and
reports each one (``loss_l1``, ``loss_generated_depth``, ... in its progress events):

- ``l1`` / ``dssim``: the 3DGS colour loss of a real view, ``(1 - lambda) * L1 + lambda * D-SSIM``;
- ``normal`` / ``distortion``: the 2DGS regularisers, from their scheduled start steps;
- ``mcmc_opacity`` / ``mcmc_scale``: gsplat's MCMC regularisers (MCMC densification only);
- ``generated_*``: a generated view's colour (with its per-pixel weights), its depth (invariant or
  metric) and optionally the 2DGS regularisers, all multiplied by the generated-view weight.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genfusion.splat.config import ReconstructConfig, Schedule
from genfusion.splat.losses import (
    distortion_loss,
    dssim_loss,
    invariant_depth_loss,
    l1_loss,
    metric_depth_loss,
    normal_consistency_loss,
    weighted_photometric_terms,
)
from genfusion.splat.render import RenderOutput
from genfusion.splat.supervision import GeneratedView

Terms = dict[str, Tensor]


def regulariser_terms(out: RenderOutput, config: ReconstructConfig, schedule: Schedule, step: int) -> Terms:
    """2DGS normal consistency and depth distortion, each once its start step is reached."""
    terms: Terms = {}
    if config.method != "2dgs":
        return terms
    if config.normal_lambda > 0 and step >= schedule.normal_start and out.normals is not None:
        normal = normal_consistency_loss(out.normals, out.surf_normals, out.alpha)
        terms["normal"] = config.normal_lambda * normal
    if config.distortion_lambda > 0 and step >= schedule.distortion_start and out.distortion is not None:
        terms["distortion"] = config.distortion_lambda * distortion_loss(out.distortion, out.depth)
    return terms


def real_view_terms(
    out: RenderOutput,
    target: Tensor,
    config: ReconstructConfig,
    schedule: Schedule,
    step: int,
    splats: torch.nn.ParameterDict,
) -> Terms:
    """Every term of a real training view (``target`` [1, H, W, 3])."""
    terms: Terms = {"l1": (1.0 - config.lambda_dssim) * l1_loss(out.rgb, target)}
    if config.lambda_dssim > 0:
        terms["dssim"] = config.lambda_dssim * dssim_loss(out.rgb, target)
    terms.update(regulariser_terms(out, config, schedule, step))
    if config.densification == "mcmc":  # gsplat's MCMC regularisers keep the budget usable
        terms["mcmc_opacity"] = 0.01 * torch.sigmoid(splats["opacities"]).mean()
        terms["mcmc_scale"] = 0.01 * torch.exp(splats["scales"]).mean()
    return terms


def generated_view_terms(
    out: RenderOutput,
    view: GeneratedView,
    weight: float,
    config: ReconstructConfig,
    schedule: Schedule,
    step: int,
) -> Terms:
    """Every term of one generated view, already multiplied by the generated-view ``weight``."""
    l1, dssim = weighted_photometric_terms(out.rgb[0], view.image, view.weight)
    terms: Terms = {
        "generated_l1": weight * (1.0 - config.generated_dssim) * l1,
        "generated_dssim": weight * config.generated_dssim * dssim,
    }
    if view.depth is not None and config.depth_lambda > 0:
        depth_loss = invariant_depth_loss if view.depth_mode == "invariant" else metric_depth_loss
        terms["generated_depth"] = (
            weight * config.depth_lambda * depth_loss(out.depth[0, ..., 0], view.depth, view.weight)
        )
    if config.generated_regularisers:
        regularisers = regulariser_terms(out, config, schedule, step)
        terms.update({f"generated_{name}": weight * value for name, value in regularisers.items()})
    return terms
