"""DPM-Solver++ on tensors, deterministic and stochastic (torch twin of `diffspec.reference.samplers.dpm_solver_pp`).

Lu et al. (2022), arXiv:2211.01095. Data-prediction form: the probability-flow ODE's linear part solved exactly,
x_next = (sigma_next / sigma) x + sigma_next int e^{l} x0_hat(l) dl, and the reverse SDE's counterpart
x_next = (sigma_next / sigma) e^{-h} x + 2 alpha_next int e^{-2(h - u)} x0_hat du + sigma_next sqrt(-expm1(-2h)) z.
Nothing divides by alpha; a step onto a clean end is first order (x_next = alpha_next x0_hat).
`lower_order_final` (diffusers): with fewer than 15 steps the last step is first order and, for third-order
methods, the one before it at most second order. Coefficients are Python floats from the float64 grid.
"""

import enum
import math

from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import at, call, checked_grid, marginals


class SolverType(enum.StrEnum):
    MIDPOINT = "midpoint"
    HEUN = "heun"


class Variant(enum.StrEnum):
    """diffspec's form (the paper's, default) or k-diffusion's function of the same name, reproduced exactly."""

    DIFFSPEC = "diffspec"
    K_DIFFUSION = "k-diffusion"


def _variant(variant):
    try:
        return Variant(variant)
    except ValueError:
        raise ValueError(f"unknown variant {variant!r}: expected one of diffspec, k-diffusion") from None


def _setup(x_T, grid, schedule, sampler):
    grid = checked_grid(grid, schedule, sampler=sampler)
    alpha, sigma, lam = marginals(schedule, grid)
    return grid.tolist(), x_T, alpha.tolist(), sigma.tolist(), lam.tolist()


def _orders(sigma, order, lower_order_final):
    """Order of each step: warm-up, lower_order_final (< 15 steps), 1 onto a clean end."""
    n = len(sigma) - 1
    orders = [min(order, i + 1) for i in range(n)]
    if lower_order_final and n < 15:
        orders = [min(o, n - i) for i, o in enumerate(orders)]
    return [1 if sigma[i + 1] == 0 else o for i, o in enumerate(orders)]


def _singlestep_orders(sigma, lam, order, lower_order_final):
    """`order` everywhere; 1 on the last step with lower_order_final (< 15 steps), onto a clean end, from lam = -inf."""
    n = len(sigma) - 1
    orders = [order] * n
    if lower_order_final and n < 15:
        orders[-1] = 1
    return [1 if sigma[i + 1] == 0 or lam[i] == -math.inf else o for i, o in enumerate(orders)]


def _eta(eta, name="eta"):
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"{name}={eta!r}: expected a finite number >= 0")
    return float(eta)


def _data_term(h, x0s, lams, order):
    """(D0, D1, D2): x0 and its divided differences in lam as DPM-Solver++(2M)/(3M) combine them (newest first)."""
    D0 = x0s[0]
    if order == 1:
        return D0, 0.0, 0.0
    r0 = (lams[0] - lams[1]) / h
    D1_0 = (x0s[0] - x0s[1]) / r0
    if order == 2:
        return D0, D1_0, 0.0
    r1 = (lams[1] - lams[2]) / h
    D1_1 = (x0s[1] - x0s[2]) / r1
    D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
    D2 = (D1_0 - D1_1) / (r0 + r1)
    return D0, D1, D2


def sample_dpmpp_2m(denoise, x_T, grid, schedule, *, noise=None, lower_order_final=True):
    """DPM-Solver++(2M), Algorithm 2: x_next = (sigma_next / sigma) x - alpha_next expm1(-h) D,
    D = x0 + (x0 - x0_prev) / (2r), r = h_prev / h (D = x0 on first-order steps).
    Model calls per step: 1. Noise draws: none. Order: 2."""
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_2m")
    orders = _orders(sigma, 2, lower_order_final)
    x0_prev = None
    for i in range(len(grid) - 1):
        x0 = call(denoise, x, grid[i])
        h = lam[i + 1] - lam[i]
        D = x0 if orders[i] == 1 else x0 + (x0 - x0_prev) / (2 * (lam[i] - lam[i - 1]) / h)
        x = (sigma[i + 1] / sigma[i]) * x - (alpha[i + 1] * math.expm1(-h)) * D
        x0_prev = x0
    return x


def sample_dpmpp_3m(denoise, x_T, grid, schedule, *, noise=None, lower_order_final=True, variant="diffspec"):
    """DPM-Solver++(3M): x_next = (sigma_next / sigma) x - alpha_next expm1(-h) x0 + alpha_next (expm1(-h)/h + 1) D1
    - 2 alpha_next ((expm1(-h) + h)/h^2 - 1/2) D2, with D1, D2 the divided differences (`_data_term`).
    variant="k-diffusion": k-diffusion's `sample_dpmpp_3m_sde` at eta = 0 (weight -phi_3 D2, phi_2 D1 on the
    second-order step); see the reference for why the default differs.
    Model calls per step: 1. Noise draws: none. Order: 3."""
    if _variant(variant) == Variant.K_DIFFUSION:
        return sample_dpmpp_3m_sde(
            denoise, x_T, grid, schedule, eta=0.0, lower_order_final=lower_order_final, variant=variant
        )
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_3m")
    orders = _orders(sigma, 3, lower_order_final)
    x0s = []
    for i in range(len(grid) - 1):
        x0s = [call(denoise, x, grid[i])] + x0s[:2]
        h = lam[i + 1] - lam[i]
        D0, D1, D2 = _data_term(h, x0s, lam[i::-1], orders[i])
        x = (sigma[i + 1] / sigma[i]) * x - (alpha[i + 1] * math.expm1(-h)) * D0
        if orders[i] == 2:
            x = x - (0.5 * alpha[i + 1] * math.expm1(-h)) * D1
        elif orders[i] == 3:
            x = (
                x
                + (alpha[i + 1] * (math.expm1(-h) / h + 1)) * D1
                - (2 * alpha[i + 1] * ((math.expm1(-h) + h) / h**2 - 0.5)) * D2
            )
    return x


def sample_dpmpp_2s_ancestral(
    denoise, x_T, grid, schedule, *, noise=None, eta=1.0, lower_order_final=True, s_noise=1.0
):
    """DPM-Solver++(2S) ancestral in (alpha, sigma): sigma_up = sigma_next min(1, eta sqrt(-expm1(-2h))),
    sigma_down = sqrt(sigma_next^2 - sigma_up^2), h_d = log(alpha_next / sigma_down) - lam, t_s = t_of_lam(lam + h_d/2),
    u = (sigma_s / sigma) x - alpha_s expm1(-h_d/2) x0, x_next = (sigma_down / sigma) x - alpha_next expm1(-h_d) x0(u)
    + s_noise sigma_up z. Model calls per step: 2 (1 when sigma_down = 0 or first order). Noise draws: one per step
    with sigma_up > 0 and s_noise > 0."""
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_2s_ancestral")
    eta, s_noise = _eta(eta), _eta(s_noise, "s_noise")
    draw = as_noise_source(noise, sampler="dpmpp_2s_ancestral", like=x_T) if eta > 0 and s_noise > 0 else None
    orders = _singlestep_orders(sigma, lam, 2, lower_order_final)
    for i in range(len(grid) - 1):
        x0 = call(denoise, x, grid[i])
        frac_up = min(1.0, eta * math.sqrt(-math.expm1(-2 * (lam[i + 1] - lam[i]))))
        sigma_up = sigma[i + 1] * frac_up
        sigma_down = sigma[i + 1] * math.sqrt(1 - frac_up**2)
        if sigma_down == 0:
            x = alpha[i + 1] * x0
        else:
            h_d = math.log(alpha[i + 1] / sigma_down) - lam[i]
            if orders[i] == 2:
                t_s = at(schedule.t_of_lam, lam[i] + h_d / 2)
                u = (at(schedule.sigma, t_s) / sigma[i]) * x - (at(schedule.alpha, t_s) * math.expm1(-h_d / 2)) * x0
                x0 = call(denoise, u, t_s)
            x = (sigma_down / sigma[i]) * x - (alpha[i + 1] * math.expm1(-h_d)) * x0
        if draw is not None and sigma_up > 0:
            x = x + (sigma_up * s_noise) * draw(x.shape)
    return x


def sample_dpmpp_2m_sde(
    denoise, x_T, grid, schedule, *, noise=None, eta=1.0, solver_type="midpoint", lower_order_final=True, s_noise=1.0
):
    """SDE-DPM-Solver++(2M) with eta (k-diffusion `sample_dpmpp_2m_sde`). h_eta = (1 + eta) h, A = -expm1(-h_eta),
    D1 = (x0 - x0_prev) / r:

        x_next = (sigma_next / sigma) e^{-eta h} x + alpha_next A x0 + alpha_next C D1 + sigma_next sqrt(-expm1(-2 eta h)) z
        C = A / 2 (midpoint) or 1 - A / h_eta (heun)

    s_noise scales z. Model calls per step: 1. Noise draws: one per step with sigma_next > 0, eta > 0 and
    s_noise > 0, in grid order."""
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_2m_sde")
    eta = _eta(eta)
    if solver_type not in {s.value for s in SolverType}:
        raise ValueError(f"unknown solver_type {solver_type!r}: expected one of heun, midpoint")
    solver_type = SolverType(solver_type)
    s_noise = _eta(s_noise, "s_noise")
    draw = as_noise_source(noise, sampler="dpmpp_2m_sde", like=x_T) if eta > 0 and s_noise > 0 else None
    orders = _orders(sigma, 2, lower_order_final)
    x0_prev = None
    for i in range(len(grid) - 1):
        x0 = call(denoise, x, grid[i])
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0
        else:
            h = lam[i + 1] - lam[i]
            h_eta = (1 + eta) * h
            A = -math.expm1(-h_eta)
            x = (sigma[i + 1] / sigma[i] * (math.exp(-eta * h) if eta > 0 else 1.0)) * x + (alpha[i + 1] * A) * x0
            if orders[i] == 2:
                D1 = (x0 - x0_prev) * (h / (lam[i] - lam[i - 1]))
                C = A / 2 if solver_type == SolverType.MIDPOINT else 1 - A / h_eta
                x = x + (alpha[i + 1] * C) * D1
            if draw is not None:
                x = x + (sigma[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise) * draw(x.shape)
        x0_prev = x0
    return x


def sample_dpmpp_3m_sde(
    denoise, x_T, grid, schedule, *, noise=None, eta=1.0, lower_order_final=True, variant="diffspec", s_noise=1.0
):
    """SDE-DPM-Solver++(3M) (k-diffusion `sample_dpmpp_3m_sde`): with h_eta = (1 + eta) h,
    phi_2 = expm1(-h_eta)/h_eta + 1, phi_3 = phi_2 / h_eta - 1/2:

        x_next = (sigma_next / sigma) e^{-eta h} x - alpha_next expm1(-h_eta) x0 + alpha_next (phi_2 D1 - 2 phi_3 D2)
                 + sigma_next sqrt(-expm1(-2 eta h)) z

    variant="k-diffusion": weight -phi_3 D2 (k-diffusion's). s_noise scales z. Model calls per step: 1. Noise draws:
    one per step with sigma_next > 0, eta > 0 and s_noise > 0."""
    w3 = 1.0 if _variant(variant) == Variant.K_DIFFUSION else 2.0
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_3m_sde")
    eta = _eta(eta)
    s_noise = _eta(s_noise, "s_noise")
    draw = as_noise_source(noise, sampler="dpmpp_3m_sde", like=x_T) if eta > 0 and s_noise > 0 else None
    orders = _orders(sigma, 3, lower_order_final)
    x0s = []
    for i in range(len(grid) - 1):
        x0s = [call(denoise, x, grid[i])] + x0s[:2]
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0s[0]
            continue
        h = lam[i + 1] - lam[i]
        h_eta = (1 + eta) * h
        _, D1, D2 = _data_term(h, x0s, lam[i::-1], orders[i])
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        phi_3 = phi_2 / h_eta - 0.5
        x = (sigma[i + 1] / sigma[i] * (math.exp(-eta * h) if eta > 0 else 1.0)) * x - (
            alpha[i + 1] * math.expm1(-h_eta)
        ) * x0s[0]
        x = x + alpha[i + 1] * (phi_2 * D1 - w3 * phi_3 * D2)
        if draw is not None:
            x = x + (sigma[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise) * draw(x.shape)
    return x


def sample_dpmpp_sde(
    denoise,
    x_T,
    grid,
    schedule,
    *,
    noise=None,
    order=2,
    lower_order_final=True,
    variant="diffspec",
    eta=None,
    r=None,
    s_noise=None,
):
    """SDE-DPM-Solver++ singlestep, order 1 or 2 (the paper's, not k-diffusion's Brownian-tree variant):

        order 1: x_next = (sigma_next / sigma) e^{-h} x - alpha_next expm1(-2h) x0 + sigma_next sqrt(-expm1(-2h)) z
        order 2: a first-order step to the lam-midpoint with z1 gives u and x0(u, t_s); the full step uses x0(u) and
                 the noise sigma_next sqrt(-expm1(-h)) (e^{-h/2} z1 + z2) (the same Brownian path).

    variant="k-diffusion": k-diffusion's eta/r form (`_dpmpp_sde_k_diffusion`); eta, r, s_noise belong to it only.
    Model calls per step: `order` (1 onto a clean end). Noise draws: `order` per step with sigma_next > 0 (z1, z2)."""
    if _variant(variant) == Variant.K_DIFFUSION:
        if order != 2:
            raise ValueError(f"order={order!r}: variant='k-diffusion' has second-order steps only; expected 2")
        return _dpmpp_sde_k_diffusion(
            denoise,
            x_T,
            grid,
            schedule,
            noise=noise,
            eta=1.0 if eta is None else eta,
            r=0.5 if r is None else r,
            s_noise=1.0 if s_noise is None else s_noise,
            lower_order_final=lower_order_final,
        )
    for name, value in (("eta", eta), ("r", r), ("s_noise", s_noise)):
        if value is not None:
            raise ValueError(f"{name}={value!r}: an option of variant='k-diffusion' only; leave it None")
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_sde")
    if order not in (1, 2):
        raise ValueError(f"order={order!r}: expected 1 or 2")
    draw = as_noise_source(noise, sampler="dpmpp_sde", like=x_T)
    orders = _singlestep_orders(sigma, lam, order, lower_order_final)
    for i in range(len(grid) - 1):
        x0 = call(denoise, x, grid[i])
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0
            continue
        h = lam[i + 1] - lam[i]
        if orders[i] == 1:
            noise_term = (sigma[i + 1] * math.sqrt(-math.expm1(-2 * h))) * draw(x.shape)
        else:
            t_s = at(schedule.t_of_lam, lam[i] + h / 2)
            alpha_s, sigma_s = at(schedule.alpha, t_s), at(schedule.sigma, t_s)
            z1 = draw(x.shape)
            u = (
                ((sigma_s / sigma[i]) * math.exp(-h / 2)) * x
                - (alpha_s * math.expm1(-h)) * x0
                + (sigma_s * math.sqrt(-math.expm1(-h))) * z1
            )
            x0 = call(denoise, u, t_s)
            noise_term = (sigma[i + 1] * math.sqrt(-math.expm1(-h))) * (math.exp(-h / 2) * z1 + draw(x.shape))
        x = (sigma[i + 1] / sigma[i] * math.exp(-h)) * x - (alpha[i + 1] * math.expm1(-2 * h)) * x0 + noise_term
    return x


def _dpmpp_sde_k_diffusion(denoise, x_T, grid, schedule, *, noise, eta, r, s_noise, lower_order_final):
    """k-diffusion's `sample_dpmpp_sde` in sigma_ve (y = x / alpha), twin of the reference's: per step, draws a then b
    make z1 = a and z2 = (sqrt(sigma - sigma_s) a + sqrt(sigma_s - sigma_next) b) / sqrt(sigma - sigma_next);
    y_s = x0 + (d1 / sigma)(y - x0) + s_noise u1 z1, D = (1 - 1/(2r)) x0 + 1/(2r) x0(y_s, t_s),
    y_next = D + (d2 / sigma)(y - D) + s_noise u2 z2 with k-diffusion's ancestral splits; y = x0 onto a clean end."""
    from diffspec.trainer.samplers.k_diffusion import _ancestral_step

    eta, s_noise = _eta(eta), _eta(s_noise, "s_noise")
    if not (math.isfinite(r) and r > 0):
        raise ValueError(f"r={r!r}: expected a finite number > 0")
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_sde")
    if alpha[0] == 0:
        raise ValueError(
            f"grid[0]={grid[0]} has alpha = 0 (sigma_ve = inf): variant='k-diffusion' works in sigma_ve = sigma / "
            "alpha; start the grid at a time with alpha > 0"
        )
    draw = as_noise_source(noise, sampler="dpmpp_sde with eta > 0", like=x_T) if eta > 0 and s_noise > 0 else None
    sigma_ve = [s / a for s, a in zip(sigma, alpha, strict=True)]
    orders = _singlestep_orders(sigma_ve, lam, 2, lower_order_final)
    y = x / alpha[0]
    for i in range(len(grid) - 1):
        x0 = call(denoise, alpha[i] * y, grid[i])
        if sigma_ve[i + 1] == 0:
            y = x0
            continue
        sig, sig_next = sigma_ve[i], sigma_ve[i + 1]
        t_s = at(schedule.t_of_lam, lam[i] + r * (lam[i + 1] - lam[i]))
        sig_s = math.exp(-at(schedule.lam, t_s))
        z1 = z2 = 0.0
        if draw is not None:
            a, b = draw(y.shape), draw(y.shape)
            z1 = a
            z2 = (math.sqrt(sig - sig_s) / math.sqrt(sig - sig_next)) * a + (
                math.sqrt(sig_s - sig_next) / math.sqrt(sig - sig_next)
            ) * b
        D = x0
        if orders[i] == 2:
            down, up = _ancestral_step(sig, sig_s, eta)
            y_s = x0 + (down / sig) * (y - x0) + (up * s_noise) * z1
            x0_s = call(denoise, at(schedule.alpha, t_s) * y_s, t_s)
            D = (1 - 1 / (2 * r)) * x0 + (1 / (2 * r)) * x0_s
        down, up = _ancestral_step(sig, sig_next, eta)
        y = D + (down / sig) * (y - D) + (up * s_noise) * z2
    return alpha[-1] * y
