"""Guidance wrappers: CFG conventions, rescale, thresholding, classifier guidance (analytic), inpainting, SDEdit."""

import numpy as np
import pytest
from diffspec.reference import guidance as g
from diffspec.reference.oracles import GaussianMixture
from diffspec.reference.parameterizations import output_from_x0, x0_from_output
from diffspec.reference.schedules import make_schedule
from hypothesis import given
from hypothesis import strategies as st

SCHED = make_schedule("linear")
RNG = np.random.default_rng(0)


def two_class_mixture():
    return GaussianMixture.create([0.3, 0.7], [[-1.0, 0.5], [1.2, -0.4]], [0.3, 0.6])


def component(mix, k):
    return GaussianMixture.create([1.0], mix.mu[k : k + 1], mix.s[k : k + 1])


def linear_denoisers():
    a = RNG.standard_normal((3, 4))
    b = RNG.standard_normal((3, 4))
    return (lambda x, t: 0.3 * x + a * np.cos(t)), (lambda x, t: -0.2 * x + b)


def euler_ddim(denoise, x_T, grid, schedule, *, noise=None):
    """A tiny DDIM (eta = 0) loop so these tests do not depend on the sampler modules."""
    alpha, sigma = schedule.alpha(grid), schedule.sigma(grid)
    x = x_T
    for i in range(len(grid) - 1):
        x0 = denoise(x, grid[i])
        eps = (x - alpha[i] * x0) / sigma[i]
        x = alpha[i + 1] * x0 + sigma[i + 1] * eps
    return x


def tiny_ddpm(denoise, x_T, grid, schedule, *, noise=None):
    draw = noise
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    x = x_T
    for i in range(len(grid) - 1):
        x0 = denoise(x, grid[i])
        mean, std = g._posterior_step(x, x0, alpha[i], sigma[i], lam[i], alpha[i + 1], sigma[i + 1], lam[i + 1])
        x = mean if i == len(grid) - 2 else mean + std * draw(x.shape)
    return x


# ---- CFG -------------------------------------------------------------------------------------------------


@given(w=st.floats(-1.0, 20.0))
def test_cfg_paper_equals_cfg_diffusers_at_one_plus_w(w):
    c, u = linear_denoisers()
    x = RNG.standard_normal((3, 4))
    np.testing.assert_allclose(
        g.cfg_paper(c, u, w)(x, 17.0), g.cfg_diffusers(c, u, 1.0 + w)(x, 17.0), rtol=1e-12, atol=1e-12
    )
    assert g.diffusers_scale_from_paper_w(w) == 1.0 + w
    assert g.paper_w_from_diffusers_scale(1.0 + w) == pytest.approx(w)


def test_cfg_off_values():
    c, u = linear_denoisers()
    x = RNG.standard_normal((3, 4))
    x0_c, x0_u = c(x, 3.0), u(x, 3.0)
    # u + 1 * (c - u) is c in exact arithmetic; in floating point the subtraction and the addition each round
    # once, so the result is within eps (|c - u| + |c|) of c (and the module RNG's state, hence x, depends on
    # which tests ran before in the same process: the bound must hold for any values).
    bound = np.finfo(float).eps * (np.abs(x0_c - x0_u) + np.abs(x0_c))
    assert np.all(np.abs(g.cfg_diffusers(c, u, 1.0)(x, 3.0) - x0_c) <= bound)
    # (1 + 0) c - 0 u and u + 0 (c - u) are exact.
    np.testing.assert_array_equal(g.cfg_paper(c, u, 0.0)(x, 3.0), x0_c)
    np.testing.assert_array_equal(g.cfg_diffusers(c, u, 0.0)(x, 3.0), x0_u)


@pytest.mark.parametrize("space", ["eps", "v", "flow"])
@pytest.mark.parametrize("t", [0.0, 250.0, 999.0])
def test_cfg_on_x0_equals_cfg_on_other_predictions(space, t):
    c, u = linear_denoisers()
    x = RNG.standard_normal((3, 4))
    alpha, sigma = SCHED.alpha(t), SCHED.sigma(t)
    scale = 7.5
    f_c = output_from_x0(space, c(x, t), x, alpha, sigma)
    f_u = output_from_x0(space, u(x, t), x, alpha, sigma)
    via_space = x0_from_output(space, f_u + scale * (f_c - f_u), x, alpha, sigma)
    np.testing.assert_allclose(g.cfg_diffusers(c, u, scale)(x, t), via_space, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("bad", [-0.5, np.nan, np.inf])
def test_cfg_scale_validated(bad):
    c, u = linear_denoisers()
    with pytest.raises(ValueError, match="scale"):
        g.cfg_diffusers(c, u, bad)
    with pytest.raises(ValueError, match="w="):
        g.cfg_paper(c, u, -1.5)


# ---- rescale, thresholding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["eps", "v", "x0"])
def test_guidance_rescale_phi_zero_is_identity(space):
    c, u = linear_denoisers()
    guided = g.cfg_diffusers(c, u, 5.0)
    x = RNG.standard_normal((3, 4))
    out = g.guidance_rescale(guided, c, SCHED, phi=0.0, space=space)(x, 400.0)
    np.testing.assert_allclose(out, guided(x, 400.0), rtol=1e-15)


def test_guidance_rescale_phi_one_matches_cond_std_in_its_space():
    c, u = linear_denoisers()
    guided = g.cfg_diffusers(c, u, 5.0)
    x = RNG.standard_normal((3, 4))
    t = 400.0
    alpha, sigma = SCHED.alpha(t), SCHED.sigma(t)
    out = g.guidance_rescale(guided, c, SCHED, phi=1.0, space="eps")(x, t)
    eps_out = output_from_x0("eps", out, x, alpha, sigma)
    eps_c = output_from_x0("eps", c(x, t), x, alpha, sigma)
    np.testing.assert_allclose(eps_out.std(axis=1), eps_c.std(axis=1), rtol=1e-10)
    # diffusers' rescale_noise_cfg on the same eps predictions
    eps_g = output_from_x0("eps", guided(x, t), x, alpha, sigma)
    std_c = eps_c.std(axis=1, ddof=1, keepdims=True)
    std_g = eps_g.std(axis=1, ddof=1, keepdims=True)
    np.testing.assert_allclose(eps_out, eps_g * std_c / std_g, rtol=1e-10)
    with pytest.raises(ValueError, match="phi"):
        g.guidance_rescale(guided, c, SCHED, phi=1.5)


@given(p=st.floats(0.5, 1.0), max_value=st.floats(1.0, 10.0))
def test_dynamic_thresholding_bounds(p, max_value):
    big = RNG.standard_normal((5, 16)) * np.array([0.1, 1.0, 3.0, 10.0, 100.0])[:, None]
    out = g.dynamic_thresholding(lambda x, t: big, percentile=p, max_value=max_value)(big, 0.0)
    assert np.all(np.abs(out) <= 1.0 + 1e-12)
    # a sample already inside [-1, 1] is untouched (s is clipped up to 1)
    np.testing.assert_allclose(out[0], big[0], rtol=1e-15)
    # the threshold s never exceeds max_value, so values are divided by at most max_value
    assert np.all(np.abs(out) * max_value >= np.minimum(np.abs(big), 1.0) - 1e-12)


def test_thresholding_validation_and_static_clip():
    with pytest.raises(ValueError, match="max_value"):
        g.dynamic_thresholding(lambda x, t: x, max_value=0.5)
    with pytest.raises(ValueError, match="percentile"):
        g.dynamic_thresholding(lambda x, t: x, percentile=0.0)
    x = np.array([[-3.0, 0.5, 2.0]])
    np.testing.assert_array_equal(g.static_clipping(lambda x, t: x, clip=1.0)(x, 0.0), [[-1.0, 0.5, 1.0]])


# ---- classifier guidance: Bayes on a mixture oracle ------------------------------------------------------------


@pytest.mark.parametrize("schedule_name", ["linear", "vp_cosine", "edm", "flow"])
@pytest.mark.parametrize("k", [0, 1])
def test_classifier_guidance_with_exact_gradient_is_class_conditional_denoiser(schedule_name, k):
    schedule = make_schedule(schedule_name)
    mix = two_class_mixture()
    comp = component(mix, k)

    def grad_log_p_y(x, t):
        # log p(y = k | x_t) = log w_k + log p_k(x_t) - log p(x_t)
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        return comp.score(x, alpha, sigma) - mix.score(x, alpha, sigma)

    guided = g.classifier_guidance(mix.denoiser(schedule), grad_log_p_y, schedule, scale=1.0)
    want = comp.denoiser(schedule)
    lo, hi = schedule.t_eps if schedule.t_eps > schedule.t_min else schedule.t_min + 1e-3, schedule.t_max
    for t in np.linspace(lo, hi * 0.98, 5):
        x = RNG.standard_normal((16, 2)) * 2.0
        np.testing.assert_allclose(guided(x, float(t)), want(x, float(t)), rtol=1e-8, atol=1e-8)


def test_classifier_guidance_scale_zero_is_identity():
    mix = two_class_mixture()
    den = mix.denoiser(SCHED)
    x = RNG.standard_normal((4, 2))
    out = g.classifier_guidance(den, lambda x, t: np.ones_like(x), SCHED, scale=0.0)(x, 500.0)
    np.testing.assert_allclose(out, den(x, 500.0), rtol=1e-15)
    with pytest.raises(ValueError, match="scale"):
        g.classifier_guidance(den, lambda x, t: x, SCHED, scale=-1.0)


# ---- inpainting ----------------------------------------------------------------------------------------------


def test_inpaint_keeps_known_region():
    mix = two_class_mixture()
    known = RNG.standard_normal((6, 2))
    mask = np.array([1.0, 0.0])
    grid = np.array([999.0, 700.0, 400.0, 100.0, 0.0, -1.0])
    for noise in (RNG.standard_normal((6, 2)), np.random.default_rng(1)):
        den = g.inpaint(mix.denoiser(SCHED), SCHED, known=known, mask=mask, noise=noise)
        out = euler_ddim(den, RNG.standard_normal((6, 2)), grid, SCHED)
        np.testing.assert_allclose(out[:, 0], known[:, 0], rtol=1e-12)
        assert np.all(np.isfinite(out[:, 1]))


def test_inpaint_validates_mask():
    with pytest.raises(ValueError, match="mask"):
        g.inpaint(lambda x, t: x, SCHED, known=np.zeros((4, 2)), mask=np.ones(3), noise=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="mask"):
        g.inpaint(lambda x, t: x, SCHED, known=np.zeros((4, 2)), mask=2 * np.ones(2), noise=np.zeros((4, 2)))


def test_repaint_schedule_matches_authors_jump_rule():
    order = g.repaint_schedule(10, jump_length=2, jump_n_sample=3)
    assert order[0] == 0 and order[-1] == 10
    assert all(abs(b - a) == 1 for a, b in zip(order[:-1], order[1:]))
    # no jumps: straight down
    assert g.repaint_schedule(5, jump_length=10, jump_n_sample=1) == list(range(6))
    downs = sum(1 for a, b in zip(order[:-1], order[1:]) if b == a + 1)
    ups = len(order) - 1 - downs
    # jump points k = 0, 2, 4, 6 (< 10 - 2), each jumping jump_n_sample - 1 = 2 times by jump_length = 2
    assert ups == 4 * 2 * 2 and downs == 10 + ups


def test_repaint_keeps_known_region_and_counts_draws():
    from diffspec.reference.noise import CountingNoise

    mix = two_class_mixture()
    known = RNG.standard_normal((8, 2))
    mask = np.array([0.0, 1.0])
    grid = np.array([999.0, 800.0, 600.0, 400.0, 200.0, 50.0, -1.0])
    noise = CountingNoise(3)
    out = g.sample_repaint(
        mix.denoiser(SCHED),
        RNG.standard_normal((8, 2)),
        grid,
        SCHED,
        known=known,
        mask=mask,
        noise=noise,
        jump_length=2,
        jump_n_sample=2,
    )
    np.testing.assert_allclose(out[:, 1], known[:, 1], rtol=1e-12)
    order = g.repaint_schedule(6, jump_length=2, jump_n_sample=2)
    downs = sum(1 for a, b in zip(order[:-1], order[1:]) if b == a + 1)
    ups = len(order) - 1 - downs
    landing_clean = sum(1 for a, b in zip(order[:-1], order[1:]) if b == 6 and a == 5)
    assert len(noise.shapes) == 2 * (downs - landing_clean) + ups
    with pytest.raises(ValueError, match="noise"):
        g.sample_repaint(mix.denoiser(SCHED), known, grid, SCHED, known=known, mask=mask, noise=None)


def test_repaint_without_mask_is_ddpm():
    mix = two_class_mixture()
    grid = np.array([999.0, 600.0, 300.0, 0.0, -1.0])
    x_T = RNG.standard_normal((5, 2))
    a = g.sample_repaint(
        mix.denoiser(SCHED),
        x_T,
        grid,
        SCHED,
        known=np.zeros((5, 2)),
        mask=0.0,
        noise=np.random.default_rng(4),
        jump_length=10,
        jump_n_sample=1,
    )
    # with mask = 0 the known draws are still made (z1 then z2 per step): skip z1 in the plain loop
    rng = np.random.default_rng(4)

    def every_second(shape):
        rng.standard_normal(shape)
        return rng.standard_normal(shape)

    b = tiny_ddpm(mix.denoiser(SCHED), x_T, grid, SCHED, noise=every_second)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# ---- SDEdit ----------------------------------------------------------------------------------------------------


def test_sdedit_strength_zero_returns_image():
    img = RNG.standard_normal((4, 2))
    grid = np.array([999.0, 500.0, 0.0, -1.0])
    out = g.sdedit(euler_ddim, two_class_mixture().denoiser(SCHED), img, grid, SCHED, strength=0.0, noise=RNG)
    np.testing.assert_array_equal(out, img)
    assert out is not img


@pytest.mark.parametrize("schedule", [make_schedule("flow"), make_schedule("linear", rescale_zero_snr=True)])
def test_sdedit_strength_one_is_a_plain_run(schedule):
    den = two_class_mixture().denoiser(schedule)
    grid = np.linspace(schedule.t_max, schedule.t_min, 9)
    img = RNG.standard_normal((4, 2))
    z = np.random.default_rng(5).standard_normal((4, 2))
    out = g.sdedit(euler_safe, den, img, grid, schedule, strength=1.0, noise=np.random.default_rng(5))
    want = euler_safe(den, schedule.sigma(grid[0]) * z, grid, schedule)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def euler_safe(denoise, x_T, grid, schedule, *, noise=None):
    """DDIM written in (x0, x) form that tolerates alpha = 0 at grid[0]: x_next = alpha' x0 + sigma'/sigma (x - alpha x0)."""
    alpha, sigma = schedule.alpha(grid), schedule.sigma(grid)
    x = x_T
    for i in range(len(grid) - 1):
        x0 = denoise(x, grid[i])
        x = alpha[i + 1] * x0 + sigma[i + 1] / sigma[i] * (x - alpha[i] * x0)
    return x


def test_sdedit_cuts_grid_like_diffusers():
    seen = []

    def spy(denoise, x, grid, schedule, *, noise=None):
        seen.append(grid)
        return x

    grid = np.array([999.0, 800.0, 600.0, 400.0, 200.0, 0.0, -1.0])
    g.sdedit(spy, None, np.zeros((1, 2)), grid, SCHED, strength=0.5, noise=RNG)
    np.testing.assert_array_equal(seen[0], grid[3:])  # int(6 * 0.5) = 3 steps kept
    with pytest.raises(ValueError, match="strength"):
        g.sdedit(spy, None, np.zeros((1, 2)), grid, SCHED, strength=1.5, noise=RNG)
