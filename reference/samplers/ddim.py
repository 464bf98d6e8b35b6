"""DDIM: the non-Markovian generalisation of DDPM with a knob eta from deterministic (0) to ancestral (1).

Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models", eq. 12 and eq. 16. The paper's alpha_t is our
alpha^2 (alphabar), its t -> t-1 is our t -> t_next.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.noise import as_noise_source
from diffspec.reference.samplers._info import Option, SamplerInfo, one_per_step_if


def sample_ddim(denoise, x_T, grid, schedule, *, noise=None, eta=0.0):
    """DDIM: x_next = alpha_next x0_hat + sqrt(sigma_next^2 - s^2) eps_hat + s z.

    Song et al. (2021), eq. 12 with eq. 16's s = eta sqrt(beta~) = eta sqrt(c) sigma_next, where
    c = -expm1(2 (lam - lam_next)) and eps_hat = (x - alpha x0_hat) / sigma:

        x_next = alpha_next x0_hat + sigma_next sqrt(1 - eta^2 c) eps_hat + eta sqrt(c) sigma_next z

    eta = 0 is the deterministic DDIM (the first-order probability-flow solver, = Euler in sigma_ve); eta = 1 is
    DDPM with the posterior variance (`ddpm`, variance="fixed_small"). At sigma_next = 0 it returns alpha_next x0_hat.
    Model calls per step: 1. Noise draws: one array per step when eta > 0, in grid order, none on the last
    step; none when eta = 0 (`noise` may then be None). Order: 1 (eta = 0, checked in tests).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="ddim")
    eta = _checks.in_range("eta", eta, 0.0, 1.0)
    draw = as_noise_source(noise, sampler="ddim with eta > 0") if eta > 0 else None
    grid = _checks.decreasing_grid(grid, schedule, sampler="ddim")
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    x = _checks.finite_array("x_T", x_T)
    for i in range(len(grid) - 1):
        x0 = np.asarray(denoise(x, float(grid[i])), dtype=np.float64)
        eps = (x - alpha[i] * x0) / sigma[i]
        c = -np.expm1(2 * (lam[i] - lam[i + 1]))
        x = alpha[i + 1] * x0 + sigma[i + 1] * np.sqrt(1 - eta**2 * c) * eps
        if draw is not None and i < len(grid) - 2:
            x = x + eta * np.sqrt(c) * sigma[i + 1] * draw(x.shape)
    return x


INFO = [
    SamplerInfo(
        "ddim",
        sample_ddim,
        order=1,
        stochastic=False,
        calls_per_step=1,
        draws=one_per_step_if("eta"),
        options=dict(eta=Option(0.0, low=0.0, high=1.0, invalid=(-0.1, 1.5), probe=(0.5, 1.0))),
    ),
]
