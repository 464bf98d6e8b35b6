"""PNDM, PLMS and iPNDM on tensors (torch twin of `diffspec.reference.samplers.pndm`).

Liu et al. (2022), "Pseudo Numerical Methods for Diffusion Models on Manifolds", eqs. 9-13, Algorithm 1; Zhang &
Chen (2022), DEIS, Sec. 5 (iPNDM). A multistep method on eps_hat through the DDIM transfer, written as
y_next = y + (sigma_ve_next - sigma_ve) e with y = x / alpha, sigma_ve = sigma / alpha.
"""

from diffspec.trainer.samplers._grid import at, call, checked_grid, marginals

_AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def _setup(x_T, grid, schedule, sampler):
    grid = checked_grid(grid, schedule, sampler=sampler)
    alpha, sigma, _ = marginals(schedule, grid)
    if float(alpha[0]) == 0:
        raise ValueError(f"grid[0]={float(grid[0])} has alpha = 0: {sampler} divides by alpha; start where alpha > 0")
    return grid.tolist(), alpha.tolist(), (sigma / alpha).tolist(), x_T / float(alpha[0])


def _eps(denoise, schedule, y, sigma_ve, t=None):
    """eps_hat = (y - x0_hat) / sigma_ve at noise level sigma_ve (time t if known)."""
    t = at(schedule.t_of_sigma_ve, sigma_ve) if t is None else t
    x0 = call(denoise, at(schedule.alpha, t) * y, t)
    return (y - x0) / sigma_ve


def _prk_step(denoise, schedule, y, e1, s, s_next, t_next):
    """Pseudo Runge-Kutta (eq. 13); onto sigma_ve = 0 the last stage is dropped and e3 used."""
    s_mid = (s + s_next) / 2
    e2 = _eps(denoise, schedule, y + (s_mid - s) * e1, s_mid)
    e3 = _eps(denoise, schedule, y + (s_mid - s) * e2, s_mid)
    if s_next == 0:
        return y + (s_next - s) * e3
    e4 = _eps(denoise, schedule, y + (s_next - s) * e3, s_next, t_next)
    return y + (s_next - s) * (e1 + 2 * e2 + 2 * e3 + e4) / 6


def sample_pndm(denoise, x_T, grid, schedule, *, noise=None):
    """PNDM: three pseudo Runge-Kutta steps (4 calls each), then 4th-order PLMS. Noise draws: none."""
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
    """PLMS alone, started by a pseudo improved-Euler step (2 calls), then AB2, AB3, AB4. Noise draws: none."""
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
    """Variable-step Adams-Bashforth in Newton form (newest first), integrated from sigmas[0] to s_next."""
    h, a = s_next - sigmas[0], [sigmas[0] - s for s in sigmas]
    weights = [h, h**2 / 2]
    if len(history) > 2:
        weights.append(h**3 / 3 + a[1] * h**2 / 2)
    if len(history) > 3:
        weights.append(h**4 / 4 + (a[1] + a[2]) * h**3 / 3 + a[1] * a[2] * h**2 / 2)
    table, out = list(history), 0.0
    for k in range(len(history)):
        out = out + weights[k] * table[0]
        table = [(table[j] - table[j + 1]) / (sigmas[j] - sigmas[j + k + 1]) for j in range(len(table) - 1)]
    return out


def sample_ipndm(denoise, x_T, grid, schedule, *, noise=None, order=4):
    """iPNDM with variable-step Adams-Bashforth weights (k-diffusion `sample_ipndm_v`); Euler onto sigma = 0.
    Model calls per step: 1. Noise draws: none. Order: `order`."""
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 4:
        raise ValueError(f"order={order!r}: expected an integer in [1, 4]")
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "ipndm")
    history = []
    for i in range(len(grid) - 1):
        history = [_eps(denoise, schedule, y, sigma_ve[i], grid[i])] + history[: order - 1]
        k = 1 if sigma_ve[i + 1] == 0 else len(history)
        y = y + _ab_variable(history[:k], sigma_ve[i + 1 - k : i + 1][::-1], sigma_ve[i + 1])
    return alpha[-1] * y
