"""Variants of DPM-Solver++ in diffusers: CogVideoXDPMScheduler, DPMSolverMultistepInverseScheduler and
CosineDPMSolverMultistepScheduler.

All three step with the DPM-Solver(++) multistep arithmetic of `dpm_solver._dpm_multistep_update` (Lu et al. 2022,
"DPM-Solver++", arXiv:2211.01095, Alg. 2, and its SDE form SDE-DPM-Solver++) on their own grids:

- CogVideoXDPM: SDE-DPM-Solver++(2M) (midpoint form) on CogVideoX's SNR-shifted betas (`ddpm.snr_shifted_schedule`),
  stepping like DDIM to t - T // N while the multistep ratio r = h_prev / h uses the previous *grid* time;
- DPMSolverMultistepInverse: the multistep solver run from data to noise (an ODE inversion for editing), timesteps
  increasing to the "noisiest" one;
- CosineDPMSolverMultistep: SDE-DPM-Solver++ (orders 1-2) on EDM's alpha = 1 process with Stable Audio's
  preconditioning (c_noise = atan(sigma) 2 / pi), its Brownian-tree noise replayed as one draw per step.
"""

import math

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._config import (
    AlgorithmType,
    PredictionType,
    SigmaSpacing,
    SolverType,
    TimestepSpacing,
    _respace,
    _sigma_to_t,
    _spaced,
    parsed,
    schedule_from_config,
    sigma_spacing,
)
from diffspec.reference.interop._plan import DiffusersPlan, _vp_x0_eps
from diffspec.reference.interop.ddpm import snr_shifted_schedule
from diffspec.reference.interop.dpm_solver import (
    _check_flow,
    _dpm_multistep_update,
    _flow_of,
    _multistep_order,
    _solver_output,
    _vp_of,
)
from diffspec.reference.interop.edm import _edm_of, _edm_schedule, _edm_x0
from diffspec.reference.schedules import Flow

# ---- CogVideoXDPMScheduler ----------------------------------------------------------------------------------


def _abar_of(abar):
    """(alpha, sigma, lam) of a VP process at alphabar = abar; abar = 0 gives (0, 1, -inf) and abar = 1 (1, 0, inf)."""
    log_abar = math.log(abar) if abar > 0 else -math.inf
    log_one_minus = math.log1p(-abar) if abar < 1 else -math.inf
    return math.sqrt(abar), math.sqrt(1.0 - abar), 0.5 * (log_abar - log_one_minus)


def _plan_cogvideox_dpm(cfg, n, opts):
    """CogVideoX's DPM scheduler: SDE-DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, the SDE solver
    in its multistep midpoint form) on `snr_shifted_schedule` (abar' = abar / (s + (1 - s) abar), s =
    snr_shift_scale, then the optional zero-terminal-SNR rescale), as diffusers' CogVideoXDPMScheduler steps it in
    the CogVideoX pipeline loop (`step(out, old_x0, t, t_back, x)` with t_back the previous grid time):

        x_next = (sigma_next / sigma) e^{-h} x + alpha_next (1 - e^{-2h}) D + sigma_next sqrt(1 - e^{-2h}) z
        D = x0 on the first step and onto a timestep below 0, else (1 + 1/(2r)) x0 - 1/(2r) x0_prev

    with h = lam_next - lam and r = (lam - lam_back) / h.

    Departures reproduced: like DDIM the next time is t - T // N whatever the spacing (below 0: alphabar 1 with
    set_alpha_to_one, else alphabar[0]) while r is measured to the previous grid time, so with "linspace" or
    "trailing" the two need not be one grid interval apart; every step draws one array and every second-order
    step draws a second one that replaces it (the first is thrown away), so N steps take N + (number of
    second-order steps) draws. The step option `eta` (which the pipeline passes) is ignored by diffusers, and
    here; clip_sample, clip_sample_range and sample_max_value are read by __init__ and never by `step`. From t = 0
    with set_alpha_to_one=False the last step lands on alphabar[0] itself: a step of length zero. alphabar is
    diffusers' own (`_cogvideox_alphas_cumprod`: float32 unless the betas are "scaled_linear"). Rejected: epsilon
    prediction from a timestep of zero SNR (x0 = (x - eps) / 0).
    Model calls per step: 1. Noise draws: as above, in that order."""
    _checks.nonnegative("eta", opts.get("eta", 0.0))
    schedule = snr_shifted_schedule(cfg)
    abar = _cogvideox_alphas_cumprod(cfg)
    T = cfg["num_train_timesteps"]
    _checks.integer("num_inference_steps", n, minimum=1, maximum=T)
    ts = _spaced(cfg, n, dtype=np.int64)
    final = 1.0 if cfg["set_alpha_to_one"] else float(abar[0])
    pred = parsed(cfg, "prediction_type")
    if pred == PredictionType.EPSILON and abar[ts[0]] == 0:
        raise ValueError(
            f"config key 'prediction_type'={pred!r} with rescale_betas_zero_snr=True and a first timestep of "
            f"{ts[0]}: alphabar is 0 there, so x0 = (x - eps) / 0 (NaN in diffusers too); use v_prediction or sample"
        )

    def run(model, x, draw):
        x0_prev = None
        for i, t in enumerate(ts):
            prev = t - T // n
            a_t, a_next = float(abar[t]), (float(abar[prev]) if prev >= 0 else final)
            x0 = _vp_x0_eps(pred, model(x, t), x, a_t)[0]
            second = x0_prev is not None and prev >= 0
            points = [float(abar[ts[i - 1]]) if i > 0 else a_t, a_t, a_next]
            z = draw(x.shape)
            if second:
                z = draw(x.shape)
            update = _dpm_multistep_update(points, _abar_of, "sde-dpmsolver++", "midpoint")
            if a_t == 0:  # from zero SNR (lam = -inf, h = inf) the step is the limit alpha_next x0 + sigma_next z
                x = math.sqrt(a_next) * x0 + math.sqrt(1.0 - a_next) * z
            elif a_next == a_t:  # t = 0 onto alphabar[0] (set_alpha_to_one=False): a step of length zero
                pass
            else:
                x = update(x, [x0_prev, x0] if second else [x0], 1, 2 if second else 1, z)
            x0_prev = x0
        return x

    return DiffusersPlan("CogVideoXDPMScheduler", cfg, schedule, ts, 1.0, run, stochastic=True)


# ---- DPMSolverMultistepInverseScheduler ---------------------------------------------------------------------


def _float32_train_sigmas(schedule):
    """sigma_ve = sqrt((1 - abar) / abar) at the training timesteps as diffusers computes it: float32 betas, alphas
    1 - beta in float32, their cumulative product accumulated in float64 and stored in float32 (torch's cumprod on
    CPU), sigma in float32. Reproduced, not corrected: near t = 0, 1 - abar ~ 1e-4 keeps ~3 digits, which moves the
    Karras and exponential ranges (whose ends are these values) by ~1e-3 relative; near t = T - 1 abar carries the
    cumulated rounding of its betas (1e-5 relative for the cosine schedule), which the conversion of an epsilon
    prediction to x0 amplifies by 1 / alpha."""
    abar = _float32_alphas_cumprod(schedule).astype(np.float32)
    return np.sqrt((np.float32(1) - abar) / abar).astype(np.float64)


def _float32_alphas_cumprod(schedule):
    """alphabar as diffusers stores it for float32 betas: 1 - beta in float32, the product accumulated in float64
    (torch's cumprod on CPU), rounded to float32."""
    alphas = np.float32(1) - schedule.betas().astype(np.float32)
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32).astype(np.float64)


def _cogvideox_alphas_cumprod(cfg):
    """CogVideoXDPM's alphabar as diffusers computes it: the betas' alphabar (float64 for "scaled_linear", else float32
    as diffusers builds it) shifted by snr_shift_scale, abar / (s + (1 - s) abar), then optionally rescaled to zero
    terminal SNR (Lin et al. 2023, Alg. 1: sqrt(abar) shifted to end at 0 and scaled to keep its first value), each
    in the precision of that alphabar."""
    base = schedule_from_config({**cfg, "rescale_betas_zero_snr": False})
    exact = cfg["beta_schedule"] == "scaled_linear" and cfg["trained_betas"] is None
    dtype = np.float64 if exact else np.float32
    abar = (base.alphas_cumprod() if exact else _float32_alphas_cumprod(base)).astype(dtype)
    scale = _checks.positive("snr_shift_scale", cfg["snr_shift_scale"])
    abar = abar / (dtype(scale) + dtype(1 - scale) * abar)
    if cfg["rescale_betas_zero_snr"]:
        root = np.sqrt(abar)
        first, last = root[0], root[-1]
        root = (root - last) * (first / (first - last))
        abar = root**2
    return abar.astype(np.float64)


def _inverse_sigmas(cfg, n, schedule):
    """Timesteps (int64, increasing) and sigmas of DPMSolverMultistepInverse.set_timesteps: N points of the spacing
    between 0 and the noisiest timestep (T - 1, or the last one whose lam is above lambda_min_clipped), with sigma_ve
    interpolated at them and the noisiest sigma appended; Karras / exponential / beta sigmas between the training
    ends in increasing order (`_respace`; timesteps rounded for Karras, truncated otherwise) and flow sigmas (which
    diffusers copies from the forward scheduler, so they *decrease*) end by repeating their last sigma. Repeated
    timesteps are dropped, the sigmas are not (so the step index of a later step reads the sigma of an earlier grid
    point, as in diffusers). The training sigmas are diffusers' float32 ones (`_float32_train_sigmas`) and the
    sigmas are rounded to float32 as diffusers stores them."""
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    n = _checks.integer("num_inference_steps", n, minimum=1, maximum=T)
    train = _float32_train_sigmas(schedule)
    clip = float(cfg["lambda_min_clipped"])
    noisiest = T - 1 - int(np.searchsorted(-np.log(train)[::-1], clip))
    match parsed(cfg, "timestep_spacing"):
        case TimestepSpacing.LINSPACE:
            ts = np.linspace(0, noisiest, n + 1).round()[:-1]
        case TimestepSpacing.LEADING:
            ratio = (noisiest + 1) // (n + 1)
            ts = (np.arange(n + 1) * ratio).round()[:-1] + cfg["steps_offset"]
        case _:  # trailing
            ts = np.arange(noisiest + 1, 0, -T / n).round()[::-1] - 1
    spacing = sigma_spacing(cfg)
    if spacing != SigmaSpacing.LINEAR:  # diffusers' sigma_max / sigma_min swapped: increasing sigmas
        sig = _respace(spacing, train[0], train[-1], n)
        ts = _sigma_to_t(sig, np.log(train))
        ts = ts.round() if spacing == SigmaSpacing.KARRAS else ts
        sig = np.append(sig, sig[-1])
    elif cfg["use_flow_sigmas"]:
        s = 1.0 - np.linspace(1, 1 / T, n + 1)
        shift = _checks.positive("flow_shift", cfg["flow_shift"])
        sig = np.flip(shift * s / (1 + (shift - 1) * s))[:-1].copy()
        ts = sig * T
        sig = np.append(sig, sig[-1])
    else:
        sig = np.append(np.interp(ts, np.arange(T), train), train[noisiest])
    _, first = np.unique(ts, return_index=True)
    ts = ts[np.sort(first)]
    return ts.astype(np.int64), sig.astype(np.float32).astype(np.float64)


def _plan_dpm_multistep_inverse(cfg, n, opts):
    """DPM-Solver(++) multistep inversion (Lu et al. 2022, arXiv:2211.01095, Alg. 2 run with lam decreasing, i.e.
    h < 0: data to noise, e.g. for image editing) as diffusers' DPMSolverMultistepInverseScheduler: the update and
    order rules of DPMSolverMultistep (`_dpm_multistep_update`; warm-up, lower_order_final below 15 steps,
    euler_at_final; there is no final sigma of zero) on the increasing grid of `_inverse_sigmas`. Aliases as in
    diffusers: algorithm_type "deis" is "dpmsolver++", solver_type "logrho"/"bh1"/"bh2" is "midpoint". The SDE
    algorithms have no inversion (their noise term needs h > 0; diffusers returns NaN): rejected, except with
    use_flow_sigmas, whose grid decreases (below), where they draw one array per step, the last included.

    Departures: with Karras, exponential, beta or flow sigmas the last step has zero length (its sigma is repeated); the
    plan returns the sample unchanged there, which is what diffusers computes except for second- or third-order
    "heun" / third-order steps, where its 0/0 gives NaN (possible from 15 steps, or with lower_order_final=False).
    With use_flow_sigmas diffusers' inverse scheduler walks the forward flow grid (noise to data), copied from
    DPMSolverMultistep; reproduced as is. Rejected, as diffusers 0.42.1 fails on them: the SDE algorithms without
    flow sigmas (NaN), solver_order 3 with the SDE algorithms (no third-order SDE update), flow_prediction with the
    noise-prediction algorithms."""
    flow = _check_flow(cfg)
    algo = parsed(cfg, "algorithm_type")
    algo = AlgorithmType.DPMSOLVER_PP if algo == AlgorithmType.DEIS else algo  # diffusers' own alias
    solver_type = parsed(cfg, "solver_type")
    solver_type = (
        SolverType.MIDPOINT if solver_type in (SolverType.LOGRHO, SolverType.BH1, SolverType.BH2) else solver_type
    )
    order, pred = cfg["solver_order"], parsed(cfg, "prediction_type")
    sde = algo in (AlgorithmType.SDE_DPMSOLVER, AlgorithmType.SDE_DPMSOLVER_PP)
    if sde and not flow:
        raise ValueError(
            f"config key 'algorithm_type'={algo.value!r} has no counterpart in DPMSolverMultistepInverseScheduler: its "
            "reverse-time SDE step cannot run from data to noise (h < 0 makes sqrt(1 - e^(-2h)) imaginary; diffusers "
            "0.42.1 returns NaN); use an ODE algorithm (dpmsolver++ or dpmsolver)"
        )
    if sde and order == 3:
        raise ValueError(
            f"config key 'solver_order'=3 with algorithm_type={algo.value!r}: no result to reproduce; "
            "DPMSolverMultistepInverseScheduler in diffusers 0.42.1 has no third-order SDE update and fails"
        )
    data_pred = algo in (AlgorithmType.DPMSOLVER_PP, AlgorithmType.SDE_DPMSOLVER_PP)
    if pred == PredictionType.FLOW and not data_pred:
        raise ValueError(f"config key 'algorithm_type'={algo.value!r} with flow_prediction: diffusers rejects it too")
    schedule = Flow(shift=float(cfg["flow_shift"])) if flow else schedule_from_config(cfg)
    ts, sig = _inverse_sigmas(cfg, n, schedule_from_config(cfg))
    of = _flow_of if flow else _vp_of
    N = len(ts)
    order_cfg = {**cfg, "final_sigmas_type": "sigma_min"}  # no final sigma of zero in this class

    convert = _solver_output(pred, flow, of, data_pred, cfg)

    update = _dpm_multistep_update(sig, of, algo, solver_type)

    def run(model, x, draw):
        ms = []
        for i, t in enumerate(ts):
            ms = (ms + [convert(model(x, t), x, sig[i])])[-order:]
            k = _multistep_order(order_cfg, order, i, N)
            z = draw(x.shape) if sde else None
            x = x if sig[i + 1] == sig[i] else update(x, ms, i, k, z)
        return x

    return DiffusersPlan("DPMSolverMultistepInverseScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig, stochastic=sde)


# ---- CosineDPMSolverMultistepScheduler ----------------------------------------------------------------------


def _cosine_sigmas(cfg, n):
    """CosineDPMSolverMultistep.set_timesteps in float32, as diffusers computes it: N sigmas log-uniform
    ("exponential") or Karras (rho) from sigma_max down to sigma_min, model timestep c_noise = atan(sigma) 2 / pi,
    then a final sigma of 0 or sigma_min."""
    n = _checks.integer("num_inference_steps", n, minimum=1)
    lo, hi = _checks.positive("sigma_min", cfg["sigma_min"]), _checks.positive("sigma_max", cfg["sigma_max"])
    ramp = np.linspace(0, 1, n, dtype=np.float32)
    if cfg["sigma_schedule"] == "karras":
        rho = _checks.positive("rho", cfg["rho"])
        sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    else:
        sig = np.exp(np.linspace(math.log(lo), math.log(hi), n, dtype=np.float32))[::-1]
    sig = sig.astype(np.float32)
    ts = (np.arctan(sig) / np.float32(math.pi) * np.float32(2)).astype(np.float32)
    last = np.float32(lo if cfg["final_sigmas_type"] == "sigma_min" else 0.0)
    return ts, np.append(sig, last).astype(np.float64)


def _plan_cosine_dpm_multistep(cfg, n, opts):
    """SDE-DPM-Solver++ multistep (Lu et al. 2022, arXiv:2211.01095), orders 1-2 ("midpoint" or "heun"), on
    EDM's alpha = 1 process (Karras et al. 2022) as diffusers' CosineDPMSolverMultistepScheduler (Stable Audio Open):
    the model sees c_in x = x / sqrt(sigma^2 + sigma_data^2) and c_noise = atan(sigma) 2 / pi, its output F gives
    x0 = c_skip x + c_out F (EDM's Table 1; c_out negated for "v_prediction"), and the orders follow
    DPMSolverMultistep (`_multistep_order`: warm-up, first order onto sigma = 0, lower_order_final below 15 steps).

    Noise: diffusers draws each step's z from a Brownian tree over [sigma_min, sigma_max] as
    (W(sigma_next) - W(sigma)) / sqrt|sigma_next - sigma|; the intervals of successive steps are disjoint, so these
    are independent standard normals: the plan takes one draw per step, the last included (multiplied by 0 onto
    sigma = 0), which reproduces the tree in law and draw for draw when the tree is fed the same increments.
    Departures: x_T = sqrt(sigma_max^2 + 1) eps (init_noise_sigma), where EDM starts from sigma_max eps. With
    final_sigmas_type="sigma_min" the last step goes from the last sigma of the schedule (sigma_min computed in
    float32) to float32(sigma_min), which may lie an ulp above it: diffusers' sqrt(1 - e^{-2h}) is then 0 where its
    float32 lam values coincide (the exponential schedule) and NaN where they do not (Karras); the plan returns the
    sample unchanged (the h -> 0 limit) in both cases. Rejected:
    solver_order 3 (diffusers 0.42.1 has no third-order update in this class and fails) and prediction_type
    "sample" (its preconditioning rejects it)."""
    order = cfg["solver_order"]
    solver_type = "midpoint" if cfg["solver_type"] in ("logrho", "bh1", "bh2") else cfg["solver_type"]
    ts, sig = _cosine_sigmas(cfg, n)
    sd, N = float(cfg["sigma_data"]), len(ts)
    update = _dpm_multistep_update(sig, _edm_of, "sde-dpmsolver++", solver_type)

    def run(model, x, draw):
        ms = []
        for i, t in enumerate(ts):
            out = model(x / np.sqrt(sig[i] ** 2 + sd**2), t)
            ms = (ms + [_edm_x0(cfg, out, x, sig[i])])[-order:]
            k = _multistep_order(cfg, order, i, N)
            z = draw(x.shape)
            if sig[i + 1] == 0:
                x = ms[-1]
            elif sig[i + 1] < sig[i]:
                x = update(x, ms, i, k, z)
            # else: onto final_sigmas_type="sigma_min" from a last sigma that float32 put an ulp at or below it
        return x

    return DiffusersPlan(
        "CosineDPMSolverMultistepScheduler",
        cfg,
        _edm_schedule(cfg),
        ts,
        math.sqrt(cfg["sigma_max"] ** 2 + 1),
        run,
        sigmas=sig,
        stochastic=True,
    )
