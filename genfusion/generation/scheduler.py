"""The GenFusion DDIM sampler as a diffusers scheduler, bit-compatible with the original LVDM code.

The original sampler (LVDM ``DDIMSampler`` driven by GenFusion's extrapolator) differs from
diffusers' ``DDIMScheduler`` in several small ways that all change the numbers, so this is its own
scheduler (fixtures README, quirks 8 and 9):

* betas: ``linspace(sqrt(0.00085), sqrt(0.012), 1000)**2`` in float64, rescaled to zero terminal
  SNR, every derived 1000-step buffer computed in float64 and only then cast to float32;
* "uniform" spacing ``arange(0, 1000, 1000 // S) + 1`` and ``alpha_prev`` of the first DDIM index
  equal to ``alpha_cumprod[0]`` (not 1);
* "dynamic rescale": the latent scale runs from 1.0 to 0.7 over the first 400 steps and the
  predicted x0 is multiplied by ``scale_prev / scale`` at every step;
* v-prediction converted with the 1000-step float32 buffers at t, sigma computed in float64 and
  cast, and noise added at every step including the last one.

Classifier-free guidance with guidance rescale is the pure function :func:`guided_velocity`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput


@dataclass
class GenFusionDDIMSchedulerOutput(BaseOutput):
    """One DDIM step's result."""

    prev_sample: torch.Tensor  # x_{t_prev}, the next model input
    pred_original_sample: torch.Tensor  # predicted x0 after the dynamic rescale (scale of t_prev)


def scaled_linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """LVDM's "linear" schedule: linear in sqrt(beta), squared, float64."""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Shift and scale sqrt(alpha_bar) so that the last step has zero SNR (Lin et al. 2024), float64."""
    alphas_bar_sqrt = np.sqrt(np.cumprod(1.0 - betas, axis=0))
    first, last = alphas_bar_sqrt[0].copy(), alphas_bar_sqrt[-1].copy()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


def dynamic_rescale_array(num_train_timesteps: int, base_scale: float, turning_step: int) -> np.ndarray:
    """The latent scale per training step: 1 -> base_scale over turning_step steps, then constant.

    Its length is ``turning_step + num_train_timesteps`` as in the original buffer (1400); only the
    first ``num_train_timesteps`` entries are ever indexed.
    """
    return np.concatenate(
        [np.linspace(1.0, base_scale, turning_step), np.full(num_train_timesteps, base_scale)]
    )


def guided_velocity(
    v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance_scale: float, guidance_rescale: float
) -> torch.Tensor:
    """Classifier-free guidance on v with guidance rescale (quirk 8).

    ``v = v_u + s (v_c - v_u)``, then ``v <- r v std(v_c)/std(v) + (1 - r) v`` with the unbiased
    standard deviation over every axis except the batch. ``guidance_rescale <= 0`` skips the rescale.
    """
    v = v_uncond + guidance_scale * (v_cond - v_uncond)
    if guidance_rescale > 0.0:
        dims = list(range(1, v.ndim))
        std_cond = v_cond.std(dim=dims, keepdim=True)
        std_cfg = v.std(dim=dims, keepdim=True)
        v = guidance_rescale * (v * (std_cond / std_cfg)) + (1.0 - guidance_rescale) * v
    return v


class GenFusionDDIMScheduler(SchedulerMixin, ConfigMixin):
    """DDIM with zero-SNR scaled-linear betas, v-prediction and dynamic rescale, as LVDM samples it.

    Usage mirrors diffusers: ``set_timesteps(S)``, then for each ``t`` in ``timesteps`` call
    ``step(v, t, x)``. Pass ``variance_noise`` to inject the N(0, 1) draw (parity tests), otherwise
    it is drawn from ``generator``.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        rescale_betas_zero_snr: bool = True,
        prediction_type: str = "v_prediction",
        use_dynamic_rescale: bool = True,
        dynamic_rescale_base_scale: float = 0.7,
        dynamic_rescale_turning_step: int = 400,
        timestep_spacing: str = "uniform",
    ):
        if prediction_type not in ("v_prediction", "epsilon"):
            raise ValueError(f"prediction_type must be 'v_prediction' or 'epsilon', got {prediction_type!r}")
        if timestep_spacing != "uniform":
            raise ValueError("only the original 'uniform' timestep spacing is implemented")
        betas64 = scaled_linear_betas(num_train_timesteps, beta_start, beta_end)
        if rescale_betas_zero_snr:
            betas64 = rescale_zero_terminal_snr(betas64)
        alphas_cumprod64 = np.cumprod(1.0 - betas64, axis=0)
        # float64 kept for reference/tests; every buffer used in sampling is float32 like the original.
        self.betas_float64 = betas64
        self.betas = torch.tensor(betas64, dtype=torch.float32)
        self.alphas_cumprod = torch.tensor(alphas_cumprod64, dtype=torch.float32)
        self.alphas_cumprod_prev = torch.tensor(np.append(1.0, alphas_cumprod64[:-1]), dtype=torch.float32)
        self.sqrt_alphas_cumprod = torch.tensor(np.sqrt(alphas_cumprod64), dtype=torch.float32)
        self.sqrt_one_minus_alphas_cumprod = torch.tensor(
            np.sqrt(1.0 - alphas_cumprod64), dtype=torch.float32
        )
        if use_dynamic_rescale:
            scale = dynamic_rescale_array(
                num_train_timesteps, dynamic_rescale_base_scale, dynamic_rescale_turning_step
            )
        else:
            scale = np.ones(num_train_timesteps)
        self.scale_arr = torch.tensor(scale, dtype=torch.float32)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = torch.zeros(0, dtype=torch.int64)
        self.eta = 1.0
        self._ddim: dict[str, torch.Tensor] = {}
        self._index_of: dict[int, int] = {}

    # ----------------------------------------------------------------------------------- schedule
    def set_timesteps(
        self, num_inference_steps: int, device: str | torch.device | None = None, eta: float = 1.0
    ) -> None:
        """Choose S uniformly spaced steps; ``timesteps`` runs from the noisiest to t=1.

        ``eta`` is fixed here (not per step) because sigma is a schedule array in the original.
        """
        n_train = self.config.num_train_timesteps
        if not 1 <= num_inference_steps <= n_train:
            raise ValueError(f"num_inference_steps must be in [1, {n_train}], got {num_inference_steps}")
        ascending = np.arange(0, n_train, n_train // num_inference_steps) + 1
        ascending = ascending[ascending < n_train]  # the original asserts this; S=1000 would overflow
        ac32 = self.alphas_cumprod
        alphas = ac32[ascending]  # float32
        # alpha_prev: float32 values carried as float64 (the original goes through .tolist()).
        alphas_prev64 = np.asarray([ac32[0].item()] + ac32[ascending[:-1]].tolist(), dtype=np.float64)
        # sigma in float64 from float32 inputs with LVDM's exact operations: there a numpy array is
        # divided by a float32 tensor, which torch evaluates as ``other * tensor.reciprocal()``,
        # so 1 / (1 - alpha) is taken in float32 before the float64 product.
        inv_one_minus_a = (1.0 - alphas).reciprocal().double().numpy()
        ratio = alphas.double().numpy() / alphas_prev64
        sigmas64 = eta * np.sqrt((1.0 - alphas_prev64) * inv_one_minus_a * (1.0 - ratio))
        scale_arr = self.scale_arr[ascending]
        scale_prev = torch.cat([self.scale_arr[ascending[:1]], self.scale_arr[ascending[:-1]]])
        self._ddim = {
            "timesteps": torch.from_numpy(ascending).long(),
            "alphas": alphas.clone(),
            "alphas_prev64": torch.from_numpy(alphas_prev64),
            "sigmas64": torch.from_numpy(sigmas64),
            "alphas_prev": torch.from_numpy(alphas_prev64).float(),
            "sigmas": torch.from_numpy(sigmas64).float(),
            "scale_arr": scale_arr,
            "scale_arr_prev": scale_prev,
        }
        self._index_of = {int(t): i for i, t in enumerate(ascending)}
        self.num_inference_steps = len(ascending)
        self.eta = eta
        self.timesteps = torch.from_numpy(ascending[::-1].copy()).long().to(device or "cpu")

    def ddim_arrays(self) -> dict[str, torch.Tensor]:
        """The schedule arrays indexed by DDIM index (ascending timesteps), for inspection and tests."""
        if not self._ddim:
            raise RuntimeError("call set_timesteps first")
        return dict(self._ddim)

    def previous_timestep(self, timestep: int) -> int:
        """The timestep that ``step`` at ``timestep`` lands on (0 after the last step)."""
        index = self._index(timestep)
        return int(self._ddim["timesteps"][index - 1]) if index > 0 else 0

    def _index(self, timestep: int | torch.Tensor) -> int:
        t = int(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else int(timestep)
        if t not in self._index_of:
            raise ValueError(f"timestep {t} is not in the current schedule; call set_timesteps first")
        return self._index_of[t]

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """DDIM needs no input scaling (kept for the diffusers scheduler interface)."""
        return sample

    # ------------------------------------------------------------------------------ conversions
    def _buffer_at(self, buffer: torch.Tensor, timestep: int, like: torch.Tensor) -> torch.Tensor:
        value = buffer[int(timestep)].to(device=like.device)
        return value.to(torch.float32).reshape([1] * like.ndim)

    def velocity_to_epsilon(self, v: torch.Tensor, timestep: int, sample: torch.Tensor) -> torch.Tensor:
        """eps = sqrt(a_t) v + sqrt(1 - a_t) x_t (1000-step float32 buffers)."""
        sa = self._buffer_at(self.sqrt_alphas_cumprod, timestep, sample)
        s1a = self._buffer_at(self.sqrt_one_minus_alphas_cumprod, timestep, sample)
        return sa * v + s1a * sample

    def velocity_to_x0(self, v: torch.Tensor, timestep: int, sample: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(a_t) x_t - sqrt(1 - a_t) v (1000-step float32 buffers)."""
        sa = self._buffer_at(self.sqrt_alphas_cumprod, timestep, sample)
        s1a = self._buffer_at(self.sqrt_one_minus_alphas_cumprod, timestep, sample)
        return sa * sample - s1a * v

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: int | torch.Tensor
    ) -> torch.Tensor:
        """The forward process as trained: ``sqrt(a_t) * scale_t * x0 + sqrt(1 - a_t) * noise``.

        ``timesteps`` is one step for the whole batch (used to re-noise known latents while
        sampling; timestep 0 returns ``scale_0 * x0``, the clean end of the chain).
        """
        t = int(timesteps.flatten()[0]) if isinstance(timesteps, torch.Tensor) else int(timesteps)
        if t <= 0:
            return original_samples * self._buffer_at(self.scale_arr, 0, original_samples).to(
                original_samples.dtype
            )
        x0 = original_samples * self._buffer_at(self.scale_arr, t, original_samples).to(
            original_samples.dtype
        )
        sa = self._buffer_at(self.sqrt_alphas_cumprod, t, x0).to(x0.dtype)
        s1a = self._buffer_at(self.sqrt_one_minus_alphas_cumprod, t, x0).to(x0.dtype)
        return sa * x0 + s1a * noise

    # ------------------------------------------------------------------------------------- step
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> GenFusionDDIMSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One DDIM step from ``timestep`` to the previous scheduled timestep (quirk 8).

        ``model_output`` is v (or eps when ``prediction_type == "epsilon"``), already guided.
        ``variance_noise`` is the raw N(0, 1) draw that the step scales by sigma; without it one
        is drawn with ``generator`` (skipped when eta is 0).
        """
        index = self._index(timestep)
        t = int(self._ddim["timesteps"][index])
        if self.config.prediction_type == "v_prediction":
            eps = self.velocity_to_epsilon(model_output, t, sample)
            x0 = self.velocity_to_x0(model_output, t, sample)
        else:
            eps = model_output
            a_t = self._ddim["alphas"][index].to(sample.device)
            x0 = (sample - (1.0 - a_t).sqrt() * eps) / a_t.sqrt()
        if self.config.use_dynamic_rescale:
            scale = self._ddim["scale_arr"][index].to(sample.device)
            scale_prev = self._ddim["scale_arr_prev"][index].to(sample.device)
            x0 = x0 * (scale_prev / scale).to(x0.dtype)
        a_prev = self._ddim["alphas_prev"][index].to(device=sample.device)
        sigma = self._ddim["sigmas"][index].to(device=sample.device)
        dir_xt = (1.0 - a_prev - sigma**2).sqrt().to(eps.dtype) * eps
        prev = a_prev.sqrt().to(x0.dtype) * x0 + dir_xt
        if float(sigma) > 0.0:
            if variance_noise is None:
                variance_noise = torch.randn(
                    sample.shape,
                    generator=generator,
                    device=generator.device if generator else sample.device,
                    dtype=torch.float32,
                ).to(device=sample.device, dtype=sample.dtype)
            prev = prev + sigma.to(sample.dtype) * variance_noise
        if not return_dict:
            return prev, x0
        return GenFusionDDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
