"""EDM: EDMEulerScheduler, EDMDPMSolverMultistepScheduler."""

import math

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._config import AlgorithmType, FinalSigmas, PredictionType, SolverType, _karras, parsed
from diffspec.reference.interop._plan import DiffusersPlan, _threshold
from diffspec.reference.interop.dpm_solver import _dpm_multistep_update, _multistep_order
from diffspec.reference.interop.k_style import _churn
from diffspec.reference.schedules import (
    EDM,
)

# ---- EDM: EDMEuler, EDMDPMSolverMultistep --------------------------------------------------------------------


def _edm_sigmas(cfg, n, ramp=None):
    """EDM schedulers' set_timesteps: Karras sigmas (rho) or log-uniform ("exponential") between sigma_min and
    sigma_max, N of them; model timestep c_noise = log(sigma) / 4 (float32).

    `ramp` (EDMEuler's custom `sigmas`, which diffusers reads as the ramp positions in [0, 1], not as sigmas) replaces
    linspace(0, 1, N) in the Karras formula (Karras et al. 2022, eq. 5); departure reproduced: the exponential
    schedule uses only its length."""
    if ramp is not None:
        ramp = _checks.finite_array("sigmas", ramp).ravel()
        if n is not None and n != len(ramp):
            raise ValueError(f"num_inference_steps={n!r} with {len(ramp)} custom sigmas: expected None or {len(ramp)}")
        n = len(ramp)
    _checks.integer("num_inference_steps", n, minimum=1)
    lo, hi = _checks.positive("sigma_min", cfg["sigma_min"]), _checks.positive("sigma_max", cfg["sigma_max"])
    if cfg["sigma_schedule"] == "karras" and ramp is not None:
        rho = _checks.positive("rho", cfg["rho"])
        sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    elif cfg["sigma_schedule"] == "karras":
        sig = _karras(hi, lo, n, rho=_checks.positive("rho", cfg["rho"]))
    else:
        sig = np.exp(np.linspace(math.log(lo), math.log(hi), n))[::-1].copy()
    ts = (0.25 * np.log(sig.astype(np.float32))).astype(np.float32)
    return ts, np.append(sig, lo if parsed(cfg, "final_sigmas_type") == FinalSigmas.SIGMA_MIN else 0.0)


def _edm_x0(cfg, out, x, s):
    """EDM preconditioning (Karras et al. 2022, Table 1): x0 = c_skip x + c_out F with c_skip = sd^2 / (s^2 + sd^2)
    and c_out = s sd / sqrt(s^2 + sd^2), negated for diffusers' "v_prediction"."""
    sd = float(cfg["sigma_data"])
    c_out = s * sd / np.sqrt(s**2 + sd**2) * (-1.0 if parsed(cfg, "prediction_type") == PredictionType.V else 1.0)
    return sd**2 / (s**2 + sd**2) * x + c_out * out


def _edm_of(s):
    """(alpha, sigma, lam) of the EDM process (alpha = 1) at sigma = s; s = 0 gives (1, 0, inf)."""
    with np.errstate(divide="ignore"):
        return 1.0, s, -np.log(s) if s > 0 else np.inf


def _edm_schedule(cfg):
    return EDM(
        sigma_min=float(cfg["sigma_min"]), sigma_max=float(cfg["sigma_max"]), sigma_data=float(cfg["sigma_data"])
    )


def _plan_edm_euler(cfg, n, opts, *, sigmas=None):
    """Euler (Karras et al. 2022, Alg. 1; Alg. 2 with churn) in EDM's own parameterization, as diffusers'
    EDMEulerScheduler: the model sees c_in x = x / sqrt(sigma^2 + sigma_data^2) and c_noise = log(sigma) / 4, its
    output F gives x0 = c_skip x + c_out F; x_next = x + (sigma_next - sigma_hat) (x_hat - x0) / sigma_hat, churn as
    in `_plan_euler` (step options s_churn, s_tmin, s_tmax, s_noise; the model is called before the churn and F is
    read at sigma_hat: a diffusers departure from Alg. 2). Departure: x_T = sqrt(sigma_max^2 + 1) eps
    (init_noise_sigma), where the paper starts from sigma_max eps. Custom `sigmas`: the ramp of `_edm_sigmas`."""
    ts, sig = _edm_sigmas(cfg, n, ramp=sigmas)
    n = len(ts)
    gammas, s_noise = _churn(opts, sig, n)
    sd = float(cfg["sigma_data"])

    def run(model, x, draw):
        for i, t in enumerate(ts):
            s = sig[i]
            out = model(x / np.sqrt(s**2 + sd**2), t)
            s_hat = s * (1 + gammas[i])
            if gammas[i] > 0:
                x = x + s_noise * np.sqrt(s_hat**2 - s**2) * draw(x.shape)
            x = x + (sig[i + 1] - s_hat) * (x - _edm_x0(cfg, out, x, s_hat)) / s_hat
        return x

    return DiffusersPlan(
        "EDMEulerScheduler",
        cfg,
        _edm_schedule(cfg),
        ts,
        math.sqrt(cfg["sigma_max"] ** 2 + 1),
        run,
        sigmas=sig,
        stochastic=bool(np.any(gammas > 0)),
    )


def _plan_edm_dpm_multistep(cfg, n, opts):
    """DPM-Solver++ multistep (Lu et al. 2022, arXiv:2211.01095) on the EDM process (alpha = 1, sigma = sigma_ve,
    lam = -log sigma) as diffusers' EDMDPMSolverMultistepScheduler: the DPMSolverMultistep update and order rules
    (`_dpm_multistep_update`) on EDM sigmas, with the model called as in EDMEuler (c_in, c_noise) and x0 from EDM's
    preconditioning (then thresholded if configured). Departures: x_T = sqrt(sigma_max^2 + 1) eps; diffusers 0.42.1
    has no third-order SDE update (sde-dpmsolver++ with solver_order 3 is rejected here)."""
    algo = parsed(cfg, "algorithm_type")
    algo = AlgorithmType.DPMSOLVER_PP if algo == AlgorithmType.DEIS else algo  # diffusers' own alias
    solver_type = parsed(cfg, "solver_type")
    solver_type = (
        SolverType.MIDPOINT if solver_type in (SolverType.LOGRHO, SolverType.BH1, SolverType.BH2) else solver_type
    )
    order = cfg["solver_order"]
    if algo == AlgorithmType.SDE_DPMSOLVER_PP and order == 3:
        raise ValueError(
            "config key 'solver_order'=3 with algorithm_type='sde-dpmsolver++': no result to reproduce; "
            "EDMDPMSolverMultistepScheduler in diffusers 0.42.1 has no third-order SDE update (its third-order step "
            "never assigns x_t and fails)"
        )
    ts, sig = _edm_sigmas(cfg, n)
    sd, N = float(cfg["sigma_data"]), len(ts)
    update = _dpm_multistep_update(sig, _edm_of, algo, solver_type)

    def run(model, x, draw):
        ms = []
        for i, t in enumerate(ts):
            out = model(x / np.sqrt(sig[i] ** 2 + sd**2), t)
            ms = (ms + [_threshold(_edm_x0(cfg, out, x, sig[i]), cfg)])[-order:]
            k = _multistep_order(cfg, order, i, N)
            z = draw(x.shape) if algo == AlgorithmType.SDE_DPMSOLVER_PP else None
            x = ms[-1] if sig[i + 1] == 0 else update(x, ms, i, k, z)
        return x

    return DiffusersPlan(
        "EDMDPMSolverMultistepScheduler",
        cfg,
        _edm_schedule(cfg),
        ts,
        math.sqrt(cfg["sigma_max"] ** 2 + 1),
        run,
        sigmas=sig,
        stochastic=algo == AlgorithmType.SDE_DPMSOLVER_PP,
    )
