"""UniPC on tensors (torch twin of `diffspec.reference.samplers.unipc`).

Zhao et al. (2023), "UniPC", arXiv:2302.04867, Algorithms 2-3 in data-prediction form (the B(h) variants bh1:
B(h) = -h... written with hh = -h: bh1 B = hh, bh2 B = expm1(hh)), as in diffusers' UniPCMultistepScheduler.
Predictor UniP-p and corrector UniC-p, both linear in the stored data predictions; their coefficients (rhos)
depend only on the grid and are solved once, in float64, before the loop.
"""

import math

import torch

from diffspec.trainer.samplers._grid import call, checked_grid, marginals


def _rhos(lam, i, k, variant, *, corrector):
    """(rhos, h_phi_1, B_h) for the step lam[i] -> lam[i + 1] using k stored predictions (k >= 1)."""
    h = lam[i + 1] - lam[i]
    rks = [(lam[i - j] - lam[i]) / h for j in range(1, k)] + [1.0]
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    B_h = hh if variant == "bh1" else h_phi_1
    factorial, R, b = 1, [], []
    for n in range(1, k + 1):
        R.append([rk ** (n - 1) for rk in rks])
        b.append(h_phi_k * factorial / B_h)
        factorial *= n + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R = torch.tensor(R, dtype=torch.float64)
    b = torch.tensor(b, dtype=torch.float64)
    if corrector:
        rhos = [0.5] if k == 1 else torch.linalg.solve(R, b).tolist()
    else:
        rhos = [] if k == 1 else [0.5] if k == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
    return rhos, rks[:-1], h_phi_1, B_h


def sample_unipc(denoise, x_T, grid, schedule, *, noise=None, order=2, variant="bh2", use_corrector=True,
                 lower_order_final=True):
    """UniPC-p multistep sampler with the UniC corrector.

    At step i with k = min(order, i + 1) stored predictions m_0 (newest) .. m_{k-1}, r_j = (lam_{i-j} - lam_i) / h,
    D_j = (m_j - m_0) / r_j:

        predictor   x_next = (sigma_next / sigma) x - alpha_next h_phi_1 m_0 - alpha_next B(h) sum_j rho_p_j D_j
        corrector   (after the model call at x_next, for the step just taken; the new prediction m_t)
                    x_next = (sigma_next / sigma) x - alpha_next h_phi_1 m_0
                             - alpha_next B(h) (sum_j rho_c_j D_j + rho_c_k (m_t - m_0))

    with h_phi_1 = expm1(-h), rho solving the order conditions (rho_p = 1/2 for k = 2). lower_order_final caps k at
    the number of steps left; a step to sigma = 0 is the data-prediction step x0 (and is not corrected).
    Model calls per step: 1. Noise draws: none. Order: `order` (+1 with the corrector).
    """
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"order={order!r}: expected 1, 2 or 3")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant={variant!r}: expected 'bh1' or 'bh2'")
    grid = checked_grid(grid, schedule, sampler="sample_unipc")
    alpha, sigma, lam = marginals(schedule, grid)
    n = len(grid) - 1
    a_l, s_l, lam_l, t = alpha.tolist(), sigma.tolist(), lam.tolist(), grid.tolist()
    orders, lower = [], 0
    for i in range(n):
        k = min(order, n - i) if lower_order_final else order
        orders.append(min(k, lower + 1))
        lower += 1
    x, ms, x_prev = x_T, [], None
    for i in range(n):
        m = call(denoise, x, t[i])
        if use_corrector and i > 0:  # UniC for the step i-1 -> i, with the new prediction m
            k = orders[i - 1]
            rhos, rks, h_phi_1, B_h = _rhos(lam_l, i - 1, k, variant, corrector=True)
            m0 = ms[-1]
            res = sum((rhos[j] / rks[j]) * (ms[-2 - j] - m0) for j in range(k - 1)) if k > 1 else 0
            x = (s_l[i] / s_l[i - 1]) * x_prev - (a_l[i] * h_phi_1) * m0 - (a_l[i] * B_h) * (res + rhos[-1] * (m - m0))
        ms = (ms + [m])[-order:]
        x_prev = x
        if s_l[i + 1] == 0:
            x = m
            continue
        k = orders[i]
        rhos, rks, h_phi_1, B_h = _rhos(lam_l, i, k, variant, corrector=False)
        x = (s_l[i + 1] / s_l[i]) * x - (a_l[i + 1] * h_phi_1) * m
        if k > 1:
            x = x - (a_l[i + 1] * B_h) * sum((rhos[j] / rks[j]) * (ms[-2 - j] - m) for j in range(k - 1))
    return x
