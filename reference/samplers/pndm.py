"""Pseudo numerical methods (PNDM, PLMS) and improved PNDM (iPNDM).

Liu, Ren, Lin & Zhao (2022), "Pseudo Numerical Methods for Diffusion Models on Manifolds", ICLR, eqs. 9-13 and
Algorithm 1; Zhang & Chen (2022), "Fast Sampling of Diffusion Models with Exponential Integrator" (DEIS), Sec. 5
(iPNDM). The paper's t -> t - delta is our t -> t_next.

All three run a classical multistep method on eps_hat = (x - alpha x0_hat) / sigma through the DDIM "transfer"

    phi(x, e, t, t_next) = alpha_next ((x - sigma e) / alpha + sigma_next / alpha_next e),

which is exact when eps_hat is constant. With y = x / alpha and sigma_ve = sigma / alpha it reads
y_next = y + (sigma_ve_next - sigma_ve) e: a multistep method for dy / dsigma_ve = eps_hat, and the code is written
that way. Models are called at x = alpha y; a half step is taken in sigma_ve (in t for EDM, where they agree).
The paper's fixed Adams-Bashforth weights assume equal steps in sigma_ve: on other grids PNDM and PLMS are
second order; iPNDM uses the variable-step weights.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.samplers._info import Option, Requirement, SamplerInfo

_AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def _setup(x_T, grid, schedule, sampler):
    """(grid, alpha over the grid, sigma_ve over the grid, y = x_T / alpha)."""
    grid = _checks.decreasing_grid(grid, schedule, sampler=sampler)
    alpha = schedule.alpha(grid)
    if alpha[0] == 0:
        raise ValueError(f"grid[0]={grid[0]} has alpha = 0: {sampler} divides by alpha; start where alpha > 0")
    sigma_ve = schedule.sigma(grid) / alpha
    return grid, alpha, sigma_ve, _checks.finite_array("x_T", x_T) / alpha[0]


def _eps(denoise, schedule, y, sigma_ve, t=None):
    """eps_hat = (x - alpha x0_hat) / sigma = (y - x0_hat) / sigma_ve at noise level sigma_ve (time t if known)."""
    t = float(schedule.t_of_sigma_ve(sigma_ve)) if t is None else float(t)
    x0 = np.asarray(denoise(schedule.alpha(t) * y, t), dtype=np.float64)
    return (y - x0) / sigma_ve


def _prk_step(denoise, schedule, y, e1, s, s_next, t_next):
    """Pseudo Runge-Kutta (Liu et al. 2022, eq. 13): RK4 through the transfer. Onto sigma_ve = 0 (no model call
    there) the last stage is dropped and the midpoint estimate e3 is used."""
    s_mid = (s + s_next) / 2
    e2 = _eps(denoise, schedule, y + (s_mid - s) * e1, s_mid)
    e3 = _eps(denoise, schedule, y + (s_mid - s) * e2, s_mid)
    if s_next == 0:
        return y + (s_next - s) * e3
    e4 = _eps(denoise, schedule, y + (s_next - s) * e3, s_next, t_next)
    return y + (s_next - s) * (e1 + 2 * e2 + 2 * e3 + e4) / 6


def sample_pndm(denoise, x_T, grid, schedule, *, noise=None):
    """PNDM: three pseudo Runge-Kutta steps, then pseudo linear multistep (PLMS) steps.

    Liu et al. (2022), Algorithm 1 (eqs. 12-13). With e_i = eps_hat(x_i, t_i) and s = sigma_ve:

        steps 0-2: RK4 through phi (4 calls): e2, e3 at the half step, e4 at s_next, e' = (e1 + 2 e2 + 2 e3 + e4) / 6
        then:      e' = (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24,    y_next = y + (s_next - s) e'

    A warm-up step onto sigma = 0 uses e' = e3. Model calls per step: 4 for the first three steps, then 1.
    Noise draws: none. Order: 4 on grids uniform in sigma_ve, 2 on other smooth grids (checked in tests).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="pndm")
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "pndm")
    history = []
    for i in range(len(grid) - 1):
        e = _eps(denoise, schedule, y, sigma_ve[i], grid[i])
        history = [e] + history[:3]
        if i < 3:
            y = _prk_step(denoise, schedule, y, e, sigma_ve[i], sigma_ve[i + 1], grid[i + 1])
        else:
            y = y + (sigma_ve[i + 1] - sigma_ve[i]) * sum(b * e_j for b, e_j in zip(_AB[4], history))
    return alpha[-1] * y


def sample_plms(denoise, x_T, grid, schedule, *, noise=None):
    """PLMS alone: fixed-step Adams-Bashforth through the transfer, started by a pseudo Heun step.

    Liu et al. (2022), eq. 12, with the warm-up of their code and of diffusers' `PNDMScheduler(skip_prk_steps=True)`:

        step 0:  e' = (e_0 + eps_hat(phi(x_0, e_0), t_1)) / 2           (pseudo improved Euler, 2 calls)
        step 1:  e' = (3 e_1 - e_0) / 2;    step 2:  e' = (23 e_2 - 16 e_1 + 5 e_0) / 12
        then:    e' = (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24,    y_next = y + (s_next - s) e'

    A first step onto sigma = 0 uses e' = e_0. Model calls per step: 2 for the first step, then 1.
    Noise draws: none. Order: 2 on smooth grids (checked in tests); on grids uniform in sigma_ve the pseudo-Heun
    start makes it 3.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="plms")
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "plms")
    history = []
    for i in range(len(grid) - 1):
        e = _eps(denoise, schedule, y, sigma_ve[i], grid[i])
        history = [e] + history[:3]
        dt = sigma_ve[i + 1] - sigma_ve[i]
        if i == 0 and sigma_ve[1] > 0:
            e_prime = (e + _eps(denoise, schedule, y + dt * e, sigma_ve[1], grid[1])) / 2
        else:
            e_prime = sum(b * e_j for b, e_j in zip(_AB[len(history)], history))
        y = y + dt * e_prime
    return alpha[-1] * y


def _ab_variable(history, sigmas, s_next):
    """Variable-step Adams-Bashforth in Newton form: integrate the polynomial through (sigmas[j], history[j]) (newest
    first) from sigmas[0] to s_next. With u = s - sigmas[0], h = s_next - sigmas[0], a_j = sigmas[0] - sigmas[j]:
    int_0^h 1 = h, int u = h^2/2, int u (u + a1) = h^3/3 + a1 h^2/2,
    int u (u + a1)(u + a2) = h^4/4 + (a1 + a2) h^3/3 + a1 a2 h^2/2."""
    h, a = s_next - sigmas[0], [sigmas[0] - s for s in sigmas]
    weights = [h, h**2 / 2]
    if len(history) > 2:
        weights.append(h**3 / 3 + a[1] * h**2 / 2)
    if len(history) > 3:
        weights.append(h**4 / 4 + (a[1] + a[2]) * h**3 / 3 + a[1] * a[2] * h**2 / 2)
    # Newton divided differences of the eps history, newest first.
    table, out = list(history), 0.0
    for k in range(len(history)):
        out = out + weights[k] * table[0]
        table = [(table[j] - table[j + 1]) / (sigmas[j] - sigmas[j + k + 1]) for j in range(len(table) - 1)]
    return out


def sample_ipndm(denoise, x_T, grid, schedule, *, noise=None, order=4):
    """iPNDM: PLMS with lower-order multistep warm-up instead of Runge-Kutta, here with variable-step weights.

    Zhang & Chen (2022), DEIS, Sec. 5 ("iPNDM"), variable-step form as k-diffusion's `sample_ipndm_v`: step i uses
    the Adams-Bashforth method of order k = min(i + 1, order) on the actual sigma_ve steps (`_ab_variable`, Newton
    form), y_next = y + int_{s}^{s_next} p(s') ds' with p the polynomial through the last k eps_hat. A step onto
    sigma = 0 is the Euler (DDIM) step, as in the paper's code.
    Model calls per step: 1. Noise draws: none. Order: `order` (checked in tests on grids starting at high noise;
    the Euler first step adds an O(h^2) term whose constant vanishes as sigma_ve at grid[0] grows).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="ipndm")
    order = _checks.integer("order", order, minimum=1, maximum=4)
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "ipndm")
    history = []
    for i in range(len(grid) - 1):
        history = [_eps(denoise, schedule, y, sigma_ve[i], grid[i])] + history[: order - 1]
        k = 1 if sigma_ve[i + 1] == 0 else len(history)
        y = y + _ab_variable(history[:k], sigma_ve[i + 1 - k : i + 1][::-1], sigma_ve[i + 1])
    return alpha[-1] * y


_A = frozenset({Requirement.ALPHA_START})
INFO = [
    SamplerInfo("pndm", sample_pndm, order=2, stochastic=False, calls_per_step=1, requires=_A),
    SamplerInfo("plms", sample_plms, order=2, stochastic=False, calls_per_step=1, requires=_A),
    SamplerInfo(
        "ipndm",
        sample_ipndm,
        order=4,
        stochastic=False,
        calls_per_step=1,
        requires=_A,
        options=dict(order=Option(4, low=1, high=4, integer=True, invalid=(0, 5))),
        orders=(({"order": 1}, 1), ({"order": 2}, 2), ({"order": 3}, 3)),
    ),
]
