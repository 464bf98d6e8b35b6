"""UniPC on tensors, data-prediction form (torch twin of `diffspec.reference.samplers.unipc`).

Zhao et al. (2023), "UniPC", arXiv:2302.04867, Algorithms 1-3 with the B(h) variants of their code (as diffusers'
UniPCMultistepScheduler, predict_x0 = True). The coefficients rho depend only on the grid: they are solved on the
host in float64 (`_rhos`) and the tensor update is a fixed linear combination.
"""

import enum
import math

import torch
from diffspec.trainer.samplers._grid import call, checked_grid, marginals


class Variant(enum.StrEnum):
    BH1 = "bh1"  # B(h) = h
    BH2 = "bh2"  # B(h) = e^h - 1


def _rhos(lams, lam_next, order, variant, *, corrector):
    """(hh, h_phi_1, B_h, rks, rho) for a step from lams[0] to lam_next using x0_hat at lams[0..order-1].

    r_k = (lam_{-k} - lam) / h; R_{ik} = r_k^{i-1}, b_i = i! h phi_{i+1}(-h) / B(-h); the predictor solves the
    leading (order-1) block (rho = 1/2 for order 2), the corrector the full system (rho = 1/2 for order 1).
    """
    hh = -(lam_next - lams[0])
    h_phi_1 = math.expm1(hh)
    rks = [(lams[k] - lams[0]) / -hh for k in range(1, order)] + [1.0]
    B_h = hh if variant == Variant.BH1 else h_phi_1
    R, b, h_phi_k, factorial = [], [], h_phi_1 / hh - 1, 1
    for i in range(1, order + 1):
        R.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    if not corrector:
        rho = [0.5] if order == 2 else _solve_rho(R, b, rks, order - 1) if order > 2 else []
    else:
        rho = [0.5] if order == 1 else _solve_rho(R, b, rks, order)
    return h_phi_1, B_h, rks, rho


def _solve_rho(R, b, rks, size):
    """rho of the leading size x size block; a point at lam = -inf (r_k = inf) drops its column and the last row
    (the limit r_k -> inf) and gets rho_k = 0."""
    cols = [k for k in range(size) if math.isfinite(rks[k])]
    rho = [0.0] * size
    if cols:
        block = torch.tensor([[R[i][k] for k in cols] for i in range(len(cols))], dtype=torch.float64)
        solved = torch.linalg.solve(block, torch.tensor(b[: len(cols)], dtype=torch.float64)).tolist()
        for k, r in zip(cols, solved, strict=True):
            rho[k] = r
    return rho


def _bh_update(x, x0s, lams, lam_next, sigma_ratio, alpha_next, order, variant, x0_new=None):
    """One UniP-`order` step (x0_new None) or UniC-`order` correction (x0_new: x0_hat at lam_next):

    x_next = sigma_ratio x - alpha_next expm1(-h) x0 - alpha_next B(-h) sum_k rho_k D_k,   D_k = (x0_{-k} - x0) / r_k
    """
    if order == 1 and x0_new is None:
        return sigma_ratio * x - (alpha_next * math.expm1(-(lam_next - lams[0]))) * x0s[0]
    h_phi_1, B_h, rks, rho = _rhos(lams, lam_next, order, variant, corrector=x0_new is not None)
    x_lin = sigma_ratio * x - (alpha_next * h_phi_1) * x0s[0]
    D = [(x0s[k] - x0s[0]) / rks[k - 1] for k in range(1, order)]
    if x0_new is not None:
        D = D + [x0_new - x0s[0]]
    return x_lin - (alpha_next * B_h) * sum(r * d for r, d in zip(rho, D))


def sample_unipc(
    denoise, x_T, grid, schedule, *, noise=None, order=2, variant="bh2", use_corrector=True, lower_order_final=True
):
    """UniPC: multistep UniP-p predictor, each step corrected by UniC-p with the next point's x0_hat (no extra call).

    Step orders: min(order, i + 1) (warm-up), min(order, steps left) with lower_order_final, 1 onto a clean end
    (alpha_next x0_hat). The last step is not corrected, nor a step from lam = -inf.
    Model calls per step: 1. Noise draws: none. Order: `order` + 1 with the corrector.
    """
    grid = checked_grid(grid, schedule, sampler="unipc")
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"order={order!r}: expected 1, 2 or 3")
    if variant not in {v.value for v in Variant}:
        raise ValueError(f"unknown variant {variant!r}: expected one of bh1, bh2")
    variant = Variant(variant)
    if not isinstance(use_corrector, bool):
        raise ValueError(f"use_corrector={use_corrector!r}: expected True or False")
    alpha, sigma, lam = marginals(schedule, grid)
    alpha, sigma, lam, t = alpha.tolist(), sigma.tolist(), lam.tolist(), grid.tolist()
    n = len(t) - 1
    orders = [min(order, i + 1) for i in range(n)]
    if lower_order_final:
        orders = [min(o, n - i) for i, o in enumerate(orders)]
    orders = [1 if sigma[i + 1] == 0 else o for i, o in enumerate(orders)]
    x, x0s, x_prev = x_T, [], None
    for i in range(n):
        x0 = call(denoise, x, t[i])
        if use_corrector and i > 0 and math.isfinite(lam[i - 1]):
            x = _bh_update(
                x_prev,
                x0s,
                lam[i - 1 :: -1],
                lam[i],
                sigma[i] / sigma[i - 1],
                alpha[i],
                orders[i - 1],
                variant,
                x0_new=x0,
            )
        x0s = [x0] + x0s[: order - 1]
        x_prev = x
        x = _bh_update(x, x0s, lam[i::-1], lam[i + 1], sigma[i + 1] / sigma[i], alpha[i + 1], orders[i], variant)
    return x
