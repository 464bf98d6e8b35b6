"""DPM-Solver++ samplers on tensors (torch twin of `diffspec.reference.samplers.dpm_solver_pp`).

All in data-prediction form (Lu et al. 2022, arXiv:2211.01095): over a step h = lam_next - lam the linear part of
the probability-flow ODE is integrated exactly, x_next = (sigma_next / sigma) x - alpha_next expm1(-h) D + ...
A step that lands on sigma = 0 (lam = +inf) is the DDIM step x_next = x0.
"""

import math

import torch

from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import call, checked_grid, marginals


def sample_dpmpp_2m(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver++(2M), Lu et al. (2022), Algorithm 2. With r = h_prev / h:

        x_next = (sigma_next / sigma) x - alpha_next expm1(-h) D,    D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev

    The first step and a step to sigma = 0 use D = x0 (DDIM). Model calls per step: 1. Noise draws: none. Order: 2.
    """
    grid = checked_grid(grid, schedule, sampler="sample_dpmpp_2m")
    alpha, sigma, lam = marginals(schedule, grid)
    h = lam[1:] - lam[:-1]
    ratio = (sigma[1:] / sigma[:-1]).tolist()
    phi = (-alpha[1:] * torch.expm1(-h)).tolist()
    h_l, sigma_l, t = h.tolist(), sigma.tolist(), grid.tolist()
    x, x0_prev = x_T, None
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        if x0_prev is None or sigma_l[i + 1] == 0:
            D = x0
        else:
            r = h_l[i - 1] / h_l[i]
            D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = ratio[i] * x + phi[i] * D
        x0_prev = x0
    return x


def sample_dpmpp_3m(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver++(3M): third-order multistep data prediction (Lu et al. 2022, Sec. 4 and App. B; the update of
    diffusers' `multistep_dpm_solver_third_order_update`). With h0 = h_prev, h1 = h_prev_prev, r0 = h0 / h,
    r1 = h1 / h, D1_0 = (x0 - x0_1) / r0, D1_1 = (x0_1 - x0_2) / r1:

        D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),    D2 = (D1_0 - D1_1) / (r0 + r1)
        x_next = (sigma_next / sigma) x - alpha_next phi1 x0 + alpha_next phi2 D1 - alpha_next phi3 D2
        phi1 = expm1(-h), phi2 = phi1 / h + 1, phi3 = (phi1 + h) / h^2 - 1/2

    Warm-up: first step order 1, second step 2M; a step to sigma = 0 is DDIM. Model calls per step: 1.
    Noise draws: none. Order: 3.
    """
    grid = checked_grid(grid, schedule, sampler="sample_dpmpp_3m")
    alpha, sigma, lam = marginals(schedule, grid)
    h = lam[1:] - lam[:-1]
    ratio = (sigma[1:] / sigma[:-1]).tolist()
    phi1 = torch.expm1(-h)
    phi2 = phi1 / h + 1
    phi3 = (phi1 + h) / h**2 - 0.5
    a1, a2, a3 = (-alpha[1:] * phi1).tolist(), (alpha[1:] * phi2).tolist(), (-alpha[1:] * phi3).tolist()
    h_l, sigma_l, t = h.tolist(), sigma.tolist(), grid.tolist()
    x, history = x_T, []
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        x_new = ratio[i] * x + a1[i] * x0
        if sigma_l[i + 1] != 0 and len(history) == 1:
            r0 = h_l[i - 1] / h_l[i]
            x_new = x_new + a2[i] * (x0 - history[-1]) / r0
        elif sigma_l[i + 1] != 0 and len(history) >= 2:
            r0, r1 = h_l[i - 1] / h_l[i], h_l[i - 2] / h_l[i]
            d1_0 = (x0 - history[-1]) / r0
            d1_1 = (history[-1] - history[-2]) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x_new = x_new + a2[i] * d1 + a3[i] * d2
        x = x_new
        history = (history + [x0])[-2:]
    return x


def sample_dpmpp_2m_sde(denoise, x_T, grid, schedule, *, noise=None, eta=1.0, s_noise=1.0):
    """DPM-Solver++(2M) SDE (Lu et al. 2022, Sec. 5; k-diffusion's `sample_dpmpp_2m_sde`, midpoint form), with
    iid Gaussian noise in place of k-diffusion's Brownian tree. With eta_h = eta h:

        x_next = (sigma_next / sigma) e^{-eta_h} x - alpha_next expm1(-h - eta_h) x0
                 - 1/(2r) alpha_next expm1(-h - eta_h) (x0 - x0_prev)           (from the second step)
                 + s_noise sigma_next sqrt(-expm1(-2 eta_h)) z

    A step to sigma = 0 returns x0. Model calls per step: 1. Noise draws: one per step with sigma_next > 0 and
    eta > 0, in grid order. Order: 1 (strong), 2 as an ODE (eta = 0).
    """
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta={eta!r}: expected a finite number >= 0")
    grid = checked_grid(grid, schedule, sampler="sample_dpmpp_2m_sde")
    alpha, sigma, lam = marginals(schedule, grid)
    h = lam[1:] - lam[:-1]
    clean = (sigma[1:] == 0).tolist()
    noisy = [not c and eta > 0 for c in clean]
    draw = as_noise_source(noise, sampler="sample_dpmpp_2m_sde", like=x_T) if any(noisy) else None
    h_safe = torch.where(sigma[1:] == 0, torch.ones_like(h), h)  # coefficients at sigma_next = 0 are unused
    a_x = (sigma[1:] / sigma[:-1] * torch.exp(-eta * h_safe)).tolist()
    a_x0 = (-alpha[1:] * torch.expm1(-(1 + eta) * h_safe)).tolist()
    a_z = (s_noise * sigma[1:] * torch.sqrt(-torch.expm1(-2 * eta * h_safe))).tolist()
    h_l, t = h.tolist(), grid.tolist()
    x, x0_prev = x_T, None
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        if clean[i]:
            x = x0
        else:
            x = a_x[i] * x + a_x0[i] * x0
            if x0_prev is not None:
                r = h_l[i - 1] / h_l[i]
                x = x + (0.5 / r) * a_x0[i] * (x0 - x0_prev)
            if noisy[i]:
                x = x + a_z[i] * draw(x.shape)
        x0_prev = x0
    return x
