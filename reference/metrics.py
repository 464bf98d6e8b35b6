"""Sample-quality metrics between two sets of points (or features), shape (N, D) each, float64.

frechet_distance (FID's formula), kid (KID: unbiased MMD^2, cubic polynomial kernel, averaged over subsets),
mmd (unbiased MMD^2, Gaussian kernel), sliced_wasserstein (random 1-D projections from an explicit Generator),
precision_recall (k-NN manifolds). Randomness, where any, enters through an explicit numpy Generator.
"""

import numpy as np
from diffspec.reference import _checks


def _points(name, x):
    x = _checks.finite_array(name, x)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} of shape {x.shape}: expected (N, D) with N >= 2 samples")
    return x


def _pair(x, y):
    x, y = _points("x", x), _points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y of shape {y.shape}: expected {x.shape[1]} features like x {x.shape}")
    return x, y


def _rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng={rng!r}: expected a numpy.random.Generator (np.random.default_rng(seed))")
    return rng


def _psd_sqrt(cov):
    """Symmetric square root of a symmetric PSD matrix by eigen-decomposition (negative round-off clipped to 0)."""
    w, V = np.linalg.eigh(0.5 * (cov + cov.T))
    return (V * np.sqrt(np.maximum(w, 0.0))) @ V.T


def _stats(name, a):
    if isinstance(a, tuple):
        if len(a) != 2:
            raise ValueError(f"{name}: expected an (N, D) sample array or a (mean, cov) pair")
        mu = np.atleast_1d(_checks.finite_array(f"{name} mean", a[0]))
        cov = np.atleast_2d(_checks.finite_array(f"{name} cov", a[1]))
        if mu.ndim != 1 or cov.shape != (mu.size, mu.size):
            raise ValueError(f"{name} (mean, cov) of shapes {mu.shape}, {cov.shape}: expected (D,), (D, D)")
        return mu, cov
    x = _points(name, a)
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(a, b):
    """Frechet distance between Gaussians fitted to two sets: FID's formula (Heusel et al. 2017, eq. 6).

    Dowson & Landau (1982):

        d^2 = ||mu_a - mu_b||^2 + tr(C_a) + tr(C_b) - 2 tr((C_a^{1/2} C_b C_a^{1/2})^{1/2})

    a, b: (N, D) sample arrays (mean and unbiased covariance are fitted) or (mean, cov) tuples. The trace term
    uses the symmetric form C_a^{1/2} C_b C_a^{1/2} (same eigenvalues as C_a C_b), whose square root is real:
    tr sqrt = sum sqrt(max(eig, 0)). No complex parts, no scipy.linalg.sqrtm. Returns d^2 (as FID does).
    """
    mu_a, cov_a = _stats("a", a)
    mu_b, cov_b = _stats("b", b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"b of dimension {mu_b.size}: expected {mu_a.size} like a")
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    eig = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    trace_root = np.sum(np.sqrt(np.maximum(eig, 0.0)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)


def _mmd2_unbiased(k_xx, k_yy, k_xy):
    """Unbiased MMD^2 from kernel matrices (Gretton et al. 2012, eq. 3): diagonals of k_xx, k_yy excluded."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    sum_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    sum_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return sum_xx + sum_yy - 2.0 * k_xy.mean()


def kid(x, y, *, rng, num_subsets=100, subset_size=1000):
    """Kernel Inception Distance: unbiased MMD^2 with k(a, b) = (a . b / D + 1)^3, averaged over random subsets.

    Binkowski et al. (2018), "Demystifying MMD GANs", Sec. 4 (the torch-fidelity / clean-fid convention).
    Each subset draws `subset_size` rows of x and of y without replacement (capped at the smaller set) from
    `rng`. Returns (mean, std) of the per-subset estimates.
    """
    x, y = _pair(x, y)
    rng = _rng(rng)
    num_subsets = _checks.integer("num_subsets", num_subsets, minimum=1)
    m = min(_checks.integer("subset_size", subset_size, minimum=2), x.shape[0], y.shape[0])
    d = x.shape[1]
    values = np.empty(num_subsets)
    for i in range(num_subsets):  # loop over subsets, not over samples
        xs = x[rng.choice(x.shape[0], m, replace=False)]
        ys = y[rng.choice(y.shape[0], m, replace=False)]
        values[i] = _mmd2_unbiased((xs @ xs.T / d + 1) ** 3, (ys @ ys.T / d + 1) ** 3, (xs @ ys.T / d + 1) ** 3)
    return float(values.mean()), float(values.std())


def _sq_dists(a, b):
    return np.maximum(np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2.0 * a @ b.T, 0.0)


def mmd(x, y, *, bandwidth=1.0):
    """Unbiased MMD^2 with the Gaussian kernel k(a, b) = exp(-||a - b||^2 / (2 bandwidth^2)).

    Gretton et al. (2012), "A Kernel Two-Sample Test", eq. 3 (MMD_u^2). Can be slightly negative for equal
    distributions (it is unbiased).
    """
    x, y = _pair(x, y)
    h = _checks.positive("bandwidth", bandwidth)

    def k(a, b):
        return np.exp(-_sq_dists(a, b) / (2.0 * h**2))

    return float(_mmd2_unbiased(k(x, x), k(y, y), k(x, y)))


def sliced_wasserstein(x, y, *, rng, num_projections=128, p=2):
    """Sliced Wasserstein-p distance: (E_theta W_p^p(theta . x, theta . y))^{1/p} over random unit directions.

    Rabin et al. (2011); Bonneel et al. (2015), eq. 3. Directions are `num_projections` normalised standard-normal
    draws of shape (num_projections, D) from `rng`. Each 1-D W_p^p between equal-size empirical sets is the mean
    of |sorted(theta . x) - sorted(theta . y)|^p. x and y must have the same number of rows.
    """
    x, y = _pair(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y with {y.shape[0]} rows: expected as many samples as x ({x.shape[0]})")
    rng = _rng(rng)
    num_projections = _checks.integer("num_projections", num_projections, minimum=1)
    p = _checks.positive("p", p)
    theta = rng.standard_normal((num_projections, x.shape[1]))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    px, py = np.sort(x @ theta.T, axis=0), np.sort(y @ theta.T, axis=0)
    return float(np.mean(np.abs(px - py) ** p) ** (1.0 / p))


def precision_recall(real, fake, *, k=3):
    """Improved precision and recall (Kynkaanniemi et al. 2019, Sec. 3, eqs. 1-3), returned as (precision, recall).

    The manifold of a set is the union of balls around its points, each of radius the distance to its k-th
    nearest neighbour in the same set (itself excluded). precision = fraction of fake points inside the real
    manifold; recall = fraction of real points inside the fake manifold.
    """
    real, fake = _pair(real, fake)
    k = _checks.integer("k", k, minimum=1, maximum=min(real.shape[0], fake.shape[0]) - 1)

    def radii(a):
        return np.sqrt(np.sort(_sq_dists(a, a), axis=1)[:, k])  # column 0 is the point itself

    def coverage(points, centers, r):
        return float(np.mean(np.any(np.sqrt(_sq_dists(points, centers)) <= r[None, :], axis=1)))

    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))
