"""ODE samplers for flow matching in the flow's own time t (torch twin of `diffspec.reference.samplers.flow`).

With the `Flow` schedule (alpha = 1 - t, sigma = t) the probability-flow ODE is dx/dt = u(x, t) = (x - x0_hat) / t,
integrated in t from 1 to 0; u is never evaluated at t = 0. Other schedules raise.
"""

from diffspec.trainer.samplers._grid import call, checked_grid
from diffspec.trainer.schedules import Flow


def _setup(x_T, grid, schedule, sampler):
    if not isinstance(schedule, Flow):
        raise ValueError(
            f"schedule {type(schedule).__name__}: {sampler} integrates dx/dt in the flow's time and needs the 'flow' "
            "schedule (alpha = 1 - t, sigma = t); use euler/heun (sigma_ve) for other schedules"
        )
    return checked_grid(grid, schedule, sampler=sampler).tolist(), x_T


def _u(denoise, x, t):
    """u = (x - x0_hat) / t at t > 0."""
    return (x - call(denoise, x, t)) / t


def sample_flow_euler(denoise, x_T, grid, schedule, *, noise=None):
    """Euler in flow time: x_next = x + (t_next - t) u(x, t). Model calls per step: 1. Noise draws: none. Order: 1."""
    grid, x = _setup(x_T, grid, schedule, "flow_euler")
    for i in range(len(grid) - 1):
        x = x + (grid[i + 1] - grid[i]) * _u(denoise, x, grid[i])
    return x


def sample_flow_heun(denoise, x_T, grid, schedule, *, noise=None):
    """Heun in flow time: x_e = x + dt u(x, t), x_next = x + dt (u(x, t) + u(x_e, t_next)) / 2 (Euler onto t = 0).
    Model calls per step: 2 (1 onto t = 0). Noise draws: none. Order: 2."""
    grid, x = _setup(x_T, grid, schedule, "flow_heun")
    for i in range(len(grid) - 1):
        dt, u = grid[i + 1] - grid[i], _u(denoise, x, grid[i])
        x_euler = x + dt * u
        x = x_euler if grid[i + 1] == 0 else x + dt * (u + _u(denoise, x_euler, grid[i + 1])) / 2
    return x


def sample_flow_midpoint(denoise, x_T, grid, schedule, *, noise=None):
    """Explicit midpoint in flow time: x_mid = x + (t_mid - t) u(x, t), x_next = x + (t_next - t) u(x_mid, t_mid).
    Model calls per step: 2. Noise draws: none. Order: 2."""
    grid, x = _setup(x_T, grid, schedule, "flow_midpoint")
    for i in range(len(grid) - 1):
        t_mid = (grid[i] + grid[i + 1]) / 2
        x_mid = x + (t_mid - grid[i]) * _u(denoise, x, grid[i])
        x = x + (grid[i + 1] - grid[i]) * _u(denoise, x_mid, t_mid)
    return x
