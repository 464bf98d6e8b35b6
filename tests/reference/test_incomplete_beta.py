"""The numpy incomplete beta function and its inverse against scipy, and against the closed forms they must satisfy."""

import numpy as np
import pytest
from diffspec.reference.incomplete_beta import betainc, betaincinv
from hypothesis import given
from hypothesis import strategies as st

SHAPES = [(0.6, 0.6), (0.5, 0.5), (1.0, 1.0), (2.0, 3.0), (0.1, 5.0), (5.0, 0.1), (30.0, 40.0), (1.5, 0.7), (100, 1)]
# 1e-100 is left out for a = 0.1: its quantile, ~1e-1000, underflows float64
PROBABILITIES = np.concatenate([[0.0, 1.0, 1e-12, 0.5, 1 - 1e-12, 1 - 1e-15], np.linspace(0, 1, 41)])


@pytest.mark.parametrize("a, b", SHAPES)
def test_inverse_matches_scipy_beta_ppf(a, b):
    stats = pytest.importorskip("scipy.stats")
    p = np.concatenate([PROBABILITIES, np.random.default_rng(0).random(30), [1e-100] if a > 0.5 else []])
    np.testing.assert_allclose(betaincinv(a, b, p), stats.beta.ppf(p, a, b), rtol=1e-12, atol=0, strict=True)


@pytest.mark.parametrize("a, b", SHAPES)
def test_cdf_matches_scipy_betainc(a, b):
    special = pytest.importorskip("scipy.special")
    x = np.concatenate([[0.0, 1.0, 1e-300, 0.5], np.random.default_rng(1).random(30)])
    np.testing.assert_allclose(betainc(a, b, x), special.betainc(a, b, x), rtol=1e-12, atol=1e-15, strict=True)


def test_closed_forms():
    x = np.linspace(0, 1, 11)
    np.testing.assert_allclose(betainc(1.0, 1.0, x), x, rtol=1e-14)  # the uniform CDF
    np.testing.assert_allclose(betainc(2.0, 1.0, x), x**2, rtol=1e-14, atol=1e-16)
    # the arcsine law: I_x(1/2, 1/2) = (2 / pi) asin(sqrt(x))
    np.testing.assert_allclose(betainc(0.5, 0.5, x), 2 / np.pi * np.arcsin(np.sqrt(x)), rtol=1e-13, atol=1e-16)


@given(
    a=st.floats(0.05, 50.0),
    b=st.floats(0.05, 50.0),
    p=st.floats(1e-9, 1 - 1e-9),
)
def test_inverse_inverts(a, b, p):
    x = float(betaincinv(a, b, p))
    assert 0.0 <= x <= 1.0
    # x is the quantile up to its rounding: two ulps below it the CDF is at most p, two ulps above at least p (an
    # error bound on the point itself would fail near an end where a or b < 1: with a = 2, b = 0.055, p = 0.875 the
    # CDF jumps from 0.853 to 1 between the last two doubles below 1)
    below, above = x, x
    for _ in range(2):
        below, above = np.nextafter(below, 0.0), np.nextafter(above, 1.0)
    assert float(betainc(a, b, below)) <= p + 1e-12
    assert float(betainc(a, b, above)) >= p - 1e-12


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: betaincinv(0.0, 1.0, 0.5), "a=0.0"),
        (lambda: betaincinv(1.0, -2.0, 0.5), "b=-2.0"),
        (lambda: betaincinv(1.0, 1.0, 1.5), "p=1.5"),
        (lambda: betainc(1.0, 1.0, np.nan), "x:"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
