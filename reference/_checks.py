"""Input validation shared by the reference's public entry points.

Every check raises ValueError naming the argument, the value and what was expected.
"""

import numpy as np


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def finite_array(name, value, *, dtype=np.float64):
    """`value` as a float64 array; NaN or inf raise."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}={_short(value)}: expected a real number or array of real numbers") from err
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)].ravel()[0]
        raise ValueError(f"{name} contains {bad} (NaN or inf): expected finite values")
    return arr


def positive(name, value):
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}={_short(value)}: expected a finite number > 0")
    return float(value)


def nonnegative(name, value):
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={_short(value)}: expected a finite number >= 0")
    return float(value)


def in_range(name, value, lo, hi, *, lo_open=False, hi_open=False):
    ok_lo = value > lo if lo_open else value >= lo
    ok_hi = value < hi if hi_open else value <= hi
    if not (np.isfinite(value) and ok_lo and ok_hi):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name}={_short(value)}: expected a number in {left}{lo}, {hi}{right}")
    return float(value)


def integer(name, value, *, minimum=None, maximum=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}={_short(value)}: expected an integer")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        lo = "-inf" if minimum is None else minimum
        hi = "inf" if maximum is None else maximum
        raise ValueError(f"{name}={value}: expected an integer in [{lo}, {hi}]")
    return int(value)


def lookup(registry, name, *, what):
    """registry[name], or a ValueError listing the known names."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(registry))
        raise ValueError(f"unknown {what} {name!r}: expected one of {known}") from None


def times_in_domain(name, t, schedule):
    """t as a float64 array inside [schedule.t_min, schedule.t_max]; NaN and out-of-domain values raise."""
    t = np.asarray(t, dtype=np.float64)
    if np.any(np.isnan(t)):
        raise ValueError(f"{name} contains NaN: expected times in [{schedule.t_min}, {schedule.t_max}]")
    if np.any(t < schedule.t_min) or np.any(t > schedule.t_max):
        bad = t[(t < schedule.t_min) | (t > schedule.t_max)].ravel()[0]
        raise ValueError(
            f"{name} contains {bad}: expected times in the domain [{schedule.t_min}, {schedule.t_max}] "
            f"of {type(schedule).__name__}"
        )
    return t


def decreasing_grid(grid, schedule, *, min_len=2, sampler=None):
    """A sampling grid as float64: 1-D, strictly decreasing (noise -> data), inside the schedule's domain."""
    grid = np.asarray(grid, dtype=np.float64)
    who = f" for {sampler}" if sampler else ""
    if grid.ndim != 1 or len(grid) < min_len:
        raise ValueError(
            f"grid of shape {grid.shape}{who}: expected a 1-D array of at least {min_len} times (noise -> data)"
        )
    if not np.all(np.diff(grid) < 0):
        raise ValueError(f"grid={_short(grid.tolist())}{who}: expected strictly decreasing times (noise -> data)")
    times_in_domain("grid", grid, schedule)
    return grid
