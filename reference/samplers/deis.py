"""DEIS: diffusion exponential integrator sampler, multistep (Adams-Bashforth) in noise-prediction form.

Zhang & Chen (2022), "Fast Sampling of Diffusion Models with Exponential Integrator", arXiv:2204.13902, Sec. 4
(tAB-DEIS, eq. 14-15). With rho = sigma / alpha = e^{-lam} and x_tilde = x / alpha the probability-flow ODE is
d x_tilde / d rho = eps_hat, so exactly

    x_next / alpha_next = x / alpha + int_rho^rho_next eps_hat d rho.

tAB-DEIS replaces eps_hat by the Lagrange polynomial through the last `order` values (eps_j at tau_j) in the
variable tau = t (the paper's tAB) or tau = lam (`fit_in="lam"`, the log-rho variant):

    x_next = alpha_next (x / alpha + sum_j C_j eps_j),   C_j = int_lam^lam_next L_j(tau(l)) (-e^{-l}) dl

The coefficients are integrated with 24-point Gauss-Legendre in lam: exact to rounding for tau = lam (a polynomial
times e^{-l}) and to the smoothness of t_of_lam for tau = t. Order 1 is DDIM. A step onto a clean end (rho_next = 0,
lam_next = +inf) is the data-prediction step alpha_next x0_hat; the grid must start where alpha > 0.
"""

import enum

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.samplers._info import Option, Requirement, SamplerInfo

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(24)


class FitIn(enum.StrEnum):
    T = "t"
    LAM = "lam"


def _coefficients(lam, lam_next, taus, tau_of_lam):
    """C_j = int_lam^lam_next L_j(tau(l)) (-e^{-l}) dl for the Lagrange basis L_j on the nodes `taus`."""
    half = (lam_next - lam) / 2
    l = lam + half * (_NODES + 1)
    tau = tau_of_lam(l)
    weight = -np.exp(-l) * _WEIGHTS * half
    coeffs = []
    for j, tau_j in enumerate(taus):
        L = np.ones_like(tau)
        for m, tau_m in enumerate(taus):
            if m != j:
                L = L * (tau - tau_m) / (tau_j - tau_m)
        coeffs.append(np.sum(weight * L))
    return coeffs


def sample_deis(denoise, x_T, grid, schedule, *, noise=None, order=3, fit_in="t"):
    """tAB-DEIS: exponential-integrator Adams-Bashforth of order 1..3 on eps_hat, coefficients by quadrature.

    Zhang & Chen (2022), arXiv:2204.13902, eqs. 14-15 (see the module docstring for the update). Warm-up steps use
    as many past values as exist (orders 1, 2, ..., order).
    Model calls per step: 1. Noise draws: none. Order: `order`.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="deis")
    grid = _checks.decreasing_grid(grid, schedule, sampler="deis")
    x = _checks.finite_array("x_T", x_T)
    if order not in (1, 2, 3):
        raise ValueError(f"order={order!r}: expected 1, 2 or 3")
    fit_in = _checks.lookup({f.value: f for f in FitIn}, fit_in, what="fit_in")
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    if alpha[0] == 0:
        raise ValueError(f"grid[0]={grid[0]} has alpha = 0: deis divides by alpha; start where alpha > 0")
    tau_of_lam = (lambda l: l) if fit_in == FitIn.LAM else schedule.t_of_lam
    taus_all = lam if fit_in == FitIn.LAM else grid
    eps_list = []
    for i in range(len(grid) - 1):
        x0 = np.asarray(denoise(x, float(grid[i])), dtype=np.float64)
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0
            continue
        eps_list = [(x - alpha[i] * x0) / sigma[i]] + eps_list[: order - 1]
        taus = taus_all[i::-1][: len(eps_list)]
        C = _coefficients(lam[i], lam[i + 1], taus, tau_of_lam)
        x = alpha[i + 1] * (x / alpha[i] + sum(c * e for c, e in zip(C, eps_list)))
    return x


INFO = [
    SamplerInfo(
        "deis",
        sample_deis,
        order=3,
        stochastic=False,
        calls_per_step=1,
        requires=frozenset({Requirement.ALPHA_START}),
        options=dict(
            order=Option(3, choices=(1, 2, 3), invalid=(0, 4)),
            fit_in=Option("t", choices=("t", "lam"), invalid=("rho",)),
        ),
        orders=(({"order": 1}, 1), ({"order": 2}, 2), ({"order": 2, "fit_in": "lam"}, 2)),
    ),
]
