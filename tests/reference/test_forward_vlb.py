"""Forward process, posteriors and the variational bound against exact Gaussian answers."""

import numpy as np
import pytest
from diffspec.reference import forward as F
from diffspec.reference import schedules as S
from diffspec.reference import vlb as V
from diffspec.reference.oracles import GaussianMixture
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples
from scipy import stats

RNG = np.random.default_rng(7)
SCHEDULES = {
    "linear": S.LinearBetas(),
    "cosine": S.CosineBetas(),
    "zero_snr": S.ScaledLinearBetas(rescale_zero_snr=True),
    "vp": S.LinearVP(),
    "vp_cosine": S.CosineVP(),
    "subvp": S.SubVP(),
    "ve": S.VE(),
    "edm": S.EDM(),
    "flow": S.Flow(),
}


def _condition(cov, mean, idx_out, idx_in, values):
    """Exact Gaussian conditioning: (mean, var) of component idx_out given components idx_in = values."""
    c_oi = cov[np.ix_([idx_out], idx_in)]
    c_ii = cov[np.ix_(idx_in, idx_in)]
    gain = np.linalg.solve(c_ii, c_oi.T).T  # (1, k)
    m = mean[idx_out] + (values - mean[idx_in]) @ gain.T
    v = cov[idx_out, idx_out] - (gain @ c_oi.T)[0, 0]
    return m[:, 0], v


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@settings(max_examples=examples(20))
@given(u=st.floats(0.0, 1.0), frac=st.floats(0.0, 0.99), mu=st.floats(-2, 2), std=st.floats(0.05, 3.0))
def test_posterior_is_bayes_on_gaussian_data(name, u, frac, mu, std):
    sch = SCHEDULES[name]
    lo, hi = max(sch.t_eps, sch.t_min), sch.t_max
    if sch.is_discrete and sch.lam(hi) == -np.inf:
        hi = hi - 1e-3  # alpha = 0 exactly at T-1 makes x_t independent of x0: tested separately
    t = lo + (0.05 + 0.95 * u) * (hi - lo)
    s = sch.t_min + frac * (t - sch.t_min)
    a_s, s_s, a_t, s_t = sch.alpha(s), sch.sigma(s), sch.alpha(t), sch.sigma(t)
    # Joint of (x0, x_s, x_t) for x0 ~ N(mu, std^2): x_s = a_s x0 + s_s e1, x_t = (a_t/a_s) x_s + sqrt(...) e2.
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    assert var_ts > -1e-12
    vx0 = std**2
    cov = np.array(
        [
            [vx0, a_s * vx0, a_t * vx0],
            [a_s * vx0, a_s**2 * vx0 + s_s**2, a_ts * (a_s**2 * vx0 + s_s**2)],
            [a_t * vx0, a_ts * (a_s**2 * vx0 + s_s**2), a_t**2 * vx0 + s_t**2],
        ]
    )
    mean = np.array([mu, a_s * mu, a_t * mu])
    x0 = mu + std * RNG.standard_normal((5, 1))
    x = a_t * x0 + s_t * RNG.standard_normal((5, 1))
    # 1) q(x_s | x_t, x0) against conditioning the joint on (x0, x_t).
    m, v = F.posterior(x0, x, s, t, sch)
    want_m, want_v = _condition(cov, mean, 1, [0, 2], np.concatenate([x0, x], axis=1))
    scale = np.sqrt(cov[1, 1])
    np.testing.assert_allclose(m[:, 0], want_m, rtol=0, atol=1e-9 * (scale + np.abs(x).max() + abs(mu)))
    np.testing.assert_allclose(v, want_v, rtol=1e-7, atol=1e-12 * cov[1, 1])
    # 2) q(x_s | x_t) of the data: the posterior at the oracle's E[x0 | x_t], with Var[x0 | x_t] propagated.
    gm = GaussianMixture.gaussian([mu], [std])
    x0_hat = gm.x0_mean(x, a_t, s_t)
    m2, v2 = F.posterior(x0_hat, x, s, t, sch)
    c_alpha = -np.expm1(2 * (sch.lam(t) - sch.lam(s))) * a_s
    var_x0 = vx0 * s_t**2 / (a_t**2 * vx0 + s_t**2)
    want_m2, want_v2 = _condition(cov, mean, 1, [2], x)
    np.testing.assert_allclose(m2[:, 0], want_m2, rtol=0, atol=1e-9 * (scale + np.abs(x).max() + abs(mu)))
    np.testing.assert_allclose(v2 + c_alpha**2 * var_x0, want_v2, rtol=1e-7, atol=1e-12 * cov[1, 1])


def test_posterior_ends_are_finite():
    x0, x = RNG.standard_normal((2, 4, 3))
    z = S.LinearBetas(rescale_zero_snr=True)
    m, v = F.posterior(x0, x, 500.0, 999.0, z)  # alpha_t = 0: x_t carries no information about x0
    np.testing.assert_allclose(m, z.alpha(500.0) * x0, rtol=1e-14)
    np.testing.assert_allclose(v, z.sigma(500.0) ** 2, rtol=1e-14)
    m, v = F.posterior(x0, x, 0.0, 3.0, S.EDM())  # clean s: x_s = x0 exactly
    np.testing.assert_array_equal(m, x0)
    assert v == 0.0


@pytest.mark.parametrize("name", ["linear", "cosine", "zero_snr"])
def test_ddpm_posterior_is_the_general_posterior_between_adjacent_steps(name):
    sch = SCHEDULES[name]
    x0, x = RNG.standard_normal((2, 6, 2))
    n = np.array([0, 1, 2, 500, 998, 999])
    m, v, logv = F.ddpm_posterior(x0, x, n, sch)
    gm, gv = F.posterior(x0, x, n - 1.0, n.astype(float), sch)
    np.testing.assert_allclose(m, gm, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(v, gv, rtol=1e-10, atol=1e-300)
    table = F.ddpm_table(sch)
    np.testing.assert_allclose(logv[0, 0], np.log(table["beta_tilde"][1]))
    np.testing.assert_array_equal(m[0], x0[0])  # n = 0: the mean is x0 itself


def test_ddpm_table_matches_textbook_and_diffusers():
    DDPMScheduler = pytest.importorskip("diffusers").DDPMScheduler  # absent only in the numpy-only job

    sch = S.LinearBetas()
    t = F.ddpm_table(sch)
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    np.testing.assert_allclose(t["betas"], betas, rtol=1e-12)
    np.testing.assert_allclose(t["beta_tilde"], (1 - abar_prev) / (1 - abar) * betas, rtol=1e-10)
    np.testing.assert_allclose(t["coef_x0"], np.sqrt(abar_prev) * betas / (1 - abar), rtol=1e-10)
    np.testing.assert_allclose(t["coef_xt"], np.sqrt(1 - betas) * (1 - abar_prev) / (1 - abar), rtol=1e-10)
    d = DDPMScheduler(variance_type="fixed_small")
    want = np.array([float(d._get_variance(n)) for n in range(1, 1000, 111)])
    np.testing.assert_allclose(t["beta_tilde"][1:1000:111], want, rtol=1e-4)
    np.testing.assert_allclose(
        F.ddpm_log_variance(np.arange(1, 5), sch, variance="fixed_large"), np.log(betas[1:5]), rtol=1e-12
    )
    lr = F.learned_range_log_variance(np.array([[-1.0], [1.0], [0.0]]), np.array([5, 5, 5]), sch)
    np.testing.assert_allclose(
        lr[:, 0],
        [np.log(t["beta_tilde"][5]), np.log(betas[5]), 0.5 * (np.log(t["beta_tilde"][5]) + np.log(betas[5]))],
        rtol=1e-12,
    )


def test_q_sample():
    sch = S.Flow()
    x0, eps = RNG.standard_normal((2, 3, 2))
    t = np.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(F.q_sample(x0, eps, t, sch), (1 - t)[:, None] * x0 + t[:, None] * eps)
    with pytest.raises(ValueError, match="t contains 1.5"):
        F.q_sample(x0, eps, 1.5, sch)
    with pytest.raises(ValueError, match="expected s < t"):
        F.posterior(x0, eps, 0.5, 0.5, sch)
    with pytest.raises(ValueError, match="n="):
        F.ddpm_posterior(x0, eps, 1000, S.LinearBetas())
    with pytest.raises(ValueError, match="unknown variance 'learned'"):
        F.ddpm_log_variance(3, S.LinearBetas(), variance="learned")


# ---- VLB ------------------------------------------------------------------------------------------------


def test_gaussian_kl_against_quadrature():
    grid = np.linspace(-20, 20, 400001)
    for m1, lv1, m2, lv2 in [(0.0, 0.0, 1.0, 2.0), (0.3, -1.0, -0.2, 0.5), (1.0, 0.2, 1.0, 0.2)]:
        p = stats.norm.pdf(grid, m1, np.exp(lv1 / 2))
        q = stats.norm.pdf(grid, m2, np.exp(lv2 / 2))
        want = np.trapezoid(
            np.where(p > 0, p * (np.log(np.maximum(p, 1e-300)) - np.log(np.maximum(q, 1e-300))), 0), grid
        )
        np.testing.assert_allclose(V.gaussian_kl(m1, lv1, m2, lv2), want, atol=1e-8)


@given(mean=st.floats(-1.5, 1.5), log_scale=st.floats(-7, 1))
def test_discretized_likelihood_is_a_distribution_over_the_256_bins(mean, log_scale):
    centers = -1 + 2 * np.arange(256) / 255
    logp = V.discretized_gaussian_log_likelihood(centers, mean, log_scale)
    p = np.exp(logp)
    mass = p[p > 1e-12].sum()  # bins clipped at 1e-12 contribute at most 256e-12
    np.testing.assert_allclose(mass, 1.0, atol=1e-9)
    edges = np.concatenate([[-np.inf], centers[:-1] + 1 / 255, [np.inf]])
    want = np.diff(stats.norm.cdf(edges, mean, np.exp(log_scale)))
    big = want > 1e-6
    np.testing.assert_allclose(p[big], want[big], rtol=1e-9)


def _lam_linear_betas(T, lam_max=7.0, lam_min=-6.0):
    lam = np.linspace(lam_max, lam_min, T)
    abar = np.exp(-np.logaddexp(0, -2 * lam))
    return S.ExplicitBetas(values=tuple(-np.expm1(np.log(abar) - np.log(np.append(1.0, abar[:-1])))))


def test_vlb_approaches_the_exact_discretized_gaussian_nll_as_T_grows():
    # Data: N(0.1, 0.03^2) discretized to the 256 levels of [-1, 1]; the exact denoiser is that of a mixture of
    # (near-)point masses at the levels, so the exact NLL of a sample is -log2 P(its bin).
    centers = -1 + 2 * np.arange(256) / 255
    edges = np.concatenate([[-np.inf], centers[:-1] + 1 / 255, [np.inf]])
    w = np.diff(stats.norm.cdf(edges, 0.1, 0.03))
    keep = w > 1e-15
    w, centers = w[keep] / w[keep].sum(), centers[keep]
    gm = GaussianMixture.create(w, centers[:, None], np.full(len(w), 1e-5))
    rng = np.random.default_rng(0)
    k = rng.choice(len(w), size=100, p=w)
    x0, nll = centers[k][:, None], -np.log2(w[k])
    gaps, ses = [], []
    for T in (30, 100, 1000):
        sch = _lam_linear_betas(T)
        bpd = V.vlb_bits_per_dim(gm.denoiser(sch), x0, sch, noise=np.random.default_rng(T))
        gap = bpd - nll
        gaps.append(gap.mean())
        ses.append(gap.std() / np.sqrt(len(gap)))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] > -4 * ses[2]  # a bound: never (significantly) below the NLL
    assert gaps[2] < 0.05 + 4 * ses[2], (gaps, ses)


def test_vlb_terms_shape_prior_and_noise_contract():
    sch = S.LinearBetas(T=50)
    x0 = np.zeros((3, 2))
    prior, terms = V.vlb_terms(lambda x, t: np.zeros_like(x), x0, sch, noise=np.random.default_rng(0))
    assert prior.shape == (3,) and terms.shape == (3, 50)
    abar = sch.alphas_cumprod()[-1]
    np.testing.assert_allclose(prior, 0.5 * (-np.log1p(-abar) - abar) / np.log(2), rtol=1e-10)
    with pytest.raises(ValueError, match="noise=None"):
        V.vlb_bits_per_dim(lambda x, t: x, x0, sch)
    with pytest.raises(ValueError, match="discrete"):
        V.vlb_bits_per_dim(lambda x, t: x, x0, S.EDM(), noise=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"x0 contains 2.0.*\[-1, 1\]"):
        V.discretized_gaussian_log_likelihood(np.array([2.0]), 0.0, 0.0)
