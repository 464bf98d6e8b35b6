"""The variational bound of a discrete DDPM in bits per dimension, on tensors (torch twin of
`diffspec.reference.vlb`). Ho et al. (2020), eq. 5; Nichol & Dhariwal (2021), Sec. 2 and `calc_bpd_loop`."""

import math

import torch
from diffspec.trainer.forward import ddpm_log_variance, ddpm_posterior, ddpm_table, q_sample
from diffspec.trainer.noise import as_noise_source


def gaussian_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, nats:
    0.5 (-1 + logvar2 - logvar1 + e^{logvar1 - logvar2} + (mean1 - mean2)^2 e^{-logvar2})."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def standard_normal_cdf(z):
    """Phi(z) = erfc(-z / sqrt(2)) / 2, exact (not improved-diffusion's tanh approximation)."""
    return 0.5 * torch.special.erfc(-z / math.sqrt(2.0))


def discretized_gaussian_log_likelihood(x0, mean, log_scale):
    """log P(x0's bin) under N(mean, e^{2 log_scale}) cut into 256 bins on [-1, 1], per element, nats (Ho et al.
    2020, eq. 13): edge bins reach +-inf, an upper-tail difference is mirrored, probabilities clipped at 1e-12."""
    inv_scale = torch.exp(-log_scale)
    z_plus = (x0 - mean + 1.0 / 255.0) * inv_scale
    z_minus = (x0 - mean - 1.0 / 255.0) * inv_scale
    upper_tail = z_minus > 0
    delta = torch.where(
        upper_tail,
        standard_normal_cdf(-z_minus) - standard_normal_cdf(-z_plus),
        standard_normal_cdf(z_plus) - standard_normal_cdf(z_minus),
    )
    prob = torch.where(
        x0 < -0.999, standard_normal_cdf(z_plus), torch.where(x0 > 0.999, standard_normal_cdf(-z_minus), delta)
    )
    return torch.log(torch.clamp(prob, min=1e-12))


def _bits(nats, x0):
    """Sum over non-batch dims, divided by D log 2."""
    return nats.reshape(nats.shape[0], -1).sum(dim=1) / (math.prod(x0.shape[1:]) * math.log(2.0))


def prior_bits_per_dim(x0, schedule):
    """L_prior = KL(q(x_{T-1} | x0) || N(0, I)) in bits/dim, (B,)."""
    ddpm_table(schedule)
    t_last = torch.tensor(float(schedule.t_max), dtype=x0.dtype, device=x0.device)
    alpha, sigma = schedule.alpha(t_last), schedule.sigma(t_last)
    zero = torch.zeros((), dtype=x0.dtype, device=x0.device)
    return _bits(gaussian_kl(alpha * x0, 2.0 * torch.log(sigma), zero, zero), x0)


def vlb_terms(denoise, x0, schedule, *, noise=None, variance="fixed_small", model_mean_logvar=None):
    """(prior (B,), L (B, T)) in bits/dim: L[:, 0] the decoder NLL, L[:, n] the KLs. denoise(x, t) gets t as a
    tensor (B,). Noise draws: one array of x0's shape per step, n = T-1 down to 0."""
    draw = as_noise_source(noise, sampler="vlb_terms", like=x0)
    T = schedule.num_steps
    B = x0.shape[0]
    terms = torch.zeros((B, T), dtype=x0.dtype, device=x0.device)
    for n in range(T - 1, -1, -1):
        eps = draw(x0.shape)
        n_b = torch.full((B,), n, dtype=torch.int64, device=x0.device)
        t_b = n_b.to(x0.dtype)
        x = q_sample(x0, eps, t_b, schedule)
        if model_mean_logvar is None:
            x0_hat = torch.as_tensor(denoise(x, t_b), dtype=x0.dtype, device=x0.device)
            mean, _, _ = ddpm_posterior(x0_hat, x, n_b, schedule)
            logvar = ddpm_log_variance(n_b, schedule, variance=variance, like=x0).reshape((B,) + (1,) * (x0.ndim - 1))
        else:
            mean, logvar = (torch.as_tensor(a, dtype=x0.dtype, device=x0.device) for a in model_mean_logvar(x, t_b))
        if n == 0:
            terms[:, 0] = -_bits(
                discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar * torch.ones_like(mean)), x0
            )
        else:
            true_mean, _, true_logvar = ddpm_posterior(x0, x, n_b, schedule)
            terms[:, n] = _bits(gaussian_kl(true_mean, true_logvar, mean, logvar), x0)
    return prior_bits_per_dim(x0, schedule), terms


def vlb_bits_per_dim(denoise, x0, schedule, *, noise=None, variance="fixed_small", model_mean_logvar=None):
    """The DDPM bound L = L_prior + sum_n L_n + L_0 in bits/dim, (B,). Model calls: T. Noise draws: T arrays."""
    prior, terms = vlb_terms(denoise, x0, schedule, noise=noise, variance=variance, model_mean_logvar=model_mean_logvar)
    return prior + terms.sum(dim=1)
