"""Consistency-model samplers on tensors (torch twin of `diffspec.reference.samplers.consistency`)."""

from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.samplers._grid import call, checked_grid, marginals


def sample_consistency(denoise, x_T, grid, schedule, *, noise=None):
    """Multistep consistency sampling: Song et al. (2023), "Consistency Models", Algorithm 1.

    x0 = f(x, t_i); then, unless t_{i+1} is the grid's last time, x = alpha_{i+1} x0 + sigma_{i+1} z.
    The last step returns f's estimate. Model calls per step: 1. Noise draws: one per step but the last.
    """
    grid = checked_grid(grid, schedule, sampler="sample_consistency")
    draw = as_noise_source(noise, sampler="sample_consistency", like=x_T) if len(grid) > 2 else None
    alpha, sigma, _ = marginals(schedule, grid)
    a, s, t = alpha.tolist(), sigma.tolist(), grid.tolist()
    x = x_T
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        x = x0 if i == len(t) - 2 else a[i + 1] * x0 + s[i + 1] * draw(x.shape)
    return x


def sample_lcm(denoise, x_T, grid, schedule, *, noise=None):
    """Latent consistency model multistep sampling: Luo et al. (2023), arXiv:2310.04378, Algorithm 3 (the
    consistency function's x0 re-noised by the forward process to the next grid time).
    Model calls per step: 1. Noise draws: one per step but the last."""
    grid = checked_grid(grid, schedule, sampler="sample_lcm")
    draw = as_noise_source(noise, sampler="sample_lcm", like=x_T) if len(grid) > 2 else None
    alpha, sigma, _ = marginals(schedule, grid)
    a, s, t = alpha.tolist(), sigma.tolist(), grid.tolist()
    x = x_T
    for i in range(len(t) - 1):
        x0 = call(denoise, x, t[i])
        x = x0 if i == len(t) - 2 else a[i + 1] * x0 + s[i + 1] * draw(x.shape)
    return x
