"""DPM-Solver: exponential integrators of the probability-flow ODE in noise-prediction form.

Lu et al. (2022), "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps",
arXiv:2206.00927. The paper's s -> t is our t -> t_next. The model is read as eps_hat = (x - alpha x0_hat) / sigma
and the exact solution of the ODE's linear part in lam (eq. 3.4) is

    x_next = (alpha_next / alpha) x - alpha_next int_lam^lam_next e^{-l} eps_hat(l) dl,

which DPM-Solver-k approximates by a Taylor expansion of eps_hat in lam with k - 1 intermediate model calls
at times t_of_lam(lam + r h). Dividing by alpha, this form needs alpha > 0 at the start of every step. A step
onto a clean end (sigma_next = 0, lam_next = +inf) is the data-prediction (DDIM) step x_next = alpha_next x0_hat:
the noise-prediction integral has no finite form there, while the data-prediction one is exact.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.noise import as_noise_source
from diffspec.reference.samplers._info import VARIANT, Option, Requirement, SamplerInfo


def _setup(x_T, grid, schedule, sampler, *, min_len=2):
    grid = _checks.decreasing_grid(grid, schedule, min_len=min_len, sampler=sampler)
    if schedule.alpha(grid[0]) == 0:
        raise ValueError(
            f"grid[0]={grid[0]} has alpha = 0 (lam = -inf): {sampler} works in noise-prediction form and divides "
            "by alpha; start the grid at a time with alpha > 0 or use a DPM-Solver++ sampler"
        )
    return grid, _checks.finite_array("x_T", x_T)


def _model(denoise, x, t, schedule):
    """(eps_hat, x0_hat) at time t from the denoiser."""
    x0 = np.asarray(denoise(x, float(t)), dtype=np.float64)
    return (x - schedule.alpha(t) * x0) / schedule.sigma(t), x0


def _at(schedule, t):
    return schedule.alpha(t), schedule.sigma(t), schedule.lam(t)


def _update_1(schedule, x, t, t_next, eps):
    """DPM-Solver-1 (eq. 3.7), which is DDIM: x_next = (alpha_next/alpha) x - sigma_next expm1(h) eps."""
    (a, _, lam), (a_n, s_n, lam_n) = _at(schedule, t), _at(schedule, t_next)
    return (a_n / a) * x - s_n * np.expm1(lam_n - lam) * eps


def _update_2(denoise, schedule, x, t, t_next, eps, *, r1=0.5):
    """DPM-Solver-2 (Algorithm 1): one intermediate call at lam + r1 h. Returns (x_next, eps_1)."""
    (a, _, lam), (a_n, s_n, lam_n) = _at(schedule, t), _at(schedule, t_next)
    h = lam_n - lam
    t1 = float(schedule.t_of_lam(lam + r1 * h))
    a1, s1, _ = _at(schedule, t1)
    u1 = (a1 / a) * x - s1 * np.expm1(r1 * h) * eps
    eps1, _ = _model(denoise, u1, t1, schedule)
    x_next = (a_n / a) * x - s_n * np.expm1(h) * eps - s_n / (2 * r1) * np.expm1(h) * (eps1 - eps)
    return x_next, eps1


def _update_3(denoise, schedule, x, t, t_next, eps, *, eps1=None, r1=1 / 3, r2=2 / 3):
    """DPM-Solver-3 (Algorithm 2): intermediate calls at lam + r1 h and lam + r2 h (eps1 may be given)."""
    (a, _, lam), (a_n, s_n, lam_n) = _at(schedule, t), _at(schedule, t_next)
    h = lam_n - lam
    t1, t2 = (float(schedule.t_of_lam(lam + r * h)) for r in (r1, r2))
    (a1, s1, _), (a2, s2, _) = _at(schedule, t1), _at(schedule, t2)
    if eps1 is None:
        u1 = (a1 / a) * x - s1 * np.expm1(r1 * h) * eps
        eps1, _ = _model(denoise, u1, t1, schedule)
    D1 = eps1 - eps
    u2 = (a2 / a) * x - s2 * np.expm1(r2 * h) * eps - s2 * (r2 / r1) * (np.expm1(r2 * h) / (r2 * h) - 1) * D1
    eps2, _ = _model(denoise, u2, t2, schedule)
    return (a_n / a) * x - s_n * np.expm1(h) * eps - (s_n / r2) * (np.expm1(h) / h - 1) * (eps2 - eps)


def _step(denoise, schedule, x, t, t_next, order):
    """One singlestep DPM-Solver-`order` step; the data-prediction step onto a clean end."""
    eps, x0 = _model(denoise, x, t, schedule)
    if schedule.sigma(t_next) == 0:
        return schedule.alpha(t_next) * x0
    if order == 1:
        return _update_1(schedule, x, t, t_next, eps)
    if order == 2:
        return _update_2(denoise, schedule, x, t, t_next, eps)[0]
    return _update_3(denoise, schedule, x, t, t_next, eps)


def sample_dpm_solver_1(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver-1: the first-order exponential integrator in noise-prediction form (= DDIM).

    Lu et al. (2022), arXiv:2206.00927, eq. 3.7. With h = lam_next - lam and eps = (x - alpha x0_hat) / sigma:

        x_next = (alpha_next / alpha) x - sigma_next expm1(h) eps

    A step onto sigma_next = 0 returns alpha_next x0_hat (the same limit, without inf - inf).
    Model calls per step: 1. Noise draws: none (`noise` is accepted for a uniform signature). Order: 1.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpm_solver_1")
    grid, x = _setup(x_T, grid, schedule, "dpm_solver_1")
    for i in range(len(grid) - 1):
        x = _step(denoise, schedule, x, grid[i], grid[i + 1], 1)
    return x


def sample_dpm_solver_2(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver-2: singlestep, second order, one intermediate call at the lam-midpoint.

    Lu et al. (2022), arXiv:2206.00927, Algorithm 1 with r1 = 1/2. With s1 = t_of_lam(lam + h/2):

        u1     = (alpha_s1 / alpha) x - sigma_s1 expm1(h/2) eps
        x_next = (alpha_next / alpha) x - sigma_next expm1(h) eps - sigma_next expm1(h) (eps(u1, s1) - eps)

    A step onto sigma_next = 0 is the data-prediction step alpha_next x0_hat (1 call).
    Model calls per step: 2. Noise draws: none. Order: 2.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpm_solver_2")
    grid, x = _setup(x_T, grid, schedule, "dpm_solver_2")
    for i in range(len(grid) - 1):
        x = _step(denoise, schedule, x, grid[i], grid[i + 1], 2)
    return x


def sample_dpm_solver_3(denoise, x_T, grid, schedule, *, noise=None):
    """DPM-Solver-3: singlestep, third order, intermediate calls at lam + h/3 and lam + 2h/3.

    Lu et al. (2022), arXiv:2206.00927, Algorithm 2 with r1 = 1/3, r2 = 2/3:

        u1 = (alpha_1 / alpha) x - sigma_1 expm1(r1 h) eps,                          D1 = eps(u1) - eps
        u2 = (alpha_2 / alpha) x - sigma_2 expm1(r2 h) eps - sigma_2 (r2/r1) (expm1(r2 h)/(r2 h) - 1) D1
        x_next = (alpha_next / alpha) x - sigma_next expm1(h) eps - (sigma_next / r2) (expm1(h)/h - 1) (eps(u2) - eps)

    A step onto sigma_next = 0 is the data-prediction step alpha_next x0_hat (1 call).
    Model calls per step: 3. Noise draws: none. Order: 3.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpm_solver_3")
    grid, x = _setup(x_T, grid, schedule, "dpm_solver_3")
    for i in range(len(grid) - 1):
        x = _step(denoise, schedule, x, grid[i], grid[i + 1], 3)
    return x


def fast_orders(nfe):
    """The order mix of DPM-Solver-fast (Lu et al. 2022, Sec. 3.4 and their code): K = nfe // 3 + 1 steps,
    third order except the last one or two: [3]*(K-2) + [2, 1] when 3 | nfe, else [3]*(K-1) + [nfe % 3]."""
    nfe = _checks.integer("nfe", nfe, minimum=1)
    K = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (K - 2) + [2, 1]
    return [3] * (K - 1) + [nfe % 3]


def _eta_split(lam, lam_next, lam_end, eta):
    """k-diffusion's ancestral DPM-Solver step (`DPMSolver.dpm_solver_fast` / `dpm_solver_adaptive` with eta > 0).

    In sigma_ve = e^{-lam}: get_ancestral_step's sigma_up = min(s_next, eta s_next sqrt(1 - s_next^2 / s^2)) and
    sigma_down = sqrt(s_next^2 - sigma_up^2); the solver steps from lam to lam_down = min(lam_end, -log sigma_down)
    and noise of std sqrt(s_next^2 - e^{-2 lam_down}) brings the state back up to lam_next. Returns (lam_down, that
    std). Where the cap at lam_end does not bind, that std is sigma_up itself, and is returned as such: k-diffusion
    recomputes it as a difference of squares that cancels for small eta (at eta = 1e-15 it is rounding, ~1e-8
    s_next or 0, instead of ~1e-15 s_next). Where it binds, std = s_next sqrt(1 - e^{-2 (lam_end - lam_next)}).
    """
    s_next = np.exp(-lam_next)
    up = min(s_next, eta * s_next * np.sqrt(-np.expm1(2 * (lam - lam_next))))
    down = np.sqrt(s_next**2 - up**2)
    if down > 0 and -np.log(down) < lam_end:
        return float(-np.log(down)), float(up)
    return lam_end, float(s_next * np.sqrt(-np.expm1(2 * (lam_next - lam_end))))


def _ancestral_dpm_step(denoise, schedule, x, t, t_next, t_end, order, eta, s_noise, draw):
    """One step of k-diffusion's ancestral DPM-Solver (`_eta_split`): a DPM-Solver-`order` step from t to t_down,
    then y = x / alpha (sigma_ve's scale) gets s_noise std z and the state is read at t_next (x = alpha_next y)."""
    lam, lam_next, lam_end = float(schedule.lam(t)), float(schedule.lam(t_next)), float(schedule.lam(t_end))
    lam_down, std = _eta_split(lam, lam_next, lam_end, eta)
    t_down = t_end if lam_down == lam_end else float(schedule.t_of_lam(lam_down))
    y = _step(denoise, schedule, x, t, t_down, order) / schedule.alpha(t_down)
    if draw is not None and std > 0:
        y = y + std * s_noise * draw(x.shape)
    return schedule.alpha(t_next) * y


def sample_dpm_solver_fast(denoise, x_T, grid, schedule, *, noise=None, eta=0.0, s_noise=1.0):
    """DPM-Solver-fast: singlestep DPM-Solver-3 steps with lower orders at the end, for a budget of calls.

    Lu et al. (2022), arXiv:2206.00927, Sec. 3.4. The budget is the grid: NFE = len(grid) - 1 calls, one per
    interval, as a one-call-per-step sampler on the same grid would make. The orders are `fast_orders(NFE)` and
    a step of order k spans k consecutive grid intervals, so the outer times are a subset of the grid; on a grid
    uniform in lam (the paper's choice) the intermediate times lam + h/3, lam + 2h/3 are the skipped grid times.
    When grid[-1] is a clean end, the last interval is the data-prediction step alpha_next x0_hat and the mix is
    chosen for the other len(grid) - 2 calls.
    eta > 0 is k-diffusion's ancestral form (`sample_dpm_fast(eta=...)`, `_ancestral_step`): each step lands below
    its end time at lam_down (never past the last noisy time) and noise scaled by s_noise brings it back; the last
    noisy step adds none (its std is 0) and the clean step stays deterministic.
    Model calls per step: 1 per grid interval on average. Noise draws: none at eta = 0; with eta > 0 and
    s_noise > 0, one per step of the order mix with a positive std (every one but the last noisy step).
    Order: 2 globally (the final first- or second-order step sets it; the third-order steps dominate the error
    at practical budgets).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpm_solver_fast")
    grid, x = _setup(x_T, grid, schedule, "dpm_solver_fast")
    eta, s_noise = _checks.nonnegative("eta", eta), _checks.nonnegative("s_noise", s_noise)
    draw = as_noise_source(noise, sampler="dpm_solver_fast with eta > 0") if eta > 0 and s_noise > 0 else None
    clean = schedule.sigma(grid[-1]) == 0
    noisy = grid[:-1] if clean else grid
    if len(noisy) > 1:
        orders = fast_orders(len(noisy) - 1)
        outer = noisy[np.cumsum([0] + orders)]
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
    """sqrt(alpha^2 + sigma^2): x / this is the state of the variance-preserving process with the same lam."""
    return float(np.hypot(schedule.alpha(t), schedule.sigma(t)))


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
    """DPM-Solver-12 / -23 with adaptive step size: an embedded pair and error control in lam.

    Lu et al. (2022), arXiv:2206.00927, Sec. 3.4 and Algorithm 4 (their `dpm_solver_adaptive`). From (x, t) a trial
    step h in lam gives a lower-order x_lo (DPM-Solver-1 for order 2, DPM-Solver-2 with r1 = 1/3 for order 3) and a
    higher-order x_hi sharing its model calls (DPM-Solver-2 with r1 = 1/2, DPM-Solver-3). With
    delta = max(atol, rtol max(|x_lo|, |x_prev|)) and E = max over the batch of rms((x_hi - x_lo) / delta), the step
    is accepted when E <= 1, and h <- min(0.9 h E^{-1/order}, lam_end - lam); h starts at 0.05. One step size is
    shared by the batch (E is its worst sample), so nothing loops over samples.
    The tolerances are read in the variance-preserving scale: every state enters the error test divided by
    sqrt(alpha^2 + sigma^2) at its own time (x_lo and x_hi at t_next, x_prev at t), which is Lu et al.'s test
    unchanged on a VP schedule. Read in the raw scale of an alpha = 1 schedule (VE, EDM), |x_prev| ~ sigma is many
    times |x_lo| after a long step, so rtol |x_prev| would accept a step whose error is larger than its result; the
    VP-scaled test makes the accepted steps depend on lam alone, the same for every schedule with the same lam.
    Only grid[0] and grid[-1] are used; when grid[-1] is a clean end the integration stops at grid[-2] (the last
    noisy time) and a data-prediction step x = alpha_end x0_hat lands on grid[-1].
    variant="k-diffusion" is k-diffusion's `sample_dpm_adaptive` (at eta = 0) instead: a PID step-size controller
    (`h_init`, `pcoeff`, `icoeff`, `dcoeff`, `accept_safety`, defaults 0.05, 0, 1, 0, 0.81), its error read in
    sigma_ve's scale x / alpha over the whole batch at once, and the loop's end 1e-5 before lam_end
    (`_adaptive_k_diffusion`); with `eta` > 0 (default 0) its ancestral form, noise scaled by `s_noise` (default 1).
    Those seven options belong to that variant only. Its raw-scale test is why it is not the default: see above.
    Model calls per step: adaptive (order calls per trial step). Noise draws: none, but with variant="k-diffusion",
    eta > 0 and s_noise > 0 one per accepted step with a positive std (not the last). Order: `order`.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpm_solver_adaptive")
    grid, x = _setup(x_T, grid, schedule, "dpm_solver_adaptive")
    if order not in (2, 3):
        raise ValueError(f"order={order!r}: expected 2 (DPM-Solver-12) or 3 (DPM-Solver-23)")
    rtol, atol = _checks.positive("rtol", rtol), _checks.positive("atol", atol)
    pid = {"h_init": h_init, "pcoeff": pcoeff, "icoeff": icoeff, "dcoeff": dcoeff, "accept_safety": accept_safety}
    pid.update(eta=eta, s_noise=s_noise)
    if _checks.lookup({"diffspec": False, "k-diffusion": True}, variant, what="variant"):
        defaults = {"h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0, "accept_safety": 0.81}
        defaults.update(eta=0.0, s_noise=1.0)
        pid = {k: defaults[k] if v is None else v if k in ("eta", "s_noise") else float(v) for k, v in pid.items()}
        return _adaptive_k_diffusion(denoise, x, grid, schedule, noise=noise, order=order, rtol=rtol, atol=atol, **pid)
    for name, value in pid.items():
        if value is not None:
            raise ValueError(f"{name}={value!r}: an option of variant='k-diffusion' only; leave it None")
    clean = schedule.sigma(grid[-1]) == 0
    t_end = grid[-2] if clean else grid[-1]
    t, lam, lam_end, h = grid[0], schedule.lam(grid[0]), schedule.lam(t_end), 0.05
    x_prev = x / _vp_scale(schedule, t)
    while t > t_end:
        # Snap to t_end when lam + h is within rounding of lam_end: else t_of_lam may land one ulp above t_end and
        # cost a zero-length extra step.
        t_next = t_end if lam + h >= lam_end - 1e-12 * max(1.0, abs(lam_end)) else float(schedule.t_of_lam(lam + h))
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
        delta = np.maximum(atol, rtol * np.maximum(np.abs(x_lo / scale), np.abs(x_prev)))
        E = np.sqrt(np.mean(((x_hi - x_lo) / scale / delta).reshape(len(x), -1) ** 2, axis=1)).max()
        if E <= 1:
            x, x_prev, t, lam = x_hi, x_lo / scale, t_next, schedule.lam(t_next)
        h = min(0.9 * h * max(E, 1e-12) ** (-1 / order), lam_end - lam)
    if clean:
        x = _step(denoise, schedule, x, t_end, grid[-1], 1)
    return x


def _adaptive_k_diffusion(
    denoise, x, grid, schedule, *, noise, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety, eta, s_noise
):
    """k-diffusion's `DPMSolver.dpm_solver_adaptive` (Crowson), for any schedule.

    The same embedded pairs as `sample_dpm_solver_adaptive`; the step size comes from a PID controller on the error
    E = rms over every element of (y_lo - y_hi) / max(atol, rtol max(|y_lo|, |y_prev|)), y = x / alpha (sigma_ve's
    scale): with b1 = (p + i + d) / order, b2 = -(p + 2 d) / order, b3 = d / order and e_k = 1 / (E_k + 1e-8),
    factor = 1 + atan(e_0^b1 e_1^b2 e_2^b3 - 1) (history e_1, e_2 of accepted steps, all e_0 at the start), the
    step is accepted when factor >= accept_safety, and h <- h factor either way. The loop stops once lam is within
    1e-5 of lam_end; a clean grid[-1] is reached as in the default variant. With eta > 0 (k-diffusion's ancestral
    form, `_eta_split`) the trial pair steps to lam_down instead of lam_next, the error is read there, an accepted
    step adds std s_noise z (one draw where std > 0) and lands at lam_next, and the controller's order is 1.5.
    """
    h_init, accept_safety = _checks.positive("h_init", h_init), _checks.positive("accept_safety", accept_safety)
    eta, s_noise = _checks.nonnegative("eta", eta), _checks.nonnegative("s_noise", s_noise)
    draw = as_noise_source(noise, sampler="dpm_solver_adaptive with eta > 0") if eta > 0 and s_noise > 0 else None
    p = 1.5 if eta > 0 else order
    b1, b2, b3 = (pcoeff + icoeff + dcoeff) / p, -(pcoeff + 2 * dcoeff) / p, dcoeff / p
    clean = schedule.sigma(grid[-1]) == 0
    t_end = grid[-2] if clean else grid[-1]
    t, lam, lam_end, h = grid[0], float(schedule.lam(grid[0])), float(schedule.lam(t_end)), h_init
    x_prev, errs = x / schedule.alpha(t), []
    while lam < lam_end - 1e-5:
        lam_next = min(lam_end, lam + h)
        t_next = t_end if lam_next == lam_end else float(schedule.t_of_lam(lam_next))
        lam_down, std = _eta_split(lam, lam_next, lam_end, eta) if eta > 0 else (lam_next, 0.0)
        t_down = (
            t_next if lam_down == lam_next else t_end if lam_down == lam_end else float(schedule.t_of_lam(lam_down))
        )
        eps, _ = _model(denoise, x, t, schedule)
        if order == 2:
            x_lo = _update_1(schedule, x, t, t_down, eps)
            x_hi, _ = _update_2(denoise, schedule, x, t, t_down, eps, r1=0.5)
        else:
            x_lo, eps1 = _update_2(denoise, schedule, x, t, t_down, eps, r1=1 / 3)
            x_hi = _update_3(denoise, schedule, x, t, t_down, eps, eps1=eps1)
        alpha_down = schedule.alpha(t_down)
        y_lo, y_hi = x_lo / alpha_down, x_hi / alpha_down
        delta = np.maximum(atol, rtol * np.maximum(np.abs(y_lo), np.abs(x_prev)))
        error = float(np.sqrt(np.mean(((y_lo - y_hi) / delta) ** 2)))
        inv_error = 1 / (error + 1e-8)
        errs = errs or [inv_error] * 3
        errs[0] = inv_error
        factor = 1 + np.arctan(errs[0] ** b1 * errs[1] ** b2 * errs[2] ** b3 - 1)
        if factor >= accept_safety:
            errs[2], errs[1] = errs[1], errs[0]
            if eta > 0:  # back up to lam_next: the noise (where std > 0), then x at t_next
                noisy = draw is not None and std > 0
                x_hi = schedule.alpha(t_next) * (y_hi + std * s_noise * draw(x.shape) if noisy else y_hi)
            x, x_prev, t, lam = x_hi, y_lo, t_next, lam_next
        h *= factor
    if clean:
        x = _step(denoise, schedule, x, t, grid[-1], 1)
    return x


_A = frozenset({Requirement.ALPHA_START})


def _fast_draws(options):
    """None with eta > 0 and s_noise > 0: one draw per step of the order mix (but the last), which the grid sets."""
    return None if options["eta"] > 0 and options["s_noise"] > 0 else (0, 0)


def _adaptive_draws(options):
    """None for variant='k-diffusion' with eta > 0 and s_noise > 0 (one draw per accepted step), else none."""
    eta, s_noise = options["eta"] or 0.0, 1.0 if options["s_noise"] is None else options["s_noise"]
    return None if options["variant"] == "k-diffusion" and eta > 0 and s_noise > 0 else (0, 0)


INFO = [
    SamplerInfo("dpm_solver_1", sample_dpm_solver_1, order=1, stochastic=False, calls_per_step=1, requires=_A),
    SamplerInfo("dpm_solver_2", sample_dpm_solver_2, order=2, stochastic=False, calls_per_step=2, requires=_A),
    SamplerInfo("dpm_solver_3", sample_dpm_solver_3, order=3, stochastic=False, calls_per_step=3, requires=_A),
    SamplerInfo(
        "dpm_solver_fast",
        sample_dpm_solver_fast,
        order=2,
        stochastic=False,
        calls_per_step=1,
        requires=_A,
        adaptive=True,
        aliases=("dpm_fast",),
        draws=_fast_draws,
        options=dict(
            eta=Option(0.0, low=0.0, invalid=(-0.1, float("nan"))),  # k-diffusion's ancestral form
            s_noise=Option(1.0, low=0.0, invalid=(-1.0,)),
        ),
    ),
    SamplerInfo(
        "dpm_solver_adaptive",
        sample_dpm_solver_adaptive,
        order=3,
        stochastic=False,
        calls_per_step=None,
        requires=_A,
        adaptive=True,
        aliases=("dpm_adaptive",),
        options=dict(
            order=Option(3, choices=(2, 3), invalid=(1,)),
            rtol=Option(0.05, low=0.0, low_open=True, invalid=(0.0,)),
            atol=Option(0.0078, low=0.0, low_open=True, invalid=(-1.0,)),
            variant=VARIANT,
            **{
                k: Option(None, low=0.0, nullable=True)
                for k in ("h_init", "pcoeff", "icoeff", "dcoeff", "accept_safety", "eta", "s_noise")
            },
        ),
        draws=_adaptive_draws,
    ),
]
