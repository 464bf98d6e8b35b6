"""ODE samplers for flow matching / rectified flow in the flow's own time t.

Liu, Gong & Liu (2022), "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow";
Lipman et al. (2022), "Flow Matching for Generative Modeling"; Esser et al. (2024, SD3), Sec. 2 and eq. 23.
Sampling runs t from 1 (noise) to 0 (data). With the `Flow` schedule alpha = 1 - t, sigma = t, the ODE
dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat = eps_hat - x0_hat is, with eps_hat = (x - (1 - t) x0_hat) / t,

    dx/dt = u(x, t) = (x - x0_hat) / t,

the rectified-flow velocity in denoiser form. It is integrated in t (not lam), so these samplers are defined for
the `Flow` schedule only; other schedules raise. u is never evaluated at t = 0.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.samplers._info import Requirement, SamplerInfo
from diffspec.reference.schedules import Flow


def _setup(x_T, grid, schedule, sampler):
    if not isinstance(schedule, Flow):
        raise ValueError(
            f"schedule {type(schedule).__name__}: {sampler} integrates dx/dt in the flow's time and needs the 'flow' "
            "schedule (alpha = 1 - t, sigma = t); use euler/heun (sigma_ve) for other schedules"
        )
    return _checks.decreasing_grid(grid, schedule, sampler=sampler), _checks.finite_array("x_T", x_T)


def _u(denoise, x, t):
    """The flow velocity u = (x - x0_hat) / t = eps_hat - x0_hat at t > 0."""
    return (x - np.asarray(denoise(x, float(t)), dtype=np.float64)) / t


def sample_flow_euler(denoise, x_T, grid, schedule, *, noise=None):
    """Euler's method in flow time: x_next = x + (t_next - t) u(x, t).

    Liu et al. (2022), eq. 1 discretised; diffusers' `FlowMatchEulerDiscreteScheduler` (on an unshifted grid).
    At t_next = 0 it returns x0_hat. Model calls per step: 1. Noise draws: none. Order: 1 (checked in tests).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="flow_euler")
    grid, x = _setup(x_T, grid, schedule, "flow_euler")
    for i in range(len(grid) - 1):
        x = x + (grid[i + 1] - grid[i]) * _u(denoise, x, grid[i])
    return x


def sample_flow_heun(denoise, x_T, grid, schedule, *, noise=None):
    """Heun's method (explicit trapezoid) in flow time.

    Karras et al. (2022), Algorithm 1 in the flow's t (diffusers' `FlowMatchHeunDiscreteScheduler`):

        x_e = x + (t_next - t) u(x, t),     x_next = x + (t_next - t) (u(x, t) + u(x_e, t_next)) / 2

    A step onto t_next = 0 is the Euler step. Model calls per step: 2 (1 onto t = 0). Noise draws: none.
    Order: 2 (checked in tests).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="flow_heun")
    grid, x = _setup(x_T, grid, schedule, "flow_heun")
    for i in range(len(grid) - 1):
        dt, u = grid[i + 1] - grid[i], _u(denoise, x, grid[i])
        x_euler = x + dt * u
        x = x_euler if grid[i + 1] == 0 else x + dt * (u + _u(denoise, x_euler, grid[i + 1])) / 2
    return x


def sample_flow_midpoint(denoise, x_T, grid, schedule, *, noise=None):
    """The explicit midpoint method in flow time.

    Runge's midpoint rule: x_mid = x + (t_mid - t) u(x, t) at t_mid = (t + t_next) / 2, x_next = x + (t_next - t)
    u(x_mid, t_mid). It never evaluates u at t = 0. Model calls per step: 2. Noise draws: none.
    Order: 2 (checked in tests).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="flow_midpoint")
    grid, x = _setup(x_T, grid, schedule, "flow_midpoint")
    for i in range(len(grid) - 1):
        t_mid = (grid[i] + grid[i + 1]) / 2
        x_mid = x + (t_mid - grid[i]) * _u(denoise, x, grid[i])
        x = x + (grid[i + 1] - grid[i]) * _u(denoise, x_mid, t_mid)
    return x


_F = frozenset({Requirement.FLOW_SCHEDULE})
INFO = [
    SamplerInfo("flow_euler", sample_flow_euler, order=1, stochastic=False, calls_per_step=1, requires=_F),
    SamplerInfo("flow_heun", sample_flow_heun, order=2, stochastic=False, calls_per_step=2, requires=_F),
    SamplerInfo("flow_midpoint", sample_flow_midpoint, order=2, stochastic=False, calls_per_step=2, requires=_F),
]
