"""Sampling time grids, separate from schedules: `fn(schedule, steps, **options) -> grid`.

A grid is a strictly decreasing float64 array of steps + 1 times, noise -> data. Its first time is
`t_start` (default: the schedule's t_max) and its last is `t_end` (default: the schedule's t_min, which is
the clean end sigma = 0 where the schedule has one). Spacings that are defined in noise level (karras,
exponential) place `steps` noisy times down to the schedule's t_eps and then step to a clean end, as
k-diffusion does; where the schedule has no clean end they place all steps + 1 times down to t_end.

Discrete schedules get diffusers' integer timestep spacings (uniform = "linspace", leading, trailing) followed
by the clean end t = -1 (diffusers' `set_alpha_to_one=True`).
"""

from typing import TYPE_CHECKING

import numpy as np
from diffspec.reference import _checks

if TYPE_CHECKING:
    from diffspec.reference.schedules import _Schedule


def _endpoints(schedule, steps, t_start, t_end):
    steps = _checks.integer("steps", steps, minimum=1)
    if schedule.is_discrete:
        _checks.integer("steps", steps, minimum=1, maximum=schedule.num_steps)
    t_start = schedule.t_max if t_start is None else float(t_start)
    t_end = schedule.t_min if t_end is None else float(t_end)
    _checks.times_in_domain("t_start", t_start, schedule)
    _checks.times_in_domain("t_end", t_end, schedule)
    if not t_start > t_end:
        raise ValueError(f"t_start={t_start}, t_end={t_end}: expected t_start > t_end (grids run noise -> data)")
    return steps, t_start, t_end


def _finish(grid, schedule, name):
    grid = np.asarray(grid, dtype=np.float64)
    if not np.all(np.diff(grid) < 0):
        raise ValueError(
            f"grid {name!r} with these options repeats or reverses times ({grid.tolist()[:8]}...): "
            "expected strictly decreasing times; use fewer steps"
        )
    return grid


def _discrete_only(schedule, name):
    if not schedule.is_discrete:
        raise ValueError(
            f"grid {name!r} is defined for discrete schedules only, got {type(schedule).__name__}: "
            "use 'uniform', 'karras', 'exponential', 'uniform_lam' or 'time_quadratic'"
        )


def uniform(schedule, steps, *, t_start=None, t_end=None):
    """Evenly spaced in t. Discrete: diffusers' "linspace" spacing, round(linspace(0, T-1, steps)) reversed,
    then the clean end. Continuous: linspace(t_start, t_end, steps + 1)."""
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)
    if schedule.is_discrete:
        ts = np.round(np.linspace(0.0, t_start, steps))[::-1]
        return _finish(np.append(ts, t_end), schedule, "uniform")
    return _finish(np.linspace(t_start, t_end, steps + 1), schedule, "uniform")


def leading(schedule, steps, *, offset=0, t_end=None):
    """diffusers' "leading" spacing (DDIM, Stable Diffusion): n_i = i * (T // steps) + offset, reversed, then the
    clean end. It never visits t = T - 1; with offset = 1 (SD's `steps_offset`) it starts at T - T // steps + 1."""
    _discrete_only(schedule, "leading")
    steps, _, t_end = _endpoints(schedule, steps, None, t_end)
    offset = _checks.integer("offset", offset, minimum=0)
    ratio = schedule.num_steps // steps
    ts = (np.arange(steps) * ratio).round()[::-1].astype(np.float64) + offset
    if ts[0] > schedule.t_max:
        raise ValueError(f"offset={offset}: leading timesteps reach {ts[0]} > T - 1 = {schedule.t_max}")
    return _finish(np.append(ts, t_end), schedule, "leading")


def trailing(schedule, steps, *, t_end=None):
    """diffusers' "trailing" spacing (Lin et al. 2023, Table 2): round(arange(T, 0, -T/steps)) - 1, then the clean end.
    Always starts at t = T - 1, which zero-terminal-SNR schedules need."""
    _discrete_only(schedule, "trailing")
    steps, _, t_end = _endpoints(schedule, steps, None, t_end)
    T = schedule.num_steps
    ts = np.round(np.arange(T, 0, -T / steps)) - 1.0
    return _finish(np.append(ts[:steps], t_end), schedule, "trailing")


def _in_sigma_ve(schedule, steps, t_start, t_end, spacing):
    """Times whose sigma_ve = sigma / alpha follow `spacing(sigma_hi, sigma_lo, n)`; k-diffusion's clean end."""
    sigma_hi = float(schedule.sigma_ve(t_start))
    if not np.isfinite(sigma_hi):
        raise ValueError(
            f"t_start={t_start}: sigma/alpha is infinite there (alpha = 0), so a grid spaced in noise level cannot "
            f"start at it; pass t_start < {t_start}"
        )
    if schedule.sigma(t_end) == 0.0:
        t_lo = max(schedule.t_eps, t_end)
        if t_lo == t_end:  # t_eps coincides with the clean end: use the first noisy time above it
            t_lo = t_end + (t_start - t_end) * 1e-3
        sigmas = spacing(sigma_hi, float(schedule.sigma_ve(t_lo)), steps)
        ts = np.append(schedule.t_of_sigma_ve(sigmas), t_end)
    else:
        ts = schedule.t_of_sigma_ve(spacing(sigma_hi, float(schedule.sigma_ve(t_end)), steps + 1))
    ts[0], ts[-1] = t_start, t_end  # exact endpoints despite the round trip through sigma
    return ts + 0.0  # no -0.0


def karras(schedule, steps, *, rho=7.0, t_start=None, t_end=None):
    """Karras et al. (2022), eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
    in sigma_ve = sigma / alpha, mapped back to times with the schedule's inverse."""
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)
    rho = _checks.positive("rho", rho)

    def spacing(hi, lo, n):
        ramp = np.linspace(0.0, 1.0, n)
        return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho

    return _finish(_in_sigma_ve(schedule, steps, t_start, t_end, spacing), schedule, "karras")


def exponential(schedule, steps, *, t_start=None, t_end=None):
    """Evenly spaced in log sigma_ve (k-diffusion's `get_sigmas_exponential`), with k-diffusion's clean end."""
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)

    def spacing(hi, lo, n):
        return np.exp(np.linspace(np.log(hi), np.log(lo), n))

    return _finish(_in_sigma_ve(schedule, steps, t_start, t_end, spacing), schedule, "exponential")


def uniform_lam(schedule, steps, *, t_start=None, t_end=None):
    """Evenly spaced in lam (DPM-Solver's "logSNR" skip type, Lu et al. 2022, Sec. 3.3): steps + 1 times from
    t_start to t_end, which defaults to t_eps because lam is infinite at a clean end."""
    if t_end is None:
        t_end = max(schedule.t_eps, schedule.t_min)
        if not np.isfinite(schedule.lam(t_end)):  # t_eps is the clean end: the first noisy time above it
            t_end = t_end + (schedule.t_max - t_end) * 1e-3
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)
    lam_start, lam_end = schedule.lam(t_start), schedule.lam(t_end)
    if not np.isfinite(lam_end):
        raise ValueError(f"t_end={t_end}: uniform_lam needs a finite lam at t_end; choose t_end > {schedule.t_min}")
    if not np.isfinite(lam_start):
        raise ValueError(
            f"t_start={t_start}: lam is -inf there (alpha = 0), so a grid uniform in lam cannot start at it; "
            f"pass t_start < {t_start}"
        )
    ts = schedule.t_of_lam(np.linspace(lam_start, lam_end, steps + 1))
    ts[0], ts[-1] = t_start, t_end
    return _finish(ts, schedule, "uniform_lam")


def time_quadratic(schedule, steps, *, t_start=None, t_end=None):
    """Quadratic in time (DDIM's "quad" skip, Song et al. 2021, App. D.2; DPM-Solver's "time_quadratic"):
    evenly spaced in sqrt(t - t_end) from t_start down to t_end, so steps crowd near the data."""
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)
    if schedule.is_discrete and t_end < schedule.t_eps:
        # Integer steps from t_start down to t_eps = 0 (DDIM's "quad"), then the clean end: rounding a quadratic
        # that ends at t = -1 would put two of its last times on the same integer.
        u = np.linspace(np.sqrt(t_start - schedule.t_eps), 0.0, steps)
        ts = np.append(np.round(schedule.t_eps + u**2), t_end)
    else:
        u = np.linspace(np.sqrt(t_start - t_end), 0.0, steps + 1)
        ts = t_end + u**2
        if schedule.is_discrete:
            ts[:-1] = np.round(ts[:-1])
    ts[0], ts[-1] = t_start, t_end
    return _finish(ts, schedule, "time_quadratic")


def shifted(schedule, steps, *, shift=None, t_start=None, t_end=None):
    """SD3's shifted flow grid (Esser et al. 2024, eq. 23): linspace(t_start, t_end, steps + 1) mapped through
    t' = shift t / (1 + (shift - 1) t). `shift` defaults to the flow schedule's own."""
    if not hasattr(schedule, "shifted"):
        raise ValueError(f"grid 'shifted' needs a flow schedule, got {type(schedule).__name__}: use schedule 'flow'")
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)
    return _finish(schedule.shifted(np.linspace(t_start, t_end, steps + 1), shift), schedule, "shifted")


GRIDS = {
    "uniform": uniform,
    "leading": leading,
    "trailing": trailing,
    "karras": karras,
    "exponential": exponential,
    "uniform_lam": uniform_lam,
    "time_quadratic": time_quadratic,
    "shifted": shifted,
}


def make_grid(name: str, schedule: "_Schedule", steps: int, **options) -> np.ndarray:
    """GRIDS[name](schedule, steps, **options), with the known names listed for an unknown one."""
    return _checks.lookup(GRIDS, name, what="grid")(schedule, steps, **options)
