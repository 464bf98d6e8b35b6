"""Few-step samplers for consistency-style models: multistep consistency sampling, LCM and TCD.

Song, Dhariwal, Chen & Sutskever (2023), "Consistency Models", Algorithm 1; Luo et al. (2023), "Latent
Consistency Models", Algorithm 3; Zheng et al. (2024), "Trajectory Consistency Distillation", Sec. 4.2
(strategic stochastic sampling). The model is the denoiser: for a consistency model denoise(x, t) = f(x, t), its
boundary condition (c_skip, c_out) lives in the parameterization, not here. Denoise, then re-noise to the next
grid time with fresh noise; the output is the last denoised estimate.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.noise import as_noise_source
from diffspec.reference.samplers._info import Option, Requirement, SamplerInfo, one_per_step, one_per_step_if


def _renoise_loop(denoise, x_T, grid, schedule, draw, a_eps, lam_eps):
    """x0 = denoise(x, t_i); x_{i+1} = (alpha_{i+1} / a_eps) x0 + sigma_{i+1} sqrt(-expm1(2 (lam_{i+1} - lam_eps))) z,
    the forward transition from the time (a_eps, lam_eps) at which x0 is taken to sit; returns the last x0."""
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    x = _checks.finite_array("x_T", x_T)
    for i in range(len(grid) - 1):
        x0 = np.asarray(denoise(x, float(grid[i])), dtype=np.float64)
        if i == len(grid) - 2:
            return x0
        std = sigma[i + 1] * np.sqrt(-np.expm1(2 * (lam[i + 1] - lam_eps)))
        x = (alpha[i + 1] / a_eps) * x0 + std * draw(x.shape)
    return x


def sample_consistency(denoise, x_T, grid, schedule, *, noise=None):
    """Multistep consistency sampling: denoise, then diffuse the estimate forward to the next grid time.

    Song et al. (2023), Algorithm 1 (their tau_n are grid[1:-1], T = grid[0], epsilon = grid[-1]). The denoiser's
    output is a sample at the boundary time epsilon = grid[-1], so it is re-noised with the forward transition
    from epsilon (the paper's x + sqrt(tau^2 - epsilon^2) z when alpha = 1):

        x0_hat = denoise(x, t_i)
        x_{i+1} = a x0_hat + sigma_{i+1} sqrt(1 - e^{2 (lam_{i+1} - lam_eps)}) z,   a = alpha_{i+1} / alpha_eps

    At a clean end (sigma_eps = 0) this is alpha x0_hat + sigma z. Returns the last x0_hat; never calls the model at
    grid[-1]. Model calls per step: 1. Noise draws: one array per step but the last (len(grid) - 2), in grid order.
    Order: none (stochastic).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="consistency")
    draw = as_noise_source(noise, sampler="consistency")
    grid = _checks.decreasing_grid(grid, schedule, sampler="consistency")
    return _renoise_loop(denoise, x_T, grid, schedule, draw, schedule.alpha(grid[-1]), schedule.lam(grid[-1]))


def sample_lcm(denoise, x_T, grid, schedule, *, noise=None):
    """Latent consistency model multistep sampling.

    Luo et al. (2023), Algorithm 3 (diffusers' `LCMScheduler`): x0_hat = denoise(x, t_i), then
    x_{i+1} = alpha_{i+1} x0_hat + sigma_{i+1} z; the last step returns x0_hat.
    Model calls per step: 1. Noise draws: one array per step but the last, in grid order. Order: none (stochastic).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="lcm")
    draw = as_noise_source(noise, sampler="lcm")
    grid = _checks.decreasing_grid(grid, schedule, sampler="lcm")
    return _renoise_loop(denoise, x_T, grid, schedule, draw, 1.0, np.inf)


def sample_tcd(denoise, x_T, grid, schedule, *, noise=None, gamma=0.3):
    """Trajectory consistency distillation's strategic stochastic sampling.

    Zheng et al. (2024), Sec. 4.2, eq. 17 (diffusers' `TCDScheduler`, whose `eta` is gamma). From t to t_next, a
    DDIM jump to the earlier time s = t_min + (1 - gamma) (t_next - t_min), then forward noise back up to t_next:

        x_s    = alpha_s x0_hat + sigma_s eps_hat,                       eps_hat = (x - alpha x0_hat) / sigma
        x_next = (alpha_next / alpha_s) x_s + sqrt(-expm1(2 (lam_next - lam_s))) sigma_next z

    gamma = 0 is deterministic DDIM; gamma = 1 is `lcm`. The last step returns x_s (no noise).
    Model calls per step: 1. Noise draws: one array per step but the last when gamma > 0, in grid order.
    Order: none (stochastic; 1 at gamma = 0).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="tcd")
    gamma = _checks.in_range("gamma", gamma, 0.0, 1.0)
    draw = as_noise_source(noise, sampler="tcd with gamma > 0") if gamma > 0 else None
    grid = _checks.decreasing_grid(grid, schedule, sampler="tcd")
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    s = schedule.t_min + (1 - gamma) * (grid[1:] - schedule.t_min)
    alpha_s, sigma_s, lam_s = schedule.alpha(s), schedule.sigma(s), schedule.lam(s)
    x = _checks.finite_array("x_T", x_T)
    for i in range(len(grid) - 1):
        x0 = np.asarray(denoise(x, float(grid[i])), dtype=np.float64)
        x = alpha_s[i] * x0 + sigma_s[i] * (x - alpha[i] * x0) / sigma[i]
        if draw is not None and i < len(grid) - 2:
            c = -np.expm1(2 * (lam[i + 1] - lam_s[i]))
            x = (alpha[i + 1] / alpha_s[i]) * x + np.sqrt(c) * sigma[i + 1] * draw(x.shape)
    return x


INFO = [
    SamplerInfo(
        "consistency",
        sample_consistency,
        order=None,
        stochastic=True,
        calls_per_step=1,
        draws=one_per_step,
        requires=frozenset({Requirement.CONSISTENCY_MODEL}),
    ),
    SamplerInfo(
        "lcm",
        sample_lcm,
        order=None,
        stochastic=True,
        calls_per_step=1,
        draws=one_per_step,
        requires=frozenset({Requirement.CLEAN_END, Requirement.CONSISTENCY_MODEL}),
    ),
    SamplerInfo(
        "tcd",
        sample_tcd,
        order=None,
        stochastic=True,
        calls_per_step=1,
        draws=one_per_step_if("gamma"),
        requires=frozenset({Requirement.CLEAN_END}),
        options=dict(gamma=Option(0.3, low=0.0, high=1.0, invalid=(-0.1, 1.5), probe=(0.0, 1.0))),
    ),
]
