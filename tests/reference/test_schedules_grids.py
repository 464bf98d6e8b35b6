"""Schedules and grids: inverse maps, VP identities, endpoints, grid invariants (numpy only)."""

import numpy as np
import pytest
from diffspec.reference import grids as G
from diffspec.reference import schedules as S
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples


def _instances():
    out = {}
    for name, cls in S.SCHEDULES.items():
        out[name] = cls(values=tuple(np.linspace(1e-4, 0.02, 50))) if name == "betas" else cls()
    out["linear_zero_snr"] = S.LinearBetas(rescale_zero_snr=True)
    out["scaled_linear_zero_snr"] = S.ScaledLinearBetas(rescale_zero_snr=True)
    out["flow_shift3"] = S.Flow(shift=3.0)
    return out


INSTANCES = _instances()
NAMES = sorted(INSTANCES)


def _finite_lam_range(sch):
    """The part of the domain where lam is finite (clean ends and alpha = 0 ends excluded)."""
    lo, hi = sch.t_min, sch.t_max
    span = hi - lo
    if not np.isfinite(sch.lam(lo)):
        lo = lo + 1e-12 * span
    if not np.isfinite(sch.lam(hi)):
        hi = hi - 1e-12 * span
    return lo, hi


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=examples(40))
@given(u=st.floats(0.0, 1.0))
@example(u=0.0)
@example(u=1.0)
@example(u=1e-9)
@example(u=1 - 1e-9)
def test_t_of_lam_inverts_lam(name, u):
    sch = INSTANCES[name]
    lo, hi = _finite_lam_range(sch)
    t = lo + u * (hi - lo)
    lam = sch.lam(t)
    assert np.isfinite(lam)
    back = sch.t_of_lam(lam)
    # The inverse is exact up to the conditioning of lam(t): |dt| <~ eps (|lam| + 1) / |dlam/dt|.
    h = 1e-6 * (sch.t_max - sch.t_min)
    ta, tb = max(t - h, sch.t_min), min(t + h, sch.t_max)
    slope = abs((sch.lam(tb) - sch.lam(ta)) / (tb - ta)) if np.all(np.isfinite([sch.lam(ta), sch.lam(tb)])) else np.inf
    tol = 1e-12 * (sch.t_max - sch.t_min) + 64 * np.finfo(float).eps * (abs(lam) + 1) / max(slope, 1e-300)
    assert abs(back - t) <= tol, (t, back)


@pytest.mark.parametrize("name", NAMES)
def test_lam_infinite_ends_invert_to_the_ends(name):
    sch = INSTANCES[name]
    for t in (sch.t_min, sch.t_max):
        lam = sch.lam(t)
        if not np.isfinite(lam):
            np.testing.assert_allclose(sch.t_of_lam(lam), t, atol=1e-12)


@pytest.mark.parametrize("name", [n for n in NAMES if INSTANCES[n].variance_preserving])
@given(u=st.floats(0.0, 1.0))
@example(u=0.0)
@example(u=1.0)
def test_vp_alpha2_plus_sigma2_is_one(name, u):
    sch = INSTANCES[name]
    t = sch.t_min + u * (sch.t_max - sch.t_min)
    np.testing.assert_allclose(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, 1.0, rtol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_lam_strictly_decreasing_and_alpha_sigma_consistent(name):
    sch = INSTANCES[name]
    t = np.linspace(sch.t_min, sch.t_max, 2001)
    lam = sch.lam(t)
    assert np.all(np.diff(lam) < 0)
    alpha, sigma = sch.alpha(t), sch.sigma(t)
    inner = np.isfinite(lam)
    np.testing.assert_allclose(np.log(alpha[inner]) - np.log(sigma[inner]), lam[inner], rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(alpha)) and np.all(np.isfinite(sigma))


def test_ends_finite_and_accurate():
    # Near the clean end sigma keeps full relative precision (never sqrt(1 - alphabar)).
    vp = S.LinearVP()
    t = 1e-12
    B = vp.beta_min * t + 0.5 * (vp.beta_max - vp.beta_min) * t**2
    np.testing.assert_allclose(vp.sigma(t), np.sqrt(-np.expm1(-B)), rtol=1e-12)
    assert vp.sigma(0.0) == 0.0 and vp.alpha(0.0) == 1.0 and vp.has_clean_end()
    # Discrete clean end t = -1 and the first step.
    lin = S.LinearBetas()
    assert lin.sigma(-1.0) == 0.0 and lin.alpha(-1.0) == 1.0
    np.testing.assert_allclose(lin.sigma(0.0), np.sqrt(1e-4), rtol=1e-12)
    # Zero terminal SNR: alpha exactly 0 at T - 1, sigma 1, lam -inf, and continuous on the way there.
    z = S.LinearBetas(rescale_zero_snr=True)
    assert z.alpha(999.0) == 0.0 and z.sigma(999.0) == 1.0 and z.lam(999.0) == -np.inf
    near = z.alpha(np.array([998.0, 998.5, 998.999]))
    assert np.all(np.diff(near) < 0) and near[-1] < 1e-3 * near[0]
    assert z.t_of_lam(-np.inf) == 999.0
    # Cosine VP reaches alpha = 0 exactly at t = 1 (not tan(pi/2) = 1.6e16 in floating point).
    assert S.CosineVP().alpha(1.0) == 0.0
    np.testing.assert_allclose(S.CosineVP().t_of_lam(S.CosineVP().lam(1 - 1e-10)), 1 - 1e-10, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_serialisation_round_trip(name):
    sch = INSTANCES[name]
    assert S.schedule_from_dict(sch.to_dict()) == sch


# ---- grids ------------------------------------------------------------------------------------------------

GRID_CASES = [
    (s, g)
    for s in NAMES
    for g in G.GRIDS
    if not (g in ("leading", "trailing") and not INSTANCES[s].is_discrete)
    and not (g == "shifted" and not s.startswith("flow"))
]
# Grids spaced in noise level or lam cannot start where alpha = 0; they get an explicit t_start there.
ALPHA_ZERO_START = {"flow", "flow_shift3", "vp_cosine", "linear_zero_snr", "scaled_linear_zero_snr"}


@pytest.mark.parametrize("schedule_name,grid_name", GRID_CASES)
@pytest.mark.parametrize("steps", [1, 2, 7, 25])
def test_every_grid_decreasing_with_steps_plus_one_points_in_domain(schedule_name, grid_name, steps):
    sch = INSTANCES[schedule_name]
    opts = {}
    if grid_name in ("karras", "exponential", "uniform_lam") and schedule_name in ALPHA_ZERO_START:
        opts["t_start"] = sch.t_max - 0.01 * (sch.t_max - sch.t_min) if not sch.is_discrete else sch.t_max - 1
    if grid_name == "leading":
        opts["offset"] = 0
    if grid_name == "time_quadratic" and sch.is_discrete and steps > 20:
        return  # rounding to integers repeats times: checked to raise below
    grid = G.GRIDS[grid_name](sch, steps, **opts)
    assert grid.dtype == np.float64 and grid.shape == (steps + 1,)
    assert np.all(np.diff(grid) < 0)
    assert np.all(grid >= sch.t_min) and np.all(grid <= sch.t_max)
    assert np.all(np.isfinite(sch.alpha(grid))) and np.all(np.isfinite(sch.sigma(grid)))


def test_alpha_zero_start_raises_naming_t_start():
    with pytest.raises(ValueError, match="t_start"):
        G.karras(S.Flow(), 10)
    with pytest.raises(ValueError, match="t_start"):
        G.uniform_lam(S.LinearBetas(rescale_zero_snr=True), 10)


# ---- bad inputs ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_naming_the_argument():
    with pytest.raises(ValueError, match="unknown schedule 'nope'.*cosine.*linear"):
        S.make_schedule("nope")
    with pytest.raises(ValueError, match="unknown grid 'nope'.*karras"):
        G.make_grid("nope", S.LinearBetas(), 10)
    with pytest.raises(ValueError, match=r"betas.*\(0, 1\)"):
        S.ExplicitBetas(values=(0.1, 1.5, 0.2)).alpha(0.0)
    with pytest.raises(ValueError, match=r"betas.*\(0, 1\)"):
        S.ExplicitBetas(values=(0.1, float("nan"), 0.2)).alpha(0.0)
    with pytest.raises(ValueError, match=r"betas.*\(0, 1\)"):
        S.LinearBetas(beta_start=0.0).alpha(1.0)
    with pytest.raises(ValueError, match="steps"):
        G.uniform(S.LinearBetas(), 0)
    with pytest.raises(ValueError, match="steps"):
        G.uniform(S.LinearBetas(), 1001)
    with pytest.raises(ValueError, match="t contains 1.5"):
        S.Flow().alpha(1.5)
    with pytest.raises(ValueError, match="t contains NaN"):
        S.EDM().sigma(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="lam contains NaN"):
        S.LinearBetas().t_of_lam(np.nan)
    with pytest.raises(ValueError, match="grid.*decreasing"):
        from diffspec.reference import _checks

        _checks.decreasing_grid([0.5, 0.7, 0.1], S.Flow())
    with pytest.raises(ValueError, match="repeats or reverses"):
        G.time_quadratic(S.LinearBetas(), 999)
    with pytest.raises(ValueError, match="rho"):
        G.karras(S.EDM(), 10, rho=0.0)
