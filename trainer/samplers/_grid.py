"""Grid plumbing for the torch samplers: the grid as float64, the marginals over it, the per-example time.

Every sampler computes its coefficients once, in float64 over the (tiny) grid, and reads them as Python floats
inside its loop: multiplying a tensor by a Python float keeps the tensor's dtype and device and never syncs.
"""

import torch


def checked_grid(grid, schedule, *, min_len=2, sampler):
    """The grid as a 1-D float64 CPU tensor: strictly decreasing (noise -> data), inside the schedule's domain."""
    grid = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
    if grid.ndim != 1 or len(grid) < min_len:
        raise ValueError(
            f"grid of shape {tuple(grid.shape)} for {sampler}: expected a 1-D array of at least {min_len} times (noise -> data)"
        )
    if torch.isnan(grid).any():
        raise ValueError(f"grid for {sampler} contains NaN: expected times in [{schedule.t_min}, {schedule.t_max}]")
    if not bool(torch.all(grid[1:] < grid[:-1])):
        raise ValueError(f"grid={grid.tolist()[:8]} for {sampler}: expected strictly decreasing times (noise -> data)")
    if grid[0] > schedule.t_max or grid[-1] < schedule.t_min:
        raise ValueError(
            f"grid from {float(grid[0])} to {float(grid[-1])} for {sampler}: expected times in the domain "
            f"[{schedule.t_min}, {schedule.t_max}] of {type(schedule).__name__}"
        )
    return grid


def marginals(schedule, grid):
    """alpha, sigma, lam over the float64 grid (float64 tensors)."""
    return schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)


def time_batch(t, x):
    """The network's per-example time: shape (B,), x's dtype and device."""
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


def call(denoise, x, t):
    """x0_hat = denoise(x, t) at the Python-float time t, as a tensor like x."""
    return torch.as_tensor(denoise(x, time_batch(t, x)), dtype=x.dtype, device=x.device)


def require_alpha_positive(alpha, *, sampler):
    """Samplers that divide by alpha (noise-prediction and sigma_ve forms) cannot start where alpha = 0."""
    if bool((alpha[:-1] <= 0).any()):
        raise ValueError(
            f"grid starts where alpha = 0 (infinite noise level) for {sampler}, which divides by alpha: "
            "start the grid below t_max, or use a data-prediction sampler (ddim, dpmpp_2m, unipc, flow_euler)"
        )


def f64(value):
    """A Python float (or array) as a float64 CPU tensor, for host-side coefficient math."""
    return torch.as_tensor(value, dtype=torch.float64)


def at(fn, t):
    """fn (a schedule method) at a Python-float time, as a Python float."""
    return float(fn(f64(float(t))))
