"""k-diffusion's samplers (Euler, Euler ancestral, Heun, DPM2, DPM2 ancestral) on tensors, in sigma_ve for any
schedule (torch twin of `diffspec.reference.samplers.k_diffusion`).

Karras et al. (2022), Algorithms 1-2, and Crowson's k-diffusion. With y = x / alpha and sigma_ve = sigma / alpha =
e^{-lam}, y = x0 + sigma_ve eps and the probability-flow ODE is dy / dsigma_ve = d = (y - x0_hat) / sigma_ve. The
model is called with x = alpha(t) y at t = t_of_sigma_ve(sigma_ve); the result is returned as x = alpha y.
Coefficients are Python floats computed in float64 from the grid; the tensors keep x_T's dtype and device.
"""

import math

from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import at, call, checked_grid, marginals


def _setup(x_T, grid, schedule, sampler):
    """(grid list, alpha list, sigma_ve list, y = x_T / alpha[0])."""
    grid = checked_grid(grid, schedule, sampler=sampler)
    alpha, sigma, _ = marginals(schedule, grid)
    if float(alpha[0]) == 0:
        raise ValueError(
            f"grid[0]={float(grid[0])} has alpha = 0 (sigma_ve = inf): {sampler} works in sigma_ve = sigma / alpha; "
            "start the grid at a time with alpha > 0"
        )
    return grid.tolist(), alpha.tolist(), (sigma / alpha).tolist(), x_T / float(alpha[0])


def _d(denoise, schedule, y, sigma_ve, t=None):
    """d = (y - x0_hat) / sigma_ve at noise level sigma_ve (time t if known, else t_of_sigma_ve(sigma_ve))."""
    t = at(schedule.t_of_sigma_ve, sigma_ve) if t is None else t
    x0 = call(denoise, at(schedule.alpha, t) * y, t)
    return (y - x0) / sigma_ve


def _ancestral_step(sigma, sigma_next, eta):
    """(sigma_down, sigma_up): sigma_up = min(sigma_next, eta sigma_next sqrt(1 - sigma_next^2 / sigma^2))."""
    sigma_up = (
        min(sigma_next, eta * sigma_next * math.sqrt(-math.expm1(2 * math.log(sigma_next / sigma))))
        if sigma_next
        else 0.0
    )
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def sample_euler(denoise, x_T, grid, schedule, *, noise=None):
    """Euler on the probability-flow ODE in sigma_ve (Karras et al. 2022, Algorithm 1 without the correction):
    y_next = y + (sigma_ve_next - sigma_ve) d. Model calls per step: 1. Noise draws: none. Order: 1."""
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "euler")
    for i in range(len(grid) - 1):
        d = _d(denoise, schedule, y, sigma_ve[i], grid[i])
        y = y + (sigma_ve[i + 1] - sigma_ve[i]) * d
    return alpha[-1] * y


def sample_euler_ancestral(denoise, x_T, grid, schedule, *, noise=None, eta=1.0):
    """Euler ancestral (k-diffusion `sample_euler_ancestral`): an Euler step down to sigma_down, then sigma_up z.

    y_next = y + (sigma_down - sigma) d + sigma_up z; the last step returns the mean (no noise).
    Model calls per step: 1. Noise draws: one per step when eta > 0, in grid order, none on the last step.
    """
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta={eta!r}: expected a finite number >= 0")
    draw = as_noise_source(noise, sampler="euler_ancestral with eta > 0", like=x_T) if eta > 0 else None
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "euler_ancestral")
    for i in range(len(grid) - 1):
        d = _d(denoise, schedule, y, sigma_ve[i], grid[i])
        last = i == len(grid) - 2
        sigma_down, sigma_up = _ancestral_step(sigma_ve[i], sigma_ve[i + 1], eta)
        y = y + (sigma_down - sigma_ve[i]) * d
        if draw is not None and not last:
            y = y + sigma_up * draw(y.shape)
    return alpha[-1] * y


def sample_heun(denoise, x_T, grid, schedule, *, noise=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun with EDM's churn in sigma_ve (Karras et al. 2022, Algorithm 2). gamma = min(s_churn / N, sqrt(2) - 1)
    for s_tmin <= sigma <= s_tmax, sigma_hat = min(sigma (1 + gamma), sigma_ve(t_max)):

        y_hat  = y + sqrt(sigma_hat^2 - sigma^2) s_noise z        (only when sigma_hat > sigma)
        y_e    = y_hat + (sigma_next - sigma_hat) d(y_hat, sigma_hat)
        y_next = y_hat + (sigma_next - sigma_hat) (d(y_hat) + d(y_e, sigma_next)) / 2     (y_e onto sigma = 0)

    Model calls per step: 2 (1 onto sigma = 0). Noise draws: one per churned step, in grid order. Order: 2.
    """
    if not (math.isfinite(s_churn) and s_churn >= 0):
        raise ValueError(f"s_churn={s_churn!r}: expected a finite number >= 0")
    if not (math.isfinite(s_noise) and s_noise >= 0):
        raise ValueError(f"s_noise={s_noise!r}: expected a finite number >= 0")
    if not (0 <= s_tmin <= s_tmax):
        raise ValueError(f"s_tmin={s_tmin!r}, s_tmax={s_tmax!r}: expected 0 <= s_tmin <= s_tmax")
    draw = as_noise_source(noise, sampler="heun with s_churn > 0", like=x_T) if s_churn > 0 else None
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "heun")
    a_top = at(schedule.alpha, schedule.t_max)
    sigma_top = at(schedule.sigma_ve, schedule.t_max) if a_top > 0 else math.inf
    n = len(grid) - 1
    for i in range(n):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma_ve[i] <= s_tmax else 0.0
        sigma_hat, t_hat = min(sigma_ve[i] * (1 + gamma), sigma_top), grid[i]
        if sigma_hat > sigma_ve[i]:
            y = y + (math.sqrt(sigma_hat**2 - sigma_ve[i] ** 2) * s_noise) * draw(y.shape)
            t_hat = None
        dt = sigma_ve[i + 1] - sigma_hat
        d = _d(denoise, schedule, y, sigma_hat, t_hat)
        y_euler = y + dt * d
        if sigma_ve[i + 1] == 0:
            y = y_euler
        else:
            y = y + dt * (d + _d(denoise, schedule, y_euler, sigma_ve[i + 1], grid[i + 1])) / 2
    return alpha[-1] * y


def _dpm2_step(denoise, schedule, y, d, sigma, sigma_to):
    """DPM2 step from sigma to sigma_to: the midpoint method at sigma_mid = sqrt(sigma sigma_to); Euler onto 0."""
    if sigma_to == 0:
        return y - sigma * d
    sigma_mid = math.exp(0.5 * (math.log(sigma) + math.log(sigma_to)))
    d_mid = _d(denoise, schedule, y + (sigma_mid - sigma) * d, sigma_mid)
    return y + (sigma_to - sigma) * d_mid


def sample_dpm2(denoise, x_T, grid, schedule, *, noise=None):
    """DPM2 (k-diffusion `sample_dpm_2`): y_mid = y + (sigma_mid - sigma) d, y_next = y + (sigma_next - sigma) d(y_mid).
    Model calls per step: 2 (1 onto sigma = 0). Noise draws: none. Order: 2."""
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "dpm2")
    for i in range(len(grid) - 1):
        d = _d(denoise, schedule, y, sigma_ve[i], grid[i])
        y = _dpm2_step(denoise, schedule, y, d, sigma_ve[i], sigma_ve[i + 1])
    return alpha[-1] * y


def sample_dpm2_ancestral(denoise, x_T, grid, schedule, *, noise=None, eta=1.0):
    """DPM2 ancestral (k-diffusion `sample_dpm_2_ancestral`): a DPM2 step to sigma_down, then sigma_up z.
    Model calls per step: 2 (1 onto sigma = 0). Noise draws: one per step when eta > 0, none on the last step."""
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta={eta!r}: expected a finite number >= 0")
    draw = as_noise_source(noise, sampler="dpm2_ancestral with eta > 0", like=x_T) if eta > 0 else None
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "dpm2_ancestral")
    for i in range(len(grid) - 1):
        d = _d(denoise, schedule, y, sigma_ve[i], grid[i])
        last = i == len(grid) - 2
        sigma_down, sigma_up = _ancestral_step(sigma_ve[i], sigma_ve[i + 1], eta)
        y = _dpm2_step(denoise, schedule, y, d, sigma_ve[i], sigma_down)
        if draw is not None and not last:
            y = y + sigma_up * draw(y.shape)
    return alpha[-1] * y
