"""Input validation shared by the reference's public entry points.

Every check raises ValueError naming the argument, the value and what was expected.
"""

from collections.abc import Callable

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


def _is_real(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def positive(name, value):
    if not (_is_real(value) and np.isfinite(value) and value > 0):
        raise ValueError(f"{name}={_short(value)}: expected a finite number > 0")
    return float(value)


def nonnegative(name, value):
    if not (_is_real(value) and np.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={_short(value)}: expected a finite number >= 0")
    return float(value)


def in_range(name, value, lo, hi, *, lo_open=False, hi_open=False):
    real = _is_real(value) and bool(np.isfinite(value))
    ok_lo = real and (value > lo if lo_open else value >= lo)
    ok_hi = real and (value < hi if hi_open else value <= hi)
    if not (ok_lo and ok_hi):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name}={_short(value)}: expected a number in {left}{lo}, {hi}{right}")
    return float(value)


def greater(name: str, value, other_name: str, other: float) -> float:
    """A finite number > `other` (e.g. sigma_max > sigma_min)."""
    if not (_is_real(value) and np.isfinite(value) and value > other):
        raise ValueError(f"{name}={_short(value)}: expected a finite number > {other_name} = {_short(other)}")
    return float(value)


def at_least(name: str, value, other_name: str, other: float) -> float:
    """A finite number >= `other` (e.g. beta_max >= beta_min)."""
    if not (_is_real(value) and np.isfinite(value) and value >= other):
        raise ValueError(f"{name}={_short(value)}: expected a finite number >= {other_name} = {_short(other)}")
    return float(value)


def boolean(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}={_short(value)}: expected True or False")
    return bool(value)


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


def checked_denoiser(denoise: Callable, grid, *, sampler: str) -> Callable:
    """`denoise` wrapped so that a bad model output raises a ValueError naming the sampler and the step.

    Each call's result must be an array of real numbers shaped like its `x`, finite everywhere: None, a wrong
    shape, NaN or inf raise instead of flowing silently into the sampler's update. The result is returned as
    float64. The step is the grid step whose interval [grid[i + 1], grid[i]] holds the call's t. Wrapping twice
    is a no-op, so a sampler that calls another keeps one check per model call.
    """
    if getattr(denoise, "_checked_by", None) is not None:
        return denoise
    if not callable(denoise):
        raise ValueError(f"{sampler}: denoise={_short(denoise)}: expected a callable denoise(x, t) -> x0_hat")
    calls = 0

    def where(t):
        try:
            times = np.asarray(grid, dtype=np.float64).ravel()
            t_val = float(np.max(t))
            step = max(int(np.sum(times >= t_val)) - 1, 0)
            return f"step {step} (model call {calls}, t={t_val:.6g})"
        except (TypeError, ValueError):
            return f"model call {calls}"

    def checked(x, t):
        nonlocal calls
        calls += 1
        out = denoise(x, t)
        expected = f"expected an array of shape {np.shape(x)} like x"
        if out is None:
            raise ValueError(f"{sampler}: the denoiser returned None at {where(t)}: {expected}")
        try:
            arr = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{sampler}: the denoiser returned {_short(out)} at {where(t)}: {expected}") from None
        if arr.shape != np.shape(x):
            raise ValueError(f"{sampler}: the denoiser returned shape {arr.shape} at {where(t)}: {expected}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"{sampler}: the denoiser returned NaN or inf at {where(t)}: expected finite values "
                "(check the model, its parameterization, or the grid's end points)"
            )
        return arr

    checked._checked_by = sampler  # type: ignore[attr-defined]
    return checked
