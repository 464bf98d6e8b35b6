"""Inversions: deterministic maps data -> noise along an increasing grid, for editing and reconstruction.

Each runs a probability-flow ODE solver backwards in time: `inv(denoise, x0, grid, schedule) -> x_T` with `grid`
strictly increasing (data -> noise). The grid starts at a noisy time (t_eps, not the clean end: eps_hat has no
value at sigma = 0) and ends where alpha > 0. Running the matching sampler on grid[::-1] returns the input up to
the solver's discretisation error (checked in tests).
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.samplers._info import SamplerInfo


def _increasing_grid(grid, schedule, sampler):
    """`grid` as float64: 1-D, strictly increasing, noisy at its start (sigma > 0) and alpha > 0 at its end."""
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or len(grid) < 2:
        raise ValueError(
            f"grid of shape {grid.shape} for {sampler}: expected a 1-D array of at least 2 times (data -> noise)"
        )
    if not np.all(np.diff(grid) > 0):
        raise ValueError(f"grid={grid.tolist()[:8]} for {sampler}: expected strictly increasing times (data -> noise)")
    _checks.times_in_domain("grid", grid, schedule)
    if schedule.sigma(grid[0]) == 0:
        raise ValueError(
            f"grid[0]={grid[0]} is a clean end (sigma = 0) for {sampler}: start the inversion at a noisy time "
            f"such as the schedule's t_eps={schedule.t_eps}"
        )
    if schedule.alpha(grid[-1]) == 0:
        raise ValueError(f"grid[-1]={grid[-1]} has alpha = 0 for {sampler}: end the inversion where alpha > 0")
    return grid


def ddim_inversion(denoise, x0, grid, schedule, *, noise=None):
    """DDIM inversion: deterministic DDIM run from data to noise.

    Song et al. (2021), "Denoising Diffusion Implicit Models", Sec. 4.3 and eq. 14 (the ODE read backwards);
    Mokady et al. (2023), "Null-text Inversion", eq. 4. From t to the noisier t_next, with the model at the current
    (less noisy) point, the DDIM update:

        x_next = alpha_next x0_hat + sigma_next (x - alpha x0_hat) / sigma

    Model calls per step: 1. Noise draws: none. Order: 1.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="ddim_inversion")
    grid = _increasing_grid(grid, schedule, "ddim_inversion")
    alpha, sigma = schedule.alpha(grid), schedule.sigma(grid)
    x = _checks.finite_array("x0", x0)
    for i in range(len(grid) - 1):
        x0_hat = np.asarray(denoise(x, float(grid[i])), dtype=np.float64)
        x = alpha[i + 1] * x0_hat + sigma[i + 1] * (x - alpha[i] * x0_hat) / sigma[i]
    return x


def dpmpp_inversion(denoise, x0, grid, schedule, *, noise=None):
    """DPM-Solver++(2M) run backwards: the second-order multistep data-prediction solver from data to noise.

    Lu et al. (2022), "DPM-Solver++", arXiv:2211.01095, Algorithm 2, on an increasing grid, where
    h = lam_next - lam < 0 and r = h_prev / h > 0:

        D      = (1 + 1/(2r)) x0_hat - 1/(2r) x0_hat_prev          (D = x0_hat on the first step)
        x_next = (sigma_next / sigma) x - alpha_next expm1(-h) D

    Model calls per step: 1. Noise draws: none. Order: 2 (checked in tests against the exact flow map).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpmpp_inversion")
    grid = _increasing_grid(grid, schedule, "dpmpp_inversion")
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    x, x0_prev = _checks.finite_array("x0", x0), None
    for i in range(len(grid) - 1):
        x0_hat = np.asarray(denoise(x, float(grid[i])), dtype=np.float64)
        h = lam[i + 1] - lam[i]
        if x0_prev is None:
            D = x0_hat
        else:
            r = (lam[i] - lam[i - 1]) / h
            D = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * x0_prev
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * np.expm1(-h) * D
        x0_prev = x0_hat
    return x


INFO: list[SamplerInfo] = []
INVERSIONS = {"ddim_inversion": ddim_inversion, "dpmpp_inversion": dpmpp_inversion}
