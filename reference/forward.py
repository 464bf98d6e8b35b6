"""The forward process and its posteriors: q(x_t | x0) and q(x_s | x_t, x0) for s < t.

Any schedule: x_t = alpha_t x0 + sigma_t eps, and the posterior between two times is written in lam, valid for
VP and non-VP processes alike and for any pair of times (no re-derived betas on a coarse grid). Discrete DDPM
schedules also get the per-step table of Ho et al. (2020) / Nichol & Dhariwal (2021): the posterior variance
beta_tilde ("fixed_small"), beta ("fixed_large"), the clipped log variance, and the learned-range interpolation.
"""

import enum

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.parameterizations import broadcast_to_batch


class PosteriorVariance(enum.StrEnum):
    """Variance of the reverse step p(x_{n-1} | x_n) of a discrete DDPM (Ho et al. 2020, Sec. 3.2)."""

    FIXED_SMALL = "fixed_small"  # beta_tilde_n, the true posterior variance given x0
    FIXED_LARGE = "fixed_large"  # beta_n, the upper bound


def _parse_variance(variance):
    known = {v.value: v for v in PosteriorVariance}
    return _checks.lookup(
        known, str(variance) if isinstance(variance, PosteriorVariance) else variance, what="variance"
    )


def q_sample(x0, eps, t, schedule):
    """x_t ~ q(x_t | x0): the forward process at time t.

    Ho et al. (2020), eq. 4, for any (alpha, sigma) schedule (Kingma et al. 2021, eq. 1):

        x_t = alpha_t x0 + sigma_t eps

    t: a scalar or one time per sample (shape (B,)), inside the schedule's domain. Noise draws: none (eps given).
    """
    x0 = _checks.finite_array("x0", x0)
    eps = _checks.finite_array("eps", eps)
    if x0.shape != eps.shape:
        raise ValueError(f"eps of shape {eps.shape}: expected the shape of x0 {x0.shape}")
    t = _checks.times_in_domain("t", t, schedule)
    alpha = broadcast_to_batch(schedule.alpha(t), x0)
    sigma = broadcast_to_batch(schedule.sigma(t), x0)
    return alpha * x0 + sigma * eps


def posterior(x0, x, s, t, schedule):
    """(mean, variance) of q(x_s | x_t = x, x0) for any s < t: the Gaussian posterior of the forward process.

    Kingma et al. (2021, VDM), eqs. 29-33 (Ho et al. 2020, eqs. 6-7 for adjacent DDPM steps). With
    alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2, the textbook form is

        mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0,
        var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2.

    Written in lam with c = sigma_{t|s}^2 / sigma_t^2 = 1 - e^{2 (lam_t - lam_s)} = -expm1(2 (lam_t - lam_s)):

        mean = (alpha_t / alpha_s) (sigma_s / sigma_t)^2 x_t + c alpha_s x0,    var = c sigma_s^2

    which needs no subtraction of nearly equal variances and stays finite at both ends: at a clean end s
    (sigma_s = 0, lam_s = +inf) c = 1 and mean = alpha_s x0 with var 0; at zero terminal SNR (alpha_t = 0) the
    x_t coefficient is 0. Returns float64 arrays; var has the broadcast shape of s and t against x's batch.
    """
    x0 = _checks.finite_array("x0", x0)
    x = _checks.finite_array("x", x)
    if x0.shape != x.shape:
        raise ValueError(f"x of shape {x.shape}: expected the shape of x0 {x0.shape}")
    s = _checks.times_in_domain("s", s, schedule)
    t = _checks.times_in_domain("t", t, schedule)
    if np.any(np.broadcast_to(s, np.broadcast_shapes(s.shape, t.shape)) >= t):
        raise ValueError(f"s={_checks._short(s.tolist())}, t={_checks._short(t.tolist())}: expected s < t")
    lam_s, lam_t = schedule.lam(s), schedule.lam(t)
    alpha_s, alpha_t = schedule.alpha(s), schedule.alpha(t)
    sigma_s, sigma_t = schedule.sigma(s), schedule.sigma(t)
    c = -np.expm1(2.0 * (lam_t - lam_s))
    coef_x = alpha_t / alpha_s * (sigma_s / sigma_t) ** 2
    mean = broadcast_to_batch(coef_x, x) * x + broadcast_to_batch(c * alpha_s, x) * x0
    return mean, broadcast_to_batch(c * sigma_s**2, x)


def ddpm_table(schedule):
    """The per-step constants of a discrete DDPM, n = 0..T-1, as a dict of float64 arrays.

    Ho et al. (2020), eqs. 6-7; Nichol & Dhariwal (2021, "Improved DDPM"), code `GaussianDiffusion.__init__`:

        betas          beta_n = 1 - alphabar_n / alphabar_{n-1}        (alphabar_{-1} = 1)
        beta_tilde     (1 - alphabar_{n-1}) / (1 - alphabar_n) beta_n   (the posterior variance, 0 at n = 0)
        log_beta_tilde_clipped   log beta_tilde with the n = 0 entry replaced by beta_tilde_1 (iDDPM)
        coef_x0        sqrt(alphabar_{n-1}) beta_n / (1 - alphabar_n)
        coef_xt        sqrt(1 - beta_n) (1 - alphabar_{n-1}) / (1 - alphabar_n)

    Computed from log alpha at the integer nodes: 1 - alphabar = -expm1(2 log alpha), beta = -expm1(2 (log alpha_n -
    log alpha_{n-1})), never as 1 - (a number close to 1).
    """
    if not getattr(schedule, "is_discrete", False):
        raise ValueError(f"schedule={type(schedule).__name__}: expected a discrete (betas) schedule")
    T = schedule.num_steps
    log_alpha = schedule.log_alpha(np.arange(-1.0, T))  # n = -1..T-1, log alpha(-1) = 0
    la_prev, la = log_alpha[:-1], log_alpha[1:]
    with np.errstate(divide="ignore"):
        one_minus_abar = -np.expm1(2.0 * la)
        one_minus_abar_prev = -np.expm1(2.0 * la_prev)
        betas = -np.expm1(2.0 * (la - la_prev))
        beta_tilde = one_minus_abar_prev / one_minus_abar * betas
        log_beta_tilde_clipped = np.log(np.append(beta_tilde[1], beta_tilde[1:]))
        coef_x0 = np.exp(la_prev) * betas / one_minus_abar
        coef_xt = (
            np.exp(la - la_prev) * one_minus_abar_prev / one_minus_abar
        )  # sqrt(1 - beta_n) = alpha_n / alpha_{n-1}
    return {
        "betas": betas,
        "alphas_cumprod": np.exp(2.0 * la),
        "alphas_cumprod_prev": np.exp(2.0 * la_prev),
        "beta_tilde": beta_tilde,
        "log_beta_tilde_clipped": log_beta_tilde_clipped,
        "coef_x0": coef_x0,
        "coef_xt": coef_xt,
    }


def _steps(n, schedule):
    n = np.asarray(n)
    if not np.issubdtype(n.dtype, np.integer):
        as_float = _checks.finite_array("n", n)
        if np.any(as_float != np.round(as_float)):
            raise ValueError(f"n={_checks._short(as_float.tolist())}: expected integer steps in [0, T-1]")
        n = as_float.astype(np.int64)
    if np.any(n < 0) or np.any(n > schedule.num_steps - 1):
        raise ValueError(f"n={_checks._short(n.tolist())}: expected integer steps in [0, {schedule.num_steps - 1}]")
    return n


def ddpm_log_variance(n, schedule, *, variance="fixed_small"):
    """log of the reverse-step variance at step n (scalar or (B,)), as in improved-diffusion.

    fixed_small: log beta_tilde_n, clipped at n = 0 to log beta_tilde_1 (beta_tilde_0 = 0).
    fixed_large: log beta_n, with the n = 0 entry replaced by beta_tilde_1 as iDDPM does (Ho et al. use beta_0;
    the replacement only changes the decoder's variance, and keeps fixed_small and fixed_large equal there).
    """
    n = _steps(n, schedule)
    table = ddpm_table(schedule)
    match _parse_variance(variance):
        case PosteriorVariance.FIXED_SMALL:
            return table["log_beta_tilde_clipped"][n]
        case PosteriorVariance.FIXED_LARGE:
            with np.errstate(divide="ignore"):
                return np.log(np.append(table["beta_tilde"][1], table["betas"][1:]))[n]


def learned_range_log_variance(var_output, n, schedule):
    """iDDPM's learned-range variance: log Sigma = f log beta_n + (1 - f) log beta_tilde_n, f = (v + 1) / 2.

    Nichol & Dhariwal (2021), eq. 15; `var_output` v is the network's extra output in [-1, 1] (per dimension),
    log beta_tilde the clipped one. Returns the log variance with the shape of `var_output`.
    """
    v = _checks.finite_array("var_output", var_output)
    n = _steps(n, schedule)
    table = ddpm_table(schedule)
    with np.errstate(divide="ignore"):
        max_log = broadcast_to_batch(np.log(table["betas"])[n], v)
    min_log = broadcast_to_batch(table["log_beta_tilde_clipped"][n], v)
    frac = (v + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log


def ddpm_posterior(x0, x, n, schedule):
    """(mean, variance, log_variance) of q(x_{n-1} | x_n = x, x0) for a discrete DDPM, n in 0..T-1.

    Ho et al. (2020), eq. 7: mean = coef_x0_n x0 + coef_xt_n x_n, variance = beta_tilde_n (0 at n = 0, where
    x_{-1} is the data itself), log_variance = iDDPM's clipped log beta_tilde. Equal to `posterior(x0, x, n - 1,
    n, schedule)` (checked in tests).
    """
    x0 = _checks.finite_array("x0", x0)
    x = _checks.finite_array("x", x)
    n = _steps(n, schedule)
    table = ddpm_table(schedule)
    mean = broadcast_to_batch(table["coef_x0"][n], x) * x0 + broadcast_to_batch(table["coef_xt"][n], x) * x
    return (
        mean,
        broadcast_to_batch(table["beta_tilde"][n], x),
        broadcast_to_batch(table["log_beta_tilde_clipped"][n], x),
    )
