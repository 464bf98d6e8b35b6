"""Score-SDE samplers on tensors: Euler-Maruyama and predictor-corrector on the reverse SDE (torch twin of
`diffspec.reference.samplers.sde`).

Song et al. (2021), arXiv:2011.13456. f dt -> log(alpha_next / alpha) and g^2 |dt| -> 2 sigma^2 h (h = lam_next - lam),
score = (alpha x0_hat - x) / sigma^2; step coefficients are Python floats from the float64 grid.
"""

import enum
import math

import torch
from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import call, checked_grid, marginals


class Predictor(enum.StrEnum):
    REVERSE_DIFFUSION = "reverse_diffusion"
    EULER_MARUYAMA = "euler_maruyama"


def _em_mean(x, x0, alpha, sigma, alpha_next, h):
    """x + log(alpha_next / alpha) x + 2 sigma^2 h score."""
    return (1 + math.log(alpha_next / alpha)) * x + (2 * h) * (alpha * x0 - x)


def _rd_mean(x, x0, alpha, sigma, alpha_next, h):
    """(2 - alpha / alpha_next) x + G^2 score, G^2 = sigma^2 (1 - e^{-2h})."""
    G2 = -math.expm1(-2 * h) * sigma**2
    return (2 - alpha / alpha_next) * x + (G2 / sigma**2) * (alpha * x0 - x)


def _positive_alpha(alpha, grid, sampler):
    if alpha[0] == 0:
        raise ValueError(
            f"grid[0]={grid[0]} has alpha = 0: {sampler} uses log(alpha_next / alpha); start at a time with alpha > 0"
        )


def _setup(x_T, grid, schedule, sampler):
    grid = checked_grid(grid, schedule, sampler=sampler)
    alpha, sigma, lam = marginals(schedule, grid)
    grid, alpha, sigma, lam = grid.tolist(), alpha.tolist(), sigma.tolist(), lam.tolist()
    _positive_alpha(alpha, grid, sampler)
    return grid, alpha, sigma, lam


def sample_euler_maruyama(denoise, x_T, grid, schedule, *, noise=None):
    """Euler-Maruyama on the reverse SDE: x_next = (1 + log(alpha_next / alpha)) x + 2 sigma^2 h score + sigma sqrt(2h) z;
    onto a clean end alpha_next x0_hat; the last step draws nothing.
    Model calls per step: 1. Noise draws: one per step but the last, in grid order."""
    draw = as_noise_source(noise, sampler="euler_maruyama", like=x_T)
    grid, alpha, sigma, lam = _setup(x_T, grid, schedule, "euler_maruyama")
    x, n = x_T, len(grid) - 1
    for i in range(n):
        x0 = call(denoise, x, grid[i])
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0
            continue
        h = lam[i + 1] - lam[i]
        x = _em_mean(x, x0, alpha[i], sigma[i], alpha[i + 1], h)
        if i < n - 1:
            x = x + (sigma[i] * math.sqrt(2 * h)) * draw(x.shape)
    return x


def _norm(a):
    return torch.sqrt(torch.sum(a.reshape(len(a), -1) ** 2, dim=1))


def sample_pc(denoise, x_T, grid, schedule, *, noise=None, predictor="reverse_diffusion", snr=0.16, corrector_steps=1):
    """Predictor-corrector (Song et al. 2021, Algorithm 1 with the Langevin corrector): per step, corrector_steps
    Langevin moves x <- x + eps_step s + sqrt(2 eps_step) z with eps_step = 2 (alpha / alpha_next)^2 (snr ||z|| / ||s||)^2
    (batch-mean norms), then the predictor. The step size is a tensor (no host sync).
    Model calls per step: corrector_steps + 1. Noise draws: corrector_steps, then one predictor draw (not on the last step)."""
    if predictor not in {p.value for p in Predictor}:
        raise ValueError(f"unknown predictor {predictor!r}: expected one of euler_maruyama, reverse_diffusion")
    predictor = Predictor(predictor)
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr={snr!r}: expected a finite number > 0")
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise ValueError(f"corrector_steps={corrector_steps!r}: expected an integer >= 0")
    draw = as_noise_source(noise, sampler="pc", like=x_T)
    grid, alpha, sigma, lam = _setup(x_T, grid, schedule, "pc")
    mean = _rd_mean if predictor == Predictor.REVERSE_DIFFUSION else _em_mean
    x, n = x_T, len(grid) - 1
    for i in range(n):
        for _ in range(corrector_steps):
            score = (alpha[i] * call(denoise, x, grid[i]) - x) / sigma[i] ** 2
            z = draw(x.shape)
            ratio = _norm(z).mean() / _norm(score).mean()
            step = 2 * (alpha[i] / alpha[i + 1]) ** 2 * (snr * ratio) ** 2
            x = x + step * score + torch.sqrt(2 * step) * z
        x0 = call(denoise, x, grid[i])
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0
            continue
        h = lam[i + 1] - lam[i]
        x = mean(x, x0, alpha[i], sigma[i], alpha[i + 1], h)
        if i < n - 1:
            if predictor == Predictor.REVERSE_DIFFUSION:
                G = sigma[i] * math.sqrt(-math.expm1(-2 * h))
            else:
                G = sigma[i] * math.sqrt(2 * h)
            x = x + G * draw(x.shape)
    return x
