"""Two ancestral-DDPM variants with their own schedules: UnCLIPScheduler (Karlo) and DDPMWuerstchenScheduler.

UnCLIPScheduler is DDPM (Ho et al. 2020, eqs. 6-7) on the cosine betas of Nichol & Dhariwal (2021, eq. 17),
stepped between the pipeline's own timesteps. DDPMWuerstchenScheduler is the same posterior on a continuous-time
cosine schedule (Wuerstchen, Pernias et al. 2023; Stable Cascade). Both plans reproduce the loop of the diffusers
pipeline that drives the class (UnCLIPPipeline, WuerstchenPriorPipeline / StableCascadePriorPipeline), because
both `step`s take what the pipeline passes besides the model output: the previous timestep (UnCLIP) or a batch of
continuous times (Wuerstchen).
"""

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._config import PredictionType, parsed, schedule_from_config
from diffspec.reference.interop._plan import DiffusersPlan, _threshold
from diffspec.reference.schedules import _VP, ExplicitBetas


def _plan_unclip(cfg, n, opts):
    """UnCLIPScheduler as UnCLIPPipeline and the Kandinsky 2.x prior pipelines drive it: ancestral DDPM between the
    pipeline's timesteps (the Kandinsky prior's config: prediction_type="sample", clip_sample_range=10).

    Timesteps: round(i (T - 1) / (N - 1)) for i = N - 1 .. 0, so the first model call is at t = T - 1 and the last at
    t = 0 (Karlo's spacing; N >= 2). The pipeline passes `prev_timestep` = the next timestep (None on the last step,
    which diffusers reads as t - 1 = -1, alphabar = 1), so each step is the posterior q(x_prev | x_t, x0) between two
    grid times, with beta = 1 - abar_t / abar_prev (Ho et al. 2020, eq. 7, written for any two times as in
    `samplers.sample_ddpm`). x0 comes from the output ("epsilon" or "sample"), clipped to +-clip_sample_range.
    Noise: one draw per step with t > 0 (none on the last). Variance: "fixed_small_log" is the posterior variance
    (floored at 1e-20); "learned_range" reads v from the second half of axis 1 and uses
    log var = (v + 1)/2 log beta + (1 - v)/2 log posterior-variance (Nichol & Dhariwal 2021, eq. 15), with the
    skipped-step beta above (not betas[t]): the "difference with DDPMScheduler" diffusers notes. The class's
    schedule is always "squaredcos_cap_v2"."""
    # diffusers' float32 betas and cumprod (accumulated in float64, rounded to float32): abar[T-1] ~ 2e-9 makes the
    # first x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) sensitive to its last digits (1e-5 relative in float32)
    betas = np.asarray(schedule_from_config({**cfg, "beta_start": 0.0, "beta_end": 0.0}).betas(), dtype=np.float32)
    abar = np.cumprod((np.float32(1) - betas).astype(np.float64)).astype(np.float32).astype(np.float64)
    schedule = ExplicitBetas(tuple(float(b) for b in betas))
    T = cfg["num_train_timesteps"]
    _checks.integer("num_inference_steps", n, minimum=2, maximum=T)
    ts = np.round(np.arange(n) * ((T - 1) / (n - 1)))[::-1].astype(np.int64)
    pred, learned = parsed(cfg, "prediction_type"), cfg["variance_type"] == "learned_range"

    def run(model, x, draw):
        for i, t in enumerate(ts):
            out = model(x, t)
            if learned:
                out, v = out[:, : x.shape[1]], out[:, x.shape[1] :]
            prev = ts[i + 1] if i + 1 < len(ts) else t - 1
            a_t, a_prev = abar[t], (abar[prev] if prev >= 0 else 1.0)
            beta, alpha, bp_t, bp_prev = _float32_coefficients(betas, t, prev, a_t, a_prev)
            x0 = out if pred == PredictionType.SAMPLE else (x - np.sqrt(bp_t) * out) / np.sqrt(a_t)
            x0 = _threshold(x0, cfg)
            x = np.sqrt(a_prev) * beta / bp_t * x0 + np.sqrt(alpha) * bp_prev / bp_t * x
            if t > 0:
                small = bp_prev / bp_t * beta
                if learned:
                    std = np.exp(0.5 * ((v + 1) / 2 * np.log(beta) + (1 - v) / 2 * np.log(small)))
                else:
                    std = math.sqrt(max(small, 1e-20))
                x = x + std * draw(x.shape)
        return x

    return DiffusersPlan("UnCLIPScheduler", cfg, schedule, ts, 1.0, run, stochastic=True, learned_variance=learned)


def _float32_coefficients(betas, t, prev, a_t, a_prev):
    """(beta, alpha, 1 - abar_t, 1 - abar_prev) of UnCLIPScheduler.step in float32, as diffusers computes them.

    beta = 1 - abar_t / abar_prev (betas[t] when prev = t - 1) and alpha = 1 - beta. The float32 rounding is kept on
    purpose: from t = T - 1 beta rounds to 1 and alpha to 0 (true alpha ~ 5e-9), and on the last step (onto
    abar = 1) 1 - abar_0 = 1 - (1 - betas[0]) differs from betas[0] by 5e-4 relative, so diffusers returns
    1.0005 x0 rather than x0; both move the result by ~1e-4 to 5e-4 of max |x|."""
    f = np.float32
    if prev == t - 1:
        beta = f(betas[t])
    else:
        beta = f(1) - f(a_t) / f(a_prev)
    return float(beta), float(f(1) - beta), float(f(1) - f(a_t)), float(f(1) - f(a_prev))


@dataclass(frozen=True)
class WuerstchenCosine(_VP):
    """DDPMWuerstchenScheduler's schedule: a normalised cosine in continuous time t in [0, 1], clamped.

    abar(t) = clip(cos^2(phi(t')) / cos^2(phi(0)), 1e-4, 0.9999) with phi(u) = (u + s)/(1 + s) pi/2 (Nichol &
    Dhariwal 2021, eq. 17) and the time warp t' = 1 - (1 - t)^scaler for scaler > 1, t^scaler for scaler < 1.
    Departure from the paper kept: the clamp, so that t = 1 is not pure noise (abar = 1e-4) and t = 0 is not clean
    (abar = 0.9999). lam = log(abar / (1 - abar)) / 2."""

    name: ClassVar[str] = "wuerstchen_cosine"
    scaler: float = 1.0
    s: float = 0.008
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 0.0

    def _check_parameters(self):
        _checks.positive("scaler", self.scaler)
        _checks.positive("s", self.s)

    def alphas_cumprod(self, t):
        t = self._t(t)
        if self.scaler > 1:
            t = 1 - (1 - t) ** self.scaler
        elif self.scaler < 1:
            t = t**self.scaler
        phi0 = self.s / (1 + self.s) * (np.pi / 2)
        return np.clip(np.cos((t + self.s) / (1 + self.s) * (np.pi / 2)) ** 2 / np.cos(phi0) ** 2, 1e-4, 0.9999)

    def lam(self, t):
        abar = self.alphas_cumprod(t)
        return 0.5 * (np.log(abar) - np.log1p(-abar))

    def t_of_lam(self, lam):
        """The inverse on the unclamped part (lam outside the clamp's range maps to the end it is clamped at)."""
        abar = np.clip(1 / (1 + np.exp(-2 * np.asarray(lam, dtype=np.float64))), 1e-4, 0.9999)
        phi0 = self.s / (1 + self.s) * (np.pi / 2)
        u = np.clip(np.arccos(np.sqrt(abar) * np.cos(phi0)) / (np.pi / 2) * (1 + self.s) - self.s, 0.0, 1.0)
        if self.scaler > 1:
            return 1 - (1 - u) ** (1 / self.scaler)
        return u ** (1 / self.scaler) if self.scaler < 1 else u


def _plan_wuerstchen(cfg, n, opts, *, timesteps=None):
    """DDPMWuerstchenScheduler as WuerstchenPriorPipeline / StableCascadePriorPipeline drive it.

    Times: linspace(1, 0, N + 1) (float32), or the custom `timesteps` (which must end at the last time, 0 for a
    full run); the pipeline calls the model at all but the last, with the time itself as the model's `r` input
    (`plan.timesteps`). Each step is the ancestral DDPM posterior from t to the next time t' in noise-prediction
    form (Ho et al. 2020, eq. 11, with alpha = abar_t / abar_t'): mean = (x - (1 - alpha) eps / sqrt(1 - abar_t))
    / sqrt(alpha), std = sqrt((1 - alpha)(1 - abar_t') / (1 - abar_t)), on `WuerstchenCosine` (clamped, so the
    last step lands on abar = 0.9999, not on the data). The model predicts eps (the class has no prediction_type).
    Noise: one draw per step, the last included (multiplied by 0 there, where t' = 0). With N = 1 (one step from
    abar = 1e-4) diffusers' float32 result is a cancellation amplified by 1 / sqrt(alpha) = 100, ~2e-5 off in
    absolute terms (measured), large against that step's small output (max |x| ~ 0.03 on the test mixture)."""
    schedule = WuerstchenCosine(scaler=float(cfg["scaler"]), s=float(cfg["s"]))
    if timesteps is None:
        n = _checks.integer("num_inference_steps", n, minimum=1)
        times = np.linspace(1.0, 0.0, n + 1, dtype=np.float32)
    else:
        if n is not None:
            raise ValueError(f"num_inference_steps={n!r}: pass either it or custom timesteps, not both")
        times = np.asarray(_checks.finite_array("timesteps", timesteps), dtype=np.float32)
        if times.ndim != 1 or len(times) < 2 or np.any(np.diff(times) >= 0) or times[0] > 1 or times[-1] < 0:
            raise ValueError(f"timesteps={timesteps!r}: expected at least two decreasing times in [0, 1]")
    times = times.astype(np.float64)
    abar = schedule.alphas_cumprod(times)

    def run(model, x, draw):
        for i in range(len(times) - 1):
            eps = model(x, np.float32(times[i]))
            alpha = abar[i] / abar[i + 1]
            mean = (x - (1 - alpha) * eps / np.sqrt(1 - abar[i])) / np.sqrt(alpha)
            std = np.sqrt((1 - alpha) * (1 - abar[i + 1]) / (1 - abar[i]))
            z = draw(x.shape)
            x = mean + std * z * (times[i + 1] != 0)
        return x

    plan = DiffusersPlan(
        "DDPMWuerstchenScheduler", cfg, schedule, times[:-1].astype(np.float32), 1.0, run, stochastic=True
    )
    plan.prediction_type = "epsilon"
    return plan
