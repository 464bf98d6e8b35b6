"""SA-Solver: diffusers' SASolverScheduler, the stochastic Adams predictor-corrector of Xue et al. (2023).

Xue, Yi, Chu, Lu, Sun, Zhang, Li, Li, Ma (2023), "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion
Models", arXiv:2309.05019. The SDE family dx = [f x - (1 + tau^2)/2 g^2 score] dt + tau g dw (tau = 0 the probability
flow ODE, tau = 1 the reverse SDE) is integrated in lam with its linear part exact; the model term is the Lagrange
polynomial through the last k model values (Sec. 4: the SA-Predictor and SA-Corrector, in data- or noise-prediction
form).

With c = 1 + tau^2, h = lam_t - lam_s, u = lam - lam_t and l_j the Lagrange basis through the nodes lam_{i-j} - lam_t:

    data prediction:   x_t = e^{-tau^2 h} (sigma_t / sigma_s) x + c alpha_t sum_j W_j x0_{i-j}
                             + sigma_t sqrt(1 - e^{-2 tau^2 h}) z,      W_j = int_{-h}^0 e^{c u} l_j(u) du
    noise prediction:  x_t = (alpha_t / alpha_s) x - c sigma_t sum_j W_j eps_{i-j}
                             + tau sigma_t sqrt(e^{2h} - 1) z,           W_j = int_{-h}^0 e^{-u} l_j(u) du

The SA-Predictor (stochastic Adams-Bashforth) steps from grid[i] to grid[i + 1] with the model values at grid[i],
grid[i-1], ...; at the next step, after the model call at the predicted point, the SA-Corrector (stochastic
Adams-Moulton) redoes the step from the same start with the same noise z and the new model value among its nodes,
and the predictor continues from the corrected point (the model value itself is not recomputed).

Written here in the shifted variable u: diffusers expands e^{c lam} lam^j around lam = 0 in float32 (the monomial
closed forms of its `get_coefficients_exponential_*`), which is the same integral; the shifted form keeps the
weights free of e^{c lam} factors that cancel. Departure reproduced: at order 2 in data-prediction form diffusers
adds E = int_{-h}^0 (1 - e^{c u}) (u + h) du / (lam_s - lam_{s-1}) to W_0 and subtracts it from W_1 (for the
corrector the divisor is h); the order-2 rule with this term is the one reproduced.
"""

import enum
import math

import numpy as np
from diffspec.reference.interop._config import (
    PredictionType,
    SigmaSpacing,
    _respace,
    _sigma_to_t,
    parsed,
    schedule_from_config,
    sigma_spacing,
)
from diffspec.reference.interop._plan import DiffusersPlan
from diffspec.reference.interop.dpm_solver import _check_flow, _dpm_sigmas, _flow_of, _solver_output, _vp_of
from diffspec.reference.interop.dpm_variants import _float32_train_sigmas
from diffspec.reference.schedules import Flow


class Form(enum.StrEnum):
    """SASolverScheduler's `algorithm_type`: the Adams polynomial through the model's x0 (data prediction, the
    default) or through its eps (noise prediction)."""

    DATA_PREDICTION = "data_prediction"
    NOISE_PREDICTION = "noise_prediction"


def default_tau(t) -> float:
    """diffusers' default `tau_func`: tau = 1 (the reverse SDE) for timesteps 200..800, else 0 (the ODE)."""
    return 1.0 if 200 <= t <= 800 else 0.0


def _exp_poly_integrals(c, h, degree):
    """I_j = int_{-h}^0 e^{c u} u^j du for j = 0..degree (integration by parts: I_j = -(-h)^j e^{-ch}/c - j I_{j-1}/c;
    I_0 = -expm1(-c h) / c). h = 0 gives zeros."""
    integrals = [-math.expm1(-c * h) / c]
    for j in range(1, degree + 1):
        integrals.append(-((-h) ** j) * math.exp(-c * h) / c - j / c * integrals[-1])
    return integrals


def _adams_weights(nodes, lam_t, h, c):
    """W_j = int_{-h}^0 e^{c u} l_j(u) du, l_j the Lagrange basis polynomial through the nodes lam_{i-j} - lam_t."""
    d = np.asarray(nodes, dtype=np.float64) - lam_t
    integrals = _exp_poly_integrals(c, h, len(d) - 1)
    weights = []
    for j in range(len(d)):
        others = np.delete(d, j)
        poly = np.atleast_1d(np.poly(others)) / np.prod(d[j] - others)  # coefficients, highest degree first
        weights.append(sum(a * integrals[deg] for deg, a in enumerate(poly[::-1])))
    return weights


def _sa_step(x, ms, lams, s_from, s_to, z, tau, *, form, of, corrector):
    """One SA-Predictor (corrector=False) or SA-Corrector step from sigma s_from to s_to with model values ms (the
    newest last) at the half log-SNRs lams (the newest first)."""
    a_t, s_t, l_t = of(s_to)
    a_s, s_s, l_s = of(s_from)
    h, k, c = l_t - l_s, len(lams), 1.0 + tau**2
    data_pred = form == Form.DATA_PREDICTION
    weights = _adams_weights(lams, l_t, h, c if data_pred else -1.0)
    if data_pred and k == 2:
        base = (c * h + math.expm1(-c * h)) / c**2  # int_{-h}^0 e^{c u} (u + h) du
        extra = (h / 2 - base / h) if corrector else (h**2 / 2 - base) / (lams[0] - lams[1])
        weights = [weights[0] + extra, weights[1] - extra]
    model_term = sum(w * ms[-(j + 1)] for j, w in enumerate(weights))
    if data_pred:
        noise = s_t * math.sqrt(-math.expm1(-2 * tau**2 * h)) * z
        return math.exp(-(tau**2) * h) * (s_t / s_s) * x + c * a_t * model_term + noise
    return a_t / a_s * x - c * s_t * model_term + tau * s_t * math.sqrt(math.expm1(2 * h)) * z


def _sa_sigmas(cfg, n, flow):
    """Timesteps (int64) and sigmas of SASolverScheduler.set_timesteps: those of DPMSolverMultistep (`_dpm_sigmas`:
    N + 1 points of the spacing, the last dropped; lambda_min_clipped) ending at sigma(t = 0); Karras, exponential or
    beta sigmas between diffusers' float32 training sigmas (`_float32_train_sigmas`, `_respace`; timesteps rounded
    for Karras, truncated otherwise) and flow sigmas end by repeating their last sigma; flow
    sigmas as DPMSolverMultistep's use_flow_sigmas (shifted, decreasing, timestep int64(T sigma)). Sigmas rounded to
    float32 as diffusers stores them."""
    if flow:
        T, shift = cfg["num_train_timesteps"], float(cfg["flow_shift"])
        s = 1.0 - np.linspace(1, 1 / T, n + 1)
        sig = np.flip(shift * s / (1 + (shift - 1) * s))[:-1].copy()
        ts, sig = (sig * T).astype(np.int64), np.append(sig, sig[-1])
    elif sigma_spacing(cfg) != SigmaSpacing.LINEAR:  # Karras, exponential or beta, from sigma_max down
        spacing = sigma_spacing(cfg)
        train = _float32_train_sigmas(schedule_from_config(cfg))
        sig = _respace(spacing, train[-1], train[0], n)
        ts = _sigma_to_t(sig, np.log(train))
        ts = (ts.round() if spacing == SigmaSpacing.KARRAS else ts).astype(np.int64)
        sig = np.append(sig, sig[-1])
    else:
        schedule = schedule_from_config(cfg)
        ts, _ = _dpm_sigmas({**cfg, "final_sigmas_type": "sigma_min"}, n, schedule)
        train = _float32_train_sigmas(schedule)
        sig = np.append(np.interp(ts, np.arange(len(train)), train), train[0])
    return ts, sig.astype(np.float32).astype(np.float64)


def _plan_sa_solver(cfg, n, opts):
    """SA-Solver (Xue et al. 2023, arXiv:2309.05019, Sec. 4: SA-Predictor of order predictor_order, SA-Corrector of
    order corrector_order) as diffusers' SASolverScheduler steps it (see the module docstring for the update).

    Orders: warm-up (predictor at most i + 1 and corrector at most i + 2 at step i, counting from 0) and, with
    lower_order_final, at most N - i and N - i + 1. The corrector at step i uses the order and tau of step i - 1.
    tau: the config's `tau_func` of the model timestep (a callable, as diffusers takes it), or by default 1 for
    timesteps 200..800 and 0 outside (`default_tau`). One draw per step, the last included; each draw serves the
    predictor of its step and the corrector of the next. Departure: with Karras, exponential or flow sigmas the last
    sigma repeats, so the last step has zero length and returns the (corrected) sample unchanged, as diffusers does.
    Rejected, as diffusers 0.42.1 fails on them: thresholding with noise_prediction (its conversion indexes alpha_t
    with a timestep of None) and flow_prediction with noise_prediction."""
    flow = _check_flow(cfg)
    form = Form(cfg["algorithm_type"])
    data_pred = form == Form.DATA_PREDICTION
    if not data_pred and (cfg["thresholding"] or parsed(cfg, "prediction_type") == PredictionType.FLOW):
        key = "thresholding" if cfg["thresholding"] else "prediction_type"
        raise ValueError(
            f"config key {key!r}={cfg[key]!r} with algorithm_type='noise_prediction': no result to reproduce; "
            "diffusers 0.42.1's SASolverScheduler fails on it"
        )
    tau_func = cfg["tau_func"] if cfg["tau_func"] is not None else default_tau
    if not callable(tau_func):
        raise ValueError(f"config key 'tau_func'={tau_func!r}: expected None or a callable timestep -> tau")
    schedule = Flow(shift=float(cfg["flow_shift"])) if flow else schedule_from_config(cfg)
    ts, sig = _sa_sigmas(cfg, n, flow)
    of = _flow_of if flow else _vp_of
    lams = [of(s)[2] for s in sig]
    pred, p, c, N = cfg["prediction_type"], cfg["predictor_order"], cfg["corrector_order"], len(ts)
    M, low_final = max(p, c - 1), bool(cfg["lower_order_final"])

    convert = _solver_output(pred, flow, of, data_pred, cfg)  # thresholding with noise_prediction is refused above

    step = {"form": form, "of": of}

    def run(model, x, draw):
        ms, x_last, z_last, k_corr, tau_last = [], None, None, 0, 0.0
        for i, t in enumerate(ts):
            m = convert(model(x, t), x, sig[i])
            if i > 0:  # SA-Corrector: redo the last step with the new model value among the nodes
                nodes = [lams[i - j] for j in range(k_corr)]
                x = _sa_step(x_last, ms + [m], nodes, sig[i - 1], sig[i], z_last, tau_last, corrector=True, **step)
            ms = (ms + [m])[-M:]
            warm = min(i, M)
            k_pred = min(min(p, N - i) if low_final else p, warm + 1)
            k_corr = min(min(c, N - i + 1) if low_final else c, warm + 2)
            tau = float(tau_func(t))
            z = draw(x.shape)
            x_last, z_last, tau_last = x, z, tau
            nodes = [lams[i - j] for j in range(k_pred)]
            x = _sa_step(x, ms, nodes, sig[i], sig[i + 1], z, tau, corrector=False, **step)
        return x

    return DiffusersPlan("SASolverScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig, stochastic=True)
