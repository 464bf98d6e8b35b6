"""Linear multistep in sigma_ve (k-diffusion's LMS) on tensors (torch twin of `diffspec.reference.samplers.lms`)."""

from diffspec.trainer.samplers._grid import call, checked_grid, marginals


def _poly_from_roots(roots):
    """Coefficients (lowest degree first) of prod_r (s - r)."""
    coeffs = [1.0]
    for r in roots:
        shifted = [0.0] + coeffs  # s * p
        scaled = [-r * c for c in coeffs] + [0.0]  # -r * p
        coeffs = [a + b for a, b in zip(shifted, scaled)]
    return coeffs


def _antiderivative_at(coeffs, s):
    return sum(c * s ** (k + 1) / (k + 1) for k, c in enumerate(coeffs))


def lms_coefficients(sigmas, sigma_next):
    """Adams-Bashforth weights on a variable grid: b_j = int_{sigmas[0]}^{sigma_next} L_j(s) ds with L_j the Lagrange
    basis through `sigmas` (newest first), integrated exactly on the host in float64 (Python floats)."""
    weights = []
    for j, s_j in enumerate(sigmas):
        others = [s for m, s in enumerate(sigmas) if m != j]
        denom = 1.0
        for s in others:
            denom *= s_j - s
        basis = [c / denom for c in _poly_from_roots(others)]
        weights.append(_antiderivative_at(basis, sigma_next) - _antiderivative_at(basis, sigmas[0]))
    return weights


def sample_lms(denoise, x_T, grid, schedule, *, noise=None, order=4):
    """Linear multistep of order `order` (1-4) on dy/dsigma_ve = d = (y - x0_hat) / sigma_ve (k-diffusion `sample_lms`):
    y_next = y + sum_j b_j d_{i-j} with the last k = min(i + 1, order) derivatives.
    Model calls per step: 1. Noise draws: none. Order: `order`."""
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 4:
        raise ValueError(f"order={order!r}: expected an integer in [1, 4]")
    grid = checked_grid(grid, schedule, sampler="lms")
    alpha, sigma, _ = marginals(schedule, grid)
    if float(alpha[0]) == 0:
        raise ValueError(f"grid[0]={float(grid[0])} has alpha = 0 (sigma_ve = inf): start the grid where alpha > 0")
    sigma_ve = (sigma / alpha).tolist()
    alpha, t = alpha.tolist(), grid.tolist()
    y, ds = x_T / alpha[0], []
    for i in range(len(t) - 1):
        x0 = call(denoise, alpha[i] * y, t[i])
        ds = [(y - x0) / sigma_ve[i]] + ds[: order - 1]
        b = lms_coefficients(sigma_ve[i + 1 - len(ds) : i + 1][::-1], sigma_ve[i + 1])
        y = y + sum(b_j * d_j for b_j, d_j in zip(b, ds))
    return alpha[-1] * y
