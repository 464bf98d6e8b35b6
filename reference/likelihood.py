"""Exact likelihood through the probability-flow ODE (instantaneous change of variables), in bits per dimension.

Song et al. (2021), arXiv:2011.13456, App. D.2 (eq. 39), after Chen et al. (2018) and Grathwohl et al. (2019,
FFJORD: the Hutchinson trace estimator). In lam, with x_tilde = x / alpha, the flow is
d x_tilde / d lam = F = x0_hat(alpha x_tilde, t) - x_tilde and div F = alpha div_x x0_hat - D. Along the flow
d log p / d lam = -div F, so integrating from the data time (lam_0) to the prior time (lam_T < lam_0):

    log p_0(x) = log p_T(x_T) + int_{lam_0}^{lam_T} div F d lam + D log(alpha_T / alpha_0)

(the last term converts densities of x_tilde to densities of x). The prior p_T is N(0, sigma_T^2 I)
(for VP at t = 1 that is N(0, I), for VE/EDM N(0, sigma_max^2 I)); it ignores the alpha_T x0 part of x_T, which
is negligible where the schedule ends in noise. x is treated as a sample of the density p_{t_data}; no
dequantisation term is added.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.noise import as_noise_source
from diffspec.reference.samplers.ode import dormand_prince


def bits_per_dim(
    denoise, x, schedule, *, t_data=None, t_prior=None, divergence=None, noise=None, rtol=1e-5, atol=1e-5, fd_step=1e-4
):
    """Negative log-likelihood -log p_{t_data}(x) / (D log 2) of each sample, shape (B,).

    divergence: optional callable (x, t) -> (B,), the exact divergence sum_i d x0_hat_i / d x_i of the denoiser.
    Without it, the Hutchinson estimate z^T J z with z ~ N(0, I) drawn once from `noise` (shape of x, fixed along
    the ODE as in FFJORD), where J z = (x0_hat(x + d z) - x0_hat(x - d z)) / (2 d) is a central difference with
    d = fd_step sigma_t (the scale on which x0_hat varies). One RK45 solve integrates the augmented state
    (x_tilde, int div F) for the whole batch.
    t_data defaults to t_min when it is noisy, else t_eps; t_prior to t_max, or where alpha(t_max) = 0 to the time of
    lam = -15 (alpha ~ 3e-7: the prior's neglected alpha_T x0 part stays below float rounding of the result).
    Noise draws: one array shaped like x (only without `divergence`).
    """
    x = _checks.finite_array("x", x)
    if x.ndim < 2:
        raise ValueError(f"x of shape {x.shape}: expected (B, ...)")
    t_data = (schedule.t_min if schedule.sigma(schedule.t_min) > 0 else schedule.t_eps) if t_data is None else t_data
    if t_prior is None:
        t_prior = schedule.t_max if schedule.alpha(schedule.t_max) > 0 else float(schedule.t_of_lam(-15.0))
    t_data = float(_checks.times_in_domain("t_data", t_data, schedule))
    t_prior = float(_checks.times_in_domain("t_prior", t_prior, schedule))
    if not (schedule.sigma(t_data) > 0 and t_prior > t_data and schedule.alpha(t_prior) > 0):
        raise ValueError(
            f"t_data={t_data}, t_prior={t_prior}: expected sigma(t_data) > 0, t_prior > t_data and alpha(t_prior) > 0"
        )
    fd_step = _checks.positive("fd_step", fd_step)
    z = None if divergence is not None else as_noise_source(noise, sampler="bits_per_dim (Hutchinson)")(x.shape)
    B, shape, D = x.shape[0], x.shape, int(np.prod(x.shape[1:]))
    t_lo, t_hi = t_data, t_prior

    def rhs(lam, y):
        t = float(np.clip(schedule.t_of_lam(lam), t_lo, t_hi))
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        x_tilde = y[: B * D].reshape(shape)
        x_t = alpha * x_tilde
        F = np.asarray(denoise(x_t, t), dtype=np.float64) - x_tilde
        if divergence is not None:
            div_x0 = np.asarray(divergence(x_t, t), dtype=np.float64)
        else:
            d = fd_step * sigma
            jvp = (
                np.asarray(denoise(x_t + d * z, t), dtype=np.float64)
                - np.asarray(denoise(x_t - d * z, t), dtype=np.float64)
            ) / (2 * d)
            div_x0 = np.sum((z * jvp).reshape(B, -1), axis=1)
        return np.concatenate([F.ravel(), alpha * div_x0 - D])

    alpha_0, lam_0 = schedule.alpha(t_data), float(schedule.lam(t_data))
    alpha_T, sigma_T, lam_T = schedule.alpha(t_prior), schedule.sigma(t_prior), float(schedule.lam(t_prior))
    y0 = np.concatenate([(x / alpha_0).ravel(), np.zeros(B)])
    y, _ = dormand_prince(rhs, y0, lam_0, lam_T, rtol=rtol, atol=atol)
    x_T = alpha_T * y[: B * D].reshape(B, D)
    log_prior = -0.5 * np.sum(x_T**2, axis=1) / sigma_T**2 - 0.5 * D * np.log(2 * np.pi * sigma_T**2)
    log_p = log_prior + y[B * D :] + D * np.log(alpha_T / alpha_0)
    return -log_p / (D * np.log(2.0))
