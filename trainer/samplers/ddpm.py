"""Ancestral DDPM sampling on tensors (torch twin of `diffspec.reference.samplers.ddpm`)."""

import torch

from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import call, checked_grid, marginals


def sample_ddpm(denoise, x_T, grid, schedule, *, noise=None):
    """Ancestral sampling, x_next ~ q(x_next | x, x0 = denoise(x, t)).

    Ho et al. (2020), eqs. 6-7, for any two grid times as in Kingma et al. (2021, VDM). With
    c = -expm1(2 (lam - lam_next)):

        mean = alpha_next ((1 - c) / alpha x + c x0),    std = sqrt(c) sigma_next

    Model calls per step: 1. Noise draws: one per step in grid order, none on the last step.
    """
    grid = checked_grid(grid, schedule, sampler="sample_ddpm")
    draw = as_noise_source(noise, sampler="sample_ddpm", like=x_T)
    alpha, sigma, lam = marginals(schedule, grid)
    c = -torch.expm1(2 * (lam[:-1] - lam[1:]))
    # alpha_next (1 - c) / alpha written as (alpha / alpha_next) (sigma_next / sigma)^2: finite at alpha = 0.
    a_x = (alpha[:-1] / alpha[1:] * (sigma[1:] / sigma[:-1]) ** 2).tolist()
    a_x0 = (alpha[1:] * c).tolist()
    std = (torch.sqrt(c) * sigma[1:]).tolist()
    t = grid.tolist()
    x = x_T
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        x = a_x[i] * x + a_x0[i] * x0
        if i < len(t) - 2:
            x = x + std[i] * draw(x.shape)
    return x
