"""Consistency models: LCMScheduler, TCDScheduler, CMStochasticIterativeScheduler."""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._config import diffusers_alphas_cumprod, parsed, schedule_from_config
from diffspec.reference.interop._plan import DiffusersPlan, _threshold, _vp_x0_eps
from diffspec.reference.interop.ddpm import _custom_descending_timesteps
from diffspec.reference.schedules import EDM

# ---- Consistency models: LCM, TCD ----------------------------------------------------------------------------


def _lcm_timesteps(cfg, n, timesteps=None):
    """LCM/TCD set_timesteps: (timesteps, the step count diffusers' step reads). The distillation grid
    t = k j - 1 (j = 1..int(original_inference_steps strength), k = T // original_inference_steps), descending,
    sampled at floor(linspace(0, len, N, endpoint=False)); or the custom `timesteps` (strictly decreasing
    integers; diffusers only warns when they leave the distillation grid). With custom timesteps and strength < 1,
    diffusers keeps their last int(N strength) but its step still counts N: the count returned is then N, more than
    the timesteps kept, so no step is the last by that count and the last one re-noises like a middle one."""
    strength = float(cfg.get("_strength", 1.0))
    if timesteps is not None:
        if n is not None:
            raise ValueError(f"num_inference_steps={n!r} with timesteps: expected exactly one of them")
        ts = _custom_descending_timesteps(cfg, timesteps)
        kept = min(int(len(ts) * strength), len(ts))
        if kept < 1:
            raise ValueError(
                f"strength={strength!r}: int(len(timesteps) x strength) = 0 of the {len(ts)} custom timesteps "
                "(diffusers then runs no step); expected at least one"
            )
        return ts[len(ts) - kept :], len(ts)
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    orig = _checks.integer("original_inference_steps", cfg["original_inference_steps"], minimum=1, maximum=T)
    _checks.integer("num_inference_steps", n, minimum=1, maximum=orig)
    origin = (np.arange(1, int(orig * strength) + 1) * (T // orig) - 1)[::-1]
    if len(origin) < n:
        raise ValueError(
            f"strength={strength!r}: int(original_inference_steps x strength) = {len(origin)} is below "
            f"num_inference_steps={n} (diffusers rejects it too)"
        )
    picked = origin[np.floor(np.linspace(0, len(origin), num=n, endpoint=False)).astype(np.int64)].astype(np.int64)
    return picked, n


def _plan_lcm(cfg, n, opts, *, timesteps=None):
    """Latent consistency model multistep sampling (Luo et al. 2023, arXiv:2310.04378, Alg. 3; Song et al. 2023,
    "Consistency Models", Alg. 1) as diffusers' LCMScheduler: x0 from the model output (thresholded or clipped as
    configured), the consistency boundary condition f = c_skip(t) x + c_out(t) x0 with c_skip = sd^2 / (s^2 + sd^2),
    c_out = s / sqrt(s^2 + sd^2), s = timestep_scaling * t (the integer timestep, not a noise level) and
    sd = 0.5, then re-noise to the next grid time: x = sqrt(abar') f + sqrt(1 - abar') z. The last step returns f.
    Noise draws: one per step except the last (with strength and custom timesteps, see `_lcm_timesteps`, the last
    draws too and f is returned, as the pipelines return it). timestep_spacing, steps_offset and set_alpha_to_one
    are stored by diffusers but never read by LCM's timesteps or step (inert). Custom `timesteps`: see
    `_lcm_timesteps`."""
    schedule = schedule_from_config(cfg)
    abar = diffusers_alphas_cumprod(cfg).astype(np.float64)  # diffusers' float32 values
    ts, counted = _lcm_timesteps(cfg, n, timesteps)
    pred, scaling = cfg["prediction_type"], float(cfg["timestep_scaling"])

    def run(model, x, draw):
        for i, t in enumerate(ts):
            x0 = _threshold(_vp_x0_eps(pred, model(x, t), x, abar[t])[0], cfg)
            s = t * scaling
            f = 0.25 / (s**2 + 0.25) * x + s / np.sqrt(s**2 + 0.25) * x0
            if i == counted - 1:
                return f
            if i == len(ts) - 1:  # last kept of more counted: diffusers re-noises at t itself; the pipeline
                draw(x.shape)  # returns the denoised f, the draw spent
                return f
            a_next = abar[ts[i + 1]]
            x = np.sqrt(a_next) * f + np.sqrt(1 - a_next) * draw(x.shape)
        return x

    return DiffusersPlan("LCMScheduler", cfg, schedule, ts, 1.0, run, stochastic=counted > 1)


def _plan_tcd(cfg, n, opts, *, timesteps=None):
    """Trajectory consistency distillation's strategic stochastic sampling (Zheng et al. 2024, arXiv:2402.19159,
    Alg. 4, gamma = the step option `eta`, 0.3 by default as in diffusers' pipelines) as diffusers' TCDScheduler:
    from (x0, eps) of the model output, jump to s = floor((1 - gamma) t_next) along the ODE,
    x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps, then forward-noise to t_next:
    x = sqrt(abar_next / abar_s) x_s + sqrt(1 - abar_next / abar_s) z. gamma = 0 is deterministic (DDIM between the
    grid times); gamma > 0 draws one array per step except the last.

    Departures reproduced: s is floored in float32 ((1 - 0.3) * 700 gives 489 in float64 but 490 in diffusers); the
    last step jumps to s = 0 and returns x at alphabar[0], not the clean end. TCD's step never reads clip_sample,
    thresholding, timestep_spacing, steps_offset or set_alpha_to_one in diffusers 0.42.1: inert here too. Custom
    `timesteps`: see `_lcm_timesteps`."""
    gamma = _checks.in_range("eta", opts.get("eta", 0.3), 0.0, 1.0)
    schedule = schedule_from_config(cfg)
    abar = diffusers_alphas_cumprod(cfg).astype(np.float64)  # diffusers' float32 values
    ts, counted = _lcm_timesteps(cfg, n, timesteps)
    pred = parsed(cfg, "prediction_type")

    def run(model, x, draw):
        for i, t in enumerate(ts):
            t_next = ts[i + 1] if i + 1 < len(ts) else 0
            s = int(np.floor(np.float32(1 - gamma) * np.float32(t_next)))
            x0, eps = _vp_x0_eps(pred, model(x, t), x, abar[t])
            x = np.sqrt(abar[s]) * x0 + np.sqrt(1 - abar[s]) * eps
            if gamma > 0 and i != counted - 1:  # after the last kept of more counted: s = t_next = 0, a draw times 0
                x = np.sqrt(abar[t_next] / abar[s]) * x + np.sqrt(1 - abar[t_next] / abar[s]) * draw(x.shape)
        return x

    return DiffusersPlan("TCDScheduler", cfg, schedule, ts, 1.0, run, stochastic=gamma > 0 and counted > 1)


def _plan_cm_stochastic_iterative(cfg, n, opts, *, timesteps=None):
    """Consistency-model multistep sampling (Song et al. 2023, "Consistency Models", Algorithm 1) as diffusers'
    CMStochasticIterativeScheduler, in EDM's sigma (alpha = 1): sigmas on the Karras ramp (rho) at the training
    indices k (T // N) i, i < N, read as k / (T - 1); the model sees x / sqrt(sigma^2 + sigma_data^2) and timestep
    250 log(sigma), and its output F gives x0 = c_skip x + c_out F with the boundary-condition scalings
    c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2), c_out = (sigma - sigma_min) sd / sqrt(sigma^2 + sd^2)
    (clipped to [-1, 1] when clip_denoised); then x = x0 + s_noise z sqrt(sigma_next^2 - sigma_min^2), sigma_next
    the next sigma (sigma_min after the last). Noise draws: one per step, the last included, when N > 1. Custom
    `timesteps` (strictly decreasing training indices) replace k (T // N) i."""
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    if timesteps is not None:
        if n is not None:
            raise ValueError(f"num_inference_steps={n!r} with timesteps: expected exactly one of them")
        indices = _custom_descending_timesteps(cfg, timesteps)[::-1]
        n = len(indices)
    else:
        n = _checks.integer("num_inference_steps", n, minimum=1, maximum=T)
        indices = np.arange(n) * (T // n)
    lo, hi, sd = (_checks.positive(k, cfg[k]) for k in ("sigma_min", "sigma_max", "sigma_data"))
    rho, s_noise = _checks.positive("rho", cfg["rho"]), float(cfg["s_noise"])
    ramp = indices / (T - 1)
    sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    ts = 1000 * 0.25 * np.log(sig + 1e-44)
    sig = np.append(sig, lo).astype(np.float32).astype(np.float64)

    def run(model, x, draw):
        for i, t in enumerate(ts):
            s = sig[i]
            out = model(x / np.sqrt(s**2 + sd**2), t)
            x0 = sd**2 / ((s - lo) ** 2 + sd**2) * x + (s - lo) * sd / np.sqrt(s**2 + sd**2) * out
            if cfg["clip_denoised"]:
                x0 = np.clip(x0, -1.0, 1.0)
            z = draw(x.shape) if n > 1 else 0.0
            s_hat = min(max(sig[i + 1], lo), hi)
            x = x0 + s_noise * z * np.sqrt(s_hat**2 - lo**2)
        return x

    schedule = EDM(sigma_min=lo, sigma_max=hi, sigma_data=sd)
    return DiffusersPlan("CMStochasticIterativeScheduler", cfg, schedule, ts, hi, run, sigmas=sig, stochastic=n > 1)
