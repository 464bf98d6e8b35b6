"""Schedules and grids against diffusers' own tables (diffusers builds them in float32: compared at that tolerance)."""

import numpy as np
import pytest
from diffspec.reference import grids as G
from diffspec.reference import schedules as S

diffusers = pytest.importorskip(
    "diffusers"
)  # absent only in the numpy-only job, which runs the rest of tests/reference
DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler = (
    diffusers.DDIMScheduler,
    diffusers.DDPMScheduler,
    diffusers.EulerDiscreteScheduler,
)


def test_ddpm_linear_alphas_cumprod_match_diffusers():
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod.numpy()
    np.testing.assert_allclose(S.LinearBetas().alphas_cumprod(), ref, rtol=2e-5, atol=1e-7)


def test_cosine_betas_match_diffusers_squaredcos_cap_v2():
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").betas.numpy()
    np.testing.assert_allclose(S.CosineBetas().betas(), ref, rtol=1e-5, atol=1e-7)


def test_rescale_zero_terminal_snr_matches_diffusers():
    ref = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_betas_zero_snr=True
    ).alphas_cumprod.numpy()
    ours = S.ScaledLinearBetas(rescale_zero_snr=True).alphas_cumprod()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)
    assert ours[-1] == 0.0


@pytest.mark.parametrize("steps", [10, 50, 999])
def test_sd_scaled_linear_leading_offset_1_matches_diffusers(steps):
    sched = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        timestep_spacing="leading",
        steps_offset=1,
        set_alpha_to_one=False,
    )
    sched.set_timesteps(steps)
    ours = G.leading(S.ScaledLinearBetas(), steps, offset=1)
    np.testing.assert_array_equal(ours[:-1], sched.timesteps.numpy().astype(np.float64))
    np.testing.assert_allclose(S.ScaledLinearBetas().alphas_cumprod(), sched.alphas_cumprod.numpy(), rtol=2e-5)


@pytest.mark.parametrize("spacing,grid", [("linspace", "uniform"), ("trailing", "trailing")])
def test_linspace_and_trailing_match_diffusers(spacing, grid):
    sched = DDIMScheduler(timestep_spacing=spacing)
    sched.set_timesteps(20)
    np.testing.assert_array_equal(G.GRIDS[grid](S.LinearBetas(), 20)[:-1], sched.timesteps.numpy().astype(float))


def test_karras_sigmas_rho7_match_diffusers():
    sched = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, use_karras_sigmas=True
    )
    sched.set_timesteps(25)
    ref = sched.sigmas.numpy().astype(np.float64)
    sch = S.ScaledLinearBetas()
    grid = G.karras(sch, 25, rho=7.0)
    # diffusers forms 1 - alphabar in float32: near alphabar_0 = 1 - 8.5e-4 that is eps32 / 8.5e-4 ~ 1.4e-4
    # relative in sigma^2, half of it in sigma.
    np.testing.assert_allclose(sch.sigma_ve(grid[:-1]), ref[:-1], rtol=np.finfo(np.float32).eps / 8.5e-4)
    assert ref[-1] == 0.0 and sch.sigma(grid[-1]) == 0.0
