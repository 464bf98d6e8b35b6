"""Linear multistep (Adams-Bashforth on a variable grid) in sigma_ve: k-diffusion's LMS sampler.

Crowson's k-diffusion `sample_lms` (after Karras et al. 2022's sigma_ve ODE), for any schedule through
y = x / alpha and sigma_ve = sigma / alpha = e^{-lam}: dy / dsigma_ve = d = (y - x0_hat) / sigma_ve.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.samplers._info import Option, Requirement, SamplerInfo
from numpy.polynomial import polynomial as P


def lms_coefficients(sigmas, sigma_next):
    """Adams-Bashforth weights on a variable grid: b_j = int_{sigmas[0]}^{sigma_next} L_j(s) ds, where L_j is the
    Lagrange basis polynomial through the noise levels `sigmas` (newest first), integrated exactly in float64."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    weights = []
    for j in range(len(sigmas)):
        others = np.delete(sigmas, j)
        basis = P.polyfromroots(others) / np.prod(sigmas[j] - others)
        antiderivative = P.polyint(basis)
        weights.append(P.polyval(sigma_next, antiderivative) - P.polyval(sigmas[0], antiderivative))
    return np.array(weights)


def sample_lms(denoise, x_T, grid, schedule, *, noise=None, order=4):
    """Linear multistep of order `order` (1-4) on the probability-flow ODE in sigma_ve.

    k-diffusion `sample_lms`: with the last k = min(i + 1, order) derivatives d_{i-j} = (y - x0_hat) / sigma_ve,

        y_next = y + sum_j b_j d_{i-j}
        b_j    = int_{sigma_i}^{sigma_next} prod_{m != j} (s - sigma_{i-m}) / (sigma_{i-j} - sigma_{i-m}) ds

    (exact integrals of the Lagrange basis, `lms_coefficients`). The first steps use the lower orders 1..order-1.
    Model calls per step: 1. Noise draws: none. Order: `order` (checked in tests on grids starting at high
    noise; the lower-order start adds an O(h^2) term whose constant vanishes as sigma_ve at grid[0] grows).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="lms")
    order = _checks.integer("order", order, minimum=1, maximum=4)
    grid = _checks.decreasing_grid(grid, schedule, sampler="lms")
    alpha = schedule.alpha(grid)
    if alpha[0] == 0:
        raise ValueError(f"grid[0]={grid[0]} has alpha = 0 (sigma_ve = inf): start the grid where alpha > 0")
    sigma_ve = schedule.sigma(grid) / alpha
    y, ds = _checks.finite_array("x_T", x_T) / alpha[0], []
    for i in range(len(grid) - 1):
        x0 = np.asarray(denoise(alpha[i] * y, float(grid[i])), dtype=np.float64)
        ds = [(y - x0) / sigma_ve[i]] + ds[: order - 1]
        b = lms_coefficients(sigma_ve[i + 1 - len(ds) : i + 1][::-1], sigma_ve[i + 1])
        y = y + sum(b_j * d_j for b_j, d_j in zip(b, ds))
    return alpha[-1] * y


INFO = [
    SamplerInfo(
        "lms",
        sample_lms,
        order=4,
        stochastic=False,
        calls_per_step=1,
        requires=frozenset({Requirement.ALPHA_START}),
        options=dict(order=Option(4, low=1, high=4, integer=True, invalid=(0, 5))),
        orders=(({"order": 1}, 1), ({"order": 2}, 2), ({"order": 3}, 3)),
    ),
]
