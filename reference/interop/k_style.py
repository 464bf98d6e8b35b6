"""k-diffusion-style classes in sigma: EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete, KDPM2Discrete,
KDPM2AncestralDiscrete, DPMSolverSDE, LMSDiscrete; and score-SDE's VE predictor-corrector (ScoreSdeVe)."""

import math

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._config import (
    FinalSigmas,
    PredictionType,
    SigmaSpacing,
    TimestepSpacing,
    _float32,
    _no_custom_with_respacing,
    _one_of,
    _respace,
    _sigma_to_t,
    _spaced,
    diffusers_train_sigmas,
    grid_train_timesteps,
    parsed,
    schedule_from_config,
    sigma_spacing,
)
from diffspec.reference.interop._plan import DiffusersPlan, _threshold, _ve_x0
from diffspec.reference.samplers.lms import lms_coefficients
from diffspec.reference.schedules import VE

# ---- k-diffusion family: Euler, Euler ancestral, Heun, KDPM2 (+ ancestral), DPMSolverSDE, LMS ------------


def _k_sigmas(
    cfg, n, schedule, *, final_sigmas_type="zero", sigma_min=None, sigma_max=None, timesteps=None, sigmas=None
):
    """Timesteps (float32) and sigmas (+ the final one) of diffusers' Euler/Heun/LMS/KDPM2 set_timesteps.

    The spacing is the config's (`sigma_spacing`). Departure reproduced for log_linear (Euler): diffusers takes
    N + 1 sigmas geometric between the training ends (float32 linspace of log sigma) and keeps the spaced timesteps,
    so the model times do not match the sigmas, and the final sigma is appended after them (the loop uses N + 1).
    Karras, exponential and beta sigmas are re-spaced between the interpolated ends (or Euler's sigma_min /
    sigma_max) and mapped back to fractional timesteps. The sigmas are rounded to float32, as diffusers steps.

    Custom inputs (Euler, Heun): `timesteps` replace the spaced ones (the sigmas are interpolated at them); `sigmas`
    (Euler; N + 1 values, the final one included) are used as given, each mapped to its fractional timestep in
    float32 as diffusers does."""
    train = diffusers_train_sigmas(cfg)
    if sigmas is not None:
        sig = np.asarray(sigmas, dtype=np.float32)
        if len(sig) < 2:
            raise ValueError(f"sigmas={list(sigmas)!r}: expected N + 1 >= 2 values, the final sigma included")
        return _sigma_to_t(sig[:-1], np.log(train)).astype(np.float32), sig.astype(np.float64)
    spacing = sigma_spacing(cfg)
    if timesteps is not None:
        _no_custom_with_respacing(cfg, "timesteps")
        ts = np.asarray(timesteps, dtype=np.float32)
    else:
        _checks.integer("num_inference_steps", n, minimum=1, maximum=grid_train_timesteps(cfg))
        ts = _spaced(cfg, n, dtype=np.float32)
    if spacing == SigmaSpacing.LOG_LINEAR:
        sigmas = np.exp(np.linspace(np.log(train[-1]), np.log(train[0]), n + 1, dtype=np.float32).astype(np.float64))
        sigmas = sigmas.astype(np.float32).astype(np.float64)
    else:
        sigmas = np.interp(ts.astype(np.float64), np.arange(len(train)), train)  # linear in t (diffusers)
    if spacing in (SigmaSpacing.KARRAS, SigmaSpacing.EXPONENTIAL, SigmaSpacing.BETA):
        lo = sigmas[-1] if sigma_min is None else sigma_min
        hi = sigmas[0] if sigma_max is None else sigma_max
        sigmas = _respace(spacing, hi, lo, n)
        ts = _sigma_to_t(sigmas, np.log(train)).astype(np.float32)
    last = train[0] if FinalSigmas(final_sigmas_type) == FinalSigmas.SIGMA_MIN else 0.0
    return ts, _float32(np.append(sigmas, last))


def _k_init_sigma(cfg, sigmas):
    top = float(np.max(sigmas))
    spacing = parsed(cfg, "timestep_spacing")
    return top if spacing in (TimestepSpacing.LINSPACE, TimestepSpacing.TRAILING) else math.sqrt(top**2 + 1)


def _churn(opts, sig, n):
    """Per-step churn gamma_i of Karras et al. (2022, Alg. 2) as diffusers' Euler schedulers compute it:
    min(s_churn / N, sqrt(2) - 1) where s_tmin <= sigma_i <= s_tmax, else 0; and s_noise."""
    s_churn = _checks.nonnegative("s_churn", opts.get("s_churn", 0.0))
    s_tmin = float(opts.get("s_tmin", 0.0))
    s_tmax = float(opts.get("s_tmax", math.inf))
    s_noise = _checks.nonnegative("s_noise", opts.get("s_noise", 1.0))
    inside = (s_tmin <= sig[:-1]) & (sig[:-1] <= s_tmax)
    return np.where(inside, min(s_churn / n, math.sqrt(2) - 1), 0.0), s_noise


def _plan_euler(cfg, n, opts, *, timesteps=None, sigmas=None):
    """Euler's method on the probability-flow ODE in sigma_ve (Karras et al. 2022, Alg. 1; Alg. 2 with churn), as
    diffusers' EulerDiscreteScheduler: x is scaled by sqrt(sigma^2 + 1) (the model sees x / sqrt(sigma^2 + 1)),
    x_next = x + (sigma_next - sigma) (x - x0) / sigma. The reference counterpart is `euler` on the same sigmas.

    Step options s_churn, s_tmin, s_tmax, s_noise (Alg. 2): with gamma = min(s_churn / N, sqrt(2) - 1) where
    s_tmin <= sigma <= s_tmax, sigma_hat = (1 + gamma) sigma, x_hat = x + s_noise sqrt(sigma_hat^2 - sigma^2) z, then
    an Euler step from sigma_hat. Departure reproduced: diffusers calls the model *before* the churn, at (x, sigma),
    and reads its output as if it were taken at (x_hat, sigma_hat): eps -> x0 = x_hat - sigma_hat eps; v -> x0 with
    sigma's coefficients applied to x_hat (the paper evaluates the denoiser at x_hat, sigma_hat). Noise draws: one
    per step with gamma > 0, the last step included. Custom `timesteps` or `sigmas` (N + 1, the final included): see
    `_k_sigmas`."""
    schedule = schedule_from_config(cfg)
    if timesteps is not None and sigmas is not None:
        raise ValueError("timesteps and sigmas: diffusers' Euler takes one of them, not both")
    given_ts = None
    if sigmas is None:
        n, given_ts = _one_of(n, "timesteps", timesteps)
    else:
        n, sigmas = _one_of(n, "sigmas", sigmas)
        n -= 1
    continuous_v = cfg["timestep_type"] == "continuous" and parsed(cfg, "prediction_type") == PredictionType.V
    if given_ts is not None and continuous_v:
        raise ValueError(
            "timesteps with timestep_type='continuous' and v_prediction: diffusers refuses the combination"
        )
    ts, sig = _k_sigmas(
        cfg,
        n,
        schedule,
        final_sigmas_type=cfg["final_sigmas_type"],
        sigma_min=cfg["sigma_min"],
        sigma_max=cfg["sigma_max"],
        timesteps=given_ts,
        sigmas=sigmas,
    )
    if continuous_v:
        # EDM's c_noise = log(sigma) / 4 (Stable Video Diffusion), from the float32 sigmas
        ts = (0.25 * np.log(sig[:n].astype(np.float32))).astype(np.float32)
    gammas, s_noise = _churn(opts, sig, n)
    pred = parsed(cfg, "prediction_type")

    def run(model, x, draw):
        for i, t in enumerate(ts):
            s = sig[i]
            out = model(x / np.sqrt(s**2 + 1), t)
            s_hat = s * (1 + gammas[i])
            if gammas[i] > 0:
                x = x + s_noise * np.sqrt(s_hat**2 - s**2) * draw(x.shape)
            match pred:
                case PredictionType.EPSILON:
                    x0 = x - s_hat * out
                case PredictionType.V:
                    x0 = out * (-s / np.sqrt(s**2 + 1)) + x / (s**2 + 1)
                case PredictionType.SAMPLE:
                    x0 = out
            x = x + (sig[i + 1] - s_hat) * (x - x0) / s_hat
        return x

    return DiffusersPlan(
        "EulerDiscreteScheduler",
        cfg,
        schedule,
        ts,
        _k_init_sigma(cfg, sig),
        run,
        sigmas=sig,
        stochastic=bool(np.any(gammas > 0)),
    )


def _plan_euler_ancestral(cfg, n, opts):
    """Euler ancestral (k-diffusion `sample_euler_ancestral`, eta = 1) as diffusers steps it: sigma_up =
    sqrt(s'^2 (s^2 - s'^2) / s^2), sigma_down = sqrt(s'^2 - sigma_up^2), an Euler step to sigma_down plus
    sigma_up z. One draw per step, the last included (times sigma_up = 0)."""
    schedule = schedule_from_config(cfg)
    ts, sig = _k_sigmas(cfg, n, schedule)
    pred = parsed(cfg, "prediction_type")

    def run(model, x, draw):
        for i, t in enumerate(ts):
            s, s_next = sig[i], sig[i + 1]
            x0 = _ve_x0(pred, model(x / np.sqrt(s**2 + 1), t), x, s)
            up = np.sqrt(s_next**2 * (s**2 - s_next**2) / s**2)
            down = np.sqrt(s_next**2 - up**2)
            x = x + (down - s) * (x - x0) / s + up * draw(x.shape)
        return x

    return DiffusersPlan(
        "EulerAncestralDiscreteScheduler", cfg, schedule, ts, _k_init_sigma(cfg, sig), run, sigmas=sig, stochastic=True
    )


def _plan_heun(cfg, n, opts, *, timesteps=None):
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1, no churn) as diffusers' HeunDiscreteScheduler: two
    model calls per step (the second at sigma_next, with the timestep of sigma_next), an Euler step onto the
    final sigma = 0. Model timesteps: t_0, t_1, t_1, t_2, t_2, ..., t_{N-1}, t_{N-1}. Custom `timesteps` replace the
    spaced ones."""
    schedule = schedule_from_config(cfg)
    n, given_ts = _one_of(n, "timesteps", timesteps)
    ts, sig = _k_sigmas(cfg, n, schedule, timesteps=given_ts)
    calls = np.concatenate([ts[:1], np.repeat(ts[1:], 2)])
    pred = parsed(cfg, "prediction_type")

    def x0_at(model, x, t, s):
        return _threshold(_ve_x0(pred, model(x / np.sqrt(s**2 + 1), t), x, s), cfg)

    def run(model, x, draw):
        for i in range(len(ts)):
            s, s_next = sig[i], sig[i + 1]
            d = (x - x0_at(model, x, ts[i], s)) / s
            x_euler = x + (s_next - s) * d
            if s_next == 0:
                x = x_euler
            else:
                d_next = (x_euler - x0_at(model, x_euler, ts[i + 1], s_next)) / s_next
                x = x + (s_next - s) * (d + d_next) / 2
        return x

    return DiffusersPlan(
        "HeunDiscreteScheduler", cfg, schedule, calls, _k_init_sigma(cfg, sig), run, sigmas=sig, stochastic=False
    )


def _kdpm2_sigmas(cfg, n, schedule):
    """_k_sigmas as KDPM2 / KDPM2-ancestral build them: Karras timesteps are rounded (the sigmas stay exact)."""
    ts, sig = _k_sigmas(cfg, n, schedule)
    return (ts.round() if cfg["use_karras_sigmas"] else ts), sig


def _plan_kdpm2(cfg, n, opts):
    """DPM-Solver-2 in sigma_ve (Karras et al. 2022, Alg. 1 with the midpoint of Lu et al. 2022; k-diffusion
    `sample_dpm_2`) as diffusers' KDPM2DiscreteScheduler: an Euler step to the geometric midpoint
    sigma_mid = sqrt(sigma sigma_next), the model there, then x_next = x + (sigma_next - sigma) (x_mid - x0_mid) /
    sigma_mid; the step onto sigma = 0 is Euler (one call). The midpoint model call gets the fractional timestep
    of sigma_mid (log-sigma interpolation, unrounded). Model timesteps: t_0, tm_1, t_1, ..., tm_{N-1}, t_{N-1}
    (2N - 1 calls). Model inputs are x / sqrt(sigma^2 + 1) at the sigma of the call."""
    schedule = schedule_from_config(cfg)
    ts, sig = _kdpm2_sigmas(cfg, n, schedule)
    log_train = np.log(diffusers_train_sigmas(cfg))
    mids = np.sqrt(sig[:-1] * sig[1:])
    t_mids = _sigma_to_t(mids, log_train).astype(ts.dtype)
    calls = np.concatenate([ts[:1], np.stack([t_mids[:-1], ts[1:]], axis=1).ravel()])
    pred = parsed(cfg, "prediction_type")

    def x0_at(model, x, t, s):
        return _ve_x0(pred, model(x / np.sqrt(s**2 + 1), t), x, s)

    def run(model, x, draw):
        for i in range(len(ts)):
            s, s_next = sig[i], sig[i + 1]
            d = (x - x0_at(model, x, ts[i], s)) / s
            if s_next == 0:
                x = x - s * d
            else:
                x_mid = x + (mids[i] - s) * d
                x = x + (s_next - s) * (x_mid - x0_at(model, x_mid, t_mids[i], mids[i])) / mids[i]
        return x

    return DiffusersPlan(
        "KDPM2DiscreteScheduler", cfg, schedule, calls, _k_init_sigma(cfg, sig), run, sigmas=sig, stochastic=False
    )


def _plan_kdpm2_ancestral(cfg, n, opts):
    """DPM-Solver-2 ancestral (k-diffusion `sample_dpm_2_ancestral`, eta = 1) as diffusers'
    KDPM2AncestralDiscreteScheduler: with sigma_up = sqrt(s'^2 (s^2 - s'^2) / s^2) and sigma_down =
    sqrt(s'^2 - sigma_up^2), an Euler step to sigma_mid = sqrt(sigma sigma_down), the model there, x_next = x +
    (sigma_down - sigma) (x_mid - x0_mid) / sigma_mid + sigma_up z. The last step (onto sigma = 0) is Euler and
    draws nothing. Noise draws: one per step after its second model call, N - 1 in all. Model timesteps: t_0,
    tm_0, t_1, tm_1, ..., tm_{N-2}, t_{N-1}."""
    schedule = schedule_from_config(cfg)
    ts, sig = _kdpm2_sigmas(cfg, n, schedule)
    s, s_next = sig[:-1], sig[1:]
    up = np.sqrt(s_next**2 * (s**2 - s_next**2) / s**2)
    down = np.sqrt(s_next**2 - up**2)
    mids = np.sqrt(s * down)  # 0 on the last step (sigma_down = 0), which is Euler
    t_mids = _sigma_to_t(mids, np.log(diffusers_train_sigmas(cfg))).astype(ts.dtype)
    calls = np.concatenate([ts[:1], np.stack([t_mids[:-1], ts[1:]], axis=1).ravel()])
    pred = parsed(cfg, "prediction_type")

    def x0_at(model, x, t, sigma):
        return _ve_x0(pred, model(x / np.sqrt(sigma**2 + 1), t), x, sigma)

    def run(model, x, draw):
        for i in range(len(ts)):
            d = (x - x0_at(model, x, ts[i], s[i])) / s[i]
            if s_next[i] == 0:
                x = x - s[i] * d
            else:
                x_mid = x + (mids[i] - s[i]) * d
                d_mid = (x_mid - x0_at(model, x_mid, t_mids[i], mids[i])) / mids[i]
                x = x + (down[i] - s[i]) * d_mid + up[i] * draw(x.shape)
        return x

    return DiffusersPlan(
        "KDPM2AncestralDiscreteScheduler",
        cfg,
        schedule,
        calls,
        _k_init_sigma(cfg, sig),
        run,
        sigmas=sig,
        stochastic=True,
    )


def _plan_dpm_sde(cfg, n, opts):
    """DPM-Solver++(2S) SDE (Lu et al. 2022, arXiv:2211.01095, with k-diffusion's `sample_dpmpp_sde` noise: eta = 1,
    r = 1/2) as diffusers' DPMSolverSDEScheduler. Per step from sigma to sigma_next, with sigma_mid =
    sqrt(sigma sigma_next) (the lambda-midpoint) and anc(a, b) = (sigma_down, sigma_up) the ancestral split of a
    step a -> b (sigma_up = min(b, sqrt(b^2 (a^2 - b^2) / a^2)), sigma_down = sqrt(b^2 - sigma_up^2)):

        x_mid  = x0 + (d1 / sigma) (x - x0) + s_noise u1 W(sigma, sigma_mid),        (d1, u1) = anc(sigma, sigma_mid)
        x_next = x0_mid + (d2 / sigma) (x - x0_mid) + s_noise u2 W(sigma, sigma_next), (d2, u2) = anc(sigma, sigma_next)

    with x0_mid the model at x_mid, sigma_mid (its timestep: the unrounded log-sigma interpolation). The step onto
    sigma = 0 is Euler (one call). W(a, b) is the increment of one Brownian path in sigma, normalised to unit
    variance: diffusers samples it from a torchsde BrownianTree, so the two increments of a step are correlated.
    Noise draws: two arrays per step except the last, z1 then z2, with W(sigma, sigma_mid) = z1 and
    W(sigma, sigma_next) = (sqrt(sigma - sigma_mid) z1 + sqrt(sigma_mid - sigma_next) z2) / sqrt(sigma - sigma_next),
    the same joint law as the Brownian tree (which a plan without torch cannot reproduce draw for draw). With
    `noise_sampler_seed` (diffusers seeds its tree with it) and no `noise`, the plan draws z1, z2 from
    numpy.random.default_rng(noise_sampler_seed): reproducible per seed, the tree's law, not torchsde's numbers;
    a `noise` passed to `run` takes precedence. Step option:
    s_noise (1.0). Timesteps are float64 and unrounded, Karras, exponential and beta sigmas included."""
    s_noise = _checks.nonnegative("s_noise", opts.get("s_noise", 1.0))
    schedule = schedule_from_config(cfg)
    _checks.integer("num_inference_steps", n, minimum=1, maximum=grid_train_timesteps(cfg))
    train = diffusers_train_sigmas(cfg)
    if parsed(cfg, "timestep_spacing") == TimestepSpacing.LINSPACE:
        ts = np.linspace(0, grid_train_timesteps(cfg) - 1, n)[::-1].copy()
    else:
        ts = _spaced(cfg, n, dtype=np.float64)
    sig = np.interp(ts, np.arange(len(train)), train)
    spacing = sigma_spacing(cfg)
    if spacing != SigmaSpacing.LINEAR:  # Karras, exponential or beta sigmas between the ends
        sig = _respace(spacing, sig[0], sig[-1], n)
        ts = _sigma_to_t(sig, np.log(train))
    mids = np.sqrt(sig[:-1] * sig[1:])
    t_mids = _sigma_to_t(mids, np.log(train))
    calls = np.concatenate([ts[:1], np.stack([t_mids, ts[1:]], axis=1).ravel()])
    sig = np.append(sig, 0.0)
    pred = parsed(cfg, "prediction_type")

    def x0_at(model, x, t, s):
        return _ve_x0(pred, model(x / np.sqrt(s**2 + 1), t), x, s)

    def ancestral(a, b):
        up = min(b, np.sqrt(b**2 * (a**2 - b**2) / a**2))
        return np.sqrt(b**2 - up**2), up

    def run(model, x, draw):
        for i in range(n):
            s, s_next = sig[i], sig[i + 1]
            x0 = x0_at(model, x, ts[i], s)
            if s_next == 0:
                x = x0 + (x - x0) * (s_next / s)
                continue
            s_mid = mids[i]
            (d1, u1), (d2, u2) = ancestral(s, s_mid), ancestral(s, s_next)
            z1 = draw(x.shape)
            x_mid = x0 + d1 / s * (x - x0) + s_noise * u1 * z1
            x0_mid = x0_at(model, x_mid, t_mids[i], s_mid)
            z2 = draw(x.shape)
            w = (np.sqrt(s - s_mid) * z1 + np.sqrt(s_mid - s_next) * z2) / np.sqrt(s - s_next)
            x = x0_mid + d2 / s * (x - x0_mid) + s_noise * u2 * w
        return x

    plan = DiffusersPlan(
        "DPMSolverSDEScheduler", cfg, schedule, calls, _k_init_sigma(cfg, sig), run, sigmas=sig, stochastic=n > 1
    )
    plan.default_noise_seed = cfg["noise_sampler_seed"]
    return plan


def _plan_lms(cfg, n, opts):
    """Linear multistep in sigma_ve (k-diffusion `sample_lms`, Adams-Bashforth on a variable grid, order 4 by
    default): x_next = x + sum_j c_j d_{i-j}, d = (x - x0) / sigma, c_j the integrated Lagrange basis: the
    reference's `samplers.lms.lms_coefficients`, exact, where diffusers integrates with scipy.integrate.quad at
    epsrel 1e-4 (the largest remaining difference with diffusers, 3.5e-5 of max |x| with beta sigmas)."""
    order = _checks.integer("order", opts.get("order", 4), minimum=1)
    schedule = schedule_from_config(cfg)
    ts, sig = _k_sigmas(cfg, n, schedule)
    pred = parsed(cfg, "prediction_type")

    def run(model, x, draw):
        ds = []
        for i, t in enumerate(ts):
            s = sig[i]
            x0 = _ve_x0(pred, model(x / np.sqrt(s**2 + 1), t), x, s)
            ds = (ds + [(x - x0) / s])[-order:]
            cur = min(i + 1, order)
            coefficients = lms_coefficients(sig[i + 1 - cur : i + 1][::-1], sig[i + 1])  # newest first
            x = x + sum(c * d for c, d in zip(coefficients, reversed(ds), strict=True))
        return x

    return DiffusersPlan(
        "LMSDiscreteScheduler", cfg, schedule, ts, _k_init_sigma(cfg, sig), run, sigmas=sig, stochastic=False
    )


def _plan_score_sde_ve(cfg, n, opts):
    """Score-SDE's VE predictor-corrector sampler (Song et al. 2021, Algorithms 2-3: reverse-diffusion predictor,
    Langevin corrector) as diffusers' ScoreSdeVePipeline drives ScoreSdeVeScheduler. It has no `step`: the loop
    here is the pipeline's, over t_i = linspace(1, sampling_eps, N) with sigma_i = sigma_min (sigma_max /
    sigma_min)^t_i given to the model, which returns the score. Per step, `correct_steps` Langevin moves
    x += eps s + sqrt(2 eps) z with eps = 2 (snr |z| / |s|)^2 (norms per sample, averaged over the batch: the
    batch shares one step size), then the predictor x_mean = x + g^2 s, x = x_mean + g z, g^2 = d_k^2 - d_{k-1}^2
    on the geometric grid d of N sigma levels at k = floor(t (N - 1)) (d_{-1} = 0). Returns the last x_mean (the
    pipeline then clamps to [0, 1], an image-space step left to the caller). Draws: correct_steps + 1 per step."""
    n = _checks.integer("num_inference_steps", n, minimum=2)
    lo, hi = _checks.positive("sigma_min", cfg["sigma_min"]), _checks.positive("sigma_max", cfg["sigma_max"])
    eps_t, snr = _checks.positive("sampling_eps", cfg["sampling_eps"]), float(cfg["snr"])
    correct = _checks.integer("correct_steps", cfg["correct_steps"], minimum=0)
    ts = np.linspace(1, eps_t, n, dtype=np.float32)
    sig = (lo * (hi / lo) ** ts.astype(np.float64)).astype(np.float32).astype(np.float64)
    levels = np.exp(np.linspace(math.log(lo), math.log(hi), n, dtype=np.float32).astype(np.float64))
    levels = levels.astype(np.float32).astype(np.float64)
    ks = (ts * np.float32(n - 1)).astype(np.int64)

    def norm(a):
        return np.mean(np.sqrt(np.sum(a.reshape(len(a), -1) ** 2, axis=1)))

    def run(model, x, draw):
        x_mean = x
        for i, s_t in enumerate(sig):
            for _ in range(correct):
                score = model(x, s_t)
                z = draw(x.shape)
                step = 2 * (snr * norm(z) / norm(score)) ** 2
                x = x + step * score + np.sqrt(2 * step) * z
            score = model(x, s_t)
            k = ks[i]
            g2 = levels[k] ** 2 - (levels[k - 1] ** 2 if k > 0 else 0.0)
            x_mean = x + g2 * score
            x = x_mean + np.sqrt(g2) * draw(x.shape)
        return x_mean

    schedule = VE(sigma_min=lo, sigma_max=hi)
    plan = DiffusersPlan("ScoreSdeVeScheduler", cfg, schedule, sig, hi, run, sigmas=sig, stochastic=True)
    plan.prediction_type = "score"
    return plan
