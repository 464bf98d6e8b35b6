"""DPM-Solver (noise prediction, singlestep) on tensors (torch twin of `diffspec.reference.samplers.dpm_solver`).

Lu et al. (2022), arXiv:2206.00927. eps_hat = (x - alpha x0_hat) / sigma; the exact solution of the linear part
(eq. 3.4) x_next = (alpha_next / alpha) x - alpha_next int e^{-l} eps_hat(l) dl is approximated by DPM-Solver-k
with k - 1 intermediate calls at t_of_lam(lam + r h). A step onto a clean end (sigma_next = 0) is the
data-prediction step x_next = alpha_next x0_hat. Step coefficients are Python floats from float64 schedule
evaluations (host side); the tensors keep x_T's dtype and device.
"""

import math

import torch
from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import at, call, checked_grid


def _setup(x_T, grid, schedule, sampler):
    grid = checked_grid(grid, schedule, sampler=sampler)
    if at(schedule.alpha, grid[0]) == 0:
        raise ValueError(
            f"grid[0]={float(grid[0])} has alpha = 0 (lam = -inf): {sampler} works in noise-prediction form and "
            "divides by alpha; start the grid at a time with alpha > 0 or use a DPM-Solver++ sampler"
        )
    return grid.tolist(), x_T


def _model(denoise, x, t, schedule):
    """(eps_hat, x0_hat) at the Python-float time t."""
    x0 = call(denoise, x, t)
    return (x - at(schedule.alpha, t) * x0) / at(schedule.sigma, t), x0


def _at(schedule, t):
    return at(schedule.alpha, t), at(schedule.sigma, t), at(schedule.lam, t)


def _update_1(schedule, x, t, t_next, eps):
    """DPM-Solver-1 (eq. 3.7): x_next = (alpha_next / alpha) x - sigma_next expm1(h) eps."""
    (a, _, lam), (a_n, s_n, lam_n) = _at(schedule, t), _at(schedule, t_next)
    return (a_n / a) * x - (s_n * math.expm1(lam_n - lam)) * eps


def _update_2(denoise, schedule, x, t, t_next, eps, *, r1=0.5):
    """DPM-Solver-2 (Algorithm 1): one intermediate call at lam + r1 h. Returns (x_next, eps_1)."""
    (a, _, lam), (a_n, s_n, lam_n) = _at(schedule, t), _at(schedule, t_next)
    h = lam_n - lam
    t1 = at(schedule.t_of_lam, lam + r1 * h)
    a1, s1, _ = _at(schedule, t1)
    u1 = (a1 / a) * x - (s1 * math.expm1(r1 * h)) * eps
    eps1, _ = _model(denoise, u1, t1, schedule)
    x_next = (a_n / a) * x - (s_n * math.expm1(h)) * eps - (s_n / (2 * r1) * math.expm1(h)) * (eps1 - eps)
    return x_next, eps1


def _update_3(denoise, schedule, x, t, t_next, eps, *, eps1=None, r1=1 / 3, r2=2 / 3):
    """DPM-Solver-3 (Algorithm 2): intermediate calls at lam + r1 h and lam + r2 h (eps1 may be given)."""
    (a, _, lam), (a_n, s_n, lam_n) = _at(schedule, t), _at(schedule, t_next)
    h = lam_n - lam
    t1, t2 = (at(schedule.t_of_lam, lam + r * h) for r in (r1, r2))
    (a1, s1, _), (a2, s2, _) = _at(schedule, t1), _at(schedule, t2)
    if eps1 is None:
        u1 = (a1 / a) * x - (s1 * math.expm1(r1 * h)) * eps
        eps1, _ = _model(denoise, u1, t1, schedule)
    D1 = eps1 - eps
    u2 = (a2 / a) * x - (s2 * math.expm1(r2 * h)) * eps - (s2 * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1)) * D1
    eps2, _ = _model(denoise, u2, t2, schedule)
    return (a_n / a) * x - (s_n * math.expm1(h)) * eps - ((s_n / r2) * (math.expm1(h) / h - 1)) * (eps2 - eps)


def _step(denoise, schedule, x, t, t_next, order):
    """One singlestep DPM-Solver-`order` step; the data-prediction step onto a clean end."""
    eps, x0 = _model(denoise, x, t, schedule)
    if at(schedule.sigma, t_next) == 0:
        return at(schedule.alpha, t_next) * x0
    if order == 1:
        return _update_1(schedule, x, t, t_next, eps)
    if order == 2:
        return _update_2(denoise, schedule, x, t, t_next, eps)[0]
    return _update_3(denoise, schedule, x, t, t_next, eps)


def sample_dpm_solver_1(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver-1 (eq. 3.7, = DDIM). Model calls per step: 1. Noise draws: none. Order: 1."""
    grid, x = _setup(x_T, grid, schedule, "dpm_solver_1")
    for i in range(len(grid) - 1):
        x = _step(denoise, schedule, x, grid[i], grid[i + 1], 1)
    return x


def sample_dpm_solver_2(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver-2 (Algorithm 1, r1 = 1/2). Model calls per step: 2. Noise draws: none. Order: 2."""
    grid, x = _setup(x_T, grid, schedule, "dpm_solver_2")
    for i in range(len(grid) - 1):
        x = _step(denoise, schedule, x, grid[i], grid[i + 1], 2)
    return x


def sample_dpm_solver_3(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver-3 (Algorithm 2, r1 = 1/3, r2 = 2/3). Model calls per step: 3. Noise draws: none. Order: 3."""
    grid, x = _setup(x_T, grid, schedule, "dpm_solver_3")
    for i in range(len(grid) - 1):
        x = _step(denoise, schedule, x, grid[i], grid[i + 1], 3)
    return x


def fast_orders(nfe):
    """DPM-Solver-fast's order mix (Lu et al. 2022, Sec. 3.4): [3]*(K-2) + [2, 1] when 3 | nfe, else
    [3]*(K-1) + [nfe % 3], K = nfe // 3 + 1."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe={nfe!r}: expected an integer >= 1")
    K = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (K - 2) + [2, 1]
    return [3] * (K - 1) + [nfe % 3]


def _nonnegative(name, value):
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value!r}: expected a finite number >= 0")
    return float(value)


def _eta_split(lam, lam_next, lam_end, eta):
    """k-diffusion's ancestral DPM-Solver split in sigma_ve = e^{-lam}: (lam_down, std), lam_down =
    min(lam_end, -log sigma_down) with get_ancestral_step's sigma_down; std = sigma_up where that cap does not bind
    (not k-diffusion's recomputed sqrt(s_next^2 - sigma_down^2), which cancels at small eta), else
    s_next sqrt(1 - e^{-2 (lam_end - lam_next)})."""
    s_next = math.exp(-lam_next)
    up = min(s_next, eta * s_next * math.sqrt(-math.expm1(2 * (lam - lam_next))))
    down = math.sqrt(s_next**2 - up**2)
    if down > 0 and -math.log(down) < lam_end:
        return -math.log(down), up
    return lam_end, s_next * math.sqrt(-math.expm1(2 * (lam_next - lam_end)))


def _ancestral_dpm_step(denoise, schedule, x, t, t_next, t_end, order, eta, s_noise, draw):
    """k-diffusion's ancestral DPM-Solver step: DPM-Solver-`order` from t to t_down, then y = x / alpha gets
    s_noise std z and the state is read at t_next."""
    lam, lam_next, lam_end = at(schedule.lam, t), at(schedule.lam, t_next), at(schedule.lam, t_end)
    lam_down, std = _eta_split(lam, lam_next, lam_end, eta)
    t_down = t_end if lam_down == lam_end else at(schedule.t_of_lam, lam_down)
    y = _step(denoise, schedule, x, t, t_down, order) / at(schedule.alpha, t_down)
    if draw is not None and std > 0:
        y = y + (std * s_noise) * draw(x.shape)
    return at(schedule.alpha, t_next) * y


def sample_dpm_solver_fast(denoise, x_T, grid, schedule, *, noise=None, eta=0.0, s_noise=1.0):
    """DPM-Solver-fast (Lu et al. 2022, Sec. 3.4): NFE = len(grid) - 1 calls; a step of order k spans k grid
    intervals; a clean end is reached by a final data-prediction step. eta > 0: k-diffusion's ancestral form
    (`_ancestral_dpm_step`). Noise draws: none at eta = 0, else one per step with a positive std."""
    grid, x = _setup(x_T, grid, schedule, "dpm_solver_fast")
    eta, s_noise = _nonnegative("eta", eta), _nonnegative("s_noise", s_noise)
    draw = as_noise_source(noise, sampler="dpm_solver_fast with eta > 0", like=x_T) if eta > 0 and s_noise > 0 else None
    clean = at(schedule.sigma, grid[-1]) == 0
    noisy = grid[:-1] if clean else grid
    if len(noisy) > 1:
        orders = fast_orders(len(noisy) - 1)
        idx = [0]
        for k in orders:
            idx.append(idx[-1] + k)
        outer = [noisy[j] for j in idx]
        for i, order in enumerate(orders):
            if eta > 0:
                x = _ancestral_dpm_step(
                    denoise, schedule, x, outer[i], outer[i + 1], noisy[-1], order, eta, s_noise, draw
                )
            else:
                x = _step(denoise, schedule, x, outer[i], outer[i + 1], order)
    if clean:
        x = _step(denoise, schedule, x, grid[-2], grid[-1], 1)
    return x


def _vp_scale(schedule, t):
    """sqrt(alpha^2 + sigma^2): the error test reads x / this, the state of the VP process with the same lam."""
    return math.hypot(at(schedule.alpha, t), at(schedule.sigma, t))


def sample_dpm_solver_adaptive(
    denoise,
    x_T,
    grid,
    schedule,
    *,
    noise=None,
    order=3,
    rtol=0.05,
    atol=0.0078,
    variant="diffspec",
    h_init=None,
    pcoeff=None,
    icoeff=None,
    dcoeff=None,
    accept_safety=None,
    eta=None,
    s_noise=None,
):
    """DPM-Solver-12 / -23 with adaptive steps in lam (Lu et al. 2022, Algorithm 4); see the reference for the
    error control (read in the variance-preserving scale x / sqrt(alpha^2 + sigma^2)). The accept test reads one
    number per trial step from the device (adaptive by nature). variant="k-diffusion": k-diffusion's PID controller
    (`_adaptive_k_diffusion`; h_init, pcoeff, icoeff, dcoeff, accept_safety, eta, s_noise belong to it only).
    Model calls per step: adaptive. Noise draws: none. Order: `order`."""
    grid, x = _setup(x_T, grid, schedule, "dpm_solver_adaptive")
    if order not in (2, 3):
        raise ValueError(f"order={order!r}: expected 2 (DPM-Solver-12) or 3 (DPM-Solver-23)")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r}: expected a finite number > 0")
    pid = {"h_init": h_init, "pcoeff": pcoeff, "icoeff": icoeff, "dcoeff": dcoeff, "accept_safety": accept_safety}
    pid.update(eta=eta, s_noise=s_noise)
    if variant not in ("diffspec", "k-diffusion"):
        raise ValueError(f"unknown variant {variant!r}: expected one of diffspec, k-diffusion")
    if variant == "k-diffusion":
        defaults = {"h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0, "accept_safety": 0.81}
        defaults.update(eta=0.0, s_noise=1.0)
        pid = {k: defaults[k] if v is None else v if k in ("eta", "s_noise") else float(v) for k, v in pid.items()}
        return _adaptive_k_diffusion(denoise, x, grid, schedule, noise=noise, order=order, rtol=rtol, atol=atol, **pid)
    for name, value in pid.items():
        if value is not None:
            raise ValueError(f"{name}={value!r}: an option of variant='k-diffusion' only; leave it None")
    clean = at(schedule.sigma, grid[-1]) == 0
    t_end = grid[-2] if clean else grid[-1]
    t, lam, lam_end, h = grid[0], at(schedule.lam, grid[0]), at(schedule.lam, t_end), 0.05
    x_prev = x / _vp_scale(schedule, t)
    while t > t_end:
        t_next = t_end if lam + h >= lam_end - 1e-12 * max(1.0, abs(lam_end)) else at(schedule.t_of_lam, lam + h)
        if not t_next < t:
            raise RuntimeError(f"dpm_solver_adaptive: step size underflow at t={t} (h={h}); loosen rtol/atol")
        eps, _ = _model(denoise, x, t, schedule)
        if order == 2:
            x_lo = _update_1(schedule, x, t, t_next, eps)
            x_hi, _ = _update_2(denoise, schedule, x, t, t_next, eps, r1=0.5)
        else:
            x_lo, eps1 = _update_2(denoise, schedule, x, t, t_next, eps, r1=1 / 3)
            x_hi = _update_3(denoise, schedule, x, t, t_next, eps, eps1=eps1)
        scale = _vp_scale(schedule, t_next)
        delta = torch.clamp(rtol * torch.maximum((x_lo / scale).abs(), x_prev.abs()), min=atol)
        E = float(torch.sqrt(((((x_hi - x_lo) / scale) / delta).reshape(len(x), -1) ** 2).mean(dim=1)).max())
        if E <= 1:
            x, x_prev, t, lam = x_hi, x_lo / scale, t_next, at(schedule.lam, t_next)
        h = min(0.9 * h * max(E, 1e-12) ** (-1 / order), lam_end - lam)
    if clean:
        x = _step(denoise, schedule, x, t_end, grid[-1], 1)
    return x


def _adaptive_k_diffusion(
    denoise, x, grid, schedule, *, noise, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety, eta, s_noise
):
    """k-diffusion's `dpm_solver_adaptive`: the same embedded pairs, error
    E = rms over all elements of (y_lo - y_hi) / max(atol, rtol max(|y_lo|, |y_prev|)) with y = x / alpha, and a PID
    controller factor = 1 + atan(e0^b1 e1^b2 e2^b3 - 1), e = 1 / (E + 1e-8); accept when factor >= accept_safety;
    h *= factor; stop within 1e-5 of lam_end (see the reference). eta > 0: the pair steps to lam_down
    (`_eta_split`), an accepted step adds std s_noise z and lands at lam_next; the controller's order is 1.5."""
    for name, value in (("h_init", h_init), ("accept_safety", accept_safety)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r}: expected a finite number > 0")
    eta, s_noise = _nonnegative("eta", eta), _nonnegative("s_noise", s_noise)
    draw = (
        as_noise_source(noise, sampler="dpm_solver_adaptive with eta > 0", like=x) if eta > 0 and s_noise > 0 else None
    )
    p = 1.5 if eta > 0 else order
    b1, b2, b3 = (pcoeff + icoeff + dcoeff) / p, -(pcoeff + 2 * dcoeff) / p, dcoeff / p
    clean = at(schedule.sigma, grid[-1]) == 0
    t_end = grid[-2] if clean else grid[-1]
    t, lam, lam_end, h = grid[0], at(schedule.lam, grid[0]), at(schedule.lam, t_end), h_init
    x_prev, errs = x / at(schedule.alpha, t), []
    while lam < lam_end - 1e-5:
        lam_next = min(lam_end, lam + h)
        t_next = t_end if lam_next == lam_end else at(schedule.t_of_lam, lam_next)
        lam_down, std = _eta_split(lam, lam_next, lam_end, eta) if eta > 0 else (lam_next, 0.0)
        t_down = t_next if lam_down == lam_next else t_end if lam_down == lam_end else at(schedule.t_of_lam, lam_down)
        eps, _ = _model(denoise, x, t, schedule)
        if order == 2:
            x_lo = _update_1(schedule, x, t, t_down, eps)
            x_hi, _ = _update_2(denoise, schedule, x, t, t_down, eps, r1=0.5)
        else:
            x_lo, eps1 = _update_2(denoise, schedule, x, t, t_down, eps, r1=1 / 3)
            x_hi = _update_3(denoise, schedule, x, t, t_down, eps, eps1=eps1)
        alpha_down = at(schedule.alpha, t_down)
        y_lo, y_hi = x_lo / alpha_down, x_hi / alpha_down
        delta = torch.clamp(rtol * torch.maximum(y_lo.abs(), x_prev.abs()), min=atol)
        error = float(torch.sqrt((((y_lo - y_hi) / delta) ** 2).mean()))
        inv_error = 1 / (error + 1e-8)
        errs = errs or [inv_error] * 3
        errs[0] = inv_error
        factor = 1 + math.atan(errs[0] ** b1 * errs[1] ** b2 * errs[2] ** b3 - 1)
        if factor >= accept_safety:
            errs[2], errs[1] = errs[1], errs[0]
            if eta > 0:  # back up to lam_next: the noise (where std > 0), then x at t_next
                noisy = draw is not None and std > 0
                x_hi = at(schedule.alpha, t_next) * (y_hi + (std * s_noise) * draw(x.shape) if noisy else y_hi)
            x, x_prev, t, lam = x_hi, y_lo, t_next, lam_next
        h *= factor
    if clean:
        x = _step(denoise, schedule, x, t, grid[-1], 1)
    return x
