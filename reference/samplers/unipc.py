"""UniPC: a unified predictor-corrector framework for fast sampling, in data-prediction form.

Zhao et al. (2023), "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models",
arXiv:2302.04867, Algorithms 1-3 (UniP-p and UniC-p with the B(h) variants of their App. and code, as
diffusers' UniPCMultistepScheduler with predict_x0 = True). The paper's t_{i-1} -> t_i is our t -> t_next.
"""

import enum

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.samplers._info import Option, SamplerInfo


class Variant(enum.StrEnum):
    BH1 = "bh1"  # B(h) = h
    BH2 = "bh2"  # B(h) = e^h - 1


def _solve_rho(R, b, rks, size):
    """rho solving the leading `size` x `size` block of R rho = b.

    An earlier point at alpha = 0 (lam = -inf, e.g. the first point of a zero-terminal-SNR grid) has r_k = inf. In
    the limit r_k -> inf, rho_k r_k^(i-1) -> 0 in every row but the last, and D_k -> 0: its column and the last row
    drop out, the other rho solve the remaining block, and rho_k = 0.
    """
    finite = np.isfinite(rks[:size])
    rho = np.zeros(size)
    m = int(finite.sum())
    if m:
        rho[finite] = np.linalg.solve(R[:m, :size][:, finite], b[:m])
    return rho


def _bh_update(x, x0s, lams, lam_next, sigma_ratio, alpha_next, order, variant, x0_new=None):
    """One UniP-`order` step (x0_new None) or UniC-`order` correction (x0_new: x0_hat at lam_next) from (x, lams[0]).

    x0s[k] is x0_hat at lams[k] (k = 0 the current point, k >= 1 earlier ones). With h = lam_next - lam,
    r_k = (lam_{-k} - lam) / h, D_k = (x0_{-k} - x0) / r_k, and phi_k the exponential-integrator functions of -h:

        x_next = sigma_ratio x - alpha_next expm1(-h) x0 - alpha_next B(-h) sum_k rho_k D_k

    rho solves R rho = b with R_{ik} = r_k^{i-1} and b_i = i! h phi_{i+1}(-h) / B(-h) (eq. 8 / 12 of the paper;
    the predictor drops the last row and column, rho = 1/2 for UniP-2 and UniC-1, as in the paper's code).
    """
    hh = -(lam_next - lams[0])
    h_phi_1 = np.expm1(hh)
    x_lin = sigma_ratio * x - alpha_next * h_phi_1 * x0s[0]
    if order == 1 and x0_new is None:
        return x_lin
    rks = np.array([(lams[k] - lams[0]) / -hh for k in range(1, order)] + [1.0])
    D = [(x0s[k] - x0s[0]) / rks[k - 1] for k in range(1, order)]
    B_h = hh if variant == Variant.BH1 else h_phi_1
    R, b, h_phi_k, factorial = [], [], h_phi_1 / hh - 1, 1
    for i in range(1, order + 1):
        R.append(rks ** (i - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = np.array(R), np.array(b)
    if x0_new is None:
        rho = np.array([0.5]) if order == 2 else _solve_rho(R, b, rks, order - 1)
        D_all = D
    else:
        rho = np.array([0.5]) if order == 1 else _solve_rho(R, b, rks, order)
        D_all = D + [x0_new - x0s[0]]
    return x_lin - alpha_next * B_h * sum(r * d for r, d in zip(rho, D_all))


def sample_unipc(
    denoise, x_T, grid, schedule, *, noise=None, order=2, variant="bh2", use_corrector=True, lower_order_final=True
):
    """UniPC: multistep UniP-p predictor, each step corrected by UniC-p with the next point's denoiser output.

    Zhao et al. (2023), arXiv:2302.04867, Algorithm 3 (multistep UniPC-p). At grid time t_i, x0_i = denoise(x_i, t_i)
    first corrects x_i with UniC (x_i <- UniC(x_{i-1}, x0_{i-1}, ..., x0_i), reusing that same x0_i, no extra call),
    then UniP steps from the corrected x_i to t_{i+1} (see `_bh_update` for both formulas). The last step is not
    corrected, nor is a step from alpha = 0 (lam = -inf, where B(h) = h is infinite). Step orders: min(order, i + 1) (warm-up), min(order, steps left) with `lower_order_final` (diffusers'
    rule for UniPC), and 1 onto a clean end, where the step is alpha_next x0_hat.
    Model calls per step: 1. Noise draws: none. Order: `order` + 1 with the corrector, `order` without.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="unipc")
    grid = _checks.decreasing_grid(grid, schedule, sampler="unipc")
    x = _checks.finite_array("x_T", x_T)
    if order not in (1, 2, 3):
        raise ValueError(f"order={order!r}: expected 1, 2 or 3")
    variant = _checks.lookup({v.value: v for v in Variant}, variant, what="variant")
    if not isinstance(use_corrector, bool):
        raise ValueError(f"use_corrector={use_corrector!r}: expected True or False")
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    n = len(grid) - 1
    steps = np.arange(n)
    orders = np.minimum(order, steps + 1)
    if lower_order_final:
        orders = np.minimum(orders, n - steps)
    orders = np.where(sigma[1:] == 0, 1, orders)
    x0s, x_prev = [], None
    for i in range(n):
        x0 = np.asarray(denoise(x, float(grid[i])), dtype=np.float64)
        if use_corrector and i > 0 and np.isfinite(lam[i - 1]):
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


_LOF = Option(True, choices=(True, False))
INFO = [
    SamplerInfo(
        "unipc",
        sample_unipc,
        order=3,
        stochastic=False,
        calls_per_step=1,
        order_options={"lower_order_final": False},
        options=dict(
            order=Option(2, choices=(1, 2, 3), invalid=(4,)),
            variant=Option("bh2", choices=("bh1", "bh2"), invalid=("bh3",)),
            use_corrector=Option(True, choices=(True, False), invalid=("yes",)),
            lower_order_final=_LOF,
        ),
        orders=tuple(
            ({"order": p, "variant": v, "use_corrector": c, "lower_order_final": False}, p + c)
            for p in (1, 2, 3)
            for v in ("bh1", "bh2")
            for c in (True, False)
            if (p, v, c) != (2, "bh2", True)
        ),
    ),
]
