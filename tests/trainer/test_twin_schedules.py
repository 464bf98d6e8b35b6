"""Trainer schedules and grids against the reference, over random schedules, shapes and times (endpoints mixed in).

float64: the same formulas in the same precision, so results agree to rounding: rtol 1e-12 (with an absolute floor
for values that pass through zero, lam near 0 and t near 0).

float32 (what training uses): the trainer is evaluated at the float32 time t32 and compared with the float64
reference at the same t32, so only the evaluation's own rounding is measured. Every formula here is a chain of at
most ~8 elementary operations, each adding a relative error eps32 to an intermediate whose magnitude is bounded by
one of: lam itself, the log-alpha/log-sigma terms, or the time (the first operation of every formula rounds a
quantity of size at most 1 + |t|: t + 1, 1 - t, t + s, t^2, and that error reaches the output through dlam/dt).
Hence

    |lam32 - lam| <= K eps32 kappa,    |alpha32 / alpha - 1|, |sigma32 / sigma - 1| <= K eps32 kappa,
    kappa = 1 + |lam| + |log alpha| + |log sigma| + (1 + |t|) (|dlam/dt| + |dlog alpha/dt| + |dlog sigma/dt|),

with K = 16 (8 roundings, times 2 for the worst case of each). The derivatives come from the float64 reference by
central differences. Nothing here was tuned against the results.
"""

import numpy as np
import torch
from _twin import float32_times, reference_schedules, twin
from _twin import kappa as _kappa
from diffspec.reference import grids as RG
from diffspec.reference import schedules as R
from diffspec.trainer import grids as G
from diffspec.trainer import schedules as S
from hypothesis import assume, given, settings
from hypothesis import strategies as st

EPS32 = float(np.finfo(np.float32).eps)
K = 16


@st.composite
def schedule_and_times(draw, max_size=8):
    ref = draw(reference_schedules())
    lo, hi = float(ref.t_min), float(ref.t_max)
    special = [lo, hi, float(ref.t_eps), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo)]
    if ref.is_discrete:
        special += [0.0, 1.0, hi - 1.0, float(draw(st.integers(-1, int(hi))))]
    t = draw(st.lists(st.sampled_from(special) | st.floats(lo, hi), min_size=1, max_size=max_size))
    return ref, np.clip(np.asarray(t, dtype=np.float64), lo, hi)


def test_registry_names_and_serialised_form_match():
    assert sorted(S.SCHEDULES) == sorted(R.SCHEDULES)
    for name in R.SCHEDULES:
        params = {"values": (0.01, 0.02, 0.03)} if name == "betas" else {}
        ref = R.make_schedule(name, **params)
        assert twin(ref).to_dict() == ref.to_dict()
        assert twin(ref).has_clean_end() == ref.has_clean_end()
        assert (twin(ref).t_min, twin(ref).t_max, twin(ref).t_eps) == (ref.t_min, ref.t_max, ref.t_eps)


@settings(deadline=None)
@given(schedule_and_times())
def test_marginals_float64_match_reference_to_rounding(problem):
    ref, t = problem
    sch = twin(ref)
    tt = torch.from_numpy(t)
    rtol = 1e-12
    if getattr(ref, "rescale_zero_snr", False):
        # Lin et al.'s rescale recovers each beta as 1 - alphabar_n / alphabar_{n-1}: a cancellation with relative
        # error eps64 / beta, which both twins inherit (from cumprod/sqrt rounded in different orders).
        rtol = max(rtol, 4 * np.finfo(np.float64).eps / float(np.min(ref.betas())))
    for name in ("alpha", "sigma", "lam", "sigma_ve"):
        got, want = getattr(sch, name)(tt), getattr(ref, name)(t)
        assert got.dtype == torch.float64 and got.shape == tt.shape
        atol = rtol if name == "lam" else 1e-300
        np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol, strict=True)


@settings(deadline=None)
@given(schedule_and_times())
def test_inverse_float64_matches_reference(problem):
    ref, t = problem
    lam = ref.lam(t)
    lam = lam[np.isfinite(lam)]
    assume(lam.size > 0)
    got = twin(ref).t_of_lam(torch.from_numpy(lam)).numpy()
    # The discrete inverse is a piecewise-linear interpolation (np.interp vs searchsorted): rounding relative to the
    # node spacing, i.e. to T steps.
    np.testing.assert_allclose(got, ref.t_of_lam(lam), rtol=1e-12, atol=1e-12 * (ref.t_max - ref.t_min), strict=True)
    sv = ref.sigma_ve(t)
    sv = sv[np.isfinite(sv) & (sv > 0)]
    assume(sv.size > 0)
    np.testing.assert_allclose(
        twin(ref).t_of_sigma_ve(torch.from_numpy(sv)).numpy(),
        ref.t_of_sigma_ve(sv),
        rtol=1e-12,
        atol=1e-12 * (ref.t_max - ref.t_min),
        strict=True,
    )


@settings(deadline=None)
@given(schedule_and_times())
def test_marginals_float32_within_derived_tolerance(problem):
    ref, t = problem
    t32, t = float32_times(ref, t)  # the reference at exactly the float32 time
    kappa = _kappa(ref, t)
    ok = np.isfinite(kappa) & np.isfinite(ref.lam(t))
    sch = twin(ref)
    for name in ("alpha", "sigma", "lam"):
        got = getattr(sch, name)(torch.from_numpy(t32))
        assert got.dtype == torch.float32
        got, want = got.double().numpy(), getattr(ref, name)(t)
        with np.errstate(all="ignore"):  # 0/0 and inf - inf at the ends are masked by `ok`
            err = np.abs(got - want) if name == "lam" else np.abs(got / want - 1)
        bound = K * EPS32 * kappa
        assert np.all(err[ok] <= bound[ok]), (name, t[ok][err[ok] > bound[ok]], err[ok].max())
        # Where the conditioning is infinite (a clean end, alpha = 0) the values themselves must agree.
        np.testing.assert_array_equal(np.isfinite(got[~ok]), np.isfinite(want[~ok]))


GRID_OPTIONS = {
    "uniform": {},
    "leading": {"offset": st.sampled_from([0, 1])},
    "trailing": {},
    "karras": {"rho": st.sampled_from([7.0]) | st.floats(1.0, 10.0)},
    "exponential": {},
    "uniform_lam": {},
    "time_quadratic": {},
    "shifted": {"shift": st.sampled_from([None, 3.0]) | st.floats(0.3, 5.0)},
}


@settings(deadline=None)
@given(ref=reference_schedules(), name=st.sampled_from(sorted(RG.GRIDS)), steps=st.integers(1, 60), data=st.data())
def test_grids_match_reference(ref, name, steps, data):
    options = data.draw(st.fixed_dictionaries(GRID_OPTIONS[name]), label="options")
    try:
        want = RG.GRIDS[name](ref, steps, **options)
    except ValueError:
        try:
            G.GRIDS[name](twin(ref), steps, **options)
        except ValueError:
            return
        # A grid the reference refuses only because float64 rounding made two times equal may exist in the twin.
        raise AssertionError(f"reference refused grid {name!r} ({steps} steps) but the trainer built one")  # noqa: B904
    got = G.GRIDS[name](twin(ref), steps, **options)
    assert got.dtype == torch.float64 and got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12 * (ref.t_max - ref.t_min), strict=True)


def test_grid_registry_matches():
    assert sorted(G.GRIDS) == sorted(RG.GRIDS)
