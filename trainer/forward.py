"""The forward process and its posteriors on tensors (torch twin of `diffspec.reference.forward`).

q_sample, the two-time posterior q(x_s | x_t, x0) written in lam, and the discrete DDPM per-step table with the
three reverse variances. Per-example times of shape (B,); the DDPM table is built once per schedule in float64
and cast to the dtype of the data; no host syncs.
"""

import enum

import torch
from diffspec.trainer.parameterizations import broadcast_to_batch


class PosteriorVariance(enum.StrEnum):
    FIXED_SMALL = "fixed_small"  # beta_tilde_n
    FIXED_LARGE = "fixed_large"  # beta_n


def _parse_variance(variance):
    known = {v.value: v for v in PosteriorVariance}
    key = str(variance)
    if key not in known:
        raise ValueError(f"unknown variance {variance!r}: expected one of {', '.join(sorted(known))}")
    return known[key]


def q_sample(x0, eps, t, schedule):
    """x_t = alpha_t x0 + sigma_t eps (Ho et al. 2020, eq. 4), t a scalar or (B,)."""
    if x0.shape != eps.shape:
        raise ValueError(f"eps of shape {tuple(eps.shape)}: expected the shape of x0 {tuple(x0.shape)}")
    return broadcast_to_batch(schedule.alpha(t), x0) * x0 + broadcast_to_batch(schedule.sigma(t), x0) * eps


def posterior(x0, x, s, t, schedule):
    """(mean, variance) of q(x_s | x_t = x, x0), s < t (Kingma et al. 2021, eqs. 29-33), in lam with
    c = -expm1(2 (lam_t - lam_s)): mean = (alpha_t / alpha_s)(sigma_s / sigma_t)^2 x + c alpha_s x0, var = c sigma_s^2."""
    lam_s, lam_t = schedule.lam(s), schedule.lam(t)
    alpha_s, alpha_t = schedule.alpha(s), schedule.alpha(t)
    sigma_s, sigma_t = schedule.sigma(s), schedule.sigma(t)
    c = -torch.expm1(2.0 * (lam_t - lam_s))
    coef_x = alpha_t / alpha_s * (sigma_s / sigma_t) ** 2
    mean = broadcast_to_batch(coef_x, x) * x + broadcast_to_batch(c * alpha_s, x) * x0
    return mean, broadcast_to_batch(c * sigma_s**2, x)


def ddpm_table(schedule):
    """The per-step constants of a discrete DDPM, n = 0..T-1, float64 tensors (Ho et al. 2020, eqs. 6-7;
    improved-diffusion's GaussianDiffusion), from log alpha at the integer nodes without 1 - (a number near 1)."""
    if not getattr(schedule, "is_discrete", False):
        raise ValueError(f"schedule={type(schedule).__name__}: expected a discrete (betas) schedule")
    cache = schedule.__dict__.setdefault("_ddpm_table_cache", {})
    if "table" not in cache:
        T = schedule.num_steps
        log_alpha = schedule.log_alpha(torch.arange(-1.0, T, dtype=torch.float64))
        la_prev, la = log_alpha[:-1], log_alpha[1:]
        one_minus_abar = -torch.expm1(2.0 * la)
        one_minus_abar_prev = -torch.expm1(2.0 * la_prev)
        betas = -torch.expm1(2.0 * (la - la_prev))
        beta_tilde = one_minus_abar_prev / one_minus_abar * betas
        cache["table"] = {
            "betas": betas,
            "alphas_cumprod": torch.exp(2.0 * la),
            "alphas_cumprod_prev": torch.exp(2.0 * la_prev),
            "beta_tilde": beta_tilde,
            "log_beta_tilde_clipped": torch.log(torch.cat([beta_tilde[1:2], beta_tilde[1:]])),
            "coef_x0": torch.exp(la_prev) * betas / one_minus_abar,
            "coef_xt": torch.exp(la - la_prev) * one_minus_abar_prev / one_minus_abar,
        }
    return cache["table"]


def _column(schedule, key, n, like):
    """table[key][n] cast to like's dtype and device (n: integer tensor or Python int)."""
    values = ddpm_table(schedule)[key].to(dtype=like.dtype, device=like.device)
    return values[torch.as_tensor(n, device=like.device).long()]


def ddpm_log_variance(n, schedule, *, variance="fixed_small", like=None):
    """log reverse-step variance at step n: fixed_small = clipped log beta_tilde; fixed_large = log beta with the
    n = 0 entry replaced by beta_tilde_1 (iDDPM)."""
    like = torch.zeros((), dtype=torch.float64) if like is None else like
    table = ddpm_table(schedule)
    match _parse_variance(variance):
        case PosteriorVariance.FIXED_SMALL:
            values = table["log_beta_tilde_clipped"]
        case PosteriorVariance.FIXED_LARGE:
            values = torch.log(torch.cat([table["beta_tilde"][1:2], table["betas"][1:]]))
    return values.to(dtype=like.dtype, device=like.device)[torch.as_tensor(n, device=like.device).long()]


def learned_range_log_variance(var_output, n, schedule):
    """iDDPM eq. 15: log Sigma = f log beta_n + (1 - f) log beta_tilde_n (clipped), f = (v + 1) / 2."""
    max_log = broadcast_to_batch(torch.log(_column(schedule, "betas", n, var_output)), var_output)
    min_log = broadcast_to_batch(_column(schedule, "log_beta_tilde_clipped", n, var_output), var_output)
    frac = (var_output + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log


def ddpm_posterior(x0, x, n, schedule):
    """(mean, variance, log_variance) of q(x_{n-1} | x_n = x, x0) (Ho et al. 2020, eq. 7), n integer (B,)."""
    mean = (
        broadcast_to_batch(_column(schedule, "coef_x0", n, x), x) * x0
        + broadcast_to_batch(_column(schedule, "coef_xt", n, x), x) * x
    )
    return (
        mean,
        broadcast_to_batch(_column(schedule, "beta_tilde", n, x), x),
        broadcast_to_batch(_column(schedule, "log_beta_tilde_clipped", n, x), x),
    )
