"""DPM-Solver (noise-prediction, singlestep) on tensors (torch twin of `diffspec.reference.samplers.dpm_solver`).

Lu et al. (2022), "DPM-Solver", arXiv:2206.00927, Algorithms 1 (k = 2) and 2 (k = 3) and eq. 3.7 (k = 1). The
denoiser gives x0; eps_hat = (x - alpha x0) / sigma. Intermediate times s_j = t_of_lam(lam + r_j h) are computed
once over the grid. A step that lands on sigma = 0 (lam = +inf, e^h infinite) is the data-prediction step x0.
"""

import torch

from diffspec.trainer.samplers._grid import call, checked_grid, marginals, require_alpha_positive


def _solver(denoise, x_T, grid, schedule, *, order, sampler):
    grid = checked_grid(grid, schedule, sampler=sampler)
    alpha, sigma, lam = marginals(schedule, grid)
    require_alpha_positive(alpha, sampler=sampler)
    clean = (sigma[1:] == 0).tolist()
    h = lam[1:] - lam[:-1]
    h = torch.where(sigma[1:] == 0, torch.ones_like(h), h)  # unused at a clean end
    r1, r2 = {1: (None, None), 2: (0.5, None), 3: (1 / 3, 2 / 3)}[order]

    def at(r):  # (t, alpha, sigma) at lam + r h, as lists
        t_r = schedule.t_of_lam(lam[:-1] + r * h)
        return t_r.tolist(), schedule.alpha(t_r).tolist(), schedule.sigma(t_r).tolist(), torch.expm1(r * h).tolist()

    s1 = at(r1) if r1 else None
    s2 = at(r2) if r2 else None
    em = torch.expm1(h).tolist()
    phi2 = (torch.expm1(h) / h - 1).tolist()
    if r2:
        phi2_r2 = (torch.expm1(r2 * h) / (r2 * h) - 1).tolist()
    a_l, s_l, t = alpha.tolist(), sigma.tolist(), grid.tolist()
    x = x_T
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        if clean[i]:
            x = x0
            continue
        eps = (x - a_l[i] * x0) / s_l[i]
        base = (a_l[i + 1] / a_l[i]) * x - s_l[i + 1] * em[i] * eps
        if order == 1:
            x = base
        elif order == 2:
            ts1, as1, ss1, em1 = s1[0][i], s1[1][i], s1[2][i], s1[3][i]
            u = (as1 / a_l[i]) * x - ss1 * em1 * eps
            eps1 = (u - as1 * call(denoise, u, ts1)) / ss1
            x = base - (s_l[i + 1] / (2 * r1)) * em[i] * (eps1 - eps)
        else:
            ts1, as1, ss1, em1 = s1[0][i], s1[1][i], s1[2][i], s1[3][i]
            ts2, as2, ss2, em2 = s2[0][i], s2[1][i], s2[2][i], s2[3][i]
            u1 = (as1 / a_l[i]) * x - ss1 * em1 * eps
            d1 = (u1 - as1 * call(denoise, u1, ts1)) / ss1 - eps
            u2 = (as2 / a_l[i]) * x - ss2 * em2 * eps - ss2 * (r2 / r1) * phi2_r2[i] * d1
            d2 = (u2 - as2 * call(denoise, u2, ts2)) / ss2 - eps
            x = base - (s_l[i + 1] / r2) * phi2[i] * d2
    return x


def sample_dpm_solver_1(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver-1 (eq. 3.7, = DDIM): x_next = (alpha_next / alpha) x - sigma_next expm1(h) eps_hat.
    Model calls per step: 1. Noise draws: none. Order: 1."""
    return _solver(denoise, x_T, grid, schedule, order=1, sampler="sample_dpm_solver_1")


def sample_dpm_solver_2(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver-2 (Algorithm 1, r1 = 1/2): u = (alpha_s1 / alpha) x - sigma_s1 expm1(h/2) eps,
    x_next = (alpha_next / alpha) x - sigma_next expm1(h) eps - sigma_next expm1(h) (eps(u, s1) - eps).
    Model calls per step: 2. Noise draws: none. Order: 2."""
    return _solver(denoise, x_T, grid, schedule, order=2, sampler="sample_dpm_solver_2")


def sample_dpm_solver_3(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver-3 (Algorithm 2, r1 = 1/3, r2 = 2/3), phi2(z) = expm1(z)/z - 1:
    u1 = (alpha_s1/alpha) x - sigma_s1 expm1(r1 h) eps;  D1 = eps(u1, s1) - eps
    u2 = (alpha_s2/alpha) x - sigma_s2 expm1(r2 h) eps - sigma_s2 (r2/r1) phi2(r2 h) D1;  D2 = eps(u2, s2) - eps
    x_next = (alpha_next/alpha) x - sigma_next expm1(h) eps - (sigma_next / r2) phi2(h) D2.
    Model calls per step: 3. Noise draws: none. Order: 3."""
    return _solver(denoise, x_T, grid, schedule, order=3, sampler="sample_dpm_solver_3")
