"""Inversions on tensors: deterministic maps data -> noise along an increasing grid (torch twin of
`diffspec.reference.samplers.inversion`). The grid starts at a noisy time and ends where alpha > 0."""

import math

import torch
from diffspec.trainer.samplers._grid import call, marginals


def _increasing_grid(grid, schedule, sampler):
    """The grid as a float64 CPU tensor: 1-D, strictly increasing, sigma > 0 at its start, alpha > 0 at its end."""
    grid = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
    if grid.ndim != 1 or len(grid) < 2:
        raise ValueError(
            f"grid of shape {tuple(grid.shape)} for {sampler}: expected a 1-D array of at least 2 times (data -> noise)"
        )
    if not bool(torch.all(grid[1:] > grid[:-1])):
        raise ValueError(f"grid={grid.tolist()[:8]} for {sampler}: expected strictly increasing times (data -> noise)")
    if float(grid[0]) < schedule.t_min or float(grid[-1]) > schedule.t_max:
        raise ValueError(f"grid for {sampler}: expected times in [{schedule.t_min}, {schedule.t_max}]")
    if float(schedule.sigma(grid[:1])[0]) == 0:
        raise ValueError(f"grid[0]={float(grid[0])} is a clean end (sigma = 0) for {sampler}: start at a noisy time")
    if float(schedule.alpha(grid[-1:])[0]) == 0:
        raise ValueError(f"grid[-1]={float(grid[-1])} has alpha = 0 for {sampler}: end the inversion where alpha > 0")
    return grid


def ddim_inversion(denoise, x0, grid, schedule, *, noise=None):
    """DDIM inversion (Song et al. 2021, Sec. 4.3): x_next = alpha_next x0_hat + sigma_next (x - alpha x0_hat) / sigma.
    Model calls per step: 1. Noise draws: none."""
    grid = _increasing_grid(grid, schedule, "ddim_inversion")
    alpha, sigma, _ = marginals(schedule, grid)
    alpha, sigma, t = alpha.tolist(), sigma.tolist(), grid.tolist()
    x = x0
    for i in range(len(t) - 1):
        x0_hat = call(denoise, x, t[i])
        x = alpha[i + 1] * x0_hat + sigma[i + 1] * (x - alpha[i] * x0_hat) / sigma[i]
    return x


def dpmpp_inversion(denoise, x0, grid, schedule, *, noise=None):
    """DPM-Solver++(2M) backwards (h < 0, r > 0): D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_hat_prev,
    x_next = (sigma_next / sigma) x - alpha_next expm1(-h) D. Model calls per step: 1. Noise draws: none."""
    grid = _increasing_grid(grid, schedule, "dpmpp_inversion")
    alpha, sigma, lam = marginals(schedule, grid)
    alpha, sigma, lam, t = alpha.tolist(), sigma.tolist(), lam.tolist(), grid.tolist()
    x, x0_prev = x0, None
    for i in range(len(t) - 1):
        x0_hat = call(denoise, x, t[i])
        h = lam[i + 1] - lam[i]
        if x0_prev is None:
            D = x0_hat
        else:
            r = (lam[i] - lam[i - 1]) / h
            D = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * x0_prev
        x = (sigma[i + 1] / sigma[i]) * x - (alpha[i + 1] * math.expm1(-h)) * D
        x0_prev = x0_hat
    return x


INVERSIONS = {"ddim_inversion": ddim_inversion, "dpmpp_inversion": dpmpp_inversion}
