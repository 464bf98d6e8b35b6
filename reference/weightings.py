"""Loss weightings as functions of lam: w(lam) multiplies the eps-space MSE || eps_hat - eps ||^2.

Kingma & Gao (2023), "Understanding Diffusion Objectives as the ELBO with Simple Data Augmentation",
arXiv:2303.00848, Sec. 2: every diffusion loss is w(lam) || eps_hat - eps ||^2 for some weight, because
eps_hat - eps = -e^{lam} (x0_hat - x0), so || eps_hat - eps ||^2 = e^{2 lam} || x0_hat - x0 ||^2. With
snr = e^{2 lam} and sigma_ve = e^{-lam}:

| name     | w(lam) on || eps_hat - eps ||^2                  | source / meaning |
|----------|--------------------------------------------------|------------------|
| uniform  | 1                                                | Ho et al. 2020, L_simple (eps-MSE) |
| x0       | 1 / snr = e^{-2 lam}                             | the x0-MSE (x0-prediction, Kingma & Gao Table 1) |
| snr      | snr = e^{2 lam}                                  | the x0-MSE weighted by snr^2 (emphasises low noise) |
| min_snr  | min(snr, gamma) / snr = min(1, gamma e^{-2 lam}) | Hang et al. 2023, Min-SNR-gamma, gamma = 5 |
| p2       | 1 / (k + snr)^gamma                              | Choi et al. 2022, P2, k = 1, gamma = 1 |
| edm      | (sigma_ve^2 + sigma_data^2) / sigma_data^2       | Karras et al. 2022, Table 1, lambda(sigma) sigma^2 |
| sigmoid  | sigmoid(bias - 2 lam)                            | Kingma & Gao 2023, eq. 25 (logsnr = 2 lam), bias = -3 |
| v        | 1 + e^{-2 lam}                                   | v-MSE for VP (= 1 / alpha^2) |
| flow     | (1 + e^{-lam})^2                                 | flow-MSE for alpha + sigma = 1 (= 1 / alpha^2) |

Note: every weight here is on the eps-MSE. `snr` is the weight snr on that MSE, not "the x0-MSE" (whose eps-space
weight is 1 / snr: the entry `x0`). Papers that put weights on the x0-MSE (Hang et al.) divide by snr to get these.

Each is written so it stays finite where the textbook form overflows (min_snr as min(1, gamma e^{-2 lam}),
sigmoid as exp(-log(1 + e^{-z})), p2 in log space).
"""

import numpy as np
from diffspec.reference import _checks


def _lam(lam):
    lam = np.asarray(lam, dtype=np.float64)
    if np.any(np.isnan(lam)):
        raise ValueError("lam contains NaN: expected half log-SNR values in [-inf, inf]")
    return lam


def uniform(lam):
    """w = 1: the eps-MSE, Ho et al. (2020), eq. 14 (L_simple)."""
    return np.ones_like(_lam(lam))


def x0(lam):
    """w = 1 / snr = e^{-2 lam}: the x0-MSE || x0_hat - x0 ||^2 written in eps space."""
    return np.exp(-2.0 * _lam(lam))


def snr(lam):
    """w = snr = e^{2 lam} on the eps-MSE (the x0-MSE weighted by snr^2; see the module note)."""
    with np.errstate(over="ignore"):
        return np.exp(2.0 * _lam(lam))


def min_snr(lam, *, gamma=5.0):
    """Hang et al. (2023), "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 9 for eps-prediction:
    w = min(snr, gamma) / snr, computed as min(1, gamma e^{-2 lam})."""
    gamma = _checks.positive("gamma", gamma)
    with np.errstate(over="ignore"):
        return np.minimum(1.0, gamma * np.exp(-2.0 * _lam(lam)))


def p2(lam, *, k=1.0, gamma=1.0):
    """Choi et al. (2022), "Perception Prioritized Training of Diffusion Models", eq. 8: w = 1 / (k + snr)^gamma,
    computed as exp(-gamma log(k + e^{2 lam})) with log(k + e^{2 lam}) = logaddexp(log k, 2 lam)."""
    k = _checks.positive("k", k)
    gamma = _checks.nonnegative("gamma", gamma)
    return np.exp(-gamma * np.logaddexp(np.log(k), 2.0 * _lam(lam)))


def edm(lam, *, sigma_data=0.5):
    """Karras et al. (2022), "Elucidating the Design Space", Table 1: lambda(sigma) = (sigma^2 + sigma_data^2) /
    (sigma sigma_data)^2 on the x0-MSE; on the eps-MSE (times sigma_ve^2 = e^{-2 lam}):
    w = (sigma_ve^2 + sigma_data^2) / sigma_data^2."""
    sigma_data = _checks.positive("sigma_data", sigma_data)
    with np.errstate(over="ignore"):
        return (np.exp(-2.0 * _lam(lam)) + sigma_data**2) / sigma_data**2


def sigmoid(lam, *, bias=-3.0):
    """Kingma & Gao (2023), Sec. 5 / App. D, sigmoid weighting w = sigmoid(bias - logsnr) with logsnr = 2 lam,
    computed as exp(-logaddexp(0, 2 lam - bias))."""
    bias = float(_checks.finite_array("bias", bias))
    return np.exp(-np.logaddexp(0.0, 2.0 * _lam(lam) - bias))


def v(lam):
    """The v-MSE of Salimans & Ho (2022) in eps space for VP: v_hat - v = (eps_hat - eps) / alpha, so
    w = 1 / alpha^2 = 1 + e^{-2 lam}."""
    with np.errstate(over="ignore"):
        return 1.0 + np.exp(-2.0 * _lam(lam))


def flow(lam):
    """The rectified-flow velocity MSE (u = eps - x0) in eps space for alpha + sigma = 1: u_hat - u =
    (1 + sigma / alpha)(eps_hat - eps), so w = (1 + e^{-lam})^2."""
    with np.errstate(over="ignore"):
        return (1.0 + np.exp(-_lam(lam))) ** 2


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
    return _checks.lookup(WEIGHTINGS, name, what="weighting")
