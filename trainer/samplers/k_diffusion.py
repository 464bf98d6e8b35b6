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


def _t_of_sigma_ve(schedule, sigma_ve):
    """t at noise level sigma_ve as a Python float (the schedule's inverse holds it inside [t_min, t_max] where it
    lands within rounding outside it: DPM2 ancestral's midpoint is sigma_next exactly at eta = 1)."""
    return at(schedule.t_of_sigma_ve, sigma_ve)


def _d(denoise, schedule, y, sigma_ve, t=None):
    """d = (y - x0_hat) / sigma_ve at noise level sigma_ve (time t if known, else t_of_sigma_ve(sigma_ve))."""
    t = _t_of_sigma_ve(schedule, sigma_ve) if t is None else t
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


def _nonnegative(name, value):
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value!r}: expected a finite number >= 0")
    return float(value)


def _churner(noise, schedule, sampler, n, s_churn, s_tmin, s_tmax, s_noise, like):
    """EDM's churn (Karras et al. 2022, Algorithm 2) as churn(y, sigma_ve, t) -> (y_hat, sigma_hat, t_hat): gamma =
    min(s_churn / n, sqrt(2) - 1) for s_tmin <= sigma_ve <= s_tmax, sigma_hat = min(sigma_ve (1 + gamma),
    sigma_ve(t_max)), y_hat = y + sqrt(sigma_hat^2 - sigma_ve^2) s_noise z (one draw, when sigma_hat > sigma_ve and
    s_noise > 0); t_hat = None once churned (the time follows from sigma_hat)."""
    s_churn, s_noise = _nonnegative("s_churn", s_churn), _nonnegative("s_noise", s_noise)
    real = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (s_tmin, s_tmax))
    if not (real and 0 <= s_tmin <= s_tmax):
        raise ValueError(f"s_tmin={s_tmin!r}, s_tmax={s_tmax!r}: expected 0 <= s_tmin <= s_tmax")
    draw = (
        as_noise_source(noise, sampler=f"{sampler} with s_churn > 0", like=like)
        if s_churn > 0 and s_noise > 0
        else None
    )
    sigma_top = at(schedule.sigma_ve, schedule.t_max) if at(schedule.alpha, schedule.t_max) > 0 else math.inf

    def churn(y, sigma, t):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = min(sigma * (1 + gamma), sigma_top)
        # At t_max the cap is sigma itself; exp(-lam(t_max)) and sigma / alpha may differ by an ulp there.
        if not sigma_hat > sigma or t == schedule.t_max:
            return y, sigma, t
        if draw is not None:
            y = y + (math.sqrt(sigma_hat**2 - sigma**2) * s_noise) * draw(y.shape)
        return y, sigma_hat, None

    return churn


def sample_euler(
    denoise, x_T, grid, schedule, *, noise=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0
):
    """Euler on the probability-flow ODE in sigma_ve with EDM's optional churn (Karras et al. 2022, Algorithm 2
    with Euler steps; k-diffusion `sample_euler`): y_next = y_hat + (sigma_ve_next - sigma_hat) d(y_hat, sigma_hat).
    Model calls per step: 1. Noise draws: one per churned step. Order: 1."""
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "euler")
    churn = _churner(noise, schedule, "euler", len(grid) - 1, s_churn, s_tmin, s_tmax, s_noise, x_T)
    for i in range(len(grid) - 1):
        y, sigma_hat, t_hat = churn(y, sigma_ve[i], grid[i])
        d = _d(denoise, schedule, y, sigma_hat, t_hat)
        y = y + (sigma_ve[i + 1] - sigma_hat) * d
    return alpha[-1] * y


def _k_variant(variant):
    if variant not in ("diffspec", "k-diffusion"):
        raise ValueError(f"unknown variant {variant!r}: expected one of diffspec, k-diffusion")
    return variant == "k-diffusion"


def sample_euler_ancestral(denoise, x_T, grid, schedule, *, noise=None, eta=1.0, s_noise=1.0, variant="diffspec"):
    """Euler ancestral (k-diffusion `sample_euler_ancestral`): an Euler step down to sigma_down, then
    s_noise sigma_up z: y_next = y + (sigma_down - sigma) d + s_noise sigma_up z; the last step returns the mean
    (variant="k-diffusion": it adds its noise too, onto a noisy end).
    Model calls per step: 1. Noise draws: one per step with sigma_up > 0 and s_noise > 0, in grid order.
    """
    k_diffusion = _k_variant(variant)
    eta, s_noise = _nonnegative("eta", eta), _nonnegative("s_noise", s_noise)
    draw = as_noise_source(noise, sampler="euler_ancestral with eta > 0", like=x_T) if eta > 0 and s_noise > 0 else None
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "euler_ancestral")
    for i in range(len(grid) - 1):
        d = _d(denoise, schedule, y, sigma_ve[i], grid[i])
        sigma_down, sigma_up = _ancestral_step(sigma_ve[i], sigma_ve[i + 1], eta)
        y = y + (sigma_down - sigma_ve[i]) * d
        if draw is not None and sigma_up > 0 and (k_diffusion or i < len(grid) - 2):
            y = y + (sigma_up * s_noise) * draw(y.shape)
    return alpha[-1] * y


def sample_heun(denoise, x_T, grid, schedule, *, noise=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun with EDM's churn in sigma_ve (Karras et al. 2022, Algorithm 2). With (y_hat, sigma_hat) from the churn:

        y_e    = y_hat + (sigma_next - sigma_hat) d(y_hat, sigma_hat)
        y_next = y_hat + (sigma_next - sigma_hat) (d(y_hat) + d(y_e, sigma_next)) / 2     (y_e onto sigma = 0)

    Model calls per step: 2 (1 onto sigma = 0). Noise draws: one per churned step, in grid order. Order: 2.
    """
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "heun")
    churn = _churner(noise, schedule, "heun", len(grid) - 1, s_churn, s_tmin, s_tmax, s_noise, x_T)
    for i in range(len(grid) - 1):
        y, sigma_hat, t_hat = churn(y, sigma_ve[i], grid[i])
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


def sample_dpm2(denoise, x_T, grid, schedule, *, noise=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """DPM2 (k-diffusion `sample_dpm_2`) with EDM's churn: y_mid = y_hat + (sigma_mid - sigma_hat) d,
    y_next = y_hat + (sigma_next - sigma_hat) d(y_mid), sigma_mid = sqrt(sigma_hat sigma_next).
    Model calls per step: 2 (1 onto sigma = 0). Noise draws: one per churned step. Order: 2."""
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "dpm2")
    churn = _churner(noise, schedule, "dpm2", len(grid) - 1, s_churn, s_tmin, s_tmax, s_noise, x_T)
    for i in range(len(grid) - 1):
        y, sigma_hat, t_hat = churn(y, sigma_ve[i], grid[i])
        d = _d(denoise, schedule, y, sigma_hat, t_hat)
        y = _dpm2_step(denoise, schedule, y, d, sigma_hat, sigma_ve[i + 1])
    return alpha[-1] * y


def sample_dpm2_ancestral(denoise, x_T, grid, schedule, *, noise=None, eta=1.0, s_noise=1.0, variant="diffspec"):
    """DPM2 ancestral (k-diffusion `sample_dpm_2_ancestral`): a DPM2 step to sigma_down (Euler to x0_hat onto
    sigma_down = 0), then s_noise sigma_up z but on the last step; variant="k-diffusion": noise exactly where
    sigma_down > 0. Model calls per step: 2 (1 onto sigma_down = 0). Noise draws: one per noised step."""
    k_diffusion = _k_variant(variant)
    eta, s_noise = _nonnegative("eta", eta), _nonnegative("s_noise", s_noise)
    draw = as_noise_source(noise, sampler="dpm2_ancestral with eta > 0", like=x_T) if eta > 0 and s_noise > 0 else None
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "dpm2_ancestral")
    for i in range(len(grid) - 1):
        d = _d(denoise, schedule, y, sigma_ve[i], grid[i])
        sigma_down, sigma_up = _ancestral_step(sigma_ve[i], sigma_ve[i + 1], eta)
        y = _dpm2_step(denoise, schedule, y, d, sigma_ve[i], sigma_down)
        if draw is not None and sigma_up > 0 and (sigma_down > 0 if k_diffusion else i < len(grid) - 2):
            y = y + (sigma_up * s_noise) * draw(y.shape)
    return alpha[-1] * y
