"""DDIM on tensors (torch twin of `diffspec.reference.samplers.ddim`)."""

import math

import torch
from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import call, checked_grid, marginals


def sample_ddim(denoise, x_T, grid, schedule, *, noise=None, eta=0.0):
    """DDIM: the generalized, non-Markovian step of Song et al. (2021), arXiv:2010.02502, eq. 12 and 16.

    With c = -expm1(2 (lam - lam_next)) (= sigma_{t|s}^2 / sigma_next^2) and std = eta sqrt(c) sigma_next:

        eps_hat = (x - alpha x0) / sigma
        x_next  = alpha_next x0 + sigma_next sqrt(1 - eta^2 c) eps_hat + std z

    eta = 0 is the deterministic DDIM ODE step, eta = 1 the DDPM posterior. Model calls per step: 1.
    Noise draws (eta > 0): one per step in grid order, none on the last step.
    """
    if not (math.isfinite(eta) and 0 <= eta <= 1):
        raise ValueError(f"eta={eta!r}: expected a number in [0, 1]")
    grid = checked_grid(grid, schedule, sampler="sample_ddim")
    draw = as_noise_source(noise, sampler="sample_ddim", like=x_T) if eta > 0 else None
    alpha, sigma, lam = marginals(schedule, grid)
    c = -torch.expm1(2 * (lam[:-1] - lam[1:]))
    std = (eta * torch.sqrt(c) * sigma[1:]).tolist()
    keep = (sigma[1:] * torch.sqrt(torch.clamp(1 - eta**2 * c, min=0.0))).tolist()
    alpha, sigma, t = alpha.tolist(), sigma.tolist(), grid.tolist()
    x = x_T
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        eps = (x - alpha[i] * x0) / sigma[i]
        x = alpha[i + 1] * x0 + keep[i] * eps
        if draw is not None and i < len(t) - 2:
            x = x + std[i] * draw(x.shape)
    return x
