"""Flow matching: FlowMatchEulerDiscreteScheduler."""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._plan import DiffusersPlan
from diffspec.reference.schedules import (
    Flow,
)

# ---- Flow matching -------------------------------------------------------------------------------------------


def _plan_flow_match_euler(cfg, n, opts):
    """Euler on the rectified-flow ODE dx/dt = u (Liu et al. 2022; Esser et al. 2024) as diffusers'
    FlowMatchEulerDiscreteScheduler: model timestep = 1000 sigma, x_next = x + (sigma_next - sigma) u.

    Departure (diffusers #13243, still in 0.42.1): `shift` is applied in __init__ to the training sigmas and again in
    set_timesteps, so the grid is shift(linspace(1, shift(1/T), N)) rather than the paper's shift(linspace(1,
    1/T, N)) (the reference's `grids.shifted`). stochastic_sampling: x_next = (1 - s') x0 + s' z, one draw per
    step, the last included."""
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    _checks.integer("num_inference_steps", n, minimum=1)
    shift = _checks.positive("shift", cfg["shift"])

    def shifted(s):
        return shift * s / (1 + (shift - 1) * s)

    train = shifted(np.linspace(1, T, T)[::-1] / T)  # __init__: the first application
    s_max, s_min = train[0], train[-1]
    sig = shifted(np.linspace(s_max * T, s_min * T, n) / T)  # set_timesteps: the second
    ts = (sig * T).astype(np.float32)
    sig = np.append(sig, 0.0)
    schedule = Flow(shift=shift)
    stochastic = bool(cfg["stochastic_sampling"])

    def run(model, x, draw):
        for i, t in enumerate(ts):
            u = model(x, t)
            if stochastic:
                x0 = x - sig[i] * u
                x = (1 - sig[i + 1]) * x0 + sig[i + 1] * draw(x.shape)
            else:
                x = x + (sig[i + 1] - sig[i]) * u
        return x

    plan = DiffusersPlan(
        "FlowMatchEulerDiscreteScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig, stochastic=stochastic
    )
    plan.prediction_type = "flow_prediction"
    return plan
