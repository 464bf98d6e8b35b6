"""DEIS (tAB-DEIS) on tensors (torch twin of `diffspec.reference.samplers.deis`).

Zhang & Chen (2022), arXiv:2204.13902, Sec. 4, eqs. 14-15: with rho = sigma / alpha = e^{-lam},
x_next = alpha_next (x / alpha + sum_j C_j eps_j), C_j = int_lam^lam_next L_j(tau(l)) (-e^{-l}) dl, the Lagrange
basis L_j in tau = t (fit_in "t") or tau = lam (fit_in "lam"), integrated by 24-point Gauss-Legendre in lam on the
host in float64. A step onto a clean end is alpha_next x0_hat.
"""

import enum

import numpy as np
import torch
from diffspec.trainer.samplers._grid import call, checked_grid, marginals

_NODES, _WEIGHTS = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.legendre.leggauss(24))


class FitIn(enum.StrEnum):
    T = "t"
    LAM = "lam"


def _coefficients(lam, lam_next, taus, tau_of_lam):
    """C_j = int_lam^lam_next L_j(tau(l)) (-e^{-l}) dl (Python floats)."""
    half = (lam_next - lam) / 2
    l = lam + half * (_NODES + 1)
    tau = tau_of_lam(l)
    weight = -torch.exp(-l) * _WEIGHTS * half
    coeffs = []
    for j, tau_j in enumerate(taus):
        L = torch.ones_like(tau)
        for m, tau_m in enumerate(taus):
            if m != j:
                L = L * (tau - tau_m) / (tau_j - tau_m)
        coeffs.append(float(torch.sum(weight * L)))
    return coeffs


def sample_deis(denoise, x_T, grid, schedule, *, noise=None, order=3, fit_in="t"):
    """tAB-DEIS of order 1..3 (warm-up with the values that exist). Model calls per step: 1. Noise draws: none."""
    grid = checked_grid(grid, schedule, sampler="deis")
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"order={order!r}: expected 1, 2 or 3")
    if fit_in not in {f.value for f in FitIn}:
        raise ValueError(f"unknown fit_in {fit_in!r}: expected one of lam, t")
    fit_in = FitIn(fit_in)
    alpha, sigma, lam = marginals(schedule, grid)
    if float(alpha[0]) == 0:
        raise ValueError(f"grid[0]={float(grid[0])} has alpha = 0: deis divides by alpha; start where alpha > 0")
    tau_of_lam = (lambda l: l) if fit_in == FitIn.LAM else schedule.t_of_lam
    taus_all = (lam if fit_in == FitIn.LAM else grid).tolist()
    alpha, sigma, lam, t = alpha.tolist(), sigma.tolist(), lam.tolist(), grid.tolist()
    x, eps_list = x_T, []
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0
            continue
        eps_list = [(x - alpha[i] * x0) / sigma[i]] + eps_list[: order - 1]
        taus = taus_all[i::-1][: len(eps_list)]
        C = _coefficients(lam[i], lam[i + 1], taus, tau_of_lam)
        x = alpha[i + 1] * (x / alpha[i] + sum(c * e for c, e in zip(C, eps_list)))
    return x
