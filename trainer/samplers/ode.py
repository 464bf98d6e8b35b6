"""The probability-flow ODE by adaptive Dormand-Prince 5(4) in lam, on tensors (torch twin of
`diffspec.reference.samplers.ode`). d x_tilde / d lam = x0_hat(alpha x_tilde, t_of_lam(lam)) - x_tilde, x_tilde = x / alpha.
Step-size control reads one error number per step from the device (adaptive by nature)."""

import math

import torch
from diffspec.trainer.samplers._grid import at, call, checked_grid

C = [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1]
A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
B5 = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]
B4 = [5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]


def _rms(v, scale):
    return float(torch.sqrt(torch.mean((v / scale) ** 2)))


def dormand_prince(f, y0, s0, s1, *, rtol, atol, max_steps=100_000):
    """Integrate dy/ds = f(s, y) from s0 to s1 with adaptive Dormand-Prince 5(4) (Hairer I, Sec. II.4-5), FSAL,
    local extrapolation; err = rms((y5 - y4) / (atol + rtol max(|y|, |y_new|))). Returns (y(s1), nfe)."""
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r}: expected a finite number > 0")
    y, s = y0, float(s0)
    direction = math.copysign(1.0, s1 - s0) if s1 != s0 else 0.0
    k1 = f(s, y)
    nfe = 1
    scale = atol + rtol * y.abs()
    d0, d1 = _rms(y, scale), _rms(k1, scale)
    h0 = 1e-6 if min(d0, d1) < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, abs(s1 - s0))
    k_probe = f(s + direction * h0, y + (direction * h0) * k1)
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
        err = _rms(err_vec, atol + rtol * torch.maximum(y.abs(), y_new.abs()))
        if err <= 1:
            y, s, k1 = y_new, (s1 if last else s + hs), k[6]
            factor = min(1.0 if rejected else 5.0, max(0.2, 0.9 * max(err, 1e-10) ** (-1 / 5)))
            rejected = False
        else:
            factor = max(0.2, 0.9 * err ** (-1 / 5))
            rejected = True
        h = h * factor
    raise RuntimeError(f"dormand_prince: more than {max_steps} steps from s={s0} to s={s1}; loosen rtol/atol")


def sample_pf_ode_rk45(denoise, x_T, grid, schedule, *, noise=None, rtol=1e-5, atol=1e-5):
    """The probability-flow ODE in lam by adaptive RK45 from grid[0] to grid[-1] (to grid[-2] and then a
    data-prediction step onto a clean end). Model calls: adaptive. Noise draws: none."""
    grid = checked_grid(grid, schedule, sampler="pf_ode_rk45").tolist()
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r}: expected a finite number > 0")
    if at(schedule.alpha, grid[0]) == 0:
        raise ValueError(f"grid[0]={grid[0]} has alpha = 0: pf_ode_rk45 integrates x / alpha; start where alpha > 0")
    clean = at(schedule.sigma, grid[-1]) == 0
    t_end = grid[-2] if clean else grid[-1]
    t_lo, t_hi = t_end, grid[0]
    x = x_T

    def rhs(lam, x_tilde):
        t = min(max(at(schedule.t_of_lam, lam), t_lo), t_hi)
        return call(denoise, at(schedule.alpha, t) * x_tilde, t) - x_tilde

    if t_end < grid[0]:
        x_tilde, _ = dormand_prince(
            rhs,
            x / at(schedule.alpha, grid[0]),
            at(schedule.lam, grid[0]),
            at(schedule.lam, t_end),
            rtol=rtol,
            atol=atol,
        )
        x = at(schedule.alpha, t_end) * x_tilde
    if clean:
        x = at(schedule.alpha, grid[-1]) * call(denoise, x, t_end)
    return x
