"""The few-step students' math against exact answers: the Gaussian flow map, the Gaussian-mixture denoiser, the
registry's DDIM sampler, and the identities of each procedure."""

import numpy as np
import pytest
from diffspec.reference import distillation as D
from diffspec.reference import losses as L
from diffspec.reference import schedules as S
from diffspec.reference.oracles import GaussianMixture, gaussian_flow_map, standard_mixture_2d
from diffspec.reference.samplers import get_sampler
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

SCHEDULES = {"linear": {}, "vp": {}, "edm": {}, "flow": {}, "vp_cosine": {}}


def _schedule(name):
    return S.make_schedule(name, **SCHEDULES[name])


# ---------------------------------------------------------------------------------------------------------
# Consistency models
# ---------------------------------------------------------------------------------------------------------


@given(sigma=st.floats(0.002, 80.0), F=st.floats(-3, 3), x=st.floats(-50, 50), sigma_data=st.floats(0.2, 1.0))
def test_boundary_is_song_et_al_on_an_edm_network(sigma, F, x, sigma_data):
    """With x0_hat = c_skip_edm x + c_out_edm F (EDM preconditioning, alpha = 1): f = c_skip x + c_out F (CM App. C)."""
    sigma_min = 0.002
    c_skip_edm = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out_edm = sigma * sigma_data / np.sqrt(sigma**2 + sigma_data**2)
    x0_hat = np.array([[c_skip_edm * x + c_out_edm * F]])
    edm = S.make_schedule("edm", sigma_min=sigma_min, sigma_data=sigma_data)
    f = D.consistency_function(x0_hat, np.array([[x]]), sigma, edm, sigma_min=sigma_min, sigma_data=sigma_data)
    c_skip, c_out = L.consistency_scalings(sigma, sigma_min=sigma_min, sigma_data=sigma_data)
    # plus an absolute floor for results in the subnormal range (below 2.2e-308), where spacing is 4.9e-324 whatever
    # the magnitude: x = 2.2e-313 gave f 5e-324 (one subnormal step, 4e-10 relative) from the formula's
    subnormal = 1e3 * np.finfo(np.float64).smallest_subnormal
    np.testing.assert_allclose(f, [[c_skip * x + c_out * F]], rtol=1e-12, atol=1e-12 * (abs(x) + abs(F)) + subnormal)


@given(name=st.sampled_from(sorted(SCHEDULES)), n=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_boundary_condition_holds_at_the_last_distillation_time(name, n, seed):
    schedule = _schedule(name)
    grid = "uniform" if name in ("flow", "vp_cosine") else "karras"
    times = D.distillation_times(schedule, n, grid=grid)
    assert len(times) == n + 1 and np.all(np.diff(times) < 0) and np.all(schedule.sigma(times) > 0)
    sigma_min = float(schedule.sigma_ve(times[-1]))
    rng = np.random.default_rng(seed)
    x, x0_hat = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    f = D.consistency_function(x0_hat, x, times[-1], schedule, sigma_min=sigma_min)
    np.testing.assert_allclose(f, x / schedule.alpha(times[-1]), rtol=1e-12, atol=1e-12)


def test_boundary_is_the_denoiser_when_sigma_min_is_zero():
    schedule = _schedule("flow")
    rng = np.random.default_rng(0)
    x, x0_hat, t = rng.standard_normal((5, 2)), rng.standard_normal((5, 2)), rng.uniform(0.0, 1.0, 5)
    np.testing.assert_allclose(D.consistency_function(x0_hat, x, t, schedule, sigma_min=0.0), x0_hat, rtol=1e-13)


def _exact_consistency_function(g, schedule, t_boundary):
    """f*(x, t): the exact PF-ODE map of Gaussian data from t to the boundary time."""

    def f(x, t):
        return gaussian_flow_map(
            x,
            g.mu[0],
            g.s[0],
            schedule.alpha(t),
            schedule.sigma(t),
            schedule.alpha(t_boundary),
            schedule.sigma(t_boundary),
        )

    return f


@pytest.mark.parametrize(
    ("name", "sampler", "order"),
    [
        ("vp", "ddim", 1),
        ("vp", "heun", 2),
        ("edm", "euler", 1),
        ("edm", "heun", 2),
        ("flow", "flow_euler", 1),
        ("flow", "flow_heun", 2),
        ("linear", "dpmpp_2m", 1),
    ],
)
def test_cd_target_equals_the_exact_flow_map_one_step_later(name, sampler, order):
    """With the exact denoiser of Gaussian data as the teacher and the exact consistency function f* as the target
    network, the CD target f*(Phi(x_t, t, t_next), t_next) equals f*(x_t, t) up to the teacher step's local error,
    which shrinks as h^(order + 1)."""
    schedule = _schedule(name)
    g = GaussianMixture.gaussian([0.7, -0.4], [0.3, 1.4])
    t_b = D.distillation_times(schedule, 8, grid="uniform" if name == "flow" else "karras")[-1]
    f_star = _exact_consistency_function(g, schedule, t_b)
    rng = np.random.default_rng(1)
    t = 0.5 * (schedule.t_max + t_b)
    x = g.sample_xt(256, schedule.alpha(t), schedule.sigma(t), rng)
    errors, hs = [], [0.08, 0.04, 0.02, 0.01]
    span = t - t_b
    for h in hs:
        x_next = D.teacher_step(g.denoiser(schedule), x, t, t - h * span, schedule, sampler=sampler)
        errors.append(np.max(np.abs(f_star(x_next, t - h * span) - f_star(x, t))))
    slopes = np.diff(np.log(errors)) / np.diff(np.log(hs))
    assert np.all(slopes > order + 1 - 0.3), (errors, slopes)
    assert errors[-1] < 1e-3


def test_cd_target_on_the_mixture_matches_a_fine_integration():
    """Mixture teacher: one heun step against a 400-step DPM-Solver++(3M) solve of the same interval."""
    schedule = _schedule("edm")
    mix = standard_mixture_2d()
    rng = np.random.default_rng(2)
    x = mix.sample_xt(512, 1.0, 2.0, rng)
    fine = get_sampler("dpmpp_3m")(
        mix.denoiser(schedule), x, np.exp(np.linspace(np.log(2.0), np.log(1.9), 401)), schedule
    )
    step = D.teacher_step(mix.denoiser(schedule), x, 2.0, 1.9, schedule, sampler="heun")
    assert np.max(np.abs(step - fine)) < 1e-4


def test_teacher_step_refuses_a_stochastic_sampler():
    with pytest.raises(ValueError, match="stochastic"):
        D.teacher_step(lambda x, t: x, np.zeros((1, 2)), 500.0, 400.0, _schedule("linear"), sampler="ddpm")


@given(
    name=st.sampled_from(sorted(SCHEDULES)),
    seed=st.integers(0, 2**16),
    u=st.floats(0.05, 0.95),
    v=st.floats(0.01, 0.99),
)
def test_consistency_training_pair_shares_one_noise_draw(name, seed, u, v):
    schedule = _schedule(name)
    lo, hi = schedule.t_eps + 1e-3 * (schedule.t_max - schedule.t_eps), schedule.t_max * 0.999
    t = lo + u * (hi - lo)
    t_next = schedule.t_eps + v * (t - schedule.t_eps)
    rng = np.random.default_rng(seed)
    x0, z = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    x_t, x_next = D.consistency_training_pair(x0, z, t, t_next, schedule)
    for x, s in ((x_t, t), (x_next, t_next)):
        np.testing.assert_allclose((x - schedule.alpha(s) * x0) / schedule.sigma(s), z, rtol=1e-9, atol=1e-9)


@given(k=st.integers(0, 1000), name=st.sampled_from(["edm", "linear", "vp"]))
def test_ict_times_follow_the_curriculum_and_map_back_to_their_sigmas(k, name):
    schedule = _schedule(name)
    times, sigmas = D.ict_times(schedule, k, 1000)
    assert len(times) == L.ict_num_steps(k, 1000)
    assert np.all(np.diff(sigmas) > 0) and np.all(np.diff(times) > 0)
    np.testing.assert_allclose(schedule.sigma_ve(times), sigmas, rtol=1e-7)


# ---------------------------------------------------------------------------------------------------------
# Progressive distillation
# ---------------------------------------------------------------------------------------------------------


@settings(max_examples=examples(30))
@given(
    name=st.sampled_from(["linear", "vp", "flow", "vp_cosine"]),
    steps=st.sampled_from([1, 2, 4, 8, 16]),
    i=st.integers(0, 15),
    seed=st.integers(0, 2**16),
)
def test_one_round_target_equals_two_exact_ddim_steps(name, steps, i, seed):
    """One student DDIM step t -> t_next from x_tilde lands where the registry's DDIM sampler, run with the exact
    mixture denoiser over [t, t_mid, t_next], lands (Salimans & Ho 2022, Algorithm 2)."""
    schedule = _schedule(name)
    grid = D.progressive_grid(schedule, steps)
    i = i % steps
    t, t_next = grid[i], grid[i + 1]
    mix = standard_mixture_2d()
    rng = np.random.default_rng(seed)
    x = mix.sample_xt(64, schedule.alpha(t), schedule.sigma(t), rng)
    x_tilde = L.progressive_distillation_target(mix.denoiser(schedule), x, t, t_next, schedule)
    two = get_sampler("ddim")(mix.denoiser(schedule), x, np.array([t, 0.5 * (t + t_next), t_next]), schedule)
    one = get_sampler("ddim")(lambda _x, _t: x_tilde, x, np.array([t, t_next]), schedule)
    np.testing.assert_allclose(one, two, rtol=1e-9, atol=1e-9 * (1 + np.max(np.abs(x))))


@settings(max_examples=examples(30))
@given(
    name=st.sampled_from(["linear", "vp", "flow", "vp_cosine", "edm"]),
    steps=st.sampled_from([1, 2, 4, 8, 16]),
    i=st.integers(0, 15),
    seed=st.integers(0, 2**16),
)
def test_the_teacher_solve_target_with_two_ddim_substeps_is_the_papers(name, steps, i, seed):
    """progressive_teacher_target(sampler=ddim, substeps=2) is Salimans & Ho's two-DDIM-step target."""
    schedule = _schedule(name)
    grid = D.progressive_grid(schedule, steps)
    i = i % steps
    t, t_next = grid[i], grid[i + 1]
    mix = standard_mixture_2d()
    x = mix.sample_xt(64, schedule.alpha(t), schedule.sigma(t), np.random.default_rng(seed))
    want = L.progressive_distillation_target(mix.denoiser(schedule), x, t, t_next, schedule)
    got = D.progressive_teacher_target(mix.denoiser(schedule), x, t, t_next, schedule, sampler="ddim", substeps=2)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * (1 + np.max(np.abs(want))))


@pytest.mark.parametrize(("name", "sampler", "order"), [("vp", "ddim", 1), ("vp", "heun", 2), ("flow", "flow_heun", 2)])
def test_the_teacher_solve_target_lands_on_the_exact_flow_map(name, sampler, order):
    """Gaussian data, exact denoiser: the student's one DDIM step from x_tilde lands on the exact PF-ODE map
    t -> t_next, with the teacher solve's global error, shrinking as substeps^-order."""
    schedule = _schedule(name)
    g = GaussianMixture.gaussian([0.7, -0.4], [0.3, 1.4])
    grid = D.progressive_grid(schedule, 4)
    t, t_next = grid[0] - 0.05 * (grid[0] - grid[1]), grid[1]
    x = g.sample_xt(256, schedule.alpha(t), schedule.sigma(t), np.random.default_rng(3))
    exact = _exact_consistency_function(g, schedule, t_next)(x, t)
    errors, subs = [], [4, 8, 16, 32]
    for n in subs:
        x_tilde = D.progressive_teacher_target(
            g.denoiser(schedule), x, t, t_next, schedule, sampler=sampler, substeps=n
        )
        one = get_sampler("ddim")(lambda _x, _t, x_tilde=x_tilde: x_tilde, x, np.array([t, t_next]), schedule)
        errors.append(np.max(np.abs(one - exact)))
    slopes = -np.diff(np.log(errors)) / np.diff(np.log(subs))
    assert np.all(slopes > order - 0.3), (errors, slopes)


def test_the_teacher_solve_refuses_a_stochastic_sampler_and_bad_substeps():
    schedule, mix = _schedule("vp"), standard_mixture_2d()
    x = mix.sample_xt(4, 0.5, 0.8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="stochastic"):
        D.progressive_teacher_target(mix.denoiser(schedule), x, 0.6, 0.3, schedule, sampler="ddpm")
    with pytest.raises(ValueError, match="substeps"):
        D.progressive_teacher_target(mix.denoiser(schedule), x, 0.6, 0.3, schedule, substeps=0)


def test_progressive_rounds_halve_and_grids_nest():
    assert D.progressive_rounds(64, 4) == [32, 16, 8, 4]
    assert D.progressive_rounds(2, 1) == [1]
    for name in ("linear", "flow", "edm", "vp"):
        schedule = _schedule(name)
        for n in (1, 2, 4, 8):
            np.testing.assert_allclose(D.progressive_grid(schedule, 2 * n)[::2], D.progressive_grid(schedule, n))
    for bad in (3, 64, 128, 12, 0):
        with pytest.raises(ValueError, match="student_steps"):
            D.progressive_rounds(64, bad)


@pytest.mark.parametrize("name", ["linear", "flow", "edm", "vp"])
def test_progressive_grid_is_the_sampling_grid_of_its_name(name):
    """A student samples on the grid it was trained on: `GRIDS[progressive_grid_name]` (steps dividing T)."""
    from diffspec.reference.grids import GRIDS

    schedule = _schedule(name)
    for steps in (1, 2, 4, 8):
        want = GRIDS[D.progressive_grid_name(schedule)](schedule, steps)
        np.testing.assert_allclose(D.progressive_grid(schedule, steps), want, rtol=1e-12, atol=1e-12)


def test_truncated_snr_weight_is_max_snr_one():
    schedule = _schedule("linear")
    t = np.array([0.0, 100.0, 500.0, 999.0])
    snr = (schedule.alpha(t) / schedule.sigma(t)) ** 2
    np.testing.assert_allclose(D.truncated_snr_weight(t, schedule), np.maximum(snr, 1.0), rtol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# Reflow
# ---------------------------------------------------------------------------------------------------------


def test_straightness_is_zero_for_straight_paths_and_positive_for_curved_ones():
    schedule = _schedule("flow")
    z = np.random.default_rng(3).standard_normal((256, 2))
    point = GaussianMixture.gaussian([1.0, -0.5], [1e-6, 1e-6])  # a point mass: every path is a line
    x, s = D.straightness(point.denoiser(schedule), z, schedule, steps=16)
    np.testing.assert_allclose(x, np.broadcast_to([1.0, -0.5], x.shape), atol=1e-5)
    assert np.max(s) < 1e-10
    _, s_mix = D.straightness(standard_mixture_2d().denoiser(schedule), z, schedule, steps=16)
    assert np.mean(s_mix) > 0.05


def test_reflow_pairs_converge_to_the_exact_flow_map():
    """The teacher coupling (z, ODE(z)) of Gaussian data converges to the closed-form flow map at Heun's order."""
    schedule = _schedule("flow")
    g = GaussianMixture.gaussian([0.5], [0.4])
    z = np.random.default_rng(4).standard_normal((128, 1))
    exact = gaussian_flow_map(z, g.mu[0], g.s[0], 0.0, 1.0, 1.0, 0.0)
    errors = [
        np.max(np.abs(D.reflow_pairs(g.denoiser(schedule), z, schedule, steps=n, sampler="flow_heun") - exact))
        for n in (8, 16, 32)
    ]
    assert errors[0] / errors[1] > 3.5 and errors[1] / errors[2] > 3.5, errors  # Heun: second order


def test_reflow_needs_a_flow_schedule():
    with pytest.raises(ValueError, match="flow-matching"):
        D.reflow_pairs(lambda x, t: x, np.zeros((1, 2)), _schedule("linear"), steps=4)


# ---------------------------------------------------------------------------------------------------------
# How a student is sampled
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("procedure", sorted(D.STUDENT_SAMPLERS))
def test_a_students_grid_wastes_no_step(name, procedure):
    """Every step of a student's grid is one it was trained for: the first evaluation at t_max, log-SNR gained at
    every step, and the last evaluation well above the boundary t_eps, where a consistency model returns its input
    (the plain Karras grid and the exponential grid on DDPM's schedule end with an evaluation there, which makes a
    k-step consistency sample a (k - 1)-step one)."""
    from diffspec.reference.grids import GRIDS

    if procedure == "reflow" and name != "flow":
        return
    schedule = _schedule(name)
    sampler, steps, grid, options = D.student_sampling({"procedure": procedure, "student_steps": 4}, schedule)
    assert sampler == D.STUDENT_SAMPLERS[procedure]
    assert steps == (4 if procedure == "progressive_distillation" else D.STUDENT_STEPS)
    sigma_eps = max(float(schedule.sigma_ve(schedule.t_eps)), 1e-3)
    for n in (1, 2, 4):
        times = GRIDS[grid](schedule, n, **options)
        assert len(times) == n + 1 and times[0] == schedule.t_max
        evaluated = times[:-1]
        assert np.all(np.diff(schedule.lam(evaluated)) > 0.1), (grid, times)
        if procedure.startswith("consistency"):
            assert schedule.sigma_ve(evaluated[-1]) > 10 * sigma_eps, (grid, options, times)
        if procedure == "progressive_distillation":
            np.testing.assert_allclose(times, D.progressive_grid(schedule, n), rtol=1e-12, atol=1e-12)
        elif procedure.startswith("consistency"):  # Algorithm 1: re-noise down to eps, not 0
            assert times[-1] == schedule.t_eps


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("N", [18, 20, 24])
def test_a_consistency_students_steps_are_times_it_was_trained_at(name, N):
    """With its card's grid and boundary, a CD student's k-step grid evaluates only at times of its discretization
    (`distillation_times`) whenever k divides N, and re-noises down to its boundary: a student is asked only what it
    was taught (between those times a network's answer can drift; docs/distillation.md)."""
    from diffspec.reference.grids import GRIDS

    schedule = _schedule(name)
    grid = "uniform" if name in ("flow", "vp_cosine") else "karras"
    trained = D.distillation_times(schedule, N, grid=grid)
    card = {"procedure": "consistency_distillation", "grid": grid, "sigma_min": float(schedule.sigma_ve(trained[-1]))}
    sampler, steps, grid_name, options = D.student_sampling(card, schedule)
    for k in [k for k in range(1, N + 1) if N % k == 0]:
        times = GRIDS[grid_name](schedule, k, **options)
        np.testing.assert_allclose(times[:-1], trained[:: N // k][:-1] if k > 1 else trained[:1], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(times[-1], trained[-1], rtol=1e-9, atol=1e-12)


def test_a_students_card_entries_win_and_bad_ones_are_named():
    schedule = _schedule("linear")
    card = {"procedure": "consistency_distillation", "steps_for_sampling": 4, "grid_for_sampling": "karras"}
    assert D.student_sampling(card, schedule) == ("consistency", 4, "karras", {})
    assert D.student_sampling(None, schedule) is None
    assert D.student_sampling({"procedure": "something_else"}, schedule) is None
    for entry, message in (
        ({"steps_for_sampling": "2"}, "steps_for_sampling='2'"),
        ({"steps_for_sampling": -1}, "steps_for_sampling=-1"),
        ({"steps_for_sampling": 10**9}, r"steps_for_sampling=1000000000: expected an integer in 1\.\.10000"),
        ({"sampler": 3}, "sampler=3"),
        ({"grid_for_sampling": ["trailing"]}, "grid_for_sampling"),
        ({"grid_for_sampling": "uniform", "grid_options_for_sampling": [1]}, "grid_options_for_sampling"),
    ):
        with pytest.raises(ValueError, match=message):
            D.student_sampling({"procedure": "reflow", **entry}, _schedule("flow"))
    with pytest.raises(ValueError, match="student="):
        D.student_sampling(["reflow"], schedule)
    for bad in (-5.0, 0.0, "0.01", True):
        with pytest.raises(ValueError, match="sigma_min"):
            D.student_sampling({"procedure": "consistency_distillation", "sigma_min": bad}, schedule)
