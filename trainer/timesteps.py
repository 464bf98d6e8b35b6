"""Training-time distributions of t: `TIMESTEPS[name](schedule, n, generator, **options) -> t` of shape (n,).

The torch twin of `diffspec.reference.timesteps`. Randomness comes only from the explicit `torch.Generator`; the
result lives on the generator's device with dtype `dtype` (float32 by default; float64 for tests). Every
distribution is a fixed map of standard uniform or normal draws, so it stays on the device with no host sync
(the importance sampler reads its small loss table, which is host state by nature).

| name             | t                                                                    | source |
|------------------|----------------------------------------------------------------------|--------|
| uniform_discrete | integer n uniform in {0, ..., T-1} (discrete schedules)              | Ho et al. 2020 |
| uniform          | uniform in [t_eps, t_max]                                            | Song et al. 2021, Kingma et al. 2021 |
| logit_normal     | t_eps + (t_max - t_eps) sigmoid(mean + std z)                        | Esser et al. 2024 (SD3), eq. 19 |
| edm_lognormal    | t_of_sigma_ve(exp(p_mean + p_std z)), clipped to [t_eps, t_max]      | Karras et al. 2022, Table 1 |
| importance       | bins drawn with p ~ sqrt(E[L^2]) over the last losses of each bin    | Nichol & Dhariwal 2021, Sec. 3.3 |
"""

import math
from collections.abc import Callable

import torch


def _generator_device(generator):
    return generator.device if generator is not None else torch.device("cpu")


def _n(n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: expected an integer >= 1")
    return n


def _require_discrete(schedule, name):
    if not schedule.is_discrete:
        raise ValueError(f"timesteps {name!r} need a discrete schedule, got {type(schedule).__name__}: use 'uniform'")


def uniform_discrete(schedule, n, generator, *, dtype=torch.float32):
    """n integer timesteps uniform in {0, ..., T-1}, as floats (DDPM's training distribution)."""
    _require_discrete(schedule, "uniform_discrete")
    idx = torch.randint(0, schedule.num_steps, (_n(n),), generator=generator, device=_generator_device(generator))
    return idx.to(dtype)


def uniform(schedule, n, generator, *, dtype=torch.float32):
    """n times uniform in [t_eps, t_max] (continuous time; a discrete schedule gets non-integer times)."""
    u = torch.rand((_n(n),), generator=generator, device=_generator_device(generator), dtype=torch.float64)
    lo, hi = float(schedule.t_eps), float(schedule.t_max)
    return (lo + (hi - lo) * u).to(dtype)


def logit_normal(schedule, n, generator, *, mean=0.0, std=1.0, dtype=torch.float32):
    """SD3's logit-normal times (Esser et al. 2024, eq. 19), scaled to [t_eps, t_max]."""
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"std={std!r}: expected a finite number > 0")
    z = torch.randn((_n(n),), generator=generator, device=_generator_device(generator), dtype=torch.float64)
    lo, hi = float(schedule.t_eps), float(schedule.t_max)
    return (lo + (hi - lo) * torch.sigmoid(mean + std * z)).to(dtype)


def edm_lognormal(schedule, n, generator, *, p_mean=-1.2, p_std=1.2, dtype=torch.float32):
    """EDM's training noise levels (Karras et al. 2022, Table 1): ln sigma_ve ~ N(p_mean, p_std^2), mapped to t by
    the schedule's inverse and clipped to [t_eps, t_max]."""
    if not (math.isfinite(p_std) and p_std > 0):
        raise ValueError(f"p_std={p_std!r}: expected a finite number > 0")
    z = torch.randn((_n(n),), generator=generator, device=_generator_device(generator), dtype=torch.float64)
    t = schedule.t_of_sigma_ve(torch.exp(p_mean + p_std * z))
    return torch.clamp(t, float(schedule.t_eps), float(schedule.t_max)).to(dtype)


class LossHistory:
    """The last `history_per_bin` losses of each of `num_bins` time bins (Nichol & Dhariwal 2021, Sec. 3.3).

    Bins are the integer steps of a discrete schedule, or equal-width slices of [t_eps, t_max]. Until every bin
    holds `history_per_bin` losses, sampling is uniform; afterwards p_k ~ sqrt(mean of squared losses), mixed with
    `uniform_prob` of the uniform distribution.
    """

    def __init__(self, num_bins, *, history_per_bin=10, uniform_prob=0.001):
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"num_bins={num_bins!r}: expected an integer >= 1")
        self.num_bins = num_bins
        self.history_per_bin = history_per_bin
        self.uniform_prob = uniform_prob
        self.losses = torch.zeros(num_bins, history_per_bin, dtype=torch.float64)
        self.counts = torch.zeros(num_bins, dtype=torch.int64)

    def warmed_up(self):
        return bool(torch.all(self.counts >= self.history_per_bin))

    def probabilities(self):
        """p over bins, float64 (num_bins,)."""
        if not self.warmed_up():
            return torch.full((self.num_bins,), 1.0 / self.num_bins, dtype=torch.float64)
        p = torch.sqrt(torch.mean(self.losses**2, dim=1))
        p = p / p.sum()
        return p * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_bins

    def update(self, bins, losses):
        """Record per-sample losses (detached, moved to the host) for their bins."""
        for k, loss in zip(
            torch.as_tensor(bins).reshape(-1).tolist(), torch.as_tensor(losses).detach().reshape(-1).tolist()
        ):
            k = int(k)
            if self.counts[k] >= self.history_per_bin:
                self.losses[k, :-1] = self.losses[k, 1:].clone()
                self.losses[k, -1] = loss
            else:
                self.losses[k, self.counts[k]] = loss
                self.counts[k] += 1

    def weights(self, bins):
        """Importance weights 1 / (num_bins p_k) that keep the weighted loss unbiased."""
        p = self.probabilities()
        return 1.0 / (self.num_bins * p[torch.as_tensor(bins, dtype=torch.int64).cpu()])


def bin_of(schedule, t, num_bins):
    """The LossHistory bin of each time t."""
    if schedule.is_discrete:
        return torch.clamp(torch.round(t).to(torch.int64), 0, num_bins - 1)
    lo, hi = float(schedule.t_eps), float(schedule.t_max)
    return torch.clamp(((t - lo) / (hi - lo) * num_bins).to(torch.int64), 0, num_bins - 1)


def importance(schedule, n, generator, *, history, dtype=torch.float32):
    """Loss-aware importance sampling of t: a bin k ~ history.probabilities(), then t = k (discrete) or uniform
    inside the bin (continuous). Multiply the loss by `history.weights(bin_of(...))` to keep it unbiased."""
    if not isinstance(history, LossHistory):
        raise ValueError(f"history={history!r}: expected a LossHistory")
    if schedule.is_discrete and history.num_bins != schedule.num_steps:
        raise ValueError(
            f"history.num_bins={history.num_bins}: expected T = {schedule.num_steps} for a discrete schedule"
        )
    device = _generator_device(generator)
    p = history.probabilities().to(device)
    k = torch.multinomial(p, _n(n), replacement=True, generator=generator)
    if schedule.is_discrete:
        return k.to(dtype)
    u = torch.rand((n,), generator=generator, device=device, dtype=torch.float64)
    lo, hi = float(schedule.t_eps), float(schedule.t_max)
    return (lo + (hi - lo) * (k.to(torch.float64) + u) / history.num_bins).to(dtype)


TIMESTEPS: dict[str, Callable[..., torch.Tensor]] = {
    "uniform_discrete": uniform_discrete,
    "uniform": uniform,
    "logit_normal": logit_normal,
    "edm_lognormal": edm_lognormal,
    "importance": importance,
}


def get_timesteps(name):
    """TIMESTEPS[name], or a ValueError listing the known names."""
    if name not in TIMESTEPS:
        raise ValueError(f"unknown timesteps {name!r}: expected one of {', '.join(sorted(TIMESTEPS))}")
    return TIMESTEPS[name]
