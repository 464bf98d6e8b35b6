"""What a network predicts: eps, x0, v, flow velocity or score, and conversions between them.

Every parameterization is a pair (c_skip, c_out) with x0_hat = c_skip x_t + c_out F (Karras et al. 2022, Table 1),
for any forward process x_t = alpha x0 + sigma eps (VP or not):

| name  | network output F                | c_skip                      | c_out                        |
|-------|---------------------------------|-----------------------------|------------------------------|
| eps   | eps                             | 1 / alpha                   | -sigma / alpha               |
| x0    | x0                              | 0                           | 1                            |
| v     | alpha eps - sigma x0 (Salimans & Ho 2022) | alpha / (alpha^2 + sigma^2) | -sigma / (alpha^2 + sigma^2) |
| flow  | eps - x0 (rectified flow, u)    | 1 / (alpha + sigma)         | -sigma / (alpha + sigma)     |
| score | grad log p_t = -eps / sigma     | 1 / alpha                   | sigma^2 / alpha              |

The v and flow rows are derived by solving x_t = alpha x0 + sigma eps together with the definition of F for x0;
they reduce to the papers' VP (alpha^2 + sigma^2 = 1) and rectified-flow (alpha + sigma = 1) forms. Samplers never
branch on the parameterization: they receive x0_hat.
"""

import enum

import numpy as np
from diffspec.reference import _checks


class Parameterization(enum.StrEnum):
    EPS = "eps"
    X0 = "x0"
    V = "v"
    FLOW = "flow"
    SCORE = "score"


PARAMETERIZATIONS = {p.value: p for p in Parameterization}


def parse(name):
    """A Parameterization from its name (diffusers' "epsilon", "sample" and "v_prediction" accepted too)."""
    aliases = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "flow_prediction": "flow"}
    if isinstance(name, Parameterization):
        return name
    return _checks.lookup(PARAMETERIZATIONS, aliases.get(name, name), what="parameterization")


def broadcast_to_batch(value, x):
    """A scalar, or one value per batch element (shape (B,)), shaped to broadcast against x of shape (B, ...)."""
    value = np.asarray(value, dtype=np.float64)
    if value.ndim == 0:
        return value
    x = np.asarray(x)
    if value.shape != (x.shape[0],):
        raise ValueError(f"per-sample value of shape {value.shape}: expected a scalar or shape ({x.shape[0]},)")
    return value.reshape((-1,) + (1,) * (x.ndim - 1))


def coefficients(param, alpha, sigma):
    """(c_skip, c_out) with x0_hat = c_skip x_t + c_out F."""
    alpha = np.asarray(alpha, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    match parse(param):
        case Parameterization.EPS:
            return 1.0 / alpha, -sigma / alpha
        case Parameterization.X0:
            return np.zeros_like(alpha), np.ones_like(alpha)
        case Parameterization.V:
            norm = alpha**2 + sigma**2
            return alpha / norm, -sigma / norm
        case Parameterization.FLOW:
            norm = alpha + sigma
            return 1.0 / norm, -sigma / norm
        case Parameterization.SCORE:
            return 1.0 / alpha, sigma**2 / alpha


def x0_from_output(param, output, x, alpha, sigma):
    """x0_hat from the network's output F at x_t = x."""
    c_skip, c_out = coefficients(param, alpha, sigma)
    return broadcast_to_batch(c_skip, x) * np.asarray(x, dtype=np.float64) + broadcast_to_batch(c_out, x) * np.asarray(
        output, dtype=np.float64
    )


def output_from_x0(param, x0, x, alpha, sigma):
    """The network output F that `x0_from_output` maps to x0 (the inverse map, F = (x0 - c_skip x) / c_out)."""
    c_skip, c_out = coefficients(param, alpha, sigma)
    x = np.asarray(x, dtype=np.float64)
    return (np.asarray(x0, dtype=np.float64) - broadcast_to_batch(c_skip, x) * x) / broadcast_to_batch(c_out, x)


def eps_from_x0(x0, x, alpha, sigma):
    """eps_hat = (x_t - alpha x0_hat) / sigma."""
    x = np.asarray(x, dtype=np.float64)
    return (x - broadcast_to_batch(alpha, x) * np.asarray(x0, dtype=np.float64)) / broadcast_to_batch(sigma, x)


def eps_coefficients(param, alpha, sigma):
    """(d_skip, d_out) with eps_hat = d_skip x_t + d_out F: the same map as `coefficients`, in eps space.

    d_skip = (1 - alpha c_skip) / sigma and d_out = -alpha c_out / sigma, simplified per row so that no row divides
    by alpha (finite at zero terminal SNR) and eps needs no cancellation:
    eps: (0, 1); x0: (1 / sigma, -alpha / sigma); v: (sigma, alpha) / (alpha^2 + sigma^2);
    flow: (1, alpha) / (alpha + sigma); score: (0, -sigma).
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    match parse(param):
        case Parameterization.EPS:
            return np.zeros_like(alpha), np.ones_like(alpha)
        case Parameterization.X0:
            return 1.0 / sigma, -alpha / sigma
        case Parameterization.V:
            norm = alpha**2 + sigma**2
            return sigma / norm, alpha / norm
        case Parameterization.FLOW:
            norm = alpha + sigma
            return 1.0 / norm, alpha / norm
        case Parameterization.SCORE:
            return np.zeros_like(sigma), -sigma


def eps_from_output(param, output, x, alpha, sigma):
    """eps_hat from the network's output F at x_t = x, without passing through x0_hat (finite where alpha = 0)."""
    d_skip, d_out = eps_coefficients(param, alpha, sigma)
    x = np.asarray(x, dtype=np.float64)
    return broadcast_to_batch(d_skip, x) * x + broadcast_to_batch(d_out, x) * np.asarray(output, dtype=np.float64)


def training_target(param, x0, eps, alpha, sigma):
    """What the network should output for the pair (x0, eps) at (alpha, sigma)."""
    x0 = np.asarray(x0, dtype=np.float64)
    eps = np.asarray(eps, dtype=np.float64)
    a, s = broadcast_to_batch(alpha, x0), broadcast_to_batch(sigma, x0)
    match parse(param):
        case Parameterization.EPS:
            return eps
        case Parameterization.X0:
            return x0
        case Parameterization.V:
            return a * eps - s * x0
        case Parameterization.FLOW:
            return eps - x0
        case Parameterization.SCORE:
            return -eps / s
