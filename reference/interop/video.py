"""Rectified-flow video samplers: LTXEulerAncestralRFScheduler, HeliosScheduler, HeliosDMDScheduler.

All three step the rectified flow x_t = (1 - t) x0 + t eps (Liu et al. 2022) with a model that returns the velocity
u = eps - x0, so x0 = x - sigma u. The Helios classes are built for Helios's pyramid pipeline, which runs each stage
at its own spatial resolution; only their single-stage form (`stages=1`) has a counterpart here.
"""

import math

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._config import SolverType, parsed
from diffspec.reference.interop._plan import DiffusersPlan
from diffspec.reference.interop.dpm_solver import _unipc_coefficients
from diffspec.reference.interop.flow import flow_match_sigmas
from diffspec.reference.schedules import Flow

# ---- LTX-Video's Euler ancestral -------------------------------------------------------------------------------

# FlowMatchEulerDiscreteScheduler keys that LTXEulerAncestralRFScheduler forwards to the FlowMatchEuler
# set_timesteps it delegates to, with FlowMatchEuler's defaults
_FLOW_MATCH_DEFAULTS = {
    "shift": 1.0,
    "use_dynamic_shifting": False,
    "time_shift_type": "exponential",
    "invert_sigmas": False,
    "shift_terminal": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
}


def _plan_ltx_euler_ancestral_rf(cfg, n, opts, *, timesteps=None, sigmas=None, mu=None):
    """Euler ancestral on the rectified flow, as diffusers' LTXEulerAncestralRFScheduler (ComfyUI's
    `sample_euler_ancestral_RF`, the "CONST" parameterisation).

    Sigmas: with `num_inference_steps` alone, those of FlowMatchEulerDiscreteScheduler on the same config (shift,
    dynamic shifting with `mu`, shift_terminal, Karras / exponential spacing: `flow.flow_match_sigmas`). With custom
    `sigmas` (or `timesteps`, which this class reads as sigmas too) they are used as given, float32, terminal sigma
    included; the model timestep is T sigma. The final timestep of a custom schedule, whose step returns the sample
    unchanged, is not called (LTX's pipeline loops over timesteps[:-1]).

    Step from sigma s to s' with x0 = x - s u: if s' = 0, x = x0. Otherwise s_down = s' (1 + (s'/s - 1) eta), an
    Euler (DDIM) step to s_down, x = (s_down / s) x + (1 - s_down / s) x0, then a re-noise to s' that keeps the flow's
    marginals: x = (1 - s') / (1 - s_down) x + s_noise sqrt(s'^2 - s_down^2 (1 - s')^2 / (1 - s_down)^2) z
    (diffusers adds 1e-12 to 1 - s_down, kept). eta = 0 is deterministic (DDIM on the flow). Noise: one draw per
    step that does not land on 0, when eta > 0 and s_noise > 0."""
    eta = _checks.nonnegative("eta", cfg["eta"])
    s_noise = _checks.nonnegative("s_noise", cfg["s_noise"])
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=1)
    if sigmas is None and timesteps is None:
        ts, sig = flow_match_sigmas({**_FLOW_MATCH_DEFAULTS, **cfg}, n, mu=mu)
    else:
        if sigmas is not None and timesteps is not None:
            raise ValueError("sigmas and timesteps: this class reads timesteps as sigmas; pass one of them")
        if mu is not None:
            raise ValueError(f"mu={mu!r}: diffusers ignores mu with custom sigmas; leave it None")
        given = sigmas if sigmas is not None else timesteps
        sig = np.asarray(_checks.finite_array("sigmas", given), dtype=np.float32)
        if sig.ndim != 1 or len(sig) < 2 or np.any(sig[:-1] <= 0):
            raise ValueError(
                f"sigmas={given!r}: expected a 1-d schedule of at least two sigmas, positive but for the terminal one"
            )
        if n is not None and n != len(sig) - 1:
            raise ValueError(f"num_inference_steps={n!r}: the custom sigmas give {len(sig) - 1} steps")
        ts = (sig[:-1] * np.float32(T)).astype(np.float32)
        sig = sig.astype(np.float64)
    stochastic = eta > 0 and s_noise > 0

    def run(model, x, draw):
        for i, t in enumerate(ts):
            s, s_next = sig[i], sig[i + 1]
            x0 = x - s * model(x, t)
            if abs(s_next) < 1e-8:
                x = x0
                continue
            s_down = s_next * (1.0 + (s_next / s - 1.0) * eta)
            a_next, a_down = 1.0 - s_next, 1.0 - s_down
            x = (s_down / s) * x + (1.0 - s_down / s) * x0
            if stochastic:
                c = math.sqrt(max(s_next**2 - s_down**2 * a_next**2 / (a_down**2 + 1e-12), 0.0))
                x = a_next / (a_down + 1e-12) * x + c * s_noise * draw(x.shape)
        return x

    plan = DiffusersPlan("LTXEulerAncestralRFScheduler", cfg, Flow(), ts, 1.0, run, sigmas=sig, stochastic=stochastic)
    plan.prediction_type = "flow_prediction"
    return plan


# ---- Helios -------------------------------------------------------------------------------------------------------

_PYRAMID = (
    "no counterpart in diffspec: stages={stages} is Helios's pyramid sampler, whose pipeline runs each stage at its "
    "own spatial resolution (it downsamples the start noise, then between stages upsamples the latents and re-noises "
    "them with block noise and the gamma correction, outside scheduler.step, and passes the stage index to "
    "set_timesteps); a diffspec sampler runs at one data shape. stages=1 is implemented"
)


def _helios_shift(kind, mu, s):
    """Helios's `time_shift(mu, 1, s)`: exponential e^mu / (e^mu + 1/s - 1), linear mu / (mu + 1/s - 1); s = 0
    maps to 0."""
    m = math.exp(mu) if kind == "exponential" else mu
    with np.errstate(divide="ignore"):
        return m / (m + (1 / s - 1))


def _helios_sigmas(cfg, n, sigmas, mu, *, dmd):
    """(model timesteps, sigmas with the terminal 0) of Helios(DMD)Scheduler.set_timesteps with stages=1.

    Default: linspace(1, 1/T, M + 1)[:-1] in float32 with M = N (Helios) or N + 1 (HeliosDMD), shifted by
    `time_shift(shift)` when shift != 1. Departure reproduced: this uses `time_shift_type`, so with "exponential"
    (HeliosScheduler's default) the static `shift` acts as a log-shift, s' = e^shift / (e^shift + 1/s - 1), and only
    "linear" gives SD3's shift s' = shift s / (1 + (shift - 1) s). Custom `sigmas` (float64 as the Helios pipeline
    passes them) are not shifted. Timesteps are T sigma. HeliosDMD then drops the last timestep and the second-to-last
    sigma. With use_dynamic_shifting the sigmas are time-shifted with `mu` and the timesteps recomputed from them."""
    if int(cfg["stages"]) != 1:
        raise ValueError(f"config['stages']={cfg['stages']!r}: " + _PYRAMID.format(stages=cfg["stages"]))
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    kind, shift, dynamic = cfg["time_shift_type"], float(cfg["shift"]), bool(cfg["use_dynamic_shifting"])
    if dynamic and mu is None:
        raise ValueError("mu=None: use_dynamic_shifting is on, so the pipeline's mu is needed")
    if not dynamic and mu is not None:
        raise ValueError(f"mu={mu!r}: diffusers ignores mu without use_dynamic_shifting; leave it None")
    if dynamic and shift != 1.0:
        raise ValueError(f"config key 'shift'={shift!r}: diffusers requires shift=1.0 with use_dynamic_shifting")
    if sigmas is None:
        n = _checks.integer("num_inference_steps", n, minimum=1)
        m = n + 1 if dmd else n
        sig = np.linspace(1, 1 / T, m + 1)[:-1].astype(np.float32)
        if shift != 1.0:
            sig = np.float32(_helios_shift(kind, shift, sig))
    else:
        sig = np.asarray(_checks.finite_array("sigmas", sigmas), dtype=np.float64)
        if sig.ndim != 1 or len(sig) < (2 if dmd else 1) or np.any(sig <= 0) or np.any(sig > 1):
            raise ValueError(f"sigmas={sigmas!r}: expected a 1-d array of sigmas in (0, 1]")
        if n is not None and n != len(sig) - (1 if dmd else 0):
            raise ValueError(f"num_inference_steps={n!r}: the custom sigmas have {len(sig)} values")
    ts = sig * sig.dtype.type(T)
    sig = np.append(sig, sig.dtype.type(0))
    if dmd:
        ts, sig = ts[:-1], np.append(sig[:-2], sig[-1:])
    if dynamic:
        sig = _helios_shift(kind, float(mu), sig).astype(sig.dtype)
        ts = sig[:-1] * sig.dtype.type(T)
    return ts, sig.astype(np.float64)


def _plan_helios(cfg, n, opts, *, sigmas=None, mu=None):
    """HeliosScheduler with stages=1, as the Helios pipeline drives it (its model sees the float timestep T sigma).

    scheduler_type="euler": x_next = x + (sigma_next - sigma) u. scheduler_type="unipc" (the default): UniPC (Zhao
    et al. 2023, arXiv:2302.04867) in data-prediction form on the flow, x0 = x - sigma u, as in
    UniPCMultistepScheduler with flow sigmas: UniP-p predictor, UniC corrector re-using the step's model call,
    orders warming up from 1, lower_order_final, disable_corrector, bh1 / bh2 (the names "midpoint", "heun" and
    "logrho" are read as bh2, as diffusers does). Difference from UniPCMultistepScheduler reproduced: sigma is clamped
    to 1e-8 in (alpha, sigma) = (1 - s, max(s, 1e-8)), so a step onto sigma = 0 has a finite h at any order.
    From the default first sigma 1 (lam = -inf) the first step is DDIM and bh2 of order <= 2 stays finite, as in
    diffusers; "bh1" (B(h) = h = -inf) and order 3 (an infinite entry in the order-3 system) are NaN in diffusers
    0.42.1 and refused there: pass sigmas below 1 (the pipeline's). stages > 1 is refused (see `_PYRAMID`).
    Sigmas: `_helios_sigmas`; the Helios pipeline passes sigmas=np.linspace(0.999, 0, N + 1)[:-1] and mu."""
    ts, sig = _helios_sigmas(cfg, n, sigmas, mu, dmd=False)
    if cfg["scheduler_type"] == "euler":

        def run(model, x, draw):
            for i, t in enumerate(ts):
                x = x + (sig[i + 1] - sig[i]) * model(x, t)
            return x

    else:
        if sig[0] >= 1 and parsed(cfg, "solver_type") == SolverType.BH1:
            raise ValueError(
                "config key 'solver_type'='bh1' with a first sigma of 1: diffusers 0.42.1 returns NaN there (lam = "
                "-inf makes B(h) = h infinite); pass sigmas below 1, as the Helios pipeline does "
                "(np.linspace(0.999, 0, N + 1)[:-1]), or solver_type='bh2'"
            )
        if int(cfg["solver_order"]) == 3 and sig[0] >= 1 and len(ts) >= 3:
            raise ValueError(
                "config key 'solver_order'=3 with a first sigma of 1: diffusers 0.42.1 returns NaN there (lam = -inf "
                "gives UniPC's order-3 system an infinite entry); pass sigmas below 1, as the Helios pipeline does "
                "(np.linspace(0.999, 0, N + 1)[:-1]), or solver_order <= 2"
            )
        run = _helios_unipc(cfg, ts, sig)
    plan = DiffusersPlan("HeliosScheduler", cfg, Flow(), ts, 1.0, run, sigmas=sig, stochastic=False)
    plan.prediction_type = "flow_prediction"
    return plan


def _helios_unipc(cfg, ts, sig):
    order, N = int(cfg["solver_order"]), len(ts)
    solver_type = SolverType.BH1 if parsed(cfg, "solver_type") == SolverType.BH1 else SolverType.BH2
    disabled = set(cfg["disable_corrector"])
    lower_final = bool(cfg["lower_order_final"])

    def lam(s):  # s = 1 (the default first sigma) gives -inf, as in diffusers: the first step is then DDIM
        with np.errstate(divide="ignore"):
            return np.log(1.0 - s) - math.log(max(s, 1e-8))

    def update(x, ms, lo, hi, k, m_new=None):
        """x at sig[hi] from x at sig[lo]: the predictor (m_new None) or the corrector, with the k model outputs ms
        at sig[lo], sig[lo - 1], ... (newest last)."""
        a_t, s_t = 1.0 - sig[hi], max(sig[hi], 1e-8)
        s_0 = max(sig[lo], 1e-8)
        h = lam(sig[hi]) - lam(sig[lo])
        m0 = ms[-1]
        rks = [(lam(sig[lo - j]) - lam(sig[lo])) / h for j in range(1, k)] + [1.0]
        D1s = [(ms[-(j + 1)] - m0) / rks[j - 1] for j in range(1, k)]
        h_phi_1, B_h, R, b = _unipc_coefficients(np.array(rks), -h, k, solver_type)
        x_t = s_t / s_0 * x - a_t * h_phi_1 * m0
        if m_new is None:
            if not D1s:
                return x_t
            rhos = np.array([0.5]) if k == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
            return x_t - a_t * B_h * sum(r * d for r, d in zip(rhos, D1s))
        rhos = np.array([0.5]) if k == 1 else np.linalg.solve(R, b)
        corr = sum(r * d for r, d in zip(rhos[:-1], D1s)) if D1s else 0.0
        return x_t - a_t * B_h * (corr + rhos[-1] * (m_new - m0))

    def run(model, x, draw):
        ms, x_last, k_prev = [], None, 0
        for i, t in enumerate(ts):
            m = x - sig[i] * model(x, t)
            # with lam = -inf at sigma = 1, ratios r_k = -inf and their divided differences 0 are the limits diffusers
            # computes too; LAPACK's pivoting solves the order-k systems with an infinite entry exactly
            with np.errstate(divide="ignore", invalid="ignore"):
                if i > 0 and (i - 1) not in disabled:
                    x = update(x_last, ms, i - 1, i, k_prev, m_new=m)
                ms = (ms + [m])[-order:]
                k = min(order, N - i) if lower_final else order
                k = min(k, i + 1)
                x_last, k_prev = x, k
                x = update(x, ms, i, i + 1, k)
        return x

    return run


def _plan_helios_dmd(cfg, n, opts, *, sigmas=None, mu=None):
    """HeliosDMDScheduler with stages=1, as Helios's pyramid pipeline drives it with one stage (distilled model).

    Sigmas: `_helios_sigmas` (N model calls). The pipeline gives the model the timestep cast to int64 (truncated),
    and passes the step the start latents of the stage (here x_T) as `dmd_noisy_tensor`. Each step (DMD's few-step
    sampling, Yin et al. 2024): x0 = x - sigma u, then re-noise to the next time with the *same* start noise,
    x_next = (1 - sigma') x0 + sigma' x_T; the last step returns x0. Departure reproduced: sigma and sigma' are
    looked up as the sigma of the schedule timestep nearest to the truncated timestep (int64 casts in `step`), which
    is the step's own unless timesteps are closer than 1. No noise is drawn. stages > 1 is refused (see `_PYRAMID`).
    The pipeline's `is_amplify_first_chunk=True` (num_inference_steps = 2N + 1 inside set_timesteps) is the plan for
    2N steps."""
    ts, sig = _helios_sigmas(cfg, n, sigmas, mu, dmd=True)
    model_ts = np.trunc(ts).astype(np.int64)

    def lookup(t_int):
        return sig[int(np.argmin(np.abs(ts.astype(np.float64) - float(t_int))))]

    def run(model, x, draw):
        start = x
        for i, t in enumerate(model_ts):
            x0 = x - lookup(t) * model(x, t)
            if i < len(model_ts) - 1:
                s_next = lookup(model_ts[i + 1])
                x = (1 - s_next) * x0 + s_next * start
            else:
                x = x0
        return x

    plan = DiffusersPlan("HeliosDMDScheduler", cfg, Flow(), model_ts, 1.0, run, sigmas=sig, stochastic=False)
    plan.prediction_type = "flow_prediction"
    return plan
