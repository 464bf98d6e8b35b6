"""DDPM ancestral sampling for any grid, with the three reverse variances of DDPM and improved DDPM.

Ho et al. (2020), "Denoising Diffusion Probabilistic Models", eqs. 6-7 and Sec. 3.2; Nichol & Dhariwal (2021),
"Improved Denoising Diffusion Probabilistic Models", eq. 15. Written for any two grid times as in Kingma et al.
(2021, VDM, eq. 33), so a coarse grid needs no re-derived betas. The paper's t -> t-1 is our t -> t_next.
"""

import enum

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.noise import as_noise_source
from diffspec.reference.samplers._info import Option, SamplerInfo, one_per_step


class Variance(enum.StrEnum):
    """The reverse-step variance (improved-diffusion's `model_var_type`, diffusers' `variance_type`)."""

    FIXED_SMALL = "fixed_small"  # the posterior variance beta~ (Ho et al. 2020, sigma^2 = beta~_t)
    FIXED_LARGE = "fixed_large"  # the forward step variance beta (Ho et al. 2020, sigma^2 = beta_t)
    LEARNED_RANGE = "learned_range"  # interpolated in log space between the two (Nichol & Dhariwal, eq. 15)


def _log_variance(variance, variance_v, x, t, c, sigma, sigma_next):
    """log of the step variance; c = -expm1(2 (lam - lam_next)) = sigma_{t|t_next}^2 / sigma^2."""
    log_small = np.log(c) + 2 * np.log(sigma_next)  # beta~ = c sigma_next^2
    log_large = np.log(c) + 2 * np.log(sigma)  # beta  = sigma_{t|t_next}^2 = c sigma^2
    match variance:
        case Variance.FIXED_SMALL:
            return log_small
        case Variance.FIXED_LARGE:
            return log_large
        case Variance.LEARNED_RANGE:
            v = np.asarray(variance_v(x, float(t)), dtype=np.float64)
            frac = (v + 1) / 2
            return frac * log_large + (1 - frac) * log_small


def sample_ddpm(denoise, x_T, grid, schedule, *, noise=None, variance="fixed_small", variance_v=None):
    """Ancestral sampling: x_next ~ N(mean, var) with mean the posterior mean of q(x_next | x, x0 = x0_hat).

    Ho et al. (2020), eqs. 6-7 (fixed_small: var = beta~, fixed_large: var = beta); Nichol & Dhariwal (2021),
    eq. 15 (learned_range). For any grid step, with c = sigma_{t|t_next}^2 / sigma^2 = -expm1(2 (lam - lam_next)):

        mean = (alpha / alpha_next) (sigma_next / sigma)^2 x + alpha_next c x0_hat
        fixed_small: var = c sigma_next^2          (beta~, the posterior variance)
        fixed_large: var = c sigma^2               (beta = 1 - alphabar/alphabar_next on VP; >= beta~)
        learned_range: log var = f log(c sigma^2) + (1 - f) log(c sigma_next^2), f = (v + 1) / 2,

    with v = variance_v(x, t) in [-1, 1], improved-diffusion's network output (its [-1, 1] form of eq. 15's v).
    The x coefficient is the stable form of alpha_next (1 - c) / alpha. The last step returns the mean (no noise,
    no variance_v call), which at sigma_next = 0 is alpha_next x0_hat. fixed_large is exact only as steps -> inf.
    Model calls per step: 1 (+ 1 variance_v call on all steps but the last for learned_range).
    Noise draws: one array per step, in grid order, none on the last step. Order: none (stochastic).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="ddpm")
    draw = as_noise_source(noise, sampler="ddpm")
    variance = Variance(_checks.lookup({str(v): v for v in Variance}, variance, what="variance"))
    if variance is Variance.LEARNED_RANGE and not callable(variance_v):
        raise ValueError(f"variance_v={variance_v!r}: variance='learned_range' needs a callable (x, t) -> v in [-1, 1]")
    grid = _checks.decreasing_grid(grid, schedule, sampler="ddpm")
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    x = _checks.finite_array("x_T", x_T)
    for i in range(len(grid) - 1):
        x0 = np.asarray(denoise(x, float(grid[i])), dtype=np.float64)
        c = -np.expm1(2 * (lam[i] - lam[i + 1]))
        mean = (alpha[i] / alpha[i + 1]) * (sigma[i + 1] / sigma[i]) ** 2 * x + alpha[i + 1] * c * x0
        if i == len(grid) - 2:
            return mean
        log_var = _log_variance(variance, variance_v, x, grid[i], c, sigma[i], sigma[i + 1])
        x = mean + np.exp(0.5 * log_var) * draw(x.shape)
    return x


INFO = [
    SamplerInfo(
        "ddpm",
        sample_ddpm,
        order=None,
        stochastic=True,
        calls_per_step=1,
        draws=one_per_step,
        options=dict(
            variance=Option(
                "fixed_small",
                choices=("fixed_small", "fixed_large", "learned_range"),
                invalid=("fixed",),
                probe=("fixed_large",),
            ),
            variance_v=Option(None, callable=True),
        ),
    ),
]
