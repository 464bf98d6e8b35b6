"""Few-step samplers of distilled flow models: SCMScheduler (sCM, TrigFlow) and FlowMapEulerDiscreteScheduler.

Both models are rectified-flow networks (x_t = (1 - t) x0 + t eps, velocity u = eps - x0) distilled for few steps.
SCMScheduler steps a consistency model in TrigFlow time (Lu & Song 2024, "Simplifying, Stabilizing and Scaling
Continuous-Time Consistency Models", arXiv:2410.11081): x_s = cos(s) x0 + sin(s) z with z ~ N(0, sigma_d^2), s in
[0, pi/2]. FlowMapEulerDiscreteScheduler steps a flow map, a network that takes two times (t, r) and returns the
mean velocity over [r, t] (AnyFlow, Gu et al.), so that one call jumps from t to r.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._plan import DiffusersPlan
from diffspec.reference.schedules import Flow

# ---- sCM -----------------------------------------------------------------------------------------------------------


def _plan_scm(cfg, n, opts, *, timesteps=None):
    """SCMScheduler as SanaSprintPipeline drives it: multistep consistency sampling in TrigFlow time.

    TrigFlow times s: linspace(1.5708, 0, N + 1) (float32), or [1.5708, 1.3, 0] for N = 2 (the pipeline's
    `intermediate_timesteps`, which diffusers accepts only there), or custom `timesteps` (N + 1 values ending at
    0). The pipeline starts from x = sigma_d x_T (`init_noise_sigma` = sigma_d) and turns its flow-matching
    transformer into the TrigFlow network: the model receives x_in = x / sigma_d / (cos s + sin s) and the flow time
    t = sin s / (cos s + sin s) (written as sqrt(t^2 + (1 - t)^2) scalings, as there) and returns a velocity u, read as
    F = sigma_d ((1 - 2t) x_in + (1 - 2t + 2t^2) u) / sqrt(t^2 + (1 - t)^2). Each step (Lu & Song 2024, Alg. 1):
    x0 = cos(s) x - sin(s) F, then x_next = cos(s') x0 + sin(s') sigma_d z. The pipeline returns x0 / sigma_d.
    Noise: one draw per step, the last included (times sin(0) = 0). `plan.timesteps` are the flow times t the
    model sees; `plan.sigmas` the TrigFlow times s. Only prediction_type="trigflow" exists."""
    sd = _checks.positive("sigma_data", cfg["sigma_data"])
    T = cfg["num_train_timesteps"]
    if timesteps is None:
        n = _checks.integer("num_inference_steps", n, minimum=1, maximum=T)
        s = np.array([1.57080, 1.3, 0.0]) if n == 2 else np.linspace(1.57080, 0.0, n + 1)
    else:
        s = np.asarray(_checks.finite_array("timesteps", timesteps))
        if s.ndim != 1 or len(s) < 2 or (n is not None and len(s) != n + 1):
            raise ValueError(f"timesteps={timesteps!r}: expected num_inference_steps + 1 TrigFlow times")
    s = s.astype(np.float32)
    t_flow = (np.sin(s) / (np.cos(s) + np.sin(s)))[:-1].astype(np.float32)
    s = s.astype(np.float64)

    def run(model, x, draw):
        for i, t in enumerate(t_flow):
            tf = float(t)
            scale = np.sqrt(tf**2 + (1 - tf) ** 2)
            x_in = x / sd * scale
            u = model(x_in, t)
            F = ((1 - 2 * tf) * x_in + (1 - 2 * tf + 2 * tf**2) * u) / scale * sd
            x0 = np.cos(s[i]) * x - np.sin(s[i]) * F
            x = np.cos(s[i + 1]) * x0 + np.sin(s[i + 1]) * (sd * draw(x.shape))
        return x / sd

    plan = DiffusersPlan("SCMScheduler", cfg, Flow(), t_flow, sd, run, sigmas=s, stochastic=True)
    plan.prediction_type = "flow_prediction"
    return plan


# ---- flow maps -----------------------------------------------------------------------------------------------------


class FlowMapPlan(DiffusersPlan):
    """A plan whose model takes two times: `run(model, x_T)` calls `model(x, timestep, r_timestep)` (0-d float64
    arrays), the source time t and the target time r of the jump. `r_timesteps` lists the targets."""

    r_timesteps: np.ndarray

    def run(self, model, x_T, noise=None):
        def two_times(x, t_and_r):
            return model(x, np.asarray(t_and_r[0]), np.asarray(t_and_r[1]))

        return super().run(two_times, x_T, noise)


def _plan_flow_map_euler(cfg, n, opts, *, timesteps=None, sigmas=None):
    """FlowMapEulerDiscreteScheduler as AnyFlowPipeline drives it (use_mean_velocity=True).

    Sigmas (float64, as diffusers keeps them): linspace(1, 0, N + 1)[:-1], or custom `sigmas`, or custom
    `timesteps` / T, then SD3's shift s' = shift s / (1 + (shift - 1) s) (Esser et al. 2024, eq. 23), then the
    terminal 0 appended. For each step the model receives t = T sigma and r = T sigma' and returns the mean velocity
    u over [r, t]; the step is x_next = x - (sigma - sigma') u, exact for a perfect flow map. A step with t == r is
    skipped without a model call, as the pipeline does. A model that ignores r gives the pipeline's
    use_mean_velocity=False loop (plain Euler on the flow). Departure reproduced: `step` finds its sigmas from the
    timestep (the first schedule entry within float32 rounding), so with a repeated sigma in custom sigmas, e.g.
    [1, 0.7, 0.7, 0.2], the step after the repeat jumps 0.7 -> 0.7 (no move) although the model was asked for the
    mean velocity to 0.2, and the sample never visits 0.2."""
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=1)
    shift = _checks.positive("shift", cfg["shift"])
    if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
        raise ValueError(f"sigmas ({len(sigmas)}) and timesteps ({len(timesteps)}): expected the same length")
    given = sigmas if sigmas is not None else timesteps
    if given is not None:
        name = "sigmas" if sigmas is not None else "timesteps"
        sig = np.asarray(_checks.finite_array(name, given), dtype=np.float64)
        if sig.ndim != 1 or len(sig) < 1 or (n is not None and n != len(sig)):
            raise ValueError(f"{name}={given!r}: expected num_inference_steps values, the terminal 0 left out")
        sig = sig if sigmas is not None else sig / T
    else:
        n = _checks.integer("num_inference_steps", n, minimum=1)
        sig = np.linspace(1.0, 0.0, n + 1)[:-1]
    if shift != 1.0:
        sig = shift * sig / (1 + (shift - 1) * sig)
    sig = np.append(sig, 0.0)
    t_all, r_all = sig[:-1] * T, sig[1:] * T
    keep = t_all != r_all
    ts, rs = t_all[keep], r_all[keep]
    steps = np.flatnonzero(keep)

    def source(i):
        """diffusers' `index_for_timestep`: the nearest float32 timestep, the first of equal ones."""
        return int(np.argmin(np.abs(t_all.astype(np.float32) - t_all[i])))

    def run(model, x, draw):
        for i in steps:
            u = model(x, (t_all[i], r_all[i]))
            j = source(i)
            x = x - (sig[j] - sig[j + 1]) * u
        return x

    plan = FlowMapPlan(
        "FlowMapEulerDiscreteScheduler", cfg, Flow(shift=shift), ts, 1.0, run, sigmas=sig, stochastic=False
    )
    plan.r_timesteps = rs
    plan.prediction_type = "flow_prediction"
    return plan
