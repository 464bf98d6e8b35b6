"""Loss weightings as functions of lam, on tensors: w(lam) multiplies the eps-space MSE (Kingma & Gao 2023).

The torch twin of `diffspec.reference.weightings`. With snr = e^{2 lam} and sigma_ve = e^{-lam}:

| name     | w(lam) on || eps_hat - eps ||^2      | source |
|----------|--------------------------------------|--------|
| uniform  | 1                                    | Ho et al. 2020 (eps-MSE) |
| x0       | 1 / snr = e^{-2 lam} (the x0-MSE)    | Kingma & Gao 2023 |
| snr      | snr (the x0-MSE weighted by snr^2)   | |
| min_snr  | min(snr, gamma) / snr = min(1, gamma e^{-2 lam}) | Hang et al. 2023 |
| p2       | 1 / (k + snr)^gamma                  | Choi et al. 2022 |
| edm      | (sigma_ve^2 + sigma_data^2) / sigma_data^2 | Karras et al. 2022 (lambda(sigma) sigma^2 ... in eps space) |
| sigmoid  | sigmoid(bias - 2 lam)                | Kingma & Gao 2023 |
| v        | 1 + e^{-2 lam}                       | v-MSE |
| flow     | (1 + e^{-lam})^2                     | flow-MSE |

Each is written in the form that stays finite where the textbook one overflows (min_snr as min(1, gamma / snr),
p2 through log-space when gamma is not 1). Options are keyword-only with the reference's defaults.
"""

import math

import torch
import torch.nn.functional as F


def uniform(lam):
    return torch.ones_like(lam)


def x0(lam):
    return torch.exp(-2.0 * lam)


def snr(lam):
    return torch.exp(2.0 * lam)


def min_snr(lam, *, gamma=5.0):
    """Hang et al. (2023), "Efficient Diffusion Training via Min-SNR Weighting": min(snr, gamma) / snr."""
    _positive("gamma", gamma)
    return torch.clamp(gamma * torch.exp(-2.0 * lam), max=1.0)


def _positive(name, value):
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r}: expected a finite number > 0")


def p2(lam, *, k=1.0, gamma=1.0):
    """Choi et al. (2022), "Perception Prioritized Training": 1 / (k + snr)^gamma, in log space:
    exp(-gamma logaddexp(log k, 2 lam))."""
    _positive("k", k)
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma={gamma!r}: expected a finite number >= 0")
    return torch.exp(-gamma * torch.logaddexp(torch.full_like(lam, math.log(k)), 2.0 * lam))


def edm(lam, *, sigma_data=0.5):
    """Karras et al. (2022), Table 1: lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on the x0-MSE,
    i.e. (sigma_ve^2 + sigma_data^2) / sigma_data^2 on the eps-MSE."""
    _positive("sigma_data", sigma_data)
    return (torch.exp(-2.0 * lam) + sigma_data**2) / sigma_data**2


def sigmoid(lam, *, bias=-3.0):
    """Kingma & Gao (2023), "Understanding Diffusion Objectives", sigmoid weighting: sigmoid(bias - logsnr)."""
    return torch.exp(F.logsigmoid(bias - 2.0 * lam))


def v(lam):
    """The v-MSE in eps space: 1 + e^{-2 lam} (= 1 / alpha^2 for VP)."""
    return 1.0 + torch.exp(-2.0 * lam)


def flow(lam):
    """The rectified-flow velocity MSE in eps space: (1 + e^{-lam})^2 (= 1 / alpha^2 for alpha + sigma = 1)."""
    return (1.0 + torch.exp(-lam)) ** 2


WEIGHTINGS = {
    "uniform": uniform,
    "x0": x0,
    "snr": snr,
    "min_snr": min_snr,
    "p2": p2,
    "edm": edm,
    "sigmoid": sigmoid,
    "v": v,
    "flow": flow,
}


def get_weighting(name):
    """WEIGHTINGS[name], or a ValueError listing the known names."""
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}: expected one of {', '.join(sorted(WEIGHTINGS))}")
    return WEIGHTINGS[name]


__all__ = ["WEIGHTINGS", "get_weighting", *WEIGHTINGS]
