"""DPM-Solver++: exponential integrators in data-prediction form, deterministic and stochastic.

Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
arXiv:2211.01095. The paper's s -> t is our t -> t_next. The probability-flow ODE solved exactly in its linear part
(eq. 9) reads

    x_next = (sigma_next / sigma) x + sigma_next int_lam^lam_next e^{l} x0_hat(l) dl,

and the reverse SDE's counterpart (Sec. 5 / App. of the paper, "SDE-DPM-Solver++") is

    x_next = (sigma_next / sigma) e^{-h} x + 2 alpha_next int_0^h e^{-2(h - u)} x0_hat du + sigma_next sqrt(-expm1(-2h)) z.

Nothing divides by alpha, so these samplers run from alpha = 0 (flow t = 1) to sigma = 0 (a clean end, lam = +inf,
where every step is x_next = alpha_next x0_hat with no special case but the choice of order 1) on any schedule.

`lower_order_final` (diffusers' rule for DPMSolverMultistepScheduler): with fewer than 15 steps, the last step is
first order and, for third-order methods, the one before it at most second order. A step onto a clean end is
always first order.
"""

import enum

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.noise import as_noise_source
from diffspec.reference.samplers._info import VARIANT, Option, SamplerInfo


class SolverType(enum.StrEnum):
    MIDPOINT = "midpoint"
    HEUN = "heun"


class Variant(enum.StrEnum):
    """Which form of a sampler that k-diffusion also ships: diffspec's (the paper's, the default) or k-diffusion's
    function of the same name, reproduced exactly (its coefficients, its draws in its order)."""

    DIFFSPEC = "diffspec"
    K_DIFFUSION = "k-diffusion"


def _variant(variant):
    return Variant(_checks.lookup({v.value: v for v in Variant}, variant, what="variant"))


def _setup(x_T, grid, schedule, sampler):
    grid = _checks.decreasing_grid(grid, schedule, sampler=sampler)
    return grid, _checks.finite_array("x_T", x_T), schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)


def _x0(denoise, x, t):
    return np.asarray(denoise(x, float(t)), dtype=np.float64)


def _orders(sigma, order, lower_order_final):
    """Order of each step: warm-up (multistep needs order - 1 past values), lower_order_final, clean end."""
    n = len(sigma) - 1
    step = np.arange(n)
    orders = np.minimum(order, step + 1)
    if lower_order_final and n < 15:
        orders = np.minimum(orders, n - step)
    return np.where(sigma[1:] == 0, 1, orders)


def _eta(eta):
    return _checks.nonnegative("eta", eta)


def _data_term(h, x0s, lams, order, *, phi_2=None):
    """D0, and the first/second differences of x0_hat in lam combined as DPM-Solver++(2M)/(3M) do.

    x0s[0] is the current x0_hat at lam, x0s[1] the one before at lam - h_1, x0s[2] at lam - h_1 - h_2.
    Returns (D0, D1, D2) with D1 = D2 = 0 below the order.
    """
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
    """DPM-Solver++(2M): multistep, second order, in data-prediction form.

    Lu et al. (2022), arXiv:2211.01095, Algorithm 2. With h = lam_next - lam and r = h_prev / h:

        x_next = (sigma_next / sigma) x - alpha_next expm1(-h) D
        D      = (1 + 1/(2r)) x0 - 1/(2r) x0_prev

    The first step, and first-order steps (see the module's `lower_order_final`), use D = x0: that is DDIM.
    Model calls per step: 1. Noise draws: none (`noise` is accepted for a uniform signature). Order: 2.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpmpp_2m")
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_2m")
    orders = _orders(sigma, 2, lower_order_final)
    x0_prev = None
    for i in range(len(grid) - 1):
        x0 = _x0(denoise, x, grid[i])
        h = lam[i + 1] - lam[i]
        D = x0 if orders[i] == 1 else x0 + (x0 - x0_prev) / (2 * (lam[i] - lam[i - 1]) / h)
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * np.expm1(-h) * D
        x0_prev = x0
    return x


def sample_dpmpp_3m(denoise, x_T, grid, schedule, *, noise=None, lower_order_final=True, variant="diffspec"):
    """DPM-Solver++(3M): multistep, third order, in data-prediction form.

    Lu et al. (2022), arXiv:2211.01095, App. (the third-order multistep update, as in their code and diffusers).
    With h_1, h_2 the two previous steps, r0 = h_1 / h, r1 = h_2 / h and the divided differences
    D1_0 = (x0 - x0_1) / r0, D1_1 = (x0_1 - x0_2) / r1:

        D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),        D2 = (D1_0 - D1_1) / (r0 + r1)
        x_next = (sigma_next / sigma) x - alpha_next expm1(-h) x0 + alpha_next (expm1(-h)/h + 1) D1
                 - 2 alpha_next ((expm1(-h) + h)/h^2 - 1/2) D2

    Warm-up steps are first then second order (D2 = 0, or D1 = D2 = 0). D2 estimates h^2 x0''/2, so the exact
    weight of the Taylor term (u/h)^2 D2 is -2 phi_3 with phi_3 = (expm1(-h) + h)/h^2 - 1/2. The authors' code,
    diffusers and k-diffusion write -phi_3 D2: measured on the Gaussian oracle that form converges at order 2
    only, while this one is third order (it equals UniP-3, derived independently; see the tests).

    variant="k-diffusion" is k-diffusion's `sample_dpmpp_3m_sde` at eta = 0 (it has no separate 3M ODE function):
    the weight -phi_3 D2, and phi_2 D1 = (expm1(-h)/h + 1) D1 on the second-order warm-up step in place of
    -expm1(-h)/2 D1. k-diffusion has no lower-order final steps: it is reproduced with lower_order_final=False.
    Model calls per step: 1. Noise draws: none. Order: 3 (2 with variant="k-diffusion").
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpmpp_3m")
    if _variant(variant) == Variant.K_DIFFUSION:
        return sample_dpmpp_3m_sde(
            denoise, x_T, grid, schedule, eta=0.0, lower_order_final=lower_order_final, variant=variant
        )
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_3m")
    orders = _orders(sigma, 3, lower_order_final)
    x0s = []
    for i in range(len(grid) - 1):
        x0s = [_x0(denoise, x, grid[i])] + x0s[:2]
        h = lam[i + 1] - lam[i]
        D0, D1, D2 = _data_term(h, x0s, lam[i::-1], orders[i])
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * np.expm1(-h) * D0
        if orders[i] == 2:
            x = x - 0.5 * alpha[i + 1] * np.expm1(-h) * D1
        elif orders[i] == 3:
            x = (
                x
                + alpha[i + 1] * (np.expm1(-h) / h + 1) * D1
                - 2 * alpha[i + 1] * ((np.expm1(-h) + h) / h**2 - 0.5) * D2
            )
    return x


def sample_dpmpp_2s_ancestral(
    denoise, x_T, grid, schedule, *, noise=None, eta=1.0, lower_order_final=True, s_noise=1.0
):
    """DPM-Solver++(2S) ancestral: a 2S step to a lower noise level, then fresh noise back up to sigma_next.

    Lu et al. (2022), arXiv:2211.01095, Algorithm 1 (2S, r = 1/2), inside k-diffusion's ancestral split
    (`sample_dpmpp_2s_ancestral`, `get_ancestral_step`) written in (alpha, sigma) for any schedule. With
    c = -expm1(-2h) the added noise has std sigma_up = sigma_next min(1, eta sqrt(c)) and the deterministic part
    lands on sigma_down = sqrt(sigma_next^2 - sigma_up^2) (alpha_next kept), i.e. lam_down = log(alpha_next/sigma_down):

        h_d = lam_down - lam,   t_s = t_of_lam(lam + h_d / 2)
        u   = (sigma_s / sigma) x - alpha_s expm1(-h_d / 2) x0
        x_next = (sigma_down / sigma) x - alpha_next expm1(-h_d) x0(u, t_s) + sigma_up z

    When sigma_down = 0 (a clean end, or eta sqrt(c) >= 1) the step is alpha_next x0 + sigma_up z; a first-order
    final step (`lower_order_final` with < 15 steps) uses x0 in place of x0(u, t_s). s_noise (k-diffusion's, EDM's
    S_noise) scales the added noise: sigma_up s_noise z.
    Model calls per step: 2 (1 when sigma_down = 0 or first order). Noise draws: one per step with sigma_up > 0 and
    s_noise > 0 (none onto a clean end; none at all with eta = 0, when `noise` may be None). Order: 2 at eta = 0.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpmpp_2s_ancestral")
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_2s_ancestral")
    eta, s_noise = _eta(eta), _checks.nonnegative("s_noise", s_noise)
    draw = as_noise_source(noise, sampler="dpmpp_2s_ancestral") if eta > 0 and s_noise > 0 else None
    orders = _singlestep_orders(sigma, lam, 2, lower_order_final)
    for i in range(len(grid) - 1):
        x0 = _x0(denoise, x, grid[i])
        frac_up = min(1.0, eta * np.sqrt(-np.expm1(-2 * (lam[i + 1] - lam[i]))))
        sigma_up = sigma[i + 1] * frac_up
        sigma_down = sigma[i + 1] * np.sqrt(1 - frac_up**2)
        if sigma_down == 0:
            x = alpha[i + 1] * x0
        else:
            h_d = np.log(alpha[i + 1] / sigma_down) - lam[i]
            if orders[i] == 2:
                t_s = float(schedule.t_of_lam(lam[i] + h_d / 2))
                u = (schedule.sigma(t_s) / sigma[i]) * x - schedule.alpha(t_s) * np.expm1(-h_d / 2) * x0
                x0 = _x0(denoise, u, t_s)
            x = (sigma_down / sigma[i]) * x - alpha[i + 1] * np.expm1(-h_d) * x0
        if draw is not None and sigma_up > 0:
            x = x + sigma_up * s_noise * draw(x.shape)
    return x


def sample_dpmpp_2m_sde(
    denoise, x_T, grid, schedule, *, noise=None, eta=1.0, solver_type="midpoint", lower_order_final=True, s_noise=1.0
):
    """SDE-DPM-Solver++(2M): multistep second order on the reverse SDE, with eta interpolating to the ODE.

    Lu et al. (2022), arXiv:2211.01095, SDE-DPM-Solver++(2M); eta as in k-diffusion's `sample_dpmpp_2m_sde`
    (eta = 1: the paper's SDE; eta = 0: DPM-Solver++(2M), or its 'heun' variant). With h_eta = (1 + eta) h,
    A = -expm1(-h_eta) and D1 = (x0 - x0_prev) / r:

        x_next = (sigma_next / sigma) e^{-eta h} x + alpha_next A x0 + alpha_next C D1 + sigma_next sqrt(-expm1(-2 eta h)) z
        C = A / 2 (solver_type 'midpoint')  or  C = 1 - A / h_eta ('heun')

    s_noise (k-diffusion's) scales z. Model calls per step: 1. Noise draws: one per step with sigma_next > 0,
    eta > 0 and s_noise > 0, in grid order (none onto a clean end; with eta = 0 `noise` may be None).
    Order: 2 at eta = 0 (weak order 1 as an SDE solver).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpmpp_2m_sde")
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_2m_sde")
    eta = _eta(eta)
    solver_type = SolverType(_checks.lookup({s.value: s for s in SolverType}, solver_type, what="solver_type"))
    s_noise = _checks.nonnegative("s_noise", s_noise)
    draw = as_noise_source(noise, sampler="dpmpp_2m_sde") if eta > 0 and s_noise > 0 else None
    orders = _orders(sigma, 2, lower_order_final)
    x0_prev = None
    for i in range(len(grid) - 1):
        x0 = _x0(denoise, x, grid[i])
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0
        else:
            h = lam[i + 1] - lam[i]
            h_eta = (1 + eta) * h
            A = -np.expm1(-h_eta)
            x = (sigma[i + 1] / sigma[i]) * (np.exp(-eta * h) if eta > 0 else 1.0) * x + alpha[i + 1] * A * x0
            if orders[i] == 2:
                D1 = (x0 - x0_prev) * h / (lam[i] - lam[i - 1])
                C = A / 2 if solver_type == SolverType.MIDPOINT else 1 - A / h_eta
                x = x + alpha[i + 1] * C * D1
            if draw is not None:
                x = x + sigma[i + 1] * np.sqrt(-np.expm1(-2 * eta * h)) * s_noise * draw(x.shape)
        x0_prev = x0
    return x


def sample_dpmpp_3m_sde(
    denoise, x_T, grid, schedule, *, noise=None, eta=1.0, lower_order_final=True, variant="diffspec", s_noise=1.0
):
    """SDE-DPM-Solver++(3M): multistep third order on the reverse SDE (k-diffusion's `sample_dpmpp_3m_sde`).

    Lu et al. (2022), arXiv:2211.01095, the third-order multistep expansion applied to the SDE form, with eta as in
    k-diffusion. With h_eta = (1 + eta) h, phi_2 = expm1(-h_eta)/h_eta + 1, phi_3 = phi_2 / h_eta - 1/2 and
    D1, D2 the divided differences of DPM-Solver++(3M) (second order: D1 = (x0 - x0_prev)/r, D2 = 0):

        x_next = (sigma_next / sigma) e^{-eta h} x - alpha_next expm1(-h_eta) x0 + alpha_next (phi_2 D1 - 2 phi_3 D2)
                 + sigma_next sqrt(-expm1(-2 eta h)) z

    The factor 2 on phi_3 is the exact weight of the Taylor term (see `sample_dpmpp_3m`); k-diffusion omits it.
    variant="k-diffusion" reproduces k-diffusion's function: the weight -phi_3 D2 (with lower_order_final=False, as
    k-diffusion has no lower-order final steps); its draws are one per step as here, so each
    `noise_sampler(sigma, sigma_next)` call of k-diffusion is one draw of `noise`, in order.

    s_noise (k-diffusion's) scales z. Model calls per step: 1. Noise draws: one per step with sigma_next > 0,
    eta > 0 and s_noise > 0 (none onto a clean end; with eta = 0 `noise` may be None). Order: 3 at eta = 0 (2 with
    variant="k-diffusion"; weak order 1 as an SDE solver).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpmpp_3m_sde")
    w3 = 1.0 if _variant(variant) == Variant.K_DIFFUSION else 2.0
    grid, x, alpha, sigma, lam = _setup(x_T, grid, schedule, "dpmpp_3m_sde")
    eta = _eta(eta)
    s_noise = _checks.nonnegative("s_noise", s_noise)
    draw = as_noise_source(noise, sampler="dpmpp_3m_sde") if eta > 0 and s_noise > 0 else None
    orders = _orders(sigma, 3, lower_order_final)
    x0s = []
    for i in range(len(grid) - 1):
        x0s = [_x0(denoise, x, grid[i])] + x0s[:2]
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0s[0]
            continue
        h = lam[i + 1] - lam[i]
        h_eta = (1 + eta) * h
        _, D1, D2 = _data_term(h, x0s, lam[i::-1], orders[i])
        phi_2 = np.expm1(-h_eta) / h_eta + 1
        phi_3 = phi_2 / h_eta - 0.5
        x = (sigma[i + 1] / sigma[i]) * (np.exp(-eta * h) if eta > 0 else 1.0) * x - alpha[i + 1] * np.expm1(
            -h_eta
        ) * x0s[0]
        x = x + alpha[i + 1] * (phi_2 * D1 - w3 * phi_3 * D2)
        if draw is not None:
            x = x + sigma[i + 1] * np.sqrt(-np.expm1(-2 * eta * h)) * s_noise * draw(x.shape)
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
    """SDE-DPM-Solver++, singlestep, first or second order, on the reverse SDE.

    Lu et al. (2022), arXiv:2211.01095, SDE-DPM-Solver++1 and its second-order singlestep (r = 1/2) form; not
    k-diffusion's `sample_dpmpp_sde` (its eta/r variant on a Brownian tree). The first-order step is

        x_next = (sigma_next / sigma) e^{-h} x - alpha_next expm1(-2h) x0 + sigma_next sqrt(-expm1(-2h)) z.

    Second order: a first-order step to the lam-midpoint t_s with draw z1 gives u and x0_s = x0(u, t_s), then the
    full step uses x0_s in place of x0 (the x0 Taylor term with r = 1/2). Its noise is the same Brownian path split
    exactly at the midpoint: with h_2 = h / 2,

        sqrt(-expm1(-2h)) z  ->  e^{-h_2} sqrt(-expm1(-2 h_2)) z1 + sqrt(-expm1(-2 h_2)) z2,

    so u and x_next see one consistent path and no draw is wasted.
    Model calls per step: `order` (1 onto a clean end). Noise draws: `order` per step with sigma_next > 0
    (z1 then z2), none onto a clean end. Order: weak 1 (SDE solver); the drift expansion is of order `order`.

    variant="k-diffusion" is k-diffusion's `sample_dpmpp_sde` instead (`_dpmpp_sde_k_diffusion`), with its options
    eta (default 1), r (default 1/2) and s_noise (default 1), which belong to that variant only. Its steps are
    ancestral (k-diffusion's sigma_down / sigma_up split) rather than exact SDE steps, which is why it is not the
    default.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpmpp_sde")
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
    draw = as_noise_source(noise, sampler="dpmpp_sde")
    orders = _singlestep_orders(sigma, lam, order, lower_order_final)
    for i in range(len(grid) - 1):
        x0 = _x0(denoise, x, grid[i])
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0
            continue
        h = lam[i + 1] - lam[i]
        if orders[i] == 1:
            noise_term = sigma[i + 1] * np.sqrt(-np.expm1(-2 * h)) * draw(x.shape)
        else:
            t_s = float(schedule.t_of_lam(lam[i] + h / 2))
            alpha_s, sigma_s = schedule.alpha(t_s), schedule.sigma(t_s)
            z1 = draw(x.shape)
            u = (
                (sigma_s / sigma[i]) * np.exp(-h / 2) * x
                - alpha_s * np.expm1(-h) * x0
                + sigma_s * np.sqrt(-np.expm1(-h)) * z1
            )
            x0 = _x0(denoise, u, t_s)
            noise_term = sigma[i + 1] * np.sqrt(-np.expm1(-h)) * (np.exp(-h / 2) * z1 + draw(x.shape))
        x = (sigma[i + 1] / sigma[i]) * np.exp(-h) * x - alpha[i + 1] * np.expm1(-2 * h) * x0 + noise_term
    return x


def _dpmpp_sde_k_diffusion(denoise, x_T, grid, schedule, *, noise, eta, r, s_noise, lower_order_final):
    """k-diffusion's `sample_dpmpp_sde` (Crowson), in sigma_ve = sigma / alpha = e^{-lam} for any schedule.

    With y = x / alpha (k-diffusion's EDM world, see `k_diffusion.py`), h = lam_next - lam, t_s = t_of_lam(lam + r h)
    and k-diffusion's ancestral split (down, up) = split(sigma_from, sigma_to, eta):

        (d1, u1) = split(sigma, sigma_s),    y_s = x0 + (d1 / sigma) (y - x0) + s_noise u1 z1,   x0_s = x0_hat(y_s, t_s)
        (d2, u2) = split(sigma, sigma_next), y_next = D + (d2 / sigma) (y - D) + s_noise u2 z2,
        D = (1 - 1/(2r)) x0 + 1/(2r) x0_s

    (d / sigma) (y - D) + D is k-diffusion's (sigma_fn(t_next_) / sigma_fn(t)) y - expm1(t - t_next_) D. A step onto
    sigma_next = 0 is the Euler step y_next = x0. k-diffusion takes z1 = noise_sampler(sigma, sigma_s) and
    z2 = noise_sampler(sigma, sigma_next), two standardized increments of one Brownian path W in sigma_ve
    (z(a, b) = (W(b) - W(a)) / sqrt|b - a|), so z2 overlaps z1. Here the path is built from two independent draws
    per step, in this order: a over [sigma_s, sigma] and b over [sigma_next, sigma_s], and

        z1 = a,        z2 = (sqrt(sigma - sigma_s) a + sqrt(sigma_s - sigma_next) b) / sqrt(sigma - sigma_next).

    k-diffusion is reproduced with lower_order_final=False. With True and fewer than 15 steps, a last step onto a
    noisy end is first order: D = x0 and no intermediate call (its draws a, b still make z2).
    Model calls per step: 2 (1 onto a clean end). Noise draws: 2 per step with eta > 0 and s_noise > 0 (a, b), none
    onto a clean end and none at eta = 0.
    """
    from diffspec.reference.samplers.k_diffusion import _ancestral_step

    eta, s_noise = _eta(eta), _checks.nonnegative("s_noise", s_noise)
    r = _checks.positive("r", r)
    grid = _checks.decreasing_grid(grid, schedule, sampler="dpmpp_sde")
    alpha, lam = schedule.alpha(grid), schedule.lam(grid)
    if alpha[0] == 0:
        raise ValueError(
            f"grid[0]={grid[0]} has alpha = 0 (sigma_ve = inf): variant='k-diffusion' works in sigma_ve = sigma / "
            "alpha; start the grid at a time with alpha > 0"
        )
    draw = as_noise_source(noise, sampler="dpmpp_sde with eta > 0") if eta > 0 and s_noise > 0 else None
    sigma_ve = schedule.sigma(grid) / alpha
    y = _checks.finite_array("x_T", x_T) / alpha[0]
    orders = _singlestep_orders(sigma_ve, lam, 2, lower_order_final)
    for i in range(len(grid) - 1):
        x0 = _x0(denoise, alpha[i] * y, grid[i])
        if sigma_ve[i + 1] == 0:
            y = x0
            continue
        sig, sig_next = sigma_ve[i], sigma_ve[i + 1]
        t_s = float(schedule.t_of_lam(lam[i] + r * (lam[i + 1] - lam[i])))
        sig_s = float(np.exp(-schedule.lam(t_s)))
        z1 = z2 = 0.0
        if draw is not None:
            a, b = draw(y.shape), draw(y.shape)
            z1 = a
            z2 = (np.sqrt(sig - sig_s) * a + np.sqrt(sig_s - sig_next) * b) / np.sqrt(sig - sig_next)
        D = x0
        if orders[i] == 2:
            down, up = _ancestral_step(sig, sig_s, eta)
            y_s = x0 + (down / sig) * (y - x0) + up * s_noise * z1
            x0_s = _x0(denoise, schedule.alpha(t_s) * y_s, t_s)
            D = (1 - 1 / (2 * r)) * x0 + 1 / (2 * r) * x0_s
        down, up = _ancestral_step(sig, sig_next, eta)
        y = D + (down / sig) * (y - D) + up * s_noise * z2
    return alpha[-1] * y


def _singlestep_orders(sigma, lam, order, lower_order_final):
    """Singlestep: `order` on every step, first order on the last one when lower_order_final (< 15 steps), onto a
    clean end, and from alpha = 0 (lam = -inf, where the lam-midpoint does not exist)."""
    n = len(sigma) - 1
    orders = np.full(n, order)
    if lower_order_final and n < 15:
        orders[-1] = 1
    return np.where((sigma[1:] == 0) | np.isneginf(lam[:-1]), 1, orders)


_LOF = Option(True, choices=(True, False))
_ETA = Option(1.0, low=0.0, invalid=(-0.1, float("nan")), probe=(0.0, 0.5))  # 0: the deterministic method
_NO_LOF = {"lower_order_final": False}
_S_NOISE = Option(1.0, low=0.0, invalid=(-1.0, float("nan")))  # k-diffusion's; != 1 changes the distribution


def _sde_draws(options):
    """One draw per step (none onto the clean end) while eta > 0 and s_noise > 0."""
    return (1, 0) if options["eta"] > 0 and options["s_noise"] > 0 else (0, 0)


def _dpmpp_sde_draws(options):
    """`order` draws per step (none onto the clean end); variant='k-diffusion': 2 while eta > 0 and s_noise > 0."""
    if options["variant"] != "k-diffusion":
        return (options["order"], 0)
    eta = 1.0 if options["eta"] is None else options["eta"]
    s_noise = 1.0 if options["s_noise"] is None else options["s_noise"]
    return (2, 0) if eta > 0 and s_noise > 0 else (0, 0)


INFO = [
    SamplerInfo(
        "dpmpp_2s_ancestral",
        sample_dpmpp_2s_ancestral,
        order=2,
        stochastic=True,
        calls_per_step=2,
        draws=_sde_draws,
        order_options={"eta": 0.0, **_NO_LOF},
        options=dict(eta=_ETA, lower_order_final=_LOF, s_noise=_S_NOISE),
    ),
    SamplerInfo(
        "dpmpp_2m",
        sample_dpmpp_2m,
        order=2,
        stochastic=False,
        calls_per_step=1,
        order_options=_NO_LOF,
        options=dict(lower_order_final=_LOF),
    ),
    SamplerInfo(
        "dpmpp_3m",
        sample_dpmpp_3m,
        order=3,
        stochastic=False,
        calls_per_step=1,
        order_options=_NO_LOF,
        orders=(({"variant": "k-diffusion", **_NO_LOF}, 2),),
        options=dict(lower_order_final=_LOF, variant=VARIANT),
    ),
    SamplerInfo(
        "dpmpp_2m_sde",
        sample_dpmpp_2m_sde,
        order=2,
        stochastic=True,
        calls_per_step=1,
        draws=_sde_draws,
        order_options={"eta": 0.0, **_NO_LOF},
        orders=(({"eta": 0.0, "solver_type": "heun", **_NO_LOF}, 2),),
        options=dict(
            eta=_ETA,
            solver_type=Option("midpoint", choices=("midpoint", "heun"), invalid=("euler",)),
            lower_order_final=_LOF,
            s_noise=_S_NOISE,
        ),
    ),
    SamplerInfo(
        "dpmpp_3m_sde",
        sample_dpmpp_3m_sde,
        order=3,
        stochastic=True,
        calls_per_step=1,
        draws=_sde_draws,
        order_options={"eta": 0.0, **_NO_LOF},
        orders=(({"eta": 0.0, "variant": "k-diffusion", **_NO_LOF}, 2),),
        options=dict(eta=_ETA, lower_order_final=_LOF, variant=VARIANT, s_noise=_S_NOISE),
    ),
    SamplerInfo(
        "dpmpp_sde",
        sample_dpmpp_sde,
        order=None,
        stochastic=True,
        calls_per_step=2,
        draws=_dpmpp_sde_draws,
        options=dict(
            order=Option(2, choices=(1, 2), invalid=(3,), probe=(1,)),
            lower_order_final=_LOF,
            variant=VARIANT,
            eta=Option(None, low=0.0, nullable=True),
            r=Option(None, low=0.0, high=1.0, low_open=True, nullable=True),
            s_noise=Option(None, low=0.0, nullable=True),
        ),
    ),
]
