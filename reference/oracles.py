"""Analytic oracles: data whose denoiser, score and noisy density are exact in closed form.

For data x0 ~ sum_k w_k N(mu_k, diag(s_k^2)) and x_t = alpha x0 + sigma eps, each component stays Gaussian:
x_t | k ~ N(alpha mu_k, diag(v_k)) with v_k = alpha^2 s_k^2 + sigma^2. Bayes then gives, per component,
E[x0 | x_t, k] = mu_k + alpha s_k^2 / v_k (x_t - alpha mu_k), and the mixture's answers are these averaged
under the responsibilities p(k | x_t). Tweedie's formula ties them together:
score(x_t) = (alpha E[x0 | x_t] - x_t) / sigma^2, checked in the tests.

For a single Gaussian the probability-flow ODE is affine and exact: (x_t - alpha_t mu) / sqrt(v_t) is invariant
along it (`gaussian_flow_map`). These are the strongest tests of every sampler in this project.
"""

from dataclasses import dataclass

import numpy as np
from diffspec.reference import _checks


def _as_scalar_or_batch(value, x):
    """alpha, sigma or t as an array broadcastable against x of shape (B, D): scalar, or one value per row."""
    value = np.asarray(value, dtype=np.float64)
    if value.ndim == 0:
        return value
    if value.shape != (x.shape[0],):
        raise ValueError(f"time-like argument of shape {value.shape}: expected a scalar or shape ({x.shape[0]},)")
    return value[:, None]


@dataclass(frozen=True)
class GaussianMixture:
    """x0 ~ sum_k weights[k] N(means[k], diag(stds[k]^2)) in D dimensions.

    weights: (K,), positive, normalised here; means: (K, D); stds: (K, D) or (K,) (isotropic), all > 0.
    Arrays are stored as tuples so the dataclass stays hashable and comparable by value.
    """

    weights: tuple
    means: tuple
    stds: tuple

    @classmethod
    def create(cls, weights, means, stds):
        means = _checks.finite_array("means", means)
        if means.ndim != 2:
            raise ValueError(f"means of shape {means.shape}: expected (K, D)")
        K, D = means.shape
        weights = _checks.finite_array("weights", weights)
        if weights.shape != (K,) or np.any(weights <= 0):
            raise ValueError(f"weights={weights.tolist()}: expected {K} positive numbers")
        stds = _checks.finite_array("stds", stds)
        if stds.ndim == 1:
            stds = np.repeat(stds[:, None], D, axis=1)
        if stds.shape != (K, D) or np.any(stds <= 0):
            raise ValueError(f"stds of shape {stds.shape}: expected ({K},) or ({K}, {D}) positive numbers")
        weights = weights / weights.sum()
        return cls(tuple(weights.tolist()), tuple(map(tuple, means.tolist())), tuple(map(tuple, stds.tolist())))

    @classmethod
    def gaussian(cls, mean, std):
        """A single Gaussian N(mean, diag(std^2)): the mixture with K = 1."""
        mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        std = np.broadcast_to(np.asarray(std, dtype=np.float64), mean.shape)
        return cls.create([1.0], mean[None, :], std[None, :])

    @property
    def w(self):
        return np.asarray(self.weights)

    @property
    def mu(self):
        return np.asarray(self.means)

    @property
    def s(self):
        return np.asarray(self.stds)

    @property
    def dim(self):
        return self.mu.shape[1]

    def mean(self):
        return self.w @ self.mu

    def cov(self):
        m = self.mean()
        second = np.einsum("k,ki,kj->ij", self.w, self.mu, self.mu) + np.diag(self.w @ self.s**2)
        return second - np.outer(m, m)

    def sample(self, n, rng):
        """n draws of x0 (and their component labels) from a numpy Generator."""
        n = _checks.integer("n", n, minimum=1)
        k = rng.choice(len(self.w), size=n, p=self.w)
        return self.mu[k] + self.s[k] * rng.standard_normal((n, self.dim)), k

    def _components(self, x, alpha, sigma):
        """Per-component variances v (B|1, K, D) and log N(x; alpha mu_k, v_k) + log w_k, shape (B, K)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x of shape {x.shape}: expected (B, {self.dim})")
        alpha = _as_scalar_or_batch(alpha, x)[..., None]
        sigma = _as_scalar_or_batch(sigma, x)[..., None]
        v = alpha**2 * self.s[None] ** 2 + sigma**2
        diff = x[:, None, :] - alpha * self.mu[None]
        logp = -0.5 * np.sum(diff**2 / v + np.log(2 * np.pi * v), axis=-1) + np.log(self.w)[None]
        return v, diff, logp, alpha

    def responsibilities(self, x, alpha, sigma):
        """p(k | x_t), shape (B, K)."""
        _, _, logp, _ = self._components(x, alpha, sigma)
        logp = logp - logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True)

    def log_density(self, x, alpha, sigma):
        """log p_t(x_t) for x_t = alpha x0 + sigma eps, shape (B,)."""
        _, _, logp, _ = self._components(x, alpha, sigma)
        top = logp.max(axis=1)
        return top + np.log(np.sum(np.exp(logp - top[:, None]), axis=1))

    def x0_mean(self, x, alpha, sigma):
        """E[x0 | x_t], shape (B, D): the ideal denoiser."""
        v, diff, logp, alpha_b = self._components(x, alpha, sigma)
        p = np.exp(logp - logp.max(axis=1, keepdims=True))
        p = p / p.sum(axis=1, keepdims=True)
        per_k = self.mu[None] + alpha_b * self.s[None] ** 2 / v * diff
        return np.einsum("bk,bkd->bd", p, per_k)

    def score(self, x, alpha, sigma):
        """grad_x log p_t(x_t), shape (B, D)."""
        v, diff, logp, _ = self._components(x, alpha, sigma)
        p = np.exp(logp - logp.max(axis=1, keepdims=True))
        p = p / p.sum(axis=1, keepdims=True)
        return np.einsum("bk,bkd->bd", p, -diff / v)

    def denoiser(self, schedule):
        """The exact denoiser (x, t) -> E[x0 | x_t] under `schedule`; t a scalar or one time per row."""

        def denoise(x, t):
            return self.x0_mean(x, schedule.alpha(t), schedule.sigma(t))

        return denoise

    def sample_xt(self, n, alpha, sigma, rng):
        """n draws of x_t = alpha x0 + sigma eps."""
        x0, _ = self.sample(n, rng)
        return alpha * x0 + sigma * rng.standard_normal(x0.shape)


def gaussian_flow_map(x, mean, std, alpha_from, sigma_from, alpha_to, sigma_to):
    """The exact probability-flow ODE map of Gaussian data N(mean, diag(std^2)) from (alpha_from, sigma_from) to
    (alpha_to, sigma_to): z = (x - alpha mean) / sqrt(alpha^2 std^2 + sigma^2) is invariant along the flow."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    v_from = alpha_from**2 * std**2 + sigma_from**2
    v_to = alpha_to**2 * std**2 + sigma_to**2
    return alpha_to * mean + np.sqrt(v_to / v_from) * (np.asarray(x, dtype=np.float64) - alpha_from * mean)


def standard_mixture_2d():
    """The 2-D mixture used by tests and benchmarks: 8 narrow Gaussians on a circle of radius 1.5 plus a wide one."""
    angles = np.arange(8) * np.pi / 4
    means = np.concatenate([1.5 * np.stack([np.cos(angles), np.sin(angles)], axis=1), [[0.0, 0.0]]])
    stds = np.concatenate([np.full(8, 0.15), [0.5]])
    weights = np.concatenate([np.full(8, 1.0), [2.0]])
    return GaussianMixture.create(weights, means, stds)
