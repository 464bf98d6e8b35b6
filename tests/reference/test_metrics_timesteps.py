"""Metrics against known answers; training-time distributions of t; the oracle's Tweedie identity."""

import numpy as np
import pytest
from diffspec.reference import metrics as M
from diffspec.reference import schedules as S
from diffspec.reference import timesteps as TS
from diffspec.reference.oracles import standard_mixture_2d
from scipy import linalg, stats


def _random_cov(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_closed_form_and_against_scipy_sqrtm():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    c1, c2 = _random_cov(rng, d), _random_cov(rng, d)
    covmean = linalg.sqrtm(c1 @ c2).real
    want = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * covmean)
    np.testing.assert_allclose(M.frechet_distance((mu1, c1), (mu2, c2)), want, rtol=1e-9)
    # Commuting covariances: d^2 = |dmu|^2 + sum (sqrt(l1) - sqrt(l2))^2.
    l1, l2 = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
    np.testing.assert_allclose(
        M.frechet_distance((mu1, np.diag(l1)), (mu2, np.diag(l2))),
        np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2),
        rtol=1e-12,
    )
    # Singular (rank-deficient) covariances stay real and finite.
    v = rng.standard_normal((d, 2))
    assert np.isfinite(M.frechet_distance((mu1, v @ v.T), (mu1, v @ v.T)))
    # Zero eigenvalues come back as ~eps * |C|, whose square roots are ~sqrt(eps |C|): that is the error scale.
    scale = d * np.sqrt(np.finfo(float).eps * np.trace(v @ v.T)) * np.sqrt(np.trace(v @ v.T))
    np.testing.assert_allclose(M.frechet_distance((mu1, v @ v.T), (mu1, v @ v.T)), 0.0, atol=scale)


def test_frechet_distance_from_samples():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20000, 3))
    shift = np.array([1.0, -2.0, 0.5])
    assert abs(M.frechet_distance(x, x)) < 1e-9
    np.testing.assert_allclose(M.frechet_distance(x, x + shift), np.sum(shift**2), rtol=1e-9)
    y = 2.0 * rng.standard_normal((20000, 3)) + shift
    # N(0, I) vs N(shift, 4 I): |shift|^2 + 3 (2 - 1)^2 = 5.25 + 3, up to sampling error.
    np.testing.assert_allclose(M.frechet_distance(x, y), np.sum(shift**2) + 3.0, rtol=0.03)


def test_kid_and_mmd():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 4))
    y = rng.standard_normal((400, 4))
    mean, std = M.kid(x, y, rng=np.random.default_rng(0), num_subsets=20, subset_size=200)
    assert abs(mean) < 4 * std / np.sqrt(20) + 1e-3
    far, _ = M.kid(x, y + 1.0, rng=np.random.default_rng(0), num_subsets=20, subset_size=200)
    assert far > 0.1
    # The unbiased estimator: the expectation over draws of a single estimate is the population MMD^2 = 0.
    est = [M.mmd(rng.standard_normal((50, 2)), rng.standard_normal((50, 2))) for _ in range(200)]
    assert abs(np.mean(est)) < 4 * np.std(est) / np.sqrt(200)
    # Against a direct double loop on a tiny set.
    a, b = rng.standard_normal((5, 2)), rng.standard_normal((4, 2))

    def k(p, q):
        return np.exp(-np.sum((p - q) ** 2) / 2)

    xx = sum(k(a[i], a[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(b[i], b[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(a[i], b[j]) for i in range(5) for j in range(4)) / 20
    np.testing.assert_allclose(M.mmd(a, b), xx + yy - 2 * xy, rtol=1e-12)


def test_sliced_wasserstein_of_a_shift():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 3))
    shift = np.array([1.0, 2.0, -1.0])
    assert M.sliced_wasserstein(x, x, rng=np.random.default_rng(0)) == 0.0
    swd = M.sliced_wasserstein(x, x + shift, rng=np.random.default_rng(0), num_projections=64)
    theta = np.random.default_rng(0).standard_normal((64, 3))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    np.testing.assert_allclose(swd, np.sqrt(np.mean((theta @ shift) ** 2)), rtol=1e-12)
    # Over many directions E (theta . m)^2 = |m|^2 / D.
    many = M.sliced_wasserstein(x, x + shift, rng=np.random.default_rng(1), num_projections=20000)
    np.testing.assert_allclose(many, np.sqrt(np.sum(shift**2) / 3), rtol=0.02)


def test_precision_recall():
    rng = np.random.default_rng(4)
    real = rng.standard_normal((500, 2))
    p, r = M.precision_recall(real, real + 1e-9, k=3)
    assert p == 1.0 and r == 1.0
    far = real + 100.0
    assert M.precision_recall(real, far, k=3) == (0.0, 0.0)
    # Fake covers only half of the real support: precision stays high, recall drops.
    half = real[real[:, 0] > 0]
    p, r = M.precision_recall(real, half[: len(half)], k=3)
    assert p > 0.95 and 0.35 < r < 0.75


def test_metric_bad_inputs():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="y of shape"):
        M.mmd(x, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="rng"):
        M.sliced_wasserstein(x, x, rng=0)
    with pytest.raises(ValueError, match="a contains nan"):
        M.frechet_distance(x * np.nan, x)
    with pytest.raises(ValueError, match="k=20"):
        M.precision_recall(x, x, k=20)


# ---- timesteps -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TS.TIMESTEPS))
@pytest.mark.parametrize("schedule", [S.LinearBetas(T=100), S.EDM(), S.Flow(), S.LinearVP()], ids=lambda s: s.name)
def test_timesteps_in_domain_shape_and_reproducible(name, schedule):
    if name == "uniform_discrete" and not schedule.is_discrete:
        with pytest.raises(ValueError, match="discrete"):
            TS.TIMESTEPS[name](schedule, 10, np.random.default_rng(0))
        return
    opts = {"history": TS.LossHistory(100 if schedule.is_discrete else 20)} if name == "importance" else {}
    t = TS.TIMESTEPS[name](schedule, 1000, np.random.default_rng(0), **opts)
    assert t.shape == (1000,) and t.dtype == np.float64
    assert np.all(t >= schedule.t_eps) and np.all(t <= schedule.t_max)
    np.testing.assert_array_equal(t, TS.TIMESTEPS[name](schedule, 1000, np.random.default_rng(0), **opts))


def test_timestep_distributions():
    rng = np.random.default_rng(5)
    t = TS.logit_normal(S.Flow(), 20000, rng, mean=0.5, std=0.8)
    logit = np.log(t) - np.log1p(-t)
    assert stats.kstest(logit, stats.norm(0.5, 0.8).cdf).pvalue > 1e-3
    sig = TS.edm_lognormal(S.EDM(sigma_max=1e6), 20000, rng)
    assert stats.kstest(np.log(sig), stats.norm(-1.2, 1.2).cdf).pvalue > 1e-3
    n = TS.uniform_discrete(S.LinearBetas(T=10), 20000, rng)
    assert set(np.unique(n)) == set(range(10))


def test_importance_sampling_follows_the_loss_history():
    h = TS.LossHistory(4, history_per_bin=10)
    np.testing.assert_allclose(h.probabilities(), 0.25)
    for _ in range(12):  # more than 10: the oldest drop out
        h.update([0, 1, 2, 3], [1.0, 1.0, 2.0, 4.0])
    assert h.warmed_up()
    p = h.probabilities()
    want = np.array([1, 1, 2, 4]) / 8 * 0.999 + 0.001 / 4
    np.testing.assert_allclose(p, want, rtol=1e-12)
    np.testing.assert_allclose(h.weights([0, 3]), 1 / (4 * want[[0, 3]]))
    sch = S.LinearBetas(T=4)
    t = TS.importance(sch, 40000, np.random.default_rng(0), history=h)
    freq = np.bincount(t.astype(int), minlength=4) / 40000
    assert np.all(np.abs(freq - want) < 4 * np.sqrt(want / 40000))
    with pytest.raises(ValueError, match="history.num_bins=4"):
        TS.importance(S.LinearBetas(T=10), 5, np.random.default_rng(0), history=h)
    with pytest.raises(ValueError, match="unknown timesteps 'nope'.*logit_normal"):
        TS.get_timesteps("nope")
    with pytest.raises(ValueError, match="rng"):
        TS.uniform(sch, 3, rng=None)


def test_oracle_tweedie_identity():
    gm = standard_mixture_2d()
    rng = np.random.default_rng(6)
    for alpha, sigma in [(1.0, 0.01), (0.8, 0.6), (0.05, 0.999), (1.0, 30.0)]:
        x = gm.sample_xt(64, alpha, sigma, rng)
        np.testing.assert_allclose(
            gm.score(x, alpha, sigma),
            (alpha * gm.x0_mean(x, alpha, sigma) - x) / sigma**2,
            rtol=1e-9,
            atol=1e-9 / sigma**2,
        )
        # And the score is the gradient of log_density (central differences).
        h = 1e-5 * max(sigma, 1e-2)
        grad = np.stack(
            [
                (gm.log_density(x + h * e, alpha, sigma) - gm.log_density(x - h * e, alpha, sigma)) / (2 * h)
                for e in np.eye(2)
            ],
            axis=1,
        )
        np.testing.assert_allclose(gm.score(x, alpha, sigma), grad, rtol=1e-5, atol=1e-5 / sigma)
