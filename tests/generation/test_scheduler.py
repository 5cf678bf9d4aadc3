"""The DDIM sampler reproduces the original LVDM sampler's schedule and every step of the tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genfusion.generation.scheduler import GenFusionDDIMScheduler, guided_velocity

TOL = 1e-5


@pytest.fixture(scope="module")
def sampler_io(lvdm_fixtures):
    return load_file(str(lvdm_fixtures / "tiny_sampler_io.safetensors"))


@pytest.fixture(scope="module")
def schedule_ref(lvdm_fixtures):
    return json.loads((lvdm_fixtures / "tiny_sampler_schedule.json").read_text())


def test_training_buffers_match_original(schedule_ref):
    scheduler = GenFusionDDIMScheduler()
    ddpm = schedule_ref["ddpm"]
    np.testing.assert_allclose(
        scheduler.betas_float64, np.array(ddpm["betas_float64_before_cast"]), rtol=0, atol=1e-12
    )
    for name in [
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "scale_arr",
    ]:
        ours = getattr(scheduler, name)
        assert ours.dtype == torch.float32
        ref = np.array(ddpm[name]["values"], dtype=np.float32)
        assert ours.shape == ref.shape, name
        np.testing.assert_array_equal(ours.numpy(), ref, err_msg=name)
    # zero terminal SNR: the last step is pure noise
    assert scheduler.alphas_cumprod[-1].item() == 0.0


@pytest.mark.parametrize("key, steps", [("ddim_fixture", 5), ("ddim_extrapolator_25_steps_reference", 25)])
def test_ddim_arrays_match_original(schedule_ref, key, steps):
    ref = schedule_ref[key]
    scheduler = GenFusionDDIMScheduler()
    scheduler.set_timesteps(steps, eta=1.0)
    ours = scheduler.ddim_arrays()
    assert ours["timesteps"].tolist() == ref["ddim_timesteps_ascending"]["values"]
    assert scheduler.timesteps.tolist() == ref["ddim_timesteps_ascending"]["values"][::-1]
    pairs = {
        "alphas": "ddim_alphas",
        "alphas_prev64": "ddim_alphas_prev",
        "sigmas64": "ddim_sigmas",
        "scale_arr": "ddim_scale_arr",
        "scale_arr_prev": "ddim_scale_arr_prev",
    }
    for mine, theirs in pairs.items():
        np.testing.assert_allclose(
            ours[mine].double().numpy(), np.array(ref[theirs]["values"]), rtol=0, atol=1e-12, err_msg=mine
        )


def test_every_step_of_the_tiny_run(sampler_io):
    scheduler = GenFusionDDIMScheduler()
    scheduler.set_timesteps(5, eta=1.0)
    x = sampler_io["x_T"]
    for i, t in enumerate(scheduler.timesteps):
        p = f"step{i}."
        assert int(sampler_io[p + "timestep"]) == int(t)
        torch.testing.assert_close(x, sampler_io[p + "x_t"], rtol=0, atol=TOL)
        cond, uncond = sampler_io[p + "model_out_cond"], sampler_io[p + "model_out_uncond"]
        torch.testing.assert_close(
            guided_velocity(cond, uncond, 3.2, 0.0), sampler_io[p + "cfg_v"], rtol=0, atol=TOL
        )
        v = guided_velocity(cond, uncond, 3.2, 0.7)
        torch.testing.assert_close(v, sampler_io[p + "cfg_v_rescaled"], rtol=0, atol=TOL)
        out = scheduler.step(v, t, x, variance_noise=sampler_io[p + "noise"])
        torch.testing.assert_close(
            out.pred_original_sample, sampler_io[p + "pred_x0_rescaled"], rtol=0, atol=TOL
        )
        torch.testing.assert_close(out.prev_sample, sampler_io[p + "x_prev"], rtol=0, atol=TOL)
        x = out.prev_sample
    torch.testing.assert_close(x, sampler_io["final_latent"], rtol=0, atol=TOL)


def test_noise_is_added_at_the_last_step_too(sampler_io):
    scheduler = GenFusionDDIMScheduler()
    scheduler.set_timesteps(5)
    x, v = sampler_io["step4.x_t"], sampler_io["step4.cfg_v_rescaled"]
    with_noise = scheduler.step(v, 1, x, variance_noise=torch.ones_like(x)).prev_sample
    without = scheduler.step(v, 1, x, variance_noise=torch.zeros_like(x)).prev_sample
    sigma = float(scheduler.ddim_arrays()["sigmas"][0])
    assert sigma == pytest.approx(0.0210093, abs=1e-6)
    torch.testing.assert_close(with_noise - without, torch.full_like(x, sigma), rtol=0, atol=1e-6)


def test_eta_zero_is_deterministic_and_generator_repeatable():
    scheduler = GenFusionDDIMScheduler()
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    v = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    scheduler.set_timesteps(10, eta=0.0)
    a = scheduler.step(v, scheduler.timesteps[0], x).prev_sample
    b = scheduler.step(v, scheduler.timesteps[0], x).prev_sample
    assert torch.equal(a, b)
    scheduler.set_timesteps(10, eta=1.0)
    c = scheduler.step(v, scheduler.timesteps[0], x, generator=torch.Generator().manual_seed(3)).prev_sample
    d = scheduler.step(v, scheduler.timesteps[0], x, generator=torch.Generator().manual_seed(3)).prev_sample
    e = scheduler.step(v, scheduler.timesteps[0], x, generator=torch.Generator().manual_seed(4)).prev_sample
    assert torch.equal(c, d) and not torch.equal(c, e)


def test_add_noise_inverts_the_x0_prediction():
    """Re-noising the predicted x0 with the implied eps gives back x_t (used to pin known latents)."""
    scheduler = GenFusionDDIMScheduler(use_dynamic_rescale=False)
    scheduler.set_timesteps(25)
    x = torch.randn(1, 4, 2, 4, 4)
    v = torch.randn(1, 4, 2, 4, 4)
    t = int(scheduler.timesteps[3])
    x0 = scheduler.velocity_to_x0(v, t, x)
    eps = scheduler.velocity_to_epsilon(v, t, x)
    torch.testing.assert_close(scheduler.add_noise(x0, eps, t), x, rtol=0, atol=1e-5)


def test_save_and_load_config(tmp_path):
    scheduler = GenFusionDDIMScheduler(dynamic_rescale_base_scale=0.7)
    scheduler.save_pretrained(tmp_path)
    loaded = GenFusionDDIMScheduler.from_pretrained(tmp_path)
    assert loaded.config.prediction_type == "v_prediction"
    assert torch.equal(loaded.alphas_cumprod, scheduler.alphas_cumprod)


def test_bad_arguments():
    with pytest.raises(ValueError):
        GenFusionDDIMScheduler(prediction_type="sample")
    scheduler = GenFusionDDIMScheduler()
    with pytest.raises(ValueError):
        scheduler.set_timesteps(0)
    scheduler.set_timesteps(5)
    with pytest.raises(ValueError, match="not in the current schedule"):
        scheduler.step(torch.zeros(1), 7, torch.zeros(1))
