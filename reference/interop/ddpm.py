"""The discrete-VP classes: DDIMScheduler, DDPMScheduler, PNDMScheduler."""

import enum

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._config import (
    PredictionType,
    _spaced,
    diffusers_alphas_cumprod,
    parsed,
    schedule_from_config,
)
from diffspec.reference.interop._plan import DiffusersPlan, _threshold, _vp_x0_eps
from diffspec.reference.schedules import CosineVP, ExplicitBetas

# ---- DDIM, DDPM, PNDM ---------------------------------------------------------------------------------------


def _ddim_steps(cfg, n, abar):
    """The set-up of diffusers' DDIM family (DDIMScheduler, DDIMParallelScheduler, CogVideoXDDIMScheduler):
    the spaced model timesteps, and per step the alphabar (of `abar`) it lands on, at t - T // N (diffusers #11347,
    #12633: whatever the spacing), or below t = 0 at 1 (set_alpha_to_one) or alphabar[0]."""
    T = cfg["num_train_timesteps"]
    _checks.integer("num_inference_steps", n, minimum=1, maximum=T)
    ts = _spaced(cfg, n, dtype=np.int64)
    final = 1.0 if cfg["set_alpha_to_one"] else abar[0]
    prev = ts - T // n
    return ts, np.where(prev >= 0, abar[np.maximum(prev, 0)], final)


def _plan_ddim(cfg, n, opts):
    """DDIM (Song et al. 2021, eq. 12) as diffusers' DDIMScheduler steps it.

    Departure: the previous timestep is t - T // N whatever the spacing (with "linspace" or "trailing" this is not
    the next grid time; the reference `sample_ddim` steps grid[i] -> grid[i + 1]). eta > 0 draws one array per
    step, the last included (times std = 0 when it lands on alphabar = 1)."""
    eta = _checks.nonnegative("eta", opts.get("eta", 0.0))
    use_clipped = bool(opts.get("use_clipped_model_output", False))
    schedule = schedule_from_config(cfg)
    abar = diffusers_alphas_cumprod(cfg).astype(np.float64)  # diffusers' float32 values
    ts, abar_prev = _ddim_steps(cfg, n, abar)
    pred = parsed(cfg, "prediction_type")

    def run(model, x, draw):
        for t, a_prev in zip(ts, abar_prev, strict=True):
            a_t = abar[t]
            x0, eps = _vp_x0_eps(pred, model(x, t), x, a_t)
            x0 = _threshold(x0, cfg)
            var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
            std = eta * np.sqrt(var)
            if use_clipped:
                eps = (x - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
            x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - std**2) * eps
            if eta > 0:
                x = x + std * draw(x.shape)
        return x

    return DiffusersPlan("DDIMScheduler", cfg, schedule, ts, 1.0, run, stochastic=eta > 0)


class Variance(enum.StrEnum):
    """DDPMScheduler's `variance_type`: the posterior variance (small), beta (large), or the model's own output, as
    the variance itself (learned) or as the interpolation weight in log space between the two (learned_range)."""

    FIXED_SMALL = "fixed_small"
    FIXED_SMALL_LOG = "fixed_small_log"
    FIXED_LARGE = "fixed_large"
    LEARNED = "learned"
    LEARNED_RANGE = "learned_range"


def _custom_descending_timesteps(cfg, timesteps):
    """Custom integer timesteps as DDPM and CM take them: strictly decreasing, the first below T."""
    ts = np.asarray(_checks.finite_array("timesteps", timesteps), dtype=np.int64)
    if ts.ndim != 1 or len(ts) < 1 or np.any(np.diff(ts) >= 0):
        raise ValueError(f"timesteps={list(timesteps)!r}: expected a strictly decreasing list")
    if ts[0] >= cfg["num_train_timesteps"] or ts[-1] < 0:
        raise ValueError(f"timesteps={list(timesteps)!r}: expected values in [0, {cfg['num_train_timesteps'] - 1}]")
    return ts


def _plan_ddpm(cfg, n, opts, *, timesteps=None):
    """Ancestral DDPM (Ho et al. 2020, eqs. 6-7) as diffusers' DDPMScheduler steps it between its timesteps.

    Equal to the reference `sample_ddpm` on the same grid with the clean end appended, except: a noise array is
    drawn on every step whose timestep is > 0 (so with "trailing" spacing also on the last step, times the
    clamped variance 1e-20), and "fixed_large" uses beta_t = 1 - abar_t / abar_prev as the variance. Learned
    variances (DeepFloyd IF, iDDPM) read the model's second half of axis 1: "learned" as the variance,
    "learned_range" as v in log var = (v + 1)/2 log beta + (1 - v)/2 log small (Nichol & Dhariwal 2021, eq. 15).
    "fixed_large_log" is refused: diffusers takes the square root of log(beta) < 0 there, which is NaN. Custom
    `timesteps` (strictly decreasing integers, as a pipeline passes them) replace the spaced ones; each step goes to
    the next of them (the clean end after the last)."""
    schedule = schedule_from_config(cfg)
    abar = diffusers_alphas_cumprod(cfg).astype(np.float64)  # diffusers' float32 values
    if timesteps is not None:
        if n is not None:
            raise ValueError(f"num_inference_steps={n!r} with timesteps: expected exactly one of them")
        ts = _custom_descending_timesteps(cfg, timesteps)
    else:
        _checks.integer("num_inference_steps", n, minimum=1, maximum=cfg["num_train_timesteps"])
        ts = _spaced(cfg, n, dtype=np.int64)
    pred = parsed(cfg, "prediction_type")

    variance = Variance(cfg["variance_type"])
    learned = variance in (Variance.LEARNED, Variance.LEARNED_RANGE)

    def run(model, x, draw):
        for i, t in enumerate(ts):
            a_t = abar[t]
            a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else 1.0
            beta = 1 - a_t / a_prev
            out = model(x, t)
            if learned:
                out, v = out[:, : x.shape[1]], out[:, x.shape[1] :]
            x0, _ = _vp_x0_eps(pred, out, x, a_t)
            x0 = _threshold(x0, cfg)
            mean = np.sqrt(a_prev) * beta / (1 - a_t) * x0 + np.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t) * x
            if t > 0:
                small = max((1 - a_prev) / (1 - a_t) * beta, 1e-20)
                match variance:
                    case Variance.FIXED_SMALL | Variance.FIXED_SMALL_LOG:  # the log form is exp(log(var) / 2)
                        std = np.sqrt(small)
                    case Variance.FIXED_LARGE:
                        std = np.sqrt(beta)
                    case Variance.LEARNED:
                        std = np.sqrt(v)
                    case Variance.LEARNED_RANGE:  # Nichol & Dhariwal (2021), eq. 15
                        std = np.exp(0.5 * ((v + 1) / 2 * np.log(beta) + (1 - v) / 2 * np.log(small)))
                mean = mean + std * draw(x.shape)
            x = mean
        return x

    return DiffusersPlan("DDPMScheduler", cfg, schedule, ts, 1.0, run, stochastic=True, learned_variance=learned)


def _adams_bashforth(ets):
    """PLMS's eps combination (Liu et al. 2022, eq. 12): Adams-Bashforth of order len(ets) <= 4, newest last."""
    match len(ets):
        case 1:
            return ets[-1]
        case 2:
            return (3 * ets[-1] - ets[-2]) / 2
        case 3:
            return (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
    return (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24


def _plan_pndm(cfg, n, opts):
    """PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models", arXiv:2202.09778, Alg. 2) as
    diffusers' PNDMScheduler. Every update is the paper's transfer (eq. 9), written as DDIM's
    x_prev = sqrt(abar_prev) x0(eps') + sqrt(1 - abar_prev) eps'. The step is t -> t - T // N, and with
    set_alpha_to_one=False (PNDM's default) the result is x at alphabar[0], not x0.

    skip_prk_steps=False (the class default): the first three steps are pseudo Runge-Kutta (eq. 13), four model
    calls each at t, t - h, t - h, t - 2h with h = T // N // 2, the stages combined as (e1 + 2 e2 + 2 e3 + e4) / 6;
    then PLMS of order 4. Departures reproduced: every stage is transferred from the step's *start* sample and
    time (for v_prediction, each stage's v is turned into eps with that start sample); stage 1 lands on t - h but
    the model is called at (t - 2h + h), which differs by one when T // N is odd; the three PRK steps cover the
    *last three* intervals of the grid above t_{N-4} (12 calls, timesteps listed as diffusers lists them), so
    N >= 4 (diffusers fails below). Model calls: 12 + (N - 3).

    skip_prk_steps=True (PLMS alone): the first step is a 2-stage (Heun-like) step (the model is called twice at
    the first two timesteps; the second timestep appears twice in `timesteps`), then Adams-Bashforth combinations
    of eps of order 2, 3, 4."""
    schedule = schedule_from_config(cfg)
    abar = diffusers_alphas_cumprod(cfg).astype(np.float64)  # diffusers' float32 values
    T = cfg["num_train_timesteps"]
    prk = not cfg["skip_prk_steps"]
    _checks.integer("num_inference_steps", n, minimum=4 if prk else 1, maximum=T)
    base = _spaced(cfg, n, dtype=np.int64)[::-1]  # ascending, as PNDM builds it
    h, r = T // n // 2, T // n
    if prk:
        stages = np.repeat(base[-4:], 2) + np.tile([0, h], 4)
        prk_ts = np.repeat(stages[:-1], 2)[1:-1][::-1]
        ts = np.concatenate([prk_ts, base[:-3][::-1]]).astype(np.int64)
    else:
        ts = np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1].astype(np.int64)
        prk_ts = ts[:0]
    final = 1.0 if cfg["set_alpha_to_one"] else abar[0]
    pred = parsed(cfg, "prediction_type")

    def transfer(x, t, t_prev, eps_like):
        a_t, a_prev = abar[t], (abar[t_prev] if t_prev >= 0 else final)
        if pred == PredictionType.V:
            eps_like = np.sqrt(a_t) * eps_like + np.sqrt(1 - a_t) * x
        x0 = (x - np.sqrt(1 - a_t) * eps_like) / np.sqrt(a_t)
        return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps_like

    def prk_stage(x, c, t, out, state):
        """Stage c % 4 of pseudo Runge-Kutta step c // 4; state = [ets, start sample, accumulated eps]."""
        ets, start, acc = state
        t_prev, t_start = int(t) - (0 if c % 2 else h), int(prk_ts[c // 4 * 4])
        match c % 4:
            case 0:
                ets, start, acc, e = ets + [out], x, out / 6, out
            case 1 | 2:
                acc, e = acc + out / 3, out
            case _:
                e = acc + out / 6
        state[:] = [ets, start, acc]
        return transfer(start, t_start, t_prev, e)

    def run(model, x, draw):
        state, cur = [[], None, 0.0], None
        for counter, t in enumerate(ts):
            out = model(x, t)
            if counter < len(prk_ts):
                x = prk_stage(x, counter, t, out, state)
                continue
            ets = state[0]
            t_cur, t_prev = int(t), int(t) - r
            if counter != 1:
                ets = ets[-3:] + [out]
            else:
                t_prev, t_cur = t_cur, t_cur + r
            if len(ets) == 1 and counter == 0:
                e, cur = out, x
            elif len(ets) == 1 and counter == 1:
                e, x = (out + ets[-1]) / 2, cur
            else:
                e = _adams_bashforth(ets)
            state[0] = ets
            x = transfer(x, t_cur, t_prev, e)
        return x

    return DiffusersPlan("PNDMScheduler", cfg, schedule, ts, 1.0, run, stochastic=False)


def snr_shifted_schedule(cfg):
    """CogVideoX's schedule: the betas' alphabar shifted in SNR by 1 / snr_shift_scale (SNR' = SNR / scale, as
    SD3's shift), abar' = abar / (scale + (1 - scale) abar), then the optional zero-terminal-SNR rescale; written as
    explicit betas beta_i = 1 - abar'_i / abar'_{i-1} so the reference schedule applies the rescale itself."""
    scale = _checks.positive("snr_shift_scale", cfg["snr_shift_scale"])
    base = schedule_from_config({**cfg, "rescale_betas_zero_snr": False})
    abar = base.alphas_cumprod()
    shifted = abar / (scale + (1 - scale) * abar)
    betas = 1 - shifted / np.concatenate([[1.0], shifted[:-1]])
    return ExplicitBetas(tuple(float(b) for b in betas), rescale_zero_snr=bool(cfg["rescale_betas_zero_snr"]))


def _plan_cogvideox_ddim(cfg, n, opts):
    """CogVideoX's DDIM: deterministic DDIM (Song et al. 2021, eq. 12 with eta = 0) on `snr_shifted_schedule`,
    written x_prev = a_t x + b_t x0 with a_t = sqrt((1 - abar_prev) / (1 - abar_t)),
    b_t = sqrt(abar_prev) - sqrt(abar_t) a_t, stepping to t - T // N as DDIMScheduler does. Its step never clips:
    clip_sample, clip_sample_range and sample_max_value are read by __init__ and ignored."""
    schedule = snr_shifted_schedule(cfg)
    abar = schedule.alphas_cumprod()
    ts, abar_prev = _ddim_steps(cfg, n, abar)
    pred = parsed(cfg, "prediction_type")

    def run(model, x, draw):
        for t, a_prev in zip(ts, abar_prev, strict=True):
            a_t = abar[t]
            x0, _ = _vp_x0_eps(pred, model(x, t), x, a_t)
            c = np.sqrt((1 - a_prev) / (1 - a_t))
            x = c * x + (np.sqrt(a_prev) - np.sqrt(a_t) * c) * x0
        return x

    return DiffusersPlan("CogVideoXDDIMScheduler", cfg, schedule, ts, 1.0, run, stochastic=False)


def _plan_ddim_inverse(cfg, n, opts):
    """DDIM inversion (Song et al. 2021, eq. 12 run from data to noise; Mokady et al. 2023) as diffusers'
    DDIMInverseScheduler: increasing timesteps (leading or trailing), and at each t the state, taken to sit at
    s = min(t - T // N, T - 1) (alphabar 1 or alphabar_0 below 0, per set_alpha_to_one), moves to t:
    x0, eps from the model output read at s (clipped when clip_sample), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
    Departure reproduced: the model is called with timestep t, while the state is at s (diffusers' convention; the
    reference's `ddim_invert` calls it at the state's own time)."""
    schedule = schedule_from_config(cfg)
    abar = diffusers_alphas_cumprod(cfg).astype(np.float64)  # float32, as diffusers: eps = (x - a x0) / b at b ~ 1e-2
    T = cfg["num_train_timesteps"]
    _checks.integer("num_inference_steps", n, minimum=1, maximum=T)
    if cfg["timestep_spacing"] == "leading":
        ts = np.arange(n, dtype=np.int64) * (T // n) + cfg["steps_offset"]
    else:
        ts = np.round(np.arange(T, 0, -T / n)[::-1]).astype(np.int64) - 1
    initial = 1.0 if cfg["set_alpha_to_one"] else abar[0]
    pred = parsed(cfg, "prediction_type")

    def run(model, x, draw):
        for t in ts:
            s = min(t - T // n, T - 1)
            a_s = abar[s] if s >= 0 else initial
            x0, eps = _vp_x0_eps(pred, model(x, t), x, a_s)
            if cfg["clip_sample"]:
                x0 = np.clip(x0, -cfg["clip_sample_range"], cfg["clip_sample_range"])
            x = np.sqrt(abar[t]) * x0 + np.sqrt(1 - abar[t]) * eps
        return x

    return DiffusersPlan("DDIMInverseScheduler", cfg, schedule, ts, 1.0, run, stochastic=False)


def _plan_ipndm(cfg, n, opts):
    """diffusers' IPNDMScheduler (crowsonkb's v-diffusion iPNDM): a v-prediction model on the cosine VP process in
    its own parameterisation, sigma_i = sin(pi s_i / 2)^2, alpha_i = sqrt(1 - sigma_i^2) at s_i = linspace(1, 0,
    N + 1), timestep theta_i = atan2(sigma_i, alpha_i) 2 / pi (alpha = cos(pi theta / 2): `CosineVP` with s -> 0).
    Per step eps_i = sigma_i x + alpha_i v, combined by the Adams-Bashforth weights of orders 1-4 (PNDM's
    warm-up of Liu et al. 2022, eq. 12, without its Runge-Kutta start) into e, then the DDIM step
    x0 = (x - sigma_i e) / max(alpha_i, 1e-8), x_next = alpha_next x0 + sigma_next e. `trained_betas` replaces the
    sigmas by an explicit list of N + 1 values (float32), as diffusers does; diffusers then ignores
    num_inference_steps, and so does the plan."""
    if cfg["trained_betas"] is not None:
        given = _checks.finite_array("trained_betas", cfg["trained_betas"]).ravel()
        if len(given) < 2 or np.any((given < 0) | (given > 1)):
            raise ValueError(f"config key 'trained_betas'={list(given)!r}: expected N + 1 >= 2 sigmas in [0, 1]")
        sigma = given.astype(np.float32).astype(np.float64)
    else:
        n = _checks.integer("num_inference_steps", n, minimum=1)
        s = np.append(np.linspace(1, 0, n + 1)[:-1].astype(np.float32), 0.0).astype(np.float64)
        sigma = np.sin(s * np.pi / 2) ** 2
    alpha = np.sqrt(1 - sigma**2)
    ts = (np.arctan2(sigma, alpha) / np.pi * 2)[:-1].astype(np.float32)
    weights = ([1.0], [1.5, -0.5], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24])

    def run(model, x, draw):
        ets = []
        for i, t in enumerate(ts):
            ets = ([sigma[i] * x + alpha[i] * model(x, t)] + ets)[:4]
            e = sum(w * et for w, et in zip(weights[len(ets) - 1], ets, strict=True))
            x0 = (x - sigma[i] * e) / max(alpha[i], 1e-8)
            x = alpha[i + 1] * x0 + sigma[i + 1] * e
        return x

    plan = DiffusersPlan("IPNDMScheduler", cfg, CosineVP(s=1e-12), ts, 1.0, run, sigmas=sigma, stochastic=False)
    plan.prediction_type = "v_prediction"
    return plan
