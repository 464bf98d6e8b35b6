"""The variational bound of a discrete DDPM, in bits per dimension.

Ho et al. (2020), eq. 5; Nichol & Dhariwal (2021, "Improved DDPM"), Sec. 2 and code `calc_bpd_loop`:

    L = L_prior + sum_{n=1}^{T-1} L_n + L_0
    L_prior = KL(q(x_{T-1} | x0) || N(0, I))
    L_n     = KL(q(x_{n-1} | x_n, x0) || p(x_{n-1} | x_n)),   x_n ~ q(x_n | x0)
    L_0     = -log p(x0 | x_0')  with the discretized Gaussian decoder (256 bins on [-1, 1])

Indices are diffusers timesteps n = 0..T-1 (iDDPM's); the paper's x_1 is n = 0 here and its x_0 is the data.
Every term is summed over dimensions and divided by D log 2 (bits per dimension).
"""

import math

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.forward import ddpm_log_variance, ddpm_posterior, ddpm_table, q_sample
from diffspec.reference.noise import as_noise_source

_erfc = np.frompyfunc(math.erfc, 1, 1)


def gaussian_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^{logvar1}) || N(mean2, e^{logvar2})) per element, in nats.

    Textbook, as in improved-diffusion's `normal_kl`:

        KL = 0.5 (-1 + logvar2 - logvar1 + e^{logvar1 - logvar2} + (mean1 - mean2)^2 e^{-logvar2})
    """
    mean1, logvar1 = np.asarray(mean1, dtype=np.float64), np.asarray(logvar1, dtype=np.float64)
    mean2, logvar2 = np.asarray(mean2, dtype=np.float64), np.asarray(logvar2, dtype=np.float64)
    return 0.5 * (-1.0 + logvar2 - logvar1 + np.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * np.exp(-logvar2))


def standard_normal_cdf(z):
    """Phi(z) = erfc(-z / sqrt(2)) / 2, exact (improved-diffusion uses a tanh approximation, error ~1e-4)."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * _erfc(-z / np.sqrt(2.0)).astype(np.float64)


def discretized_gaussian_log_likelihood(x0, mean, log_scale):
    """log P(x0's bin) under N(mean, e^{2 log_scale}) cut into 256 bins on [-1, 1], per element, in nats.

    Ho et al. (2020), eq. 13; improved-diffusion `discretized_gaussian_log_likelihood`. Data x0 lies on the bin
    centers -1 + 2k / 255; with z_+ = (x0 - mean + 1/255) / scale and z_- = (x0 - mean - 1/255) / scale:

        log P = log Phi(z_+)                  if x0 < -0.999  (the first bin reaches -inf)
                log (1 - Phi(z_-))            if x0 >  0.999  (the last bin reaches +inf)
                log (Phi(z_+) - Phi(z_-))     otherwise

    Phi is exact; a difference of two upper-tail CDFs is taken as Phi(-z_-) - Phi(-z_+) so that it does not
    cancel. Probabilities are clipped at 1e-12 as in improved-diffusion (so log P >= -27.6).
    """
    x0 = _checks.finite_array("x0", x0)
    if np.any(np.abs(x0) > 1.0):
        raise ValueError(f"x0 contains {x0[np.abs(x0) > 1].ravel()[0]}: expected data scaled to [-1, 1]")
    mean = _checks.finite_array("mean", mean)
    log_scale = _checks.finite_array("log_scale", log_scale)
    inv_scale = np.exp(-log_scale)
    z_plus = (x0 - mean + 1.0 / 255.0) * inv_scale
    z_minus = (x0 - mean - 1.0 / 255.0) * inv_scale
    upper_tail = z_minus > 0  # both ends in the upper tail: use the mirrored difference
    delta = np.where(
        upper_tail,
        standard_normal_cdf(-z_minus) - standard_normal_cdf(-z_plus),
        standard_normal_cdf(z_plus) - standard_normal_cdf(z_minus),
    )
    prob = np.where(
        x0 < -0.999, standard_normal_cdf(z_plus), np.where(x0 > 0.999, standard_normal_cdf(-z_minus), delta)
    )
    return np.log(np.maximum(prob, 1e-12))


def _bits(nats, x0):
    """Sum over non-batch dims, divided by D log 2."""
    axes = tuple(range(1, x0.ndim))
    return np.sum(nats, axis=axes) / (math.prod(x0.shape[1:]) * np.log(2.0))


def prior_bits_per_dim(x0, schedule):
    """L_prior = KL(q(x_{T-1} | x0) || N(0, I)) in bits/dim, shape (B,)."""
    x0 = _checks.finite_array("x0", x0)
    ddpm_table(schedule)  # a discrete schedule is required
    t_last = schedule.t_max
    alpha, sigma = schedule.alpha(t_last), schedule.sigma(t_last)
    return _bits(gaussian_kl(alpha * x0, 2.0 * np.log(sigma), 0.0, 0.0), x0)


def vlb_terms(denoise, x0, schedule, *, noise=None, variance="fixed_small", model_mean_logvar=None):
    """The bound's terms in bits/dim: (prior (B,), L (B, T)) with L[:, 0] the decoder NLL and L[:, n] the KLs.

    The model's reverse step is p(x_{n-1} | x_n) = N(posterior mean at x0_hat, Sigma_n): x0_hat = denoise(x_n, n)
    with Sigma_n fixed ("fixed_small" = beta_tilde, "fixed_large" = beta), or, when `model_mean_logvar` is given,
    (mean, logvar) = model_mean_logvar(x_n, n) directly (a learned variance). denoise(x, t) is called with t a
    Python float. Noise draws: one array of x0's shape per step, n = T-1 down to 0 (iDDPM's order).
    """
    x0 = _checks.finite_array("x0", x0)
    draw = as_noise_source(noise, sampler="vlb_terms")
    ddpm_table(schedule)  # a discrete schedule is required
    T = schedule.num_steps
    terms = np.zeros((x0.shape[0], T))
    for n in range(T - 1, -1, -1):
        eps = draw(x0.shape)
        x = q_sample(x0, eps, float(n), schedule)
        if model_mean_logvar is None:
            x0_hat = np.asarray(denoise(x, float(n)), dtype=np.float64)
            mean, _, _ = ddpm_posterior(x0_hat, x, n, schedule)
            logvar = ddpm_log_variance(n, schedule, variance=variance)
        else:
            mean, logvar = (np.asarray(a, dtype=np.float64) for a in model_mean_logvar(x, float(n)))
        if n == 0:
            terms[:, 0] = -_bits(discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar * np.ones_like(mean)), x0)
        else:
            true_mean, _, true_logvar = ddpm_posterior(x0, x, n, schedule)
            terms[:, n] = _bits(gaussian_kl(true_mean, true_logvar, mean, logvar), x0)
    return prior_bits_per_dim(x0, schedule), terms


def vlb_bits_per_dim(denoise, x0, schedule, *, noise=None, variance="fixed_small", model_mean_logvar=None):
    """The DDPM variational bound -log p(x0) <= L, in bits per dimension, one value per sample (B,).

    Ho et al. (2020), eq. 5; Nichol & Dhariwal (2021), Sec. 2 (bits/dim as in their Table 2). x0 in [-1, 1]
    on the 256-level grid; `schedule` discrete. L = L_prior + sum_n L_n + L_0, each term one Monte Carlo draw
    of x_n. Model calls: T. Noise draws: T arrays, n = T-1 down to 0. See `vlb_terms` for the model options.
    """
    prior, terms = vlb_terms(denoise, x0, schedule, noise=noise, variance=variance, model_mean_logvar=model_mean_logvar)
    return prior + terms.sum(axis=1)
