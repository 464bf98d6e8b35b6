"""The DPM-Solver family: DPMSolverMultistep, DPMSolverSinglestep, DEISMultistep, UniPCMultistep."""

import math

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._config import (
    AlgorithmType,
    FinalSigmas,
    PredictionType,
    SigmaSpacing,
    SolverType,
    _float32,
    _no_custom_with_respacing,
    _one_of,
    _respace,
    _sigma_to_t,
    _spaced,
    diffusers_train_sigmas,
    parsed,
    schedule_from_config,
    sigma_spacing,
)
from diffspec.reference.interop._plan import DiffusersPlan, _threshold, _vp_x0_eps, _x0_eps_ab
from diffspec.reference.interop.flow import TimeShift, _time_shift
from diffspec.reference.schedules import Flow

# ---- DPM-Solver family: DPMSolverMultistep, DPMSolverSinglestep, DEIS, UniPC ------------------------------


def _dpm_sigmas(cfg, n, schedule, timesteps=None):
    """Timesteps (int64) and sigmas of the DPM-Solver family's set_timesteps (N + 1 spaced points, the last dropped;
    or Karras / exponential / beta / uniform-lambda sigmas mapped back to timesteps, which the model sees while the
    steps use the sigmas themselves, rounded to float32 as diffusers stores them). Custom `timesteps` (cast to
    int64) replace the spaced ones; the sigmas are interpolated at them."""
    train = diffusers_train_sigmas(cfg)
    if timesteps is not None:
        _no_custom_with_respacing(cfg, "timesteps")
        ts = np.asarray(_checks.finite_array("timesteps", timesteps)).astype(np.int64)
        sigmas = np.interp(ts, np.arange(len(train)), train)
        last = train[0] if parsed(cfg, "final_sigmas_type") == FinalSigmas.SIGMA_MIN else 0.0
        return ts, _float32(np.append(sigmas, last))
    _checks.integer("num_inference_steps", n, minimum=1, maximum=cfg["num_train_timesteps"])
    last = None
    if cfg.get("lambda_min_clipped", -np.inf) > -np.inf:  # DPMSolverMultistep: stop above the clipped lam
        T = cfg["num_train_timesteps"]
        with np.errstate(divide="ignore"):
            lam = schedule.lam(np.arange(T, dtype=np.float64))
        last = T - int(np.searchsorted(lam[::-1], cfg["lambda_min_clipped"]))
    ts = _spaced(cfg, n, dtype=np.float64, plus_one=True, last=last)
    multistep = cfg["_class_name"] == "DPMSolverMultistepScheduler"
    spacing = sigma_spacing(cfg)
    if spacing == SigmaSpacing.LINEAR:
        sigmas = np.interp(ts, np.arange(len(train)), train)
    else:
        # Lu et al. (2022)'s uniform-lambda steps (use_lu_lambdas) are geometric in sigma_ve between the training
        # ends, as the exponential sigmas are; Karras and beta sigmas are re-spaced between the same ends
        kind = SigmaSpacing.EXPONENTIAL if spacing == SigmaSpacing.LU_LAMBDAS else spacing
        sigmas = _respace(kind, train[-1], train[0], n)
        ts = _sigma_to_t(sigmas, np.log(train))
        # diffusers rounds the Karras and uniform-lambda timesteps (not for the cosine schedule in DPMSolverMultistep);
        # exponential and beta timesteps are cast to int64 unrounded, so a float32 value an ulp below an integer
        # (the top one, T - 1 exactly in float64) may truncate one lower there
        rounded = spacing in (SigmaSpacing.KARRAS, SigmaSpacing.LU_LAMBDAS)
        if rounded and not (multistep and cfg["beta_schedule"] == "squaredcos_cap_v2"):
            ts = ts.round()
    last = train[0] if parsed(cfg, "final_sigmas_type") == FinalSigmas.SIGMA_MIN else 0.0
    return ts.astype(np.int64), _float32(np.append(sigmas, last))


def _flow_sigmas(cfg, n, mu=None, sigmas=None):
    """Timesteps (int64) and sigmas of DPMSolverMultistep / UniPC with use_flow_sigmas (Sana, Wan): N sigmas of
    flow (alpha = 1 - sigma) from linspace(1, 1/T, N + 1) without its last point, shifted by flow_shift
    (s' = shift s / (1 + (shift - 1) s)); UniPC then stretches to shift_terminal and nudges a first sigma of 1 down
    by 1e-6. The model sees int64(T sigma). Final sigma: 0, or for sigma_min DPMSolverMultistep's
    sqrt((1 - abar_0) / abar_0) of the betas and UniPC's last flow sigma."""
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    unipc = cfg["_class_name"] == "UniPCMultistepScheduler"
    if unipc and sigma_spacing(cfg) == SigmaSpacing.KARRAS:
        # UniPC: Karras sigmas between the VP training sigmas' ends, converted to flow sigmas s / (1 + s) (the
        # flow sigma with the same SNR); the model sees int64(T s); a final sigma_min is the last of them
        # custom sigmas take the training table's place: Karras sigmas from sigmas[-1] to sigmas[0], len(sigmas) of
        # them (so decreasing custom sigmas give an increasing grid, as in diffusers)
        if sigmas is not None:
            train = _checks.finite_array("sigmas", sigmas).ravel()
            n = len(train)
        else:
            train = diffusers_train_sigmas(cfg)
        ve = _respace(SigmaSpacing.KARRAS, train[-1], train[0], _checks.integer("num_inference_steps", n, minimum=1))
        sig = ve / (ve + 1)
        last = sig[-1] if parsed(cfg, "final_sigmas_type") == FinalSigmas.SIGMA_MIN else 0.0
        return (sig * T).astype(np.int64), _float32(np.append(sig, last))
    if sigmas is not None:  # UniPC's custom flow sigmas: N of them, shifted like the default linspace
        sigmas = _checks.finite_array("sigmas", sigmas).ravel()
        n = len(sigmas)
    n = _checks.integer("num_inference_steps", n, minimum=1)
    dynamic = bool(cfg["use_dynamic_shifting"])
    if dynamic != (mu is not None):
        raise ValueError(f"mu={mu!r}: needed exactly when use_dynamic_shifting is on (it is {dynamic})")
    if dynamic and not unipc and cfg["time_shift_type"] != "exponential":
        raise ValueError(
            "config key 'time_shift_type': DPMSolverMultistep's mu needs 'exponential' (diffusers asserts)"
        )
    # DPMSolverMultistep: mu sets flow_shift = e^mu; UniPC: the time shift of FlowMatchEuler (`_time_shift`)
    shift = math.exp(mu) if dynamic and not unipc else _checks.positive("flow_shift", cfg["flow_shift"])
    s = np.linspace(1, 1 / T, n + 1) if sigmas is None else np.append(sigmas, 0.0)
    if unipc:
        if dynamic:
            sig = _time_shift(TimeShift(cfg["time_shift_type"]), float(mu), s[:-1])
        else:
            sig = shift * s[:-1] / (1 + (shift - 1) * s[:-1])
        if cfg["shift_terminal"]:
            one_minus = 1 - sig
            sig = 1 - one_minus / (one_minus[-1] / (1 - float(cfg["shift_terminal"])))
        if abs(sig[0] - 1) < 1e-6:
            sig[0] -= 1e-6
    else:
        s = 1.0 - s
        sig = np.flip(shift * s / (1 + (shift - 1) * s))[:-1].copy()
    ts = (sig * T).astype(np.int64)
    if parsed(cfg, "final_sigmas_type") == FinalSigmas.ZERO:
        last = 0.0
    elif unipc:
        last = sig[-1]
    else:
        last = float(diffusers_train_sigmas(cfg)[0])
    return ts, np.append(sig, last).astype(np.float32).astype(np.float64)


def _flow_of(s):
    """(alpha, sigma, lam) of flow matching at sigma = s: alpha = 1 - s, lam = log((1 - s) / s)."""
    with np.errstate(divide="ignore"):
        return 1.0 - s, s, np.log1p(-s) - np.log(s) if s > 0 else np.inf


def _vp_of(s):
    """(alpha, sigma, lam) of a VP process at sigma_ve = s; s = 0 gives (1, 0, inf) without warnings."""
    alpha = 1.0 / np.sqrt(s**2 + 1)
    with np.errstate(divide="ignore"):
        return alpha, s * alpha, -np.log(s) if s > 0 else np.inf


def _dpm_multistep_update(sig, of, algo, solver_type):
    """The DPM-Solver(++) multistep update of diffusers (orders 1-3, midpoint/heun, sde-dpmsolver++) for sigmas
    `sig` (sigma_ve), with `of(s)` -> (alpha, sigma, lam): VP (`_vp_of`) or EDM's alpha = 1 (`_edm_of`).

    Why not the reference's `samplers.dpm_solver_pp`: its 2M step is this update with "midpoint" (the same D0 +
    D1 / 2), but diffusers also has the "heun" forms, a third order whose D2 is built from three lam gaps, a
    noise-prediction SDE form of its own, and an order schedule per step (warm-up, lower_order_final,
    euler_at_final) that the reference samplers do not take; the update is written once here in diffusers'
    algebra, on diffusers' float32 sigmas, and serves DPMSolverMultistep, EDMDPMSolverMultistep and the variants."""

    def update(x, ms, i, k, z):
        a_t, s_t, l_t = of(sig[i + 1])
        a_0, s_0, l_0 = of(sig[i])
        if np.isinf(l_t):  # onto sigma = 0: the first-order data-prediction step returns x0 exactly
            return ms[-1]
        h = l_t - l_0
        m0 = ms[-1]
        if k == 1:
            D0, D1, D2 = m0, 0.0, 0.0
        else:
            l_1 = of(sig[i - 1])[2]
            r0 = (l_0 - l_1) / h
            D1_0 = (m0 - ms[-2]) / r0
            if k == 2:
                D0, D1, D2 = m0, D1_0, 0.0
            else:
                l_2 = of(sig[i - 2])[2]
                r1 = (l_1 - l_2) / h
                D1_1 = (ms[-2] - ms[-3]) / r1
                D0, D1, D2 = m0, D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1), (D1_0 - D1_1) / (r0 + r1)
        if algo == AlgorithmType.DPMSOLVER_PP:
            base = s_t / s_0 * x - a_t * np.expm1(-h) * D0
            if k == 2 and solver_type == SolverType.MIDPOINT:
                return base - 0.5 * a_t * np.expm1(-h) * D1
            return base + a_t * (np.expm1(-h) / h + 1.0) * D1 - a_t * ((np.expm1(-h) + h) / h**2 - 0.5) * D2
        if algo == AlgorithmType.DPMSOLVER:
            base = a_t / a_0 * x - s_t * np.expm1(h) * D0
            if k == 2 and solver_type == SolverType.MIDPOINT:
                return base - 0.5 * s_t * np.expm1(h) * D1
            return base - s_t * (np.expm1(h) / h - 1.0) * D1 - s_t * ((np.expm1(h) - h) / h**2 - 0.5) * D2
        if algo == AlgorithmType.SDE_DPMSOLVER:  # noise-prediction SDE (diffusers' own form; D's are eps differences)
            base = a_t / a_0 * x - 2.0 * s_t * np.expm1(h) * D0 + s_t * np.sqrt(np.expm1(2.0 * h)) * z
            if k == 1:
                return base
            if solver_type == SolverType.MIDPOINT:
                return base - s_t * np.expm1(h) * D1
            return base - 2.0 * s_t * (np.expm1(h) / h - 1.0) * D1
        # sde-dpmsolver++
        e2 = -np.expm1(-2.0 * h)
        base = s_t / s_0 * np.exp(-h) * x + a_t * e2 * D0 + s_t * np.sqrt(e2) * z
        if k == 2 and solver_type == SolverType.MIDPOINT:
            return base + 0.5 * a_t * e2 * D1
        return base + a_t * (e2 / (-2.0 * h) + 1.0) * D1 + a_t * ((e2 - 2.0 * h) / (2.0 * h) ** 2 - 0.5) * D2

    return update


def _multistep_order(cfg, order, i, N):
    """The order of step i of N in diffusers' DPM-Solver multistep schedulers: warm-up 1, 2, ...; first order on
    the last step (euler_at_final, lower_order_final below 15 steps, or a final sigma of zero) and at most second
    order on the one before (lower_order_final below 15 steps)."""
    final = i == N - 1 and (
        cfg["euler_at_final"]
        or (cfg["lower_order_final"] and N < 15)
        or parsed(cfg, "final_sigmas_type") == FinalSigmas.ZERO
    )
    second = i == N - 2 and cfg["lower_order_final"] and N < 15
    return 1 if (order == 1 or i < 1 or final) else 2 if (order == 2 or i < 2 or second) else 3


def _flow_x0_eps(pred, out, x, s):
    """(x0, eps) from the model output at flow sigma s (alpha = 1 - s), in diffusers' conversions for
    use_flow_sigmas: flow velocity v = eps - x0 (x0 = x - s v), or epsilon / sample / v_prediction with diffusers'
    alpha_t = 1 - s and sigma_t = s in its VP formulas (its v_prediction keeps x0 = alpha x - sigma out, which is
    the flow's own v only when alpha^2 + sigma^2 = 1)."""
    if PredictionType(pred) == PredictionType.FLOW:
        return x - s * out, x + (1.0 - s) * out
    return _x0_eps_ab(pred, out, x, 1.0 - s, s)


def _x0_eps(pred, out, x, s, flow, alpha, sigma):
    """(x0, eps) from the model output at grid sigma s with process coefficients (alpha, sigma): flow sigmas in
    `_flow_x0_eps`; on VP sigmas, flow_prediction as diffusers reads it, x0 = x - s out with s the grid's VE sigma
    sqrt((1 - abar) / abar) (it reads the velocity of x = (1 - s) x0 + s eps, which is not that process), the others
    in `_vp_x0_eps`."""
    if flow:
        return _flow_x0_eps(pred, out, x, s)
    if pred == PredictionType.FLOW:
        x0 = x - s * out
        return x0, (x - alpha * x0) / sigma
    return _vp_x0_eps(pred, out, x, alpha**2)


def _solver_output(pred, flow, of, data_pred, cfg):
    """convert(out, x, s): the model output at grid sigma s as the DPM-Solver family's update takes it (diffusers'
    convert_model_output): the (thresholded) x0 for data prediction, else eps, recomputed from the thresholded x0
    when thresholding is on."""

    def convert(out, x, s):
        alpha, sigma, _ = of(s)
        x0, eps = _x0_eps(pred, out, x, s, flow, alpha, sigma)
        if data_pred:
            return _threshold(x0, cfg)
        if cfg["thresholding"]:
            eps = (x - alpha * _threshold(x0, cfg)) / sigma
        return eps

    return convert


def _check_flow(cfg):
    """True for use_flow_sigmas (flow sigmas, alpha = 1 - sigma, with any prediction type; flow_prediction needs
    them)."""
    flow = bool(cfg["use_flow_sigmas"])
    spacing = sigma_spacing(cfg)
    unipc_karras = cfg["_class_name"] == "UniPCMultistepScheduler" and spacing == SigmaSpacing.KARRAS
    if flow and spacing != SigmaSpacing.LINEAR and not unipc_karras:
        raise ValueError(
            f"config key 'use_flow_sigmas'=True with {spacing.value} sigmas: diffusers re-spaces the VP training sigmas "
            "and steps with them as flow sigmas unconverted (alpha = 1 - sigma < 0 above sigma = 1): no counterpart "
            "(UniPC's Karras sigmas, which it converts to s / (1 + s), are reproduced)"
        )
    return flow


def _vp_or_flow_grid(cfg, n, *, mu=None, timesteps=None, sigmas=None):
    """The set-up the DPM-Solver family shares: with use_flow_sigmas (and a flow model) the flow sigmas of
    `_flow_sigmas` on a `Flow` schedule, else the VP sigmas of `_dpm_sigmas`; returns (flow, schedule, model
    timesteps, sigmas with the final one, `of`: sigma -> (alpha, sigma, lam) of that process)."""
    flow = _check_flow(cfg)
    if (mu is not None or cfg["use_dynamic_shifting"]) and not flow:
        raise ValueError("use_dynamic_shifting / mu: implemented with use_flow_sigmas only")
    if flow and timesteps is not None:
        if cfg["_class_name"] == "DPMSolverMultistepScheduler":
            raise ValueError(
                "timesteps with use_flow_sigmas: no result to reproduce; DPMSolverMultistepScheduler in diffusers "
                "0.42.1 fails on them (its flow grid is built from num_inference_steps, None with timesteps)"
            )
        timesteps = None  # DPMSolverSinglestep: diffusers keeps their count only and builds the flow grid of n steps
    if flow:
        ts, sig = _flow_sigmas(cfg, n, mu, sigmas)
        return True, Flow(shift=float(cfg["flow_shift"])), ts, sig, _flow_of
    schedule = schedule_from_config(cfg)
    ts, sig = _dpm_sigmas(cfg, n, schedule, timesteps=timesteps)
    return False, schedule, ts, sig, _vp_of


def _plan_dpm_multistep(cfg, n, opts, *, mu=None, timesteps=None):
    """DPM-Solver++ / DPM-Solver multistep (Lu et al. 2022, arXiv:2211.01095, Alg. 2; 2206.00927) as diffusers'
    DPMSolverMultistepScheduler: orders 1-3, "midpoint" or "heun" second-order variants, lower-order warm-up and
    final steps (lower_order_final below 15 steps, first order onto a final sigma of zero), and the SDE variant
    sde-dpmsolver++ (one draw per step, the last included). The model sees the rounded (Karras) timestep while
    the update uses the exact sigma. Custom `timesteps`: see `_dpm_sigmas`."""
    n, given_ts = _one_of(n, "timesteps", timesteps)
    flow, schedule, ts, sig, of = _vp_or_flow_grid(cfg, n, mu=mu, timesteps=given_ts)
    pred, algo, order = parsed(cfg, "prediction_type"), parsed(cfg, "algorithm_type"), cfg["solver_order"]
    N = len(ts)
    data_pred = algo in (AlgorithmType.DPMSOLVER_PP, AlgorithmType.SDE_DPMSOLVER_PP)
    sde = algo in (AlgorithmType.SDE_DPMSOLVER, AlgorithmType.SDE_DPMSOLVER_PP)
    if pred == PredictionType.FLOW and not data_pred:
        raise ValueError(f"config key 'algorithm_type'={algo!r} with flow_prediction: diffusers rejects it too")
    if algo == AlgorithmType.SDE_DPMSOLVER and order == 3:
        raise ValueError(
            "config key 'solver_order'=3 with algorithm_type='sde-dpmsolver': diffusers has no such update"
        )
    if not data_pred and parsed(cfg, "final_sigmas_type") == FinalSigmas.ZERO:
        raise ValueError(
            f"config key 'algorithm_type'={algo!r} with final_sigmas_type='zero': diffusers rejects it too "
            "(the noise-prediction update is 0 * inf at sigma = 0); use final_sigmas_type='sigma_min'"
        )

    convert = _solver_output(pred, flow, of, data_pred, cfg)

    update = _dpm_multistep_update(sig, of, algo, parsed(cfg, "solver_type"))

    def run(model, x, draw):
        ms = []
        for i, t in enumerate(ts):
            ms = (ms + [convert(model(x, t), x, sig[i])])[-order:]
            k = _multistep_order(cfg, order, i, N)
            z = draw(x.shape) if sde else None
            if z is not None and np.isinf(of(sig[i + 1])[2]):
                x = ms[-1]
            else:
                x = update(x, ms, i, k, z)
        return x

    return DiffusersPlan(
        "DPMSolverMultistepScheduler",
        cfg,
        schedule,
        ts,
        1.0,
        run,
        sigmas=sig,
        stochastic=sde,
    )


def _singlestep_orders(order, n, lower_order_final, final_zero):
    """diffusers' DPMSolverSinglestepScheduler.get_order_list: the order of each step, in repeating groups 1, 2, ..
    (a group of order k spans k steps and restarts from the sample at its first step)."""
    if lower_order_final:
        if order == 3:
            tail = {0: [1, 2, 1], 1: [1], 2: [1, 2]}[n % 3]
            orders = [1, 2, 3] * (n // 3 - (1 if n % 3 == 0 else 0)) + tail
        elif order == 2:
            orders = [1, 2] * (n // 2 - 1) + [1, 1] if n % 2 == 0 else [1, 2] * (n // 2) + [1]
        else:
            orders = [1] * n
    else:
        orders = {1: [1], 2: [1, 2], 3: [1, 2, 3]}[order] * (n // order)
    if final_zero:
        orders[-1] = 1
    return orders


def _plan_dpm_singlestep(cfg, n, opts, *, timesteps=None, mu=None):
    """Singlestep DPM-Solver / DPM-Solver++ (Lu et al. 2022, arXiv:2206.00927 Alg. 1; arXiv:2211.01095 Alg. 1) as
    diffusers' DPMSolverSinglestepScheduler: steps in groups of orders 1, 2, 3 (`_singlestep_orders`); a group of
    order k goes from the sample at grid[i - k + 1] to grid[i + 1] with the k model values of the group, so the
    intermediate points of the paper's singlestep solver are the grid points themselves (the paper places them at
    r = 1/2 or 1/3, 2/3 of the step in lambda). Third order with solver_type="midpoint" uses only D1 = (m0 - m2)/r0
    (the paper's DPM-Solver-3 form); "heun" adds the D2 term. sde-dpmsolver++ draws one array per step, the last
    included. Timesteps: N + 1 linspace points, the last dropped (no timestep_spacing key); Karras sigmas are
    mapped to rounded timesteps while the updates use the exact sigmas.

    diffusers forces lower_order_final=True when N is not a multiple of solver_order or the final sigma is zero
    (the default), and so does this plan. Departure kept out: with algorithm_type="dpmsolver" and thresholding,
    diffusers 0.42.1 indexes alpha_t with timestep None (a shape error): rejected here. Custom `timesteps`: see
    `_dpm_sigmas`. use_flow_sigmas (with flow_prediction, and mu with use_dynamic_shifting): the flow sigmas of
    DPMSolverMultistep (`_flow_sigmas`), stepped with alpha = 1 - sigma."""
    cfg = {**cfg, "timestep_spacing": "linspace"}
    n, given_ts = _one_of(n, "timesteps", timesteps)
    flow, schedule, ts, sig, of = _vp_or_flow_grid(cfg, n, mu=mu, timesteps=given_ts)
    pred, algo, order = parsed(cfg, "prediction_type"), parsed(cfg, "algorithm_type"), cfg["solver_order"]
    algo = AlgorithmType.DPMSOLVER_PP if algo == AlgorithmType.DEIS else algo  # diffusers' own alias
    solver_type = parsed(cfg, "solver_type")
    solver_type = (
        SolverType.MIDPOINT if solver_type in (SolverType.LOGRHO, SolverType.BH1, SolverType.BH2) else solver_type
    )
    final_zero = parsed(cfg, "final_sigmas_type") == FinalSigmas.ZERO
    if algo == AlgorithmType.DPMSOLVER and final_zero:
        raise ValueError(
            f"config key 'algorithm_type'={algo!r} with final_sigmas_type='zero': diffusers rejects it too "
            "(the noise-prediction update is 0 * inf at sigma = 0); use final_sigmas_type='sigma_min'"
        )
    if algo == AlgorithmType.DPMSOLVER and cfg["thresholding"]:
        raise ValueError(
            "config key 'thresholding'=True with algorithm_type='dpmsolver': no result to reproduce; "
            "DPMSolverSinglestepScheduler in diffusers 0.42.1 indexes alpha_t with timestep None, so its result "
            "broadcasts against every training step and is not of the sample's shape"
        )
    lower_final = cfg["lower_order_final"] or n % order != 0 or final_zero
    orders = _singlestep_orders(order, n, lower_final, final_zero)
    data_pred = algo != AlgorithmType.DPMSOLVER

    if pred == PredictionType.FLOW and algo == AlgorithmType.DPMSOLVER:
        raise ValueError(f"config key 'algorithm_type'={algo!r} with flow_prediction: diffusers rejects it too")

    convert = _solver_output(pred, flow, of, data_pred, cfg)  # thresholding with dpmsolver is refused above

    def update(x, ms, i, k, z):
        a_t, s_t, l_t = of(sig[i + 1])
        a_s, s_s, l_s = of(sig[i - k + 1])
        if np.isinf(l_t):  # onto sigma = 0 (k = 1): the data-prediction step returns x0 exactly
            return ms[-1]
        h = l_t - l_s
        if k == 1:
            D0, D1, D1_1, D2 = ms[-1], 0.0, 0.0, 0.0
        elif k == 2:
            r0 = (of(sig[i])[2] - l_s) / h
            D0, D1, D1_1, D2 = ms[-2], (ms[-1] - ms[-2]) / r0, 0.0, 0.0
        else:
            r0, r1 = (of(sig[i])[2] - l_s) / h, (of(sig[i - 1])[2] - l_s) / h
            D0 = ms[-3]
            D1_0, D1_1 = (ms[-2] - ms[-3]) / r1, (ms[-1] - ms[-3]) / r0
            D1, D2 = (r0 * D1_0 - r1 * D1_1) / (r0 - r1), 2.0 * (D1_1 - D1_0) / (r0 - r1)
        mid = solver_type == SolverType.MIDPOINT
        if algo == AlgorithmType.DPMSOLVER_PP:
            phi1, phi2, phi3 = np.expm1(-h), np.expm1(-h) / h + 1.0, (np.expm1(-h) + h) / h**2 - 0.5
            x_t = s_t / s_s * x - a_t * phi1 * D0
            if k == 2:
                return x_t - 0.5 * a_t * phi1 * D1 if mid else x_t + a_t * phi2 * D1
            if k == 3:
                return x_t + a_t * phi2 * D1_1 if mid else x_t + a_t * phi2 * D1 - a_t * phi3 * D2
            return x_t
        if algo == AlgorithmType.DPMSOLVER:
            phi1, phi2, phi3 = np.expm1(h), np.expm1(h) / h - 1.0, (np.expm1(h) - h) / h**2 - 0.5
            x_t = a_t / a_s * x - s_t * phi1 * D0
            if k == 2:
                return x_t - 0.5 * s_t * phi1 * D1 if mid else x_t - s_t * phi2 * D1
            if k == 3:
                return x_t - s_t * phi2 * D1_1 if mid else x_t - s_t * phi2 * D1 - s_t * phi3 * D2
            return x_t
        e2 = -np.expm1(-2.0 * h)  # sde-dpmsolver++
        phi2, phi3 = e2 / (-2.0 * h) + 1.0, (e2 - 2.0 * h) / (2.0 * h) ** 2 - 0.5
        x_t = s_t / s_s * np.exp(-h) * x + a_t * e2 * D0 + s_t * np.sqrt(e2) * z
        if k == 2:
            return x_t + 0.5 * a_t * e2 * D1 if mid else x_t + a_t * phi2 * D1
        if k == 3:
            return x_t + a_t * phi2 * D1_1 if mid else x_t + a_t * phi2 * D1 + a_t * phi3 * D2
        return x_t

    def run(model, x, draw):
        ms, x_start = [], x
        for i, t in enumerate(ts):
            ms = (ms + [convert(model(x, t), x, sig[i])])[-order:]
            k = min(orders[i], len(ms))
            if k == 1:
                x_start = x
            z = draw(x.shape) if algo == AlgorithmType.SDE_DPMSOLVER_PP else None
            x = update(x_start, ms, i, k, z)
        return x

    return DiffusersPlan(
        "DPMSolverSinglestepScheduler",
        cfg,
        schedule,
        ts,
        1.0,
        run,
        sigmas=sig,
        stochastic=algo == AlgorithmType.SDE_DPMSOLVER_PP,
    )


def _deis_coefficients(rho_t, rho_s):
    """DEIS log-rho coefficients (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
    Integrator", arXiv:2204.13902, eq. 15 with the polynomial in log rho): c_j = int_{rho_s[0]}^{rho_t} L_j(log rho)
    d rho, L_j the Lagrange basis through (log rho_s[0], log rho_s[1], ...), in diffusers' closed forms."""
    logs = [np.log(r) for r in rho_s]
    if len(rho_s) == 2:

        def ind(r, b, c):  # an antiderivative of (log r - c) / (b - c)
            return r * (np.log(r) - c - 1) / (b - c)

        b, c = logs
        return [ind(rho_t, b, c) - ind(rho_s[0], b, c), ind(rho_t, c, b) - ind(rho_s[0], c, b)]

    def ind3(r, b, c, d):  # an antiderivative of (log r - c)(log r - d) / ((b - c)(b - d))
        lr = np.log(r)
        return r * (c * (d - lr + 1) - d * lr + d + lr**2 - 2 * lr + 2) / ((b - c) * (b - d))

    b, c, d = logs
    return [
        ind3(rho_t, b, c, d) - ind3(rho_s[0], b, c, d),
        ind3(rho_t, c, d, b) - ind3(rho_s[0], c, d, b),
        ind3(rho_t, d, b, c) - ind3(rho_s[0], d, b, c),
    ]


def _rho_float32(s, flow=False):
    """DEIS's rho = sigma_t / alpha_t at sigma_ve = s, as diffusers computes it in float32 (alpha = (s^2 + 1)^(-1/2),
    sigma = s alpha, then their ratio). The log-rho coefficients of orders 2-3 are differences of closed forms that
    cancel when the nodes are close (beta sigmas crowd both ends), so diffusers' float32 coefficients are off by up
    to ~1e-3 relatively; with float32 rhos `_deis_coefficients` keeps numpy in float32 and reproduces them."""
    s = np.float32(s)
    if flow:  # flow sigmas: alpha = 1 - sigma
        return s / (np.float32(1) - s)
    alpha = np.float32(1) / np.sqrt(s * s + np.float32(1))
    return (s * alpha) / alpha


def _plan_deis(cfg, n, opts, *, mu=None):
    """DEIS multistep in its log-rho form (Zhang & Chen 2023, arXiv:2204.13902, Sec. 4, "tAB-DEIS" with rho =
    sigma / alpha = sigma_ve) as diffusers' DEISMultistepScheduler: eps-form exponential integrator,
    x_t = alpha_t (x / alpha_s + sum_j c_j eps_j), orders 1-3 with the DPM-Solver warm-up and lower_order_final
    (below 15 steps); order 1 is DDIM. Thresholding acts on x0 before it is turned back into eps.

    Departures reproduced: the last step never reaches the clean end, it lands on sigma(t = 0) (alphabar[0]); with
    Karras, exponential or beta sigmas the final sigma *repeats* the last one, so the last model call changes nothing
    and the result is x at sigma_min of that grid. algorithm_type "dpmsolver"/"dpmsolver++" and solver_type
    "midpoint"/"heun"/"bh1"/"bh2" are renamed to "deis"/"logrho" by diffusers itself, and so here. use_flow_sigmas
    (with flow_prediction, and mu with use_dynamic_shifting): DPMSolverMultistep's flow sigmas (`_flow_sigmas`), the
    last repeated, with alpha = 1 - sigma and rho = sigma / (1 - sigma)."""
    flow, schedule, ts, sig, of = _vp_or_flow_grid({**cfg, "final_sigmas_type": "sigma_min"}, n, mu=mu)
    if flow or sigma_spacing(cfg) != SigmaSpacing.LINEAR:  # flow, Karras, exponential, beta: the last one repeated
        sig[-1] = sig[-2]
    pred, order, N = cfg["prediction_type"], cfg["solver_order"], len(ts)

    def eps_of(out, x, s):
        alpha, sigma, _ = of(s)
        x0, eps = _x0_eps(pred, out, x, s, flow, alpha, sigma)
        if pred == PredictionType.FLOW and not flow:  # diffusers' flow branch has replaced sigma_t by s
            eps = (x - alpha * _threshold(x0, cfg)) / s
        elif cfg["thresholding"] or flow:
            eps = (x - alpha * _threshold(x0, cfg)) / sigma
        return eps

    def update(x, es, i, k):
        a_t, s_t, l_t = of(sig[i + 1])
        a_s, _, l_s = of(sig[i])
        if k == 1:
            return a_t / a_s * x - s_t * np.expm1(l_t - l_s) * es[-1]
        rho_t, rho_s = _rho_float32(sig[i + 1], flow), [_rho_float32(sig[i - j], flow) for j in range(k)]
        coefs = _deis_coefficients(rho_t, rho_s)
        return a_t * (x / a_s + sum(np.float64(c) * es[-1 - j] for j, c in enumerate(coefs)))

    def run(model, x, draw):
        es = []
        for i, t in enumerate(ts):
            es = (es + [eps_of(model(x, t), x, sig[i])])[-order:]
            low = cfg["lower_order_final"] and N < 15
            k = (
                1
                if (order == 1 or i < 1 or (low and i == N - 1))
                else 2
                if (order == 2 or i < 2 or (low and i == N - 2))
                else 3
            )
            x = update(x, es, i, k)
        return x

    return DiffusersPlan("DEISMultistepScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig, stochastic=False)


def _unipc_coefficients(rks, hh, order, solver_type):
    """UniPC's B(h) and b_k (Zhao et al. 2023, arXiv:2302.04867, Alg. 1-2, the phi functions of -h)."""
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    B_h = hh if solver_type == SolverType.BH1 else np.expm1(hh)
    R, b = [], []
    for i in range(1, order + 1):
        R.append(np.power(rks, i - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, B_h, np.array(R), np.array(b)


def _plan_unipc(cfg, n, opts, *, mu=None, sigmas=None):
    """UniPC (Zhao et al. 2023, "UniPC", arXiv:2302.04867): UniP-p predictor + UniC corrector in data-prediction
    form, as diffusers' UniPCMultistepScheduler (bh1/bh2, lower_order_final, disable_corrector). The corrector
    at step i re-uses the model call of step i (no extra call); the last predictor step is not corrected.
    Departure kept out: with solver_type="bh1" and a final sigma of zero diffusers 0.42.1 returns NaN
    (B(h) = h = -inf times a zero correction); the plan returns that step's limit, x0. Custom `sigmas` (flow sigmas,
    with use_flow_sigmas): see `_flow_sigmas`. thresholding acts on x0 with predict_x0=True; diffusers ignores it
    with predict_x0=False, and so does the plan."""
    if sigmas is not None and not cfg["use_flow_sigmas"]:
        raise ValueError(
            "sigmas: UniPC takes custom sigmas with use_flow_sigmas only (diffusers refuses them otherwise)"
        )
    flow, schedule, ts, sig, of = _vp_or_flow_grid(cfg, n, mu=mu, sigmas=sigmas)
    pred, order, N = cfg["prediction_type"], cfg["solver_order"], len(ts)
    disabled = set(cfg["disable_corrector"])
    lams = [of(s)[2] for s in sig]
    # predict_x0=False: UniPC in noise-prediction form (m = eps, the phi functions of +h, sigma and alpha swapped)
    px0 = bool(cfg["predict_x0"])
    if flow and (pred == PredictionType.EPSILON or not px0):
        raise ValueError(
            f"config key 'prediction_type'={pred!r} with predict_x0={px0} and use_flow_sigmas=True: no reproducible "
            "result; diffusers nudges UniPC's first flow sigma to 1 - 1e-6, so alpha_t = 1e-6 divides the float32 "
            "x - sigma_t eps (the noise form scales by alpha_t / alpha_0 alike) and its result is float32 rounding "
            "magnified a million times, far from the same denoiser's with sample prediction; sample, v_prediction "
            "and flow_prediction with predict_x0=True are reproduced"
        )
    if not px0 and pred == PredictionType.FLOW:
        raise ValueError(
            "config key 'predict_x0'=False with prediction_type='flow_prediction': diffusers rejects it too (its "
            "noise-prediction form reads epsilon, sample or v_prediction only)"
        )
    if not px0 and sig[-1] == 0:
        raise ValueError(
            "config key 'predict_x0'=False with a final sigma of zero: the noise-prediction update onto sigma = 0 is "
            "0 * inf, NaN in diffusers too; use final_sigmas_type='sigma_min'"
        )

    def lin(a_t, s_t, a_0, s_0, x, h_phi_1, m0):
        """The exact linear part, and the weight of the model terms (alpha_t or sigma_t)."""
        if px0:
            return s_t / s_0 * x - a_t * h_phi_1 * m0, a_t
        return a_t / a_0 * x - s_t * h_phi_1 * m0, s_t

    def predictor(x, ms, i, k):
        a_t, s_t, l_t = of(sig[i + 1])
        a_0, s_0, l_0 = of(sig[i])
        m0 = ms[-1]
        if np.isinf(l_t):
            if k != 1:
                raise ValueError("UniPC above order 1 onto sigma = 0 is undefined (diffusers gives NaN)")
            return m0
        h = l_t - l_0
        if h == 0:  # flow sigmas with final_sigmas_type="sigma_min" repeat the last sigma: a zero-length step
            return x
        rks = [(lams[i - j] - l_0) / h for j in range(1, k)] + [1.0]
        D1s = [(ms[-(j + 1)] - m0) / rks[j - 1] for j in range(1, k)]
        h_phi_1, B_h, R, b = _unipc_coefficients(np.array(rks), -h if px0 else h, k, parsed(cfg, "solver_type"))
        x_t, w = lin(a_t, s_t, a_0, s_0, x, h_phi_1, m0)
        if D1s:
            rhos = np.array([0.5]) if k == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
            x_t = x_t - w * B_h * sum(r * d for r, d in zip(rhos, D1s))
        return x_t

    def corrector(x_last, ms, m_new, i, k):
        a_t, s_t, l_t = of(sig[i])
        a_0, s_0, l_0 = of(sig[i - 1])
        m0 = ms[-1]
        h = l_t - l_0
        rks = [(lams[i - 1 - j] - l_0) / h for j in range(1, k)] + [1.0]
        D1s = [(ms[-(j + 1)] - m0) / rks[j - 1] for j in range(1, k)]
        h_phi_1, B_h, R, b = _unipc_coefficients(np.array(rks), -h if px0 else h, k, parsed(cfg, "solver_type"))
        rhos = np.array([0.5]) if k == 1 else np.linalg.solve(R, b)
        corr = sum(r * d for r, d in zip(rhos[:-1], D1s)) if D1s else 0.0
        x_t, w = lin(a_t, s_t, a_0, s_0, x_last, h_phi_1, m0)
        return x_t - w * B_h * (corr + rhos[-1] * (m_new - m0))

    def run(model, x, draw):
        ms, x_last, k_prev = [], None, 0
        for i, t in enumerate(ts):
            alpha, sigma, _ = of(sig[i])
            out = model(x, t)
            x0, eps = _x0_eps(pred, out, x, sig[i], flow, alpha, sigma)
            m = _threshold(x0, cfg) if px0 else eps  # diffusers thresholds only in data-prediction form
            if i > 0 and (i - 1) not in disabled and x_last is not None:
                x = corrector(x_last, ms, m, i, k_prev)
            ms = (ms + [m])[-order:]
            k = min(order, N - i)  # lower_order_final
            k = min(k, i + 1)  # warm-up
            x_last, k_prev = x, k
            x = predictor(x, ms, i, k)
        return x

    return DiffusersPlan("UniPCMultistepScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig, stochastic=False)
