"""Parameterizations, weightings and losses: identities that hold whatever the numbers."""

import numpy as np
import pytest
from diffspec.reference import losses as L
from diffspec.reference import parameterizations as P
from diffspec.reference import schedules as S
from diffspec.reference import weightings as W
from diffspec.reference.noise import CountingNoise
from diffspec.reference.oracles import GaussianMixture
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

RNG = np.random.default_rng(1234)
PARAMS = list(P.Parameterization)
pos = st.floats(1e-3, 1e3)


@pytest.mark.parametrize("param", PARAMS)
@given(alpha=pos, sigma=pos, seed=st.integers(0, 2**32 - 1))
def test_round_trip_every_parameterization(param, alpha, sigma, seed):
    rng = np.random.default_rng(seed)
    x0, eps = rng.standard_normal((2, 3, 4))
    x = alpha * x0 + sigma * eps
    target = P.training_target(param, x0, eps, alpha, sigma)
    scale = (alpha + sigma) * (1 + alpha / sigma + sigma / alpha)
    np.testing.assert_allclose(P.x0_from_output(param, target, x, alpha, sigma), x0, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(P.eps_from_output(param, target, x, alpha, sigma), eps, rtol=0, atol=1e-12 * scale)
    out = RNG.standard_normal((3, 4))
    x0_hat = P.x0_from_output(param, out, x, alpha, sigma)
    np.testing.assert_allclose(P.output_from_x0(param, x0_hat, x, alpha, sigma), out, rtol=0, atol=1e-10 * scale)


@pytest.mark.parametrize("param", PARAMS)
@given(alpha=pos, sigma=pos)
def test_eps_error_is_e2lam_times_x0_error(param, alpha, sigma):
    x0, eps, out = RNG.standard_normal((3, 5, 2))
    x = alpha * x0 + sigma * eps
    x0_hat = P.x0_from_output(param, out, x, alpha, sigma)
    eps_hat = P.eps_from_output(param, out, x, alpha, sigma)
    lhs = np.sum((eps_hat - eps) ** 2)
    rhs = (alpha / sigma) ** 2 * np.sum((x0_hat - x0) ** 2)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9)
    np.testing.assert_allclose(
        eps_hat, P.eps_from_x0(x0_hat, x, alpha, sigma), rtol=1e-9, atol=1e-9 * (1 + alpha / sigma)
    )


# ---- losses as weights in lam ------------------------------------------------------------------------------

CASES = [
    ("eps", "uniform", S.LinearBetas()),
    ("v", "v", S.LinearBetas()),
    ("v", "v", S.LinearVP()),
    ("flow", "flow", S.Flow()),
    ("x0", lambda lam: np.exp(-2.0 * lam), S.EDM()),
    ("x0", lambda lam: np.exp(-2.0 * lam), S.LinearBetas()),
    ("score", lambda lam: np.ones_like(lam), S.VE()),
]


@pytest.mark.parametrize("param,weighting,schedule", CASES)
@settings(max_examples=examples(25))
@given(seed=st.integers(0, 2**32 - 1), u=st.floats(0.001, 0.999))
def test_parameterization_mse_is_a_weighted_eps_mse(param, weighting, schedule, seed, u):
    rng = np.random.default_rng(seed)
    x0, eps, out = rng.standard_normal((3, 4, 6))
    t = schedule.t_eps + u * (schedule.t_max - schedule.t_eps) + np.array([0.0, 0.0, 0.0, 0.0])
    t[1] = schedule.t_eps + 0.5 * u * (schedule.t_max - schedule.t_eps)
    plain = L.diffusion_loss(out, x0, eps, t, schedule, parameterization=param)
    if param == "score":  # score-MSE = eps-MSE / sigma^2: a weight in lam only when sigma is a function of lam
        plain = plain * schedule.sigma(t) ** 2
    weighted = L.diffusion_loss(out, x0, eps, t, schedule, parameterization=param, weighting=weighting)
    np.testing.assert_allclose(weighted, plain, rtol=1e-9)
    assert weighted.shape == (4,)


def test_diffusion_loss_is_zero_at_the_target_and_finite_at_zero_terminal_snr():
    sch = S.LinearBetas(rescale_zero_snr=True)
    x0, eps = RNG.standard_normal((2, 3, 2))
    t = np.array([0.0, 500.0, 999.0])
    for param in ("eps", "v"):
        alpha, sigma = sch.alpha(t), sch.sigma(t)
        target = P.training_target(param, x0, eps, alpha, sigma)
        out = L.diffusion_loss(target, x0, eps, t, sch, parameterization=param, weighting="uniform")
        np.testing.assert_allclose(out, 0.0, atol=1e-24)


@pytest.mark.parametrize("name", sorted(W.WEIGHTINGS))
def test_weightings_match_their_textbook_forms(name):
    lam = np.linspace(-8, 8, 101)
    snr, sve = np.exp(2 * lam), np.exp(-lam)
    want = {
        "uniform": np.ones_like(lam),
        "x0": 1 / snr,
        "snr": snr,
        "min_snr": np.minimum(snr, 5.0) / snr,
        "p2": 1 / (1 + snr),
        "edm": (sve**2 + 0.25) / 0.25,
        "sigmoid": 1 / (1 + np.exp(-(-3 - 2 * lam))),
        "v": 1 + 1 / snr,
        "flow": (1 + sve) ** 2,
    }[name]
    np.testing.assert_allclose(W.WEIGHTINGS[name](lam), want, rtol=1e-12)
    assert np.all(
        np.isfinite(W.WEIGHTINGS[name](np.array([-300.0, 300.0]))) | (name in ("x0", "snr", "edm", "v", "flow"))
    )


def test_flow_matching_loss_equals_flow_parameterization_mse():
    x0, eps, out = RNG.standard_normal((3, 4, 3))
    t = np.array([0.1, 0.3, 0.6, 0.9])
    np.testing.assert_allclose(
        L.flow_matching_loss(out, x0, eps),
        L.diffusion_loss(out, x0, eps, t, S.Flow(), parameterization="flow"),
        rtol=1e-15,
    )


def test_hybrid_loss_decomposes_into_simple_plus_vlb_term():
    from diffspec.reference.forward import ddpm_table

    sch = S.LinearBetas(T=100)
    x0 = np.round((RNG.uniform(-1, 1, (5, 4)) + 1) * 127.5) / 127.5 - 1
    eps, out = RNG.standard_normal((2, 5, 4))
    n = np.array([0, 1, 10, 50, 99])
    # var_output = -1 gives log beta_tilde: at the true eps the KL terms vanish.
    table = ddpm_table(sch)
    loss_exact = L.hybrid_loss(eps, -np.ones_like(eps), x0, eps, n, sch)
    np.testing.assert_allclose(loss_exact[1:], 0.0, atol=1e-10)
    assert loss_exact[0] > 0  # the decoder NLL
    loss = L.hybrid_loss(out, np.zeros_like(out), x0, eps, n, sch, lambda_vlb=0.0)
    np.testing.assert_allclose(loss, np.mean((out - eps) ** 2, axis=1), rtol=1e-14)
    assert table["betas"].shape == (100,)


# ---- consistency models --------------------------------------------------------------------------------------


def test_pseudo_huber_limits_and_default_c():
    a, b = RNG.standard_normal((2, 4, 3, 8, 8))
    d = np.sqrt(np.sum((a - b) ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(L.pseudo_huber(a, b, 1e-9), d, rtol=1e-8)
    np.testing.assert_allclose(L.pseudo_huber(a, b, 1e6), d**2 / 2e6, rtol=1e-6)
    np.testing.assert_allclose(
        L.consistency_loss(a, b, metric="pseudo_huber"), L.pseudo_huber(a, b, 0.00054 * np.sqrt(3 * 64)), rtol=1e-15
    )
    np.testing.assert_allclose(L.consistency_loss(a, b), d**2, rtol=1e-14)
    with pytest.raises(ValueError, match="unknown metric 'l1'.*l2.*pseudo_huber"):
        L.consistency_loss(a, b, metric="l1")


def test_consistency_scalings_boundary_condition():
    c_skip, c_out = L.consistency_scalings(np.array([0.002, 1.0, 80.0]))
    assert c_skip[0] == 1.0 and c_out[0] == 0.0
    np.testing.assert_allclose(c_skip[1], 0.25 / (0.998**2 + 0.25))
    with pytest.raises(ValueError, match="sigma"):
        L.consistency_scalings(0.001)


def test_ict_curriculum_sigmas_and_index_distribution():
    K = 400_000
    assert L.ict_num_steps(0, K) == 11
    assert L.ict_num_steps(K, K) == 1281
    Ns = [L.ict_num_steps(k, K) for k in range(0, K + 1, 1000)]
    assert sorted(set(Ns)) == [11, 21, 41, 81, 161, 321, 641, 1281]
    sig = L.ict_sigmas(11)
    assert sig[0] == 0.002 and sig[-1] == 80.0 and np.all(np.diff(sig) > 0)
    p = L.ict_index_probabilities(sig)
    assert p.shape == (10,) and abs(p.sum() - 1) < 1e-14 and np.all(p > 0)
    idx = L.sample_ict_index(sig, 20000, np.random.default_rng(0))
    freq = np.bincount(idx, minlength=10) / 20000
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / 20000) + 1e-12)


def test_consistency_training_and_distillation_inputs():
    x0, z = RNG.standard_normal((2, 3, 2))
    s, s_next = np.array([0.5, 1.0, 2.0]), np.array([0.7, 1.5, 3.0])
    x_next, x = L.consistency_training_inputs(x0, z, s, s_next)
    np.testing.assert_allclose(x_next, x0 + s_next[:, None] * z)
    np.testing.assert_allclose(x, x0 + s[:, None] * z)
    # With the exact teacher x0_teacher = x0 the Euler PF-ODE step lands exactly on x0 + sigma z: CD == CT, up to
    # the rounding of x_next + (s - s_next) (x_next - x0) / s_next: a few eps64 of the terms |x0| + s_next |z|
    # (not of the result, which cancels to near 0 for some draws).
    terms = np.abs(x0) + s_next[:, None] * np.abs(z)
    got = L.consistency_distillation_inputs(x_next, x0, s, s_next)
    assert np.all(np.abs(got - x) <= 8 * np.finfo(float).eps * terms), np.abs(got - x) / terms
    with pytest.raises(ValueError, match="sigma_next"):
        L.consistency_training_inputs(x0, z, s_next, s)


@pytest.mark.parametrize("schedule", [S.LinearBetas(), S.CosineVP(), S.EDM()])
def test_progressive_distillation_target_makes_one_student_step_equal_two_teacher_steps(schedule):
    gm = GaussianMixture.create([1.0, 2.0], [[-1.0, 0.5], [1.0, 0.0]], [0.3, 0.5])
    den = gm.denoiser(schedule)
    t = np.array([0.8, 0.5, 0.3]) * schedule.t_max
    t_next = np.array([0.6, 0.2, schedule.t_min])
    x = RNG.standard_normal((3, 2))
    x_tilde = L.progressive_distillation_target(den, x, t, t_next, schedule)

    def ddim(z, x0, t_from, t_to):
        a, s = schedule.alpha(t_from)[:, None], schedule.sigma(t_from)[:, None]
        a2, s2 = schedule.alpha(t_to)[:, None], schedule.sigma(t_to)[:, None]
        return a2 * x0 + s2 * (z - a * x0) / s

    t_mid = (t + t_next) / 2
    z_mid = ddim(x, den(x, t), t, t_mid)
    z_next = ddim(z_mid, den(z_mid, t_mid), t_mid, t_next)
    np.testing.assert_allclose(ddim(x, x_tilde, t, t_next), z_next, rtol=1e-10, atol=1e-12)
    if schedule.sigma(t_next[2]) == 0:  # clean t_next: the target is z_next itself
        np.testing.assert_allclose(x_tilde[2], z_next[2], rtol=1e-14)


def test_noise_transforms_draw_through_the_noise_contract():
    eps = RNG.standard_normal((2, 3, 4, 4))
    src = CountingNoise(0)
    out = L.offset_noise(eps, 0.1, src)
    assert src.shapes == [(2, 3, 1, 1)]
    offset = out - eps
    np.testing.assert_allclose(offset, np.broadcast_to(offset[:, :, :1, :1], offset.shape))
    src = CountingNoise(0)
    out = L.input_perturbation(eps, 0.1, src)
    assert src.shapes == [(2, 3, 4, 4)]
    np.testing.assert_allclose(out, eps + 0.1 * np.random.default_rng(0).standard_normal((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="noise=None"):
        L.offset_noise(eps, 0.1, None)


def test_loss_bad_inputs():
    x0 = np.zeros((2, 3))
    with pytest.raises(ValueError, match="unknown weighting 'nope'.*min_snr"):
        L.diffusion_loss(x0, x0, x0, 0.5, S.Flow(), parameterization="eps", weighting="nope")
    with pytest.raises(ValueError, match="unknown parameterization 'nope'"):
        L.diffusion_loss(x0, x0, x0, 0.5, S.Flow(), parameterization="nope")
    with pytest.raises(ValueError, match="t contains 2.0"):
        L.diffusion_loss(x0, x0, x0, 2.0, S.Flow(), parameterization="eps")
    with pytest.raises(ValueError, match="output contains nan"):
        L.diffusion_loss(x0 * np.nan, x0, x0, 0.5, S.Flow(), parameterization="eps")
    with pytest.raises(ValueError, match="eps of shape"):
        L.diffusion_loss(x0, x0, np.zeros((2, 4)), 0.5, S.Flow(), parameterization="eps")
    with pytest.raises(ValueError, match="gamma"):
        W.min_snr(np.zeros(3), gamma=-1.0)
