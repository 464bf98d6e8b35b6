"""Training-time distributions of t: `TIMESTEPS[name](schedule, n, rng, **options) -> t`, float64 of shape (n,).

Randomness comes only from the explicit `numpy.random.Generator` `rng`; times are in the schedule's own domain.

| name             | t                                                                    | source |
|------------------|----------------------------------------------------------------------|--------|
| uniform_discrete | integer n uniform in {0, ..., T-1} (discrete schedules)              | Ho et al. 2020, Alg. 1 |
| uniform          | uniform in [t_eps, t_max]                                            | Song et al. 2021, Kingma et al. 2021 |
| logit_normal     | t_eps + (t_max - t_eps) sigmoid(mean + std z)                        | Esser et al. 2024 (SD3), eq. 19 |
| edm_lognormal    | t_of_sigma_ve(exp(p_mean + p_std z)), clipped to [t_eps, t_max]      | Karras et al. 2022, Table 1 |
| importance       | bin k ~ p_k proportional to sqrt(E[L^2]) over its last 10 losses     | Nichol & Dhariwal 2021, Sec. 3.3 |
"""

import numpy as np
from diffspec.reference import _checks


def _args(n, rng):
    n = _checks.integer("n", n, minimum=1)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng={rng!r}: expected a numpy.random.Generator (np.random.default_rng(seed))")
    return n


def _require_discrete(schedule, name):
    if not schedule.is_discrete:
        raise ValueError(f"timesteps {name!r} need a discrete schedule, got {type(schedule).__name__}: use 'uniform'")


def uniform_discrete(schedule, n, rng):
    """n integer timesteps uniform in {0, ..., T-1}, as float64 (Ho et al. 2020, Algorithm 1, line 3)."""
    n = _args(n, rng)
    _require_discrete(schedule, "uniform_discrete")
    return rng.integers(0, schedule.num_steps, size=n).astype(np.float64)


def uniform(schedule, n, rng):
    """n times uniform in [t_eps, t_max] (continuous time: Song et al. 2021, eq. 7; a discrete schedule gets
    non-integer times, read through its interpolated log alpha)."""
    n = _args(n, rng)
    lo, hi = float(schedule.t_eps), float(schedule.t_max)
    return lo + (hi - lo) * rng.random(n)


def logit_normal(schedule, n, rng, *, mean=0.0, std=1.0):
    """SD3's logit-normal times (Esser et al. 2024, "Scaling Rectified Flow Transformers", eq. 19):
    u = sigmoid(mean + std z), z ~ N(0, 1), scaled to [t_eps, t_max] (for `Flow`, exactly t = u)."""
    n = _args(n, rng)
    mean = float(_checks.finite_array("mean", mean))
    std = _checks.positive("std", std)
    u = np.exp(-np.logaddexp(0.0, -(mean + std * rng.standard_normal(n))))
    lo, hi = float(schedule.t_eps), float(schedule.t_max)
    return lo + (hi - lo) * u


def edm_lognormal(schedule, n, rng, *, p_mean=-1.2, p_std=1.2):
    """EDM's training noise levels (Karras et al. 2022, Table 1, "Training"): ln sigma_ve ~ N(p_mean, p_std^2),
    mapped to t with the schedule's inverse and clipped to [t_eps, t_max] (for `EDM`, t = sigma_ve)."""
    n = _args(n, rng)
    p_mean = float(_checks.finite_array("p_mean", p_mean))
    p_std = _checks.positive("p_std", p_std)
    t = schedule.t_of_sigma_ve(np.exp(p_mean + p_std * rng.standard_normal(n)))
    return np.clip(t, float(schedule.t_eps), float(schedule.t_max))


class LossHistory:
    """The last `history_per_bin` losses of each of `num_bins` time bins (Nichol & Dhariwal 2021, Sec. 3.3).

    Bins are the integer steps of a discrete schedule, or equal-width slices of [t_eps, t_max] (`bin_of`). Until
    every bin holds `history_per_bin` losses, sampling is uniform; afterwards p_k ~ sqrt(mean of squared losses),
    mixed with `uniform_prob` of the uniform distribution (improved-diffusion's `LossSecondMomentResampler`).
    """

    def __init__(self, num_bins, *, history_per_bin=10, uniform_prob=0.001):
        self.num_bins = _checks.integer("num_bins", num_bins, minimum=1)
        self.history_per_bin = _checks.integer("history_per_bin", history_per_bin, minimum=1)
        self.uniform_prob = _checks.in_range("uniform_prob", uniform_prob, 0.0, 1.0)
        self.losses = np.zeros((self.num_bins, self.history_per_bin))
        self.counts = np.zeros(self.num_bins, dtype=np.int64)

    def warmed_up(self):
        return bool(np.all(self.counts >= self.history_per_bin))

    def probabilities(self):
        """p over bins, float64 (num_bins,)."""
        if not self.warmed_up():
            return np.full(self.num_bins, 1.0 / self.num_bins)
        p = np.sqrt(np.mean(self.losses**2, axis=1))
        p = p / p.sum()
        return p * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_bins

    def update(self, bins, losses):
        """Record per-sample losses for their bins, oldest dropped first (in the order given)."""
        bins = np.asarray(bins).reshape(-1)
        losses = _checks.finite_array("losses", losses).reshape(-1)
        if bins.shape != losses.shape:
            raise ValueError(f"losses of shape {losses.shape}: expected one loss per bin, shape {bins.shape}")
        if np.any(bins != np.round(bins)) or np.any(bins < 0) or np.any(bins >= self.num_bins):
            raise ValueError(f"bins={_checks._short(bins.tolist())}: expected integers in [0, {self.num_bins - 1}]")
        for k, loss in zip(bins.astype(np.int64).tolist(), losses.tolist()):  # sequential by nature: a ring buffer
            if self.counts[k] >= self.history_per_bin:
                self.losses[k] = np.append(self.losses[k, 1:], loss)
            else:
                self.losses[k, self.counts[k]] = loss
                self.counts[k] += 1

    def weights(self, bins):
        """Importance weights 1 / (num_bins p_k) that keep the weighted loss unbiased."""
        return 1.0 / (self.num_bins * self.probabilities()[np.asarray(bins, dtype=np.int64)])


def bin_of(schedule, t, num_bins):
    """The LossHistory bin of each time t: round(t) for a discrete schedule, else its slice of [t_eps, t_max]."""
    t = np.asarray(t, dtype=np.float64)
    if schedule.is_discrete:
        return np.clip(np.round(t), 0, num_bins - 1).astype(np.int64)
    lo, hi = float(schedule.t_eps), float(schedule.t_max)
    return np.clip(np.floor((t - lo) / (hi - lo) * num_bins), 0, num_bins - 1).astype(np.int64)


def importance(schedule, n, rng, *, history):
    """Loss-aware importance sampling of t (Nichol & Dhariwal 2021, Sec. 3.3): a bin k ~ history.probabilities(),
    then t = k (discrete) or uniform inside the bin (continuous). Multiply each loss by
    `history.weights(bin_of(schedule, t, history.num_bins))` to keep the estimate of the bound unbiased."""
    n = _args(n, rng)
    if not isinstance(history, LossHistory):
        raise ValueError(f"history={history!r}: expected a LossHistory")
    if schedule.is_discrete and history.num_bins != schedule.num_steps:
        raise ValueError(
            f"history.num_bins={history.num_bins}: expected T = {schedule.num_steps} for a discrete schedule"
        )
    k = rng.choice(history.num_bins, size=n, p=history.probabilities())
    if schedule.is_discrete:
        return k.astype(np.float64)
    lo, hi = float(schedule.t_eps), float(schedule.t_max)
    return lo + (hi - lo) * (k + rng.random(n)) / history.num_bins


TIMESTEPS = {
    "uniform_discrete": uniform_discrete,
    "uniform": uniform,
    "logit_normal": logit_normal,
    "edm_lognormal": edm_lognormal,
    "importance": importance,
}


def get_timesteps(name):
    """TIMESTEPS[name], or a ValueError listing the known names."""
    return _checks.lookup(TIMESTEPS, name, what="timesteps")
