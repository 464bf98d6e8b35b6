"""The regularized incomplete beta function I_x(a, b) and its inverse, in NumPy/float64 (no scipy).

I_x(a, b) is the CDF of the Beta(a, b) distribution; its inverse in x is the quantile (scipy's `beta.ppf`), which the
"beta sigmas" of Lee et al. (2024), "Beta Sampling is All You Need", arXiv:2407.12173, place along a sigma range.

- `betainc(a, b, x)`: the continued fraction of I_x(a, b) (Abramowitz & Stegun 26.5.8), evaluated by the modified
  Lentz method, on the side of the mean where it converges fast, x < (a + 1) / (a + b + 2); the other side through
  the symmetry I_x(a, b) = 1 - I_{1-x}(b, a).
- `betaincinv(a, b, p)`: the x in [0, 1] with I_x(a, b) = p, by Newton's method on I_x(a, b) - p with the Beta density
  as derivative, safeguarded by a bisection bracket (a Newton step that leaves the bracket is replaced by its
  midpoint), so it converges for every a, b > 0, including the densities that are infinite at an end (a or b < 1);
  then polished to the neighbouring double with the smallest residual.
"""

import math

import numpy as np
import numpy.typing as npt

_TINY = 1e-300
_EPS = 1e-16


def _check_shape_parameters(a: float, b: float) -> tuple[float, float]:
    a, b = float(a), float(b)
    for name, value in (("a", a), ("b", b)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r}: expected a finite shape parameter > 0")
    return a, b


def _log_prefactor(a: float, b: float, x: float) -> float:
    """log(x^a (1 - x)^b / (a B(a, b))) for 0 < x < 1, with log B from lgamma."""
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return a * math.log(x) + b * math.log1p(-x) - log_beta - math.log(a)


def _continued_fraction(a: float, b: float, x: float) -> float:
    """1 / (1 + d_1 / (1 + d_2 / (1 + ...))) with d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)) and
    d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m)) (A&S 26.5.8), by the modified Lentz method."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    f = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            f *= c * d
        if abs(c * d - 1.0) < _EPS:
            return f
    raise ArithmeticError(f"betainc: the continued fraction did not converge for a={a}, b={b}, x={x}")


def _betainc_scalar(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(_log_prefactor(a, b, x)) * _continued_fraction(a, b, x)
    return 1.0 - math.exp(_log_prefactor(b, a, 1.0 - x)) * _continued_fraction(b, a, 1.0 - x)


def betainc(a: float, b: float, x: npt.ArrayLike) -> np.ndarray:
    """The regularized incomplete beta function I_x(a, b) = B(x; a, b) / B(a, b), the Beta(a, b) CDF, elementwise
    over x (clipped to [0, 1] outside it)."""
    a, b = _check_shape_parameters(a, b)
    x = np.asarray(x, dtype=np.float64)
    if np.any(np.isnan(x)):
        raise ValueError("x: expected numbers, got NaN")
    return np.vectorize(lambda v: _betainc_scalar(a, b, float(v)), otypes=[np.float64])(x)


def _betaincinv_scalar(a: float, b: float, p: float) -> float:
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    q = 1.0 - p  # exact for p > 1/2 (Sterbenz), where the upper tail carries the precision
    # start: the leading term of the series at the nearer end, I_x ~ x^a / (a B) or 1 - (1 - x)^b / (b B)
    if p <= 0.5:
        x = math.exp((math.log(p) + math.log(a) + log_beta) / a)
        if x < 1e-280:  # the leading term is exact to relative O(x) there (0.0 where the quantile underflows)
            return x
    else:
        x = -math.expm1((math.log(q) + math.log(b) + log_beta) / b)

    def residual(x):  # I_x - p, from the side of the mean where betainc is accurate (upper: q - I_{1-x}(b, a))
        if x <= 0.0 or x >= 1.0:
            return (0.0 if x <= 0.0 else 1.0) - p
        if x < (a + 1.0) / (a + b + 2.0):
            return math.exp(_log_prefactor(a, b, x)) * _continued_fraction(a, b, x) - p
        return q - math.exp(_log_prefactor(b, a, 1.0 - x)) * _continued_fraction(b, a, 1.0 - x)

    lo, hi = 0.0, 1.0
    for _ in range(400):
        if not lo < x < hi:
            x = 0.5 * (lo + hi)
        f = residual(x)
        if f == 0.0:
            return x
        if f < 0:
            lo = x
        else:
            hi = x
        log_density = (a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x) - log_beta
        x_new = x - f * math.exp(-log_density)
        if not lo < x_new < hi:
            x_new = 0.5 * (lo + hi)
        if abs(x_new - x) <= 4 * _EPS * x or hi - lo <= 4 * _EPS * lo:
            x = x_new
            break
        x = x_new
    # polish: step to a neighbouring double while that lowers |I_x - p| (Newton's last step may stop a few ulps
    # away where the density is steep, near an end with a or b < 1)
    f = residual(x)
    for direction in (0.0, 1.0):
        for _ in range(16):
            y = math.nextafter(x, direction)
            fy = residual(y)
            if abs(fy) >= abs(f):
                break
            x, f = y, fy
    return x


def betaincinv(a: float, b: float, p: npt.ArrayLike) -> np.ndarray:
    """The inverse of `betainc` in x: the Beta(a, b) quantile at probability p (scipy.stats.beta.ppf), elementwise;
    p = 0 gives 0 and p = 1 gives 1."""
    a, b = _check_shape_parameters(a, b)
    p = np.asarray(p, dtype=np.float64)
    if np.any(~((p >= 0) & (p <= 1))):
        bad = p[~((p >= 0) & (p <= 1))].flat[0]
        raise ValueError(f"p={float(bad)!r}: expected probabilities in [0, 1]")
    return np.vectorize(lambda v: _betaincinv_scalar(a, b, float(v)), otypes=[np.float64])(p)
