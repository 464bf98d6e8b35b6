"""What a network predicts (eps, x0, v, flow velocity, score) and the conversions between them, on tensors.

The torch twin of `diffspec.reference.parameterizations`: every parameterization is a pair (c_skip, c_out) with
x0_hat = c_skip x_t + c_out F (Karras et al. 2022, Table 1), for any x_t = alpha x0 + sigma eps:

| name  | network output F         | c_skip                      | c_out                        |
|-------|--------------------------|-----------------------------|------------------------------|
| eps   | eps                      | 1 / alpha                   | -sigma / alpha               |
| x0    | x0                       | 0                           | 1                            |
| v     | alpha eps - sigma x0     | alpha / (alpha^2 + sigma^2) | -sigma / (alpha^2 + sigma^2) |
| flow  | eps - x0                 | 1 / (alpha + sigma)         | -sigma / (alpha + sigma)     |
| score | -eps / sigma             | 1 / alpha                   | sigma^2 / alpha              |

alpha and sigma are scalars or per-example tensors of shape (B,); they are broadcast against x (B, ...).
The parameterization is resolved in Python (it is configuration, not data), so nothing here syncs.
"""

import enum

import torch


class Parameterization(enum.StrEnum):
    EPS = "eps"
    X0 = "x0"
    V = "v"
    FLOW = "flow"
    SCORE = "score"


PARAMETERIZATIONS = {p.value: p for p in Parameterization}
_ALIASES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "flow_prediction": "flow"}


def parse(name):
    """A Parameterization from its name (diffusers' "epsilon", "sample" and "v_prediction" accepted too)."""
    if isinstance(name, Parameterization):
        return name
    key = _ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {name!r}: expected one of {', '.join(sorted(PARAMETERIZATIONS))}")
    return PARAMETERIZATIONS[key]


def broadcast_to_batch(value, x):
    """A scalar, or one value per batch element (shape (B,)), shaped to broadcast against x of shape (B, ...)."""
    if not isinstance(value, torch.Tensor) or value.ndim == 0:
        return value
    if value.shape != (x.shape[0],):
        raise ValueError(f"per-sample value of shape {tuple(value.shape)}: expected a scalar or shape ({x.shape[0]},)")
    return value.reshape((-1,) + (1,) * (x.ndim - 1))


def _tensor(value):
    """Tensors as they are; Python or numpy numbers as float64 (a 0-d float64 tensor never changes x's dtype)."""
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)


def coefficients(param, alpha, sigma):
    """(c_skip, c_out) with x0_hat = c_skip x_t + c_out F."""
    alpha, sigma = _tensor(alpha), _tensor(sigma)
    match parse(param):
        case Parameterization.EPS:
            return 1.0 / alpha, -sigma / alpha
        case Parameterization.X0:
            return torch.zeros_like(alpha), torch.ones_like(alpha)
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
    return broadcast_to_batch(c_skip, x) * x + broadcast_to_batch(c_out, x) * output


def output_from_x0(param, x0, x, alpha, sigma):
    """The output F that `x0_from_output` maps to x0: F = (x0 - c_skip x) / c_out."""
    c_skip, c_out = coefficients(param, alpha, sigma)
    return (x0 - broadcast_to_batch(c_skip, x) * x) / broadcast_to_batch(c_out, x)


def eps_from_x0(x0, x, alpha, sigma):
    """eps_hat = (x_t - alpha x0_hat) / sigma."""
    return (x - broadcast_to_batch(_tensor(alpha), x) * x0) / broadcast_to_batch(_tensor(sigma), x)


def eps_coefficients(param, alpha, sigma):
    """(d_skip, d_out) with eps_hat = d_skip x_t + d_out F, simplified per row so that no row divides by alpha:
    eps: (0, 1); x0: (1 / sigma, -alpha / sigma); v: (sigma, alpha) / (alpha^2 + sigma^2);
    flow: (1, alpha) / (alpha + sigma); score: (0, -sigma)."""
    alpha, sigma = _tensor(alpha), _tensor(sigma)
    match parse(param):
        case Parameterization.EPS:
            return torch.zeros_like(alpha), torch.ones_like(alpha)
        case Parameterization.X0:
            return 1.0 / sigma, -alpha / sigma
        case Parameterization.V:
            norm = alpha**2 + sigma**2
            return sigma / norm, alpha / norm
        case Parameterization.FLOW:
            norm = alpha + sigma
            return 1.0 / norm, alpha / norm
        case Parameterization.SCORE:
            return torch.zeros_like(sigma), -sigma


def eps_from_output(param, output, x, alpha, sigma):
    """eps_hat from the network's output F at x_t = x, without passing through x0_hat (finite where alpha = 0)."""
    d_skip, d_out = eps_coefficients(param, alpha, sigma)
    return broadcast_to_batch(d_skip, x) * x + broadcast_to_batch(d_out, x) * output


def training_target(param, x0, eps, alpha, sigma):
    """What the network should output for the pair (x0, eps) at (alpha, sigma)."""
    a = broadcast_to_batch(_tensor(alpha), x0)
    s = broadcast_to_batch(_tensor(sigma), x0)
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
