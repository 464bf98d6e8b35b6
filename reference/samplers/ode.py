"""The probability-flow ODE solved by a general-purpose adaptive Runge-Kutta method (Dormand-Prince 5(4)).

Song et al. (2021), arXiv:2011.13456, eq. 13 (the probability-flow ODE; their "ODE sampler" uses scipy's RK45).
Written in lam with the state x_tilde = x / alpha (= the EDM / k-diffusion variable), the ODE is autonomous of
the schedule: d x_tilde / d lam = x0_hat(alpha x_tilde, t(lam)) - x_tilde, with t(lam) = schedule.t_of_lam.
The solver is Dormand & Prince (1980), the 5(4) pair with FSAL, error norm and step-size control of Hairer,
Norsett & Wanner, "Solving ODEs I", Sec. II.4 and II.5 (eqs. 4.11, 4.13; starting step of II.4).
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.samplers._info import Option, Requirement, SamplerInfo

# Dormand-Prince 5(4) tableau (Hairer I, Table II.5.2): nodes C, stages A, 5th-order weights B5, 4th-order B4.
C = np.array([0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1])
A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
B5 = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
B4 = np.array([5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])


def _rms(v, scale):
    return float(np.sqrt(np.mean((v / scale) ** 2)))


def dormand_prince(f, y0, s0, s1, *, rtol, atol, max_steps=100_000):
    """Integrate dy/ds = f(s, y) from s0 to s1 (either direction) with adaptive Dormand-Prince 5(4).

    Error per step: err = rms((y5 - y4) / (atol + rtol max(|y|, |y_new|))) over all components (one step size for
    the whole state, as scipy's solve_ivp); accept when err <= 1; h_new = h min(5, max(0.2, 0.9 err^{-1/5}))
    (no growth right after a rejection). Local extrapolation: the 5th-order solution is propagated.
    Returns (y(s1), number of f evaluations).
    """
    rtol, atol = _checks.positive("rtol", rtol), _checks.positive("atol", atol)
    y, s, direction = np.asarray(y0, dtype=np.float64), float(s0), np.sign(s1 - s0)
    k1 = f(s, y)
    nfe = 1
    # Starting step size (Hairer I, Sec. II.4).
    scale = atol + rtol * np.abs(y)
    d0, d1 = _rms(y, scale), _rms(k1, scale)
    h0 = 1e-6 if min(d0, d1) < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, abs(s1 - s0))
    k_probe = f(s + direction * h0, y + direction * h0 * k1)
    nfe += 1
    d2 = _rms(k_probe - k1, scale) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    h = min(100 * h0, h1, abs(s1 - s0))
    rejected = False
    for _ in range(max_steps):
        if s == s1:
            return y, nfe
        h = min(h, abs(s1 - s))
        last = h == abs(s1 - s)
        hs = direction * h
        k = [k1]
        for j in range(1, 7):
            y_stage = y + hs * sum(a * kk for a, kk in zip(A[j], k))
            s_stage = s1 if (last and C[j] == 1) else s + C[j] * hs
            k.append(f(s_stage, y_stage))
        nfe += 6
        y_new = y + hs * sum(b * kk for b, kk in zip(B5, k) if b != 0)
        err_vec = hs * sum((b5 - b4) * kk for b5, b4, kk in zip(B5, B4, k))
        err = _rms(err_vec, atol + rtol * np.maximum(np.abs(y), np.abs(y_new)))
        if err <= 1:
            y, s, k1 = y_new, (s1 if last else s + hs), k[6]  # FSAL: the 7th stage is f(s_new, y_new)
            factor = min(1.0 if rejected else 5.0, max(0.2, 0.9 * max(err, 1e-10) ** (-1 / 5)))
            rejected = False
        else:
            factor = max(0.2, 0.9 * err ** (-1 / 5))
            rejected = True
        h = h * factor
    raise RuntimeError(f"dormand_prince: more than {max_steps} steps from s={s0} to s={s1}; loosen rtol/atol")


def sample_pf_ode_rk45(denoise, x_T, grid, schedule, *, noise=None, rtol=1e-5, atol=1e-5):
    """The probability-flow ODE integrated with adaptive Dormand-Prince RK45 in lam.

    Song et al. (2021), arXiv:2011.13456, eq. 13 and App. D.2 (RK45 ODE sampler). With x_tilde = x / alpha:

        d x_tilde / d lam = x0_hat(alpha x_tilde, t_of_lam(lam)) - x_tilde

    from lam(grid[0]) to lam(grid[-1]); only grid[0] and grid[-1] are used, except that when grid[-1] is a clean end
    (lam = +inf) the ODE stops at grid[-2], the last noisy time, and a data-prediction step x = alpha_end x0_hat
    lands on grid[-1] (the exact limit of the flow's linear part). The grid must start where alpha > 0.
    Model calls per step: adaptive (6 per step plus 2 to start). Noise draws: none. Order: 5 (error set by rtol/atol).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="pf_ode_rk45")
    grid = _checks.decreasing_grid(grid, schedule, sampler="pf_ode_rk45")
    x = _checks.finite_array("x_T", x_T)
    rtol, atol = _checks.positive("rtol", rtol), _checks.positive("atol", atol)
    if schedule.alpha(grid[0]) == 0:
        raise ValueError(f"grid[0]={grid[0]} has alpha = 0: pf_ode_rk45 integrates x / alpha; start where alpha > 0")
    clean = schedule.sigma(grid[-1]) == 0
    t_end = grid[-2] if clean else grid[-1]
    t_lo, t_hi = t_end, grid[0]

    def rhs(lam, x_tilde):
        t = float(np.clip(schedule.t_of_lam(lam), t_lo, t_hi))
        return np.asarray(denoise(schedule.alpha(t) * x_tilde, t), dtype=np.float64) - x_tilde

    if t_end < grid[0]:
        x_tilde, _ = dormand_prince(
            rhs,
            x / schedule.alpha(grid[0]),
            float(schedule.lam(grid[0])),
            float(schedule.lam(t_end)),
            rtol=rtol,
            atol=atol,
        )
        x = schedule.alpha(t_end) * x_tilde
    if clean:
        x = schedule.alpha(grid[-1]) * np.asarray(denoise(x, float(t_end)), dtype=np.float64)
    return x


INFO = [
    SamplerInfo(
        "pf_ode_rk45",
        sample_pf_ode_rk45,
        order=5,
        stochastic=False,
        calls_per_step=None,
        adaptive=True,
        requires=frozenset({Requirement.ALPHA_START}),
        options=dict(
            rtol=Option(1e-5, low=0.0, low_open=True, invalid=(0.0,)),
            atol=Option(1e-5, low=0.0, low_open=True, invalid=(-1.0,)),
        ),
    ),
]
