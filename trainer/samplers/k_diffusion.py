"""Karras et al. (2022) / k-diffusion samplers on tensors (torch twin of `diffspec.reference.samplers.k_diffusion`).

k-diffusion integrates in y = x / alpha with noise level s = sigma_ve = sigma / alpha, where the probability-flow
ODE is dy/ds = (y - x0) / s. Here y is kept implicit: each update is written for x = alpha y, and every
coefficient (including the churned noise level's time, by the schedule's inverse) is computed once over the grid.
"""

import math

import torch

from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import call, checked_grid, marginals, require_alpha_positive


def _churn(grid, schedule, s, *, s_churn, s_tmin, s_tmax):
    """EDM Algorithm 2's churn: gamma_i, the raised noise level s_hat = s (1 + gamma) and its time t_hat."""
    n = len(grid) - 1
    gamma = torch.where((s[:-1] >= s_tmin) & (s[:-1] <= s_tmax), min(s_churn / n, math.sqrt(2) - 1), 0.0)
    s_hat = s[:-1] * (1 + gamma)
    t_hat = torch.where(gamma > 0, schedule.t_of_sigma_ve(s_hat), grid[:-1])
    return gamma, s_hat, t_hat


def _check_churn(s_churn, s_noise):
    if not (math.isfinite(s_churn) and s_churn >= 0):
        raise ValueError(f"s_churn={s_churn!r}: expected a finite number >= 0")
    if not (math.isfinite(s_noise) and s_noise >= 0):
        raise ValueError(f"s_noise={s_noise!r}: expected a finite number >= 0")


def sample_euler(denoise, x_T, grid, schedule, *, noise=None, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    """Euler in the noise level: Karras et al. (2022), Algorithm 2 without the second-order correction.

    With s = sigma_ve, y = x / alpha, d = (y - x0) / s: y_next = y + (s_next - s) d, i.e.
    x_next = (sigma_next / sigma) x + alpha_next (1 - s_next / s) x0. With s_churn > 0, each step first raises the
    noise level to s_hat = s (1 + gamma) by adding sqrt(s_hat^2 - s^2) s_noise z to y (and steps from s_hat).
    Model calls per step: 1. Noise draws: one per churned step (gamma > 0), in grid order. Order: 1.
    """
    _check_churn(s_churn, s_noise)
    grid = checked_grid(grid, schedule, sampler="sample_euler")
    alpha, sigma, _ = marginals(schedule, grid)
    require_alpha_positive(alpha, sampler="sample_euler")
    s = sigma / alpha
    gamma, s_hat, t_hat = _churn(grid, schedule, s, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax)
    churned = (gamma > 0).tolist()
    draw = as_noise_source(noise, sampler="sample_euler", like=x_T) if any(churned) else None
    add = (torch.sqrt(s_hat**2 - s[:-1] ** 2) * s_noise).tolist()
    a_hat = schedule.alpha(t_hat).tolist()
    s_l, s_hat_l, t_hat_l, alpha_l = s.tolist(), s_hat.tolist(), t_hat.tolist(), alpha.tolist()
    x = x_T
    for i in range(len(grid) - 1):
        y = x / alpha_l[i]
        if churned[i]:
            y = y + add[i] * draw(x.shape)
        x0 = call(denoise, a_hat[i] * y, t_hat_l[i])
        y = y + (s_l[i + 1] - s_hat_l[i]) * (y - x0) / s_hat_l[i]
        x = alpha_l[i + 1] * y
    return x


def sample_euler_ancestral(denoise, x_T, grid, schedule, *, noise=None, eta=1.0, s_noise=1.0):
    """Euler ancestral (k-diffusion's `sample_euler_ancestral`): a DDPM-like split of each step into a deterministic
    Euler step down to s_down and fresh noise s_up, in y = x / alpha, s = sigma_ve:

        s_up = min(s_next, eta sqrt(s_next^2 (s^2 - s_next^2) / s^2)),    s_down = sqrt(s_next^2 - s_up^2)
        y_next = y + (s_down - s) (y - x0) / s + s_noise s_up z

    Model calls per step: 1. Noise draws: one per step with s_next > 0, in grid order. Order: 1.
    """
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta={eta!r}: expected a finite number >= 0")
    grid = checked_grid(grid, schedule, sampler="sample_euler_ancestral")
    alpha, sigma, _ = marginals(schedule, grid)
    require_alpha_positive(alpha, sampler="sample_euler_ancestral")
    s, s_next = sigma[:-1] / alpha[:-1], sigma[1:] / alpha[1:]
    s_up = torch.minimum(s_next, eta * torch.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
    s_down = torch.sqrt(s_next**2 - s_up**2)
    noisy = ((s_up > 0) & (s_next > 0)).tolist()
    draw = as_noise_source(noise, sampler="sample_euler_ancestral", like=x_T) if any(noisy) else None
    a_x = (alpha[1:] / alpha[:-1] * s_down / s).tolist()
    a_x0 = (alpha[1:] * (1 - s_down / s)).tolist()
    a_z = (alpha[1:] * s_noise * s_up).tolist()
    t = grid.tolist()
    x = x_T
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        x = a_x[i] * x + a_x0[i] * x0
        if noisy[i]:
            x = x + a_z[i] * draw(x.shape)
    return x


def sample_heun(denoise, x_T, grid, schedule, *, noise=None, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    """Heun's method in the noise level: Karras et al. (2022), Algorithm 2 (churn off by default: Algorithm 1).

    y_next = y + (s_next - s_hat) d, then where s_next > 0 the trapezoidal correction
    y_next = y + (s_next - s_hat) (d + d') / 2 with d' = (y_next - x0(y_next, t_next)) / s_next.
    Model calls per step: 2 (1 on a step to s = 0). Noise draws: one per churned step. Order: 2.
    """
    _check_churn(s_churn, s_noise)
    grid = checked_grid(grid, schedule, sampler="sample_heun")
    alpha, sigma, _ = marginals(schedule, grid)
    require_alpha_positive(alpha, sampler="sample_heun")
    s = sigma / alpha
    gamma, s_hat, t_hat = _churn(grid, schedule, s, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax)
    churned = (gamma > 0).tolist()
    draw = as_noise_source(noise, sampler="sample_heun", like=x_T) if any(churned) else None
    a_hat = schedule.alpha(t_hat)
    add = (torch.sqrt(s_hat**2 - s[:-1] ** 2) * s_noise).tolist()
    s_l, s_hat_l, t_hat_l = s.tolist(), s_hat.tolist(), t_hat.tolist()
    alpha_l, a_hat_l, t = alpha.tolist(), a_hat.tolist(), grid.tolist()
    x = x_T
    for i in range(len(t) - 1):
        y = x / alpha_l[i]
        if churned[i]:
            y = y + add[i] * draw(x.shape)
        x0 = call(denoise, a_hat_l[i] * y, t_hat_l[i])
        d = (y - x0) / s_hat_l[i]
        dt = s_l[i + 1] - s_hat_l[i]
        y_next = y + dt * d
        if s_l[i + 1] > 0:
            x0_next = call(denoise, alpha_l[i + 1] * y_next, t[i + 1])
            d_next = (y_next - x0_next) / s_l[i + 1]
            y_next = y + dt * 0.5 * (d + d_next)
        x = alpha_l[i + 1] * y_next
    return x
