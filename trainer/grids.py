"""Sampling time grids on tensors: `fn(schedule, steps, **options) -> grid`, a float64 tensor (torch twin of
`diffspec.reference.grids`).

A grid is strictly decreasing, steps + 1 times, noise -> data, from t_start (default t_max) to t_end (default
t_min, the clean end where the schedule has one). Spacings in noise level (karras, exponential) place `steps`
noisy times down to t_eps and then step to a clean end (k-diffusion); without a clean end all steps + 1 times
go down to t_end. Discrete schedules get diffusers' integer spacings followed by the clean end t = -1.
Grids are built once per sampling run, on the CPU, in float64; their checks may therefore read values.
"""

import math

import torch


def _integer(name, value, minimum, maximum=None):
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        hi = "inf" if maximum is None else maximum
        raise ValueError(f"{name}={value!r}: expected an integer in [{minimum}, {hi}]")
    return value


def _in_domain(name, t, schedule):
    if not (math.isfinite(t) and schedule.t_min <= t <= schedule.t_max):
        raise ValueError(
            f"{name}={t}: expected a time in the domain [{schedule.t_min}, {schedule.t_max}] of {type(schedule).__name__}"
        )


def _endpoints(schedule, steps, t_start, t_end):
    steps = _integer("steps", steps, 1, schedule.num_steps if schedule.is_discrete else None)
    t_start = float(schedule.t_max if t_start is None else t_start)
    t_end = float(schedule.t_min if t_end is None else t_end)
    _in_domain("t_start", t_start, schedule)
    _in_domain("t_end", t_end, schedule)
    if not t_start > t_end:
        raise ValueError(f"t_start={t_start}, t_end={t_end}: expected t_start > t_end (grids run noise -> data)")
    return steps, t_start, t_end


def _finish(grid, name):
    grid = torch.as_tensor(grid, dtype=torch.float64)
    if not bool(torch.all(grid[1:] < grid[:-1])):
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


def _f64(value):
    return torch.tensor(float(value), dtype=torch.float64)


def _linspace(start, stop, num):
    """numpy's linspace arithmetic, start + i (stop - start) / (num - 1) with the last value exactly stop: diffusers'
    integer spacings round these values, so a half-integer must land on the same side as there."""
    if num == 1:
        return torch.tensor([float(start)], dtype=torch.float64)
    step = (stop - start) / (num - 1)
    out = torch.arange(num, dtype=torch.float64) * step + start
    out[-1] = stop
    return out


def uniform(schedule, steps, *, t_start=None, t_end=None):
    """Evenly spaced in t. Discrete: diffusers' "linspace", round(linspace(0, T-1, steps)) reversed, then the
    clean end. Continuous: linspace(t_start, t_end, steps + 1)."""
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)
    if schedule.is_discrete:
        ts = torch.round(_linspace(0.0, t_start, steps)).flip(0)
        return _finish(torch.cat([ts, _f64(t_end)[None]]), "uniform")
    return _finish(_linspace(t_start, t_end, steps + 1), "uniform")


def leading(schedule, steps, *, offset=0, t_end=None):
    """diffusers' "leading" spacing: n_i = i (T // steps) + offset, reversed, then the clean end."""
    _discrete_only(schedule, "leading")
    steps, _, t_end = _endpoints(schedule, steps, None, t_end)
    offset = _integer("offset", offset, 0)
    ratio = schedule.num_steps // steps
    ts = (torch.arange(steps, dtype=torch.float64) * ratio).flip(0) + offset
    if float(ts[0]) > schedule.t_max:
        raise ValueError(f"offset={offset}: leading timesteps reach {float(ts[0])} > T - 1 = {schedule.t_max}")
    return _finish(torch.cat([ts, _f64(t_end)[None]]), "leading")


def trailing(schedule, steps, *, t_end=None):
    """diffusers' "trailing" spacing (Lin et al. 2023, Table 2): round(arange(T, 0, -T/steps)) - 1, then the clean end."""
    _discrete_only(schedule, "trailing")
    steps, _, t_end = _endpoints(schedule, steps, None, t_end)
    T = schedule.num_steps
    step = -T / steps
    # numpy's arange arithmetic (as diffusers): T + i delta with delta = (T + step) - T, so that values at
    # half-integers round to the same integers.
    delta = (T + step) - T
    ts = torch.round(T + torch.arange(math.ceil(-T / step), dtype=torch.float64) * delta) - 1.0
    return _finish(torch.cat([ts[:steps], _f64(t_end)[None]]), "trailing")


def _in_sigma_ve(schedule, steps, t_start, t_end, spacing):
    """Times whose sigma_ve follow `spacing(sigma_hi, sigma_lo, n)`; k-diffusion's clean end."""
    sigma_hi = float(schedule.sigma_ve(_f64(t_start)))
    if not math.isfinite(sigma_hi):
        raise ValueError(
            f"t_start={t_start}: sigma/alpha is infinite there (alpha = 0), so a grid spaced in noise level cannot "
            f"start at it; pass t_start < {t_start}"
        )
    if float(schedule.sigma(_f64(t_end))) == 0.0:
        t_lo = max(schedule.t_eps, t_end)
        if t_lo == t_end:
            t_lo = t_end + (t_start - t_end) * 1e-3
        sigmas = spacing(sigma_hi, float(schedule.sigma_ve(_f64(t_lo))), steps)
        ts = torch.cat([schedule.t_of_sigma_ve(sigmas), _f64(t_end)[None]])
    else:
        ts = schedule.t_of_sigma_ve(spacing(sigma_hi, float(schedule.sigma_ve(_f64(t_end))), steps + 1))
    ts = ts.clone()
    ts[0], ts[-1] = t_start, t_end
    return ts + 0.0


def karras(schedule, steps, *, rho=7.0, t_start=None, t_end=None):
    """Karras et al. (2022), eq. 5, in sigma_ve = sigma / alpha, mapped back to t by the schedule's inverse."""
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho={rho!r}: expected a finite number > 0")

    def spacing(hi, lo, n):
        ramp = _linspace(0.0, 1.0, n)
        return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho

    return _finish(_in_sigma_ve(schedule, steps, t_start, t_end, spacing), "karras")


def exponential(schedule, steps, *, t_start=None, t_end=None):
    """Evenly spaced in log sigma_ve (k-diffusion's `get_sigmas_exponential`)."""
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)

    def spacing(hi, lo, n):
        return torch.exp(_linspace(math.log(hi), math.log(lo), n))

    return _finish(_in_sigma_ve(schedule, steps, t_start, t_end, spacing), "exponential")


def uniform_lam(schedule, steps, *, t_start=None, t_end=None):
    """Evenly spaced in lam (DPM-Solver's "logSNR" skip, Lu et al. 2022, Sec. 3.3), down to t_eps by default."""
    if t_end is None:
        t_end = max(schedule.t_eps, schedule.t_min)
        if not math.isfinite(float(schedule.lam(_f64(t_end)))):  # t_eps is the clean end: the first noisy time above
            t_end = t_end + (schedule.t_max - t_end) * 1e-3
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)
    lam_start, lam_end = float(schedule.lam(_f64(t_start))), float(schedule.lam(_f64(t_end)))
    if not math.isfinite(lam_end):
        raise ValueError(f"t_end={t_end}: uniform_lam needs a finite lam at t_end; choose t_end > {schedule.t_min}")
    if not math.isfinite(lam_start):
        raise ValueError(
            f"t_start={t_start}: lam is -inf there (alpha = 0), so a grid uniform in lam cannot start at it; "
            f"pass t_start < {t_start}"
        )
    ts = schedule.t_of_lam(_linspace(lam_start, lam_end, steps + 1)).clone()
    ts[0], ts[-1] = t_start, t_end
    return _finish(ts, "uniform_lam")


def time_quadratic(schedule, steps, *, t_start=None, t_end=None):
    """Quadratic in time (DDIM's "quad" skip): evenly spaced in sqrt(t - t_end)."""
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)
    if schedule.is_discrete and t_end < schedule.t_eps:
        # Integer steps down to t_eps = 0, then the clean end (rounding a quadratic ending at -1 repeats integers).
        u = _linspace(math.sqrt(t_start - schedule.t_eps), 0.0, steps)
        ts = torch.cat([torch.round(schedule.t_eps + u**2), _f64(t_end)[None]])
    else:
        u = _linspace(math.sqrt(t_start - t_end), 0.0, steps + 1)
        ts = t_end + u**2
        if schedule.is_discrete:
            ts[:-1] = torch.round(ts[:-1])
    ts[0], ts[-1] = t_start, t_end
    return _finish(ts, "time_quadratic")


def shifted(schedule, steps, *, shift=None, t_start=None, t_end=None):
    """SD3's shifted flow grid (Esser et al. 2024, eq. 23): linspace mapped through shift t / (1 + (shift - 1) t)."""
    if not hasattr(schedule, "shifted"):
        raise ValueError(f"grid 'shifted' needs a flow schedule, got {type(schedule).__name__}: use schedule 'flow'")
    steps, t_start, t_end = _endpoints(schedule, steps, t_start, t_end)
    return _finish(schedule.shifted(_linspace(t_start, t_end, steps + 1), shift), "shifted")


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


# The grid used when none is named, by schedule name (bench/quality.py, docs/quality.md): "exponential" is uniform
# in lam (sigma / alpha = e^{-lam}) with a last step onto the clean end, the best measured with dpmpp_2m at 20 steps.
# The runtime's `default_grid` holds the same table (a test keeps the two equal). flow and vp_cosine have lam = -inf
# at t = 1, where no grid spaced in noise level can start.
DEFAULT_GRIDS = {"flow": "shifted", "vp_cosine": "uniform"}
FALLBACK_GRID = "exponential"


def default_grid(schedule) -> str:
    """The name of the grid to sample `schedule` with when none is named (`DEFAULT_GRIDS`, else FALLBACK_GRID)."""
    return DEFAULT_GRIDS.get(schedule.to_dict()["name"], FALLBACK_GRID)


def make_grid(name, schedule, steps, **options):
    """GRIDS[name](schedule, steps, **options), with the known names listed for an unknown one."""
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}: expected one of {', '.join(sorted(GRIDS))}")
    return GRIDS[name](schedule, steps, **options)
