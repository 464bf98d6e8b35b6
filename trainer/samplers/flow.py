"""Flow-matching samplers on tensors (torch twin of `diffspec.reference.samplers.flow`)."""

from diffspec.trainer.samplers._grid import call, checked_grid, marginals


def sample_flow_euler(denoise, x_T, grid, schedule, *, noise=None):
    """Euler on the rectified-flow ODE dx/dsigma = u = (x - x0) / sigma (Liu et al. 2022; Esser et al. 2024), for
    a schedule with alpha + sigma = 1 (schedule 'flow'; t = sigma):

        x_next = x + (sigma_next - sigma) (x - x0) / sigma

    Model calls per step: 1. Noise draws: none. Order: 1.
    """
    grid = checked_grid(grid, schedule, sampler="sample_flow_euler")
    alpha, sigma, _ = marginals(schedule, grid)
    if not bool(((alpha + sigma - 1).abs() <= 1e-12).all()):
        raise ValueError(f"schedule {type(schedule).__name__}: sample_flow_euler needs alpha + sigma = 1 (use schedule 'flow')")
    s, t = sigma.tolist(), grid.tolist()
    x = x_T
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        x = x + (s[i + 1] - s[i]) * ((x - x0) / s[i])
    return x
