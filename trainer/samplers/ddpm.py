"""DDPM ancestral sampling on tensors, with the three reverse variances (torch twin of
`diffspec.reference.samplers.ddpm`)."""

import enum
import math

import torch
from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import call, checked_grid, marginals, time_batch


class Variance(enum.StrEnum):
    FIXED_SMALL = "fixed_small"  # beta~ (posterior variance)
    FIXED_LARGE = "fixed_large"  # beta
    LEARNED_RANGE = "learned_range"  # Nichol & Dhariwal (2021), eq. 15


def _log_variance(variance, variance_v, x, t, c, sigma, sigma_next):
    """log of the step variance, c = -expm1(2 (lam - lam_next)); a Python float, or a tensor for learned_range."""
    log_small = math.log(c) + 2 * math.log(sigma_next)  # beta~ = c sigma_next^2
    log_large = math.log(c) + 2 * math.log(sigma)  # beta  = c sigma^2
    match variance:
        case Variance.FIXED_SMALL:
            return log_small
        case Variance.FIXED_LARGE:
            return log_large
        case Variance.LEARNED_RANGE:
            v = torch.as_tensor(variance_v(x, time_batch(t, x)), dtype=x.dtype, device=x.device)
            frac = (v + 1) / 2
            return frac * log_large + (1 - frac) * log_small


def sample_ddpm(denoise, x_T, grid, schedule, *, noise=None, variance="fixed_small", variance_v=None):
    """Ancestral sampling (Ho et al. 2020, eqs. 6-7; Nichol & Dhariwal 2021, eq. 15) for any grid step. With
    c = -expm1(2 (lam - lam_next)):

        mean = (alpha / alpha_next) (sigma_next / sigma)^2 x + alpha_next c x0_hat
        fixed_small: var = c sigma_next^2;  fixed_large: var = c sigma^2;
        learned_range: log var = f log(c sigma^2) + (1 - f) log(c sigma_next^2), f = (v + 1) / 2, v = variance_v(x, t)

    The last step returns the mean. Model calls per step: 1 (+1 variance_v call for learned_range, not on the
    last step). Noise draws: one per step in grid order, none on the last step.
    """
    draw = as_noise_source(noise, sampler="ddpm", like=x_T)
    if variance not in {v.value for v in Variance}:
        raise ValueError(f"unknown variance {variance!r}: expected one of {', '.join(v.value for v in Variance)}")
    variance = Variance(variance)
    if variance is Variance.LEARNED_RANGE and not callable(variance_v):
        raise ValueError(f"variance_v={variance_v!r}: variance='learned_range' needs a callable (x, t) -> v in [-1, 1]")
    grid = checked_grid(grid, schedule, sampler="ddpm")
    alpha, sigma, lam = marginals(schedule, grid)
    c = (-torch.expm1(2 * (lam[:-1] - lam[1:]))).tolist()
    a_x = (alpha[:-1] / alpha[1:] * (sigma[1:] / sigma[:-1]) ** 2).tolist()
    alpha, sigma, t = alpha.tolist(), sigma.tolist(), grid.tolist()
    x = x_T
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        mean = a_x[i] * x + (alpha[i + 1] * c[i]) * x0
        if i == len(t) - 2:
            return mean
        log_var = _log_variance(variance, variance_v, x, t[i], c[i], sigma[i], sigma[i + 1])
        std = math.exp(0.5 * log_var) if isinstance(log_var, float) else torch.exp(0.5 * log_var)
        x = mean + std * draw(x.shape)
    return x
