"""Few-step samplers for consistency-style models on tensors: multistep consistency sampling, LCM and TCD
(torch twin of `diffspec.reference.samplers.consistency`). Denoise, re-noise to the next grid time, return the
last denoised estimate."""

import math

import torch
from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import at, call, checked_grid, marginals


def _renoise_loop(denoise, x_T, grid, schedule, draw, a_eps, lam_eps):
    """x0 = denoise(x, t_i); x_{i+1} = (alpha_{i+1} / a_eps) x0 + sigma_{i+1} sqrt(-expm1(2 (lam_{i+1} - lam_eps))) z."""
    alpha, sigma, lam = marginals(schedule, grid)
    std = (sigma * torch.sqrt(-torch.expm1(2 * (lam - lam_eps)))).tolist()
    alpha, t = alpha.tolist(), grid.tolist()
    x = x_T
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        if i == len(t) - 2:
            return x0
        x = (alpha[i + 1] / a_eps) * x0 + std[i + 1] * draw(x.shape)
    return x


def sample_consistency(denoise, x_T, grid, schedule, *, noise=None):
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1), re-noising from the boundary time
    eps = grid[-1]: x_{i+1} = (alpha_{i+1} / alpha_eps) x0_hat + sigma_{i+1} sqrt(1 - e^{2 (lam_{i+1} - lam_eps)}) z.
    Model calls per step: 1. Noise draws: one per step but the last."""
    draw = as_noise_source(noise, sampler="consistency", like=x_T)
    grid = checked_grid(grid, schedule, sampler="consistency")
    return _renoise_loop(denoise, x_T, grid, schedule, draw, at(schedule.alpha, grid[-1]), at(schedule.lam, grid[-1]))


def sample_lcm(denoise, x_T, grid, schedule, *, noise=None):
    """LCM multistep sampling (Luo et al. 2023, Algorithm 3): x_{i+1} = alpha_{i+1} x0_hat + sigma_{i+1} z.
    Model calls per step: 1. Noise draws: one per step but the last."""
    draw = as_noise_source(noise, sampler="lcm", like=x_T)
    grid = checked_grid(grid, schedule, sampler="lcm")
    return _renoise_loop(denoise, x_T, grid, schedule, draw, 1.0, math.inf)


def sample_tcd(denoise, x_T, grid, schedule, *, noise=None, gamma=0.3):
    """TCD's strategic stochastic sampling (Zheng et al. 2024, Sec. 4.2, eq. 17): a DDIM jump to
    s = t_min + (1 - gamma)(t_next - t_min), then forward noise back to t_next:

        x_s = alpha_s x0_hat + sigma_s eps_hat,   x_next = (alpha_next / alpha_s) x_s + sqrt(-expm1(2 (lam_next - lam_s))) sigma_next z

    The last step returns x_s. Model calls per step: 1. Noise draws: one per step but the last when gamma > 0."""
    if not (math.isfinite(gamma) and 0 <= gamma <= 1):
        raise ValueError(f"gamma={gamma!r}: expected a number in [0, 1]")
    draw = as_noise_source(noise, sampler="tcd with gamma > 0", like=x_T) if gamma > 0 else None
    grid = checked_grid(grid, schedule, sampler="tcd")
    alpha, sigma, lam = marginals(schedule, grid)
    s = schedule.t_min + (1 - gamma) * (grid[1:] - schedule.t_min)
    alpha_s, sigma_s, lam_s = schedule.alpha(s), schedule.sigma(s), schedule.lam(s)
    c = -torch.expm1(2 * (lam[1:] - lam_s))
    up = (alpha[1:] / alpha_s).tolist()
    std = (torch.sqrt(c) * sigma[1:]).tolist()
    alpha_s, sigma_s, alpha, sigma, t = (
        alpha_s.tolist(),
        sigma_s.tolist(),
        alpha.tolist(),
        sigma.tolist(),
        grid.tolist(),
    )
    x = x_T
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        x = alpha_s[i] * x0 + sigma_s[i] * (x - alpha[i] * x0) / sigma[i]
        if draw is not None and i < len(t) - 2:
            x = up[i] * x + std[i] * draw(x.shape)
    return x
