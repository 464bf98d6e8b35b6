"""Training losses on tensors, per sample: the torch twin of `diffspec.reference.losses`.

A diffusion loss is w(lam) || eps_hat - eps ||^2 averaged over the non-batch dimensions (Kingma & Gao 2023): the
eps-, x0-, v- and flow-MSE differ only by a weight in lam (`weightings`). The step draws t and eps with its own
torch.Generator and passes them in (STYLE.md, the noise contract).
"""

import torch

from diffspec.trainer import parameterizations as P
from diffspec.trainer import weightings as W


def _mean_per_sample(sq):
    """Mean over every dimension but the batch: (B, ...) -> (B,)."""
    return sq.reshape(sq.shape[0], -1).mean(dim=1)


def eps_scale(param, alpha, sigma):
    """k with eps_hat - eps = -k (F - F_target) for the network output F (so the eps-MSE is k^2 times the F-MSE).

    From x0_hat = c_skip x + c_out F and eps_hat = (x - alpha x0_hat) / sigma, eps_hat is affine in F with slope
    -alpha c_out / sigma, and F_target maps to eps. In closed form, with no division by alpha or by sigma where the
    parameterization does not need one:

        eps: 1    x0: alpha / sigma    v: alpha / (alpha^2 + sigma^2)    flow: alpha / (alpha + sigma)    score: sigma
    """
    match P.parse(param):
        case P.Parameterization.EPS:
            return torch.ones_like(alpha)
        case P.Parameterization.X0:
            return alpha / sigma
        case P.Parameterization.V:
            return alpha / (alpha**2 + sigma**2)
        case P.Parameterization.FLOW:
            return alpha / (alpha + sigma)
        case P.Parameterization.SCORE:
            return sigma


def diffusion_loss(output, x0, eps, t, schedule, *, parameterization, weighting=None, weighting_options=None):
    """Per-sample diffusion loss, shape (B,).

    `weighting` is a name in WEIGHTINGS (options in `weighting_options`) or a callable lam -> w.
    weighting None: the plain MSE of the output against `training_target(parameterization, x0, eps, alpha, sigma)`,
    averaged over the non-batch dimensions. Otherwise w(lam) mean_d (eps_hat - eps)^2 with w = WEIGHTINGS[weighting]
    and eps_hat the eps implied by the output at x_t = alpha x0 + sigma eps, computed as
    eps_hat - eps = -k (F - F_target) (`eps_scale`): the same number without forming x_t, x0_hat or eps_hat, so it
    stays finite at alpha = 0 (zero terminal SNR) for every parameterization that is finite there.

    t has shape (B,); alpha, sigma, lam are evaluated per sample. No host synchronisation.
    """
    if weighting is None and weighting_options:
        raise ValueError(f"weighting_options={weighting_options!r}: expected None when weighting is None")
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    target = P.training_target(parameterization, x0, eps, alpha, sigma)
    mse = _mean_per_sample((output - target) ** 2)
    if weighting is None:
        return mse
    w_fn = weighting if callable(weighting) else W.get_weighting(weighting)
    w = w_fn(schedule.lam(t), **(weighting_options or {}))
    return w * eps_scale(parameterization, alpha, sigma) ** 2 * mse


def flow_matching_loss(output, x0, eps):
    """Conditional flow matching / rectified flow (Lipman et al. 2022; Liu et al. 2022): mean_d (F - (eps - x0))^2,
    per sample, for x_t = (1 - t) x0 + t eps."""
    return _mean_per_sample((output - (eps - x0)) ** 2)
