"""DPM-Solver, DPM-Solver++, UniPC, DEIS, score-SDE, RK45 samplers and the likelihood, against analytic oracles."""

from functools import partial

import numpy as np
import pytest
from scipy import stats

from diffspec.reference import make_grid, make_schedule
from diffspec.reference.likelihood import bits_per_dim
from diffspec.reference.noise import CountingNoise
from diffspec.reference.oracles import GaussianMixture, gaussian_flow_map, standard_mixture_2d
from diffspec.reference.samplers import deis, dpm_solver, dpm_solver_pp, ode, sde, unipc

MU, SD = 0.5, 0.3
GAUSS = GaussianMixture.gaussian([MU, MU], [SD, SD])


def _warm_grid(schedule, n, lam_0, lam_1):
    """n steps uniform in lam, except that the first step is split into h^2/H and the rest: multistep methods start
    with a first-order step, whose O(h^2) local error would otherwise cap their global order at 2."""
    H = lam_1 - lam_0
    h = H / n
    lams = np.concatenate([[lam_0, lam_0 + h * h / H], np.linspace(lam_0 + h, lam_1, n)])
    return schedule.t_of_lam(lams)


def _gauss_start(schedule, t0, n=8, seed=0):
    a, s = schedule.alpha(t0), schedule.sigma(t0)
    return a * MU + np.sqrt(a**2 * SD**2 + s**2) * np.random.default_rng(seed).standard_normal((n, 2))


def _errors(fn, schedule, lam_0, lam_1, steps):
    t0, t1 = float(schedule.t_of_lam(lam_0)), float(schedule.t_of_lam(lam_1))
    x_T = _gauss_start(schedule, t0)
    exact = gaussian_flow_map(x_T, MU, SD, schedule.alpha(t0), schedule.sigma(t0), schedule.alpha(t1), schedule.sigma(t1))
    den = GAUSS.denoiser(schedule)
    return np.array([np.abs(fn(den, x_T, _warm_grid(schedule, n, lam_0, lam_1), schedule) - exact).max() for n in steps])


WIDE, NARROW = (-2.0, 4.0, [16, 32, 64, 128]), (-1.0, 2.0, [8, 16, 32, 64])
NO_LOF = {"lower_order_final": False}
CONVERGENCE = [
    ("dpm_solver_1", dpm_solver.sample_dpm_solver_1, 1, WIDE),
    ("dpm_solver_2", dpm_solver.sample_dpm_solver_2, 2, WIDE),
    ("dpm_solver_3", dpm_solver.sample_dpm_solver_3, 3, WIDE),
    ("dpmpp_2m", partial(dpm_solver_pp.sample_dpmpp_2m, **NO_LOF), 2, WIDE),
    ("dpmpp_3m", partial(dpm_solver_pp.sample_dpmpp_3m, **NO_LOF), 3, NARROW),
    ("dpmpp_2m_sde-eta0-midpoint", partial(dpm_solver_pp.sample_dpmpp_2m_sde, eta=0.0, **NO_LOF), 2, WIDE),
    ("dpmpp_2m_sde-eta0-heun", partial(dpm_solver_pp.sample_dpmpp_2m_sde, eta=0.0, solver_type="heun", **NO_LOF), 2, WIDE),
    ("dpmpp_3m_sde-eta0", partial(dpm_solver_pp.sample_dpmpp_3m_sde, eta=0.0, **NO_LOF), 3, NARROW),
    ("dpmpp_2s_ancestral-eta0", partial(dpm_solver_pp.sample_dpmpp_2s_ancestral, eta=0.0, **NO_LOF), 2, WIDE),
    ("deis-1", partial(deis.sample_deis, order=1), 1, WIDE),
    ("deis-2-t", partial(deis.sample_deis, order=2), 2, WIDE),
    ("deis-3-t", partial(deis.sample_deis, order=3), 3, (-2.0, 4.0, [32, 64, 128, 256])),
    ("deis-2-lam", partial(deis.sample_deis, order=2, fit_in="lam"), 2, WIDE),
] + [
    (f"unipc-{order}-{variant}-{'UniPC' if corr else 'UniP'}",
     partial(unipc.sample_unipc, order=order, variant=variant, use_corrector=corr, **NO_LOF), order + corr,
     (-2.0, 4.0, [64, 128, 256]) if order + corr == 4 else (NARROW if order == 3 else WIDE))
    for order in (1, 2, 3) for variant in ("bh1", "bh2") for corr in (True, False)
]


@pytest.mark.parametrize("schedule_name", ["vp_cosine", "edm"])
@pytest.mark.parametrize("name, fn, order, setup", CONVERGENCE, ids=[c[0] for c in CONVERGENCE])
def test_order_of_convergence_against_exact_flow(name, fn, order, setup, schedule_name):
    schedule = make_schedule(schedule_name)
    lam_0, lam_1, steps = setup
    errors = _errors(fn, schedule, lam_0, lam_1, steps)
    assert np.all(np.diff(np.log(errors)) < 0), errors
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.25, (slope, errors)


def test_dpm_solver_fast_and_adaptive_are_accurate():
    schedule = make_schedule("flow")
    t0, t1 = float(schedule.t_of_lam(-2.0)), float(schedule.t_of_lam(4.0))
    x_T = _gauss_start(schedule, t0)
    exact = gaussian_flow_map(x_T, MU, SD, schedule.alpha(t0), schedule.sigma(t0), schedule.alpha(t1), schedule.sigma(t1))
    den = GAUSS.denoiser(schedule)
    errs = [np.abs(dpm_solver.sample_dpm_solver_fast(den, x_T, make_grid("uniform_lam", schedule, n, t_start=t0, t_end=t1),
                                                     schedule) - exact).max() for n in (9, 18, 36)]
    first = np.abs(dpm_solver.sample_dpm_solver_1(den, x_T, make_grid("uniform_lam", schedule, 36, t_start=t0, t_end=t1),
                                                  schedule) - exact).max()
    assert errs[0] > errs[1] > errs[2] and errs[2] < first / 100, (errs, first)
    for order in (2, 3):
        out = dpm_solver.sample_dpm_solver_adaptive(den, x_T, np.array([t0, t1]), schedule, order=order, rtol=1e-4, atol=1e-6)
        assert np.abs(out - exact).max() < 1e-3


def test_rk45_at_tight_tolerance_is_exact():
    for name in ("vp_cosine", "edm"):
        schedule = make_schedule(name)
        t0, t1 = float(schedule.t_of_lam(-2.0)), float(schedule.t_of_lam(4.0))
        x_T = _gauss_start(schedule, t0)
        exact = gaussian_flow_map(x_T, MU, SD, schedule.alpha(t0), schedule.sigma(t0), schedule.alpha(t1), schedule.sigma(t1))
        out = ode.sample_pf_ode_rk45(GAUSS.denoiser(schedule), x_T, np.array([t0, t1]), schedule, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(out, exact, atol=1e-8, rtol=0)
        loose = ode.sample_pf_ode_rk45(GAUSS.denoiser(schedule), x_T, np.array([t0, t1]), schedule, rtol=1e-4, atol=1e-4)
        assert 1e-8 < np.abs(loose - exact).max() < 1e-3


# --- identities ---------------------------------------------------------------------------------------------------


def _ddim(denoise, x, grid, schedule):
    """DDIM (Song et al. 2021, eq. 12 with eta = 0) written out here, independent of the samplers under test."""
    for t, t_next in zip(grid[:-1], grid[1:]):
        a, s, a_n, s_n = schedule.alpha(t), schedule.sigma(t), schedule.alpha(t_next), schedule.sigma(t_next)
        x0 = denoise(x, float(t))
        x = a_n * x0 + s_n * (x - a * x0) / s
    return x


@pytest.mark.parametrize("schedule_name", ["vp_cosine", "linear", "edm"])
def test_first_order_methods_are_ddim(schedule_name):
    schedule = make_schedule(schedule_name)
    mix = standard_mixture_2d()
    den = mix.denoiser(schedule)
    grid = make_grid("uniform", schedule, 12, t_start=float(schedule.t_of_lam(-2.0)))
    x_T = np.random.default_rng(1).standard_normal((16, 2))
    ref = _ddim(den, x_T, grid, schedule)
    first_order = [
        dpm_solver.sample_dpm_solver_1(den, x_T, grid, schedule),
        partial(unipc.sample_unipc, order=1, use_corrector=False)(den, x_T, grid, schedule),
        partial(deis.sample_deis, order=1)(den, x_T, grid, schedule),
        dpm_solver_pp.sample_dpmpp_2m(den, x_T, grid[:3], schedule),  # 2 steps with lower_order_final: both first order
        _ddim(den, dpm_solver_pp.sample_dpmpp_2m(den, x_T, grid[:2], schedule), grid[1:], schedule),
    ]
    np.testing.assert_allclose(first_order[0], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(first_order[1], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(first_order[2], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(first_order[4], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(first_order[3], _ddim(den, x_T, grid[:3], schedule), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [dpm_solver_pp.sample_dpmpp_2m, dpm_solver_pp.sample_dpmpp_3m, unipc.sample_unipc])
def test_edm_and_vp_give_the_same_scaled_path(fn):
    vp, edm = make_schedule("vp_cosine"), make_schedule("edm")
    mix = standard_mixture_2d()
    grid_vp = make_grid("uniform", vp, 10, t_start=0.95, t_end=0.02)
    grid_edm = vp.sigma_ve(grid_vp)
    x_T = np.random.default_rng(2).standard_normal((16, 2))
    out_vp = fn(mix.denoiser(vp), x_T, grid_vp, vp)
    out_edm = fn(mix.denoiser(edm), x_T / vp.alpha(grid_vp[0]), grid_edm, edm)
    np.testing.assert_allclose(out_vp / vp.alpha(grid_vp[-1]), out_edm, rtol=1e-10, atol=1e-10)


# --- every sampler on grids with a clean end, from alpha = 0 where allowed -------------------------------------------

ALL = {
    "dpm_solver_1": dpm_solver.sample_dpm_solver_1, "dpm_solver_2": dpm_solver.sample_dpm_solver_2,
    "dpm_solver_3": dpm_solver.sample_dpm_solver_3, "dpm_solver_fast": dpm_solver.sample_dpm_solver_fast,
    "dpm_solver_adaptive": dpm_solver.sample_dpm_solver_adaptive,
    "dpmpp_2s_ancestral": dpm_solver_pp.sample_dpmpp_2s_ancestral, "dpmpp_2m": dpm_solver_pp.sample_dpmpp_2m,
    "dpmpp_3m": dpm_solver_pp.sample_dpmpp_3m, "dpmpp_2m_sde": dpm_solver_pp.sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": dpm_solver_pp.sample_dpmpp_3m_sde, "dpmpp_sde": dpm_solver_pp.sample_dpmpp_sde,
    "unipc": unipc.sample_unipc, "deis": deis.sample_deis, "euler_maruyama": sde.sample_euler_maruyama,
    "pc": sde.sample_pc, "pf_ode_rk45": ode.sample_pf_ode_rk45,
}
DATA_PREDICTION = {"dpmpp_2s_ancestral", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde", "unipc"}


@pytest.mark.parametrize("name", sorted(ALL))
def test_clean_end_and_alpha_zero_start(name):
    fn, mix = ALL[name], standard_mixture_2d()
    cases = [(make_schedule("edm"), "karras"), (make_schedule("vp_cosine"), "uniform"), (make_schedule("linear"), "uniform"),
             (make_schedule("flow"), "uniform")]
    for schedule, grid_name in cases:
        grid = make_grid(grid_name, schedule, 8)
        if schedule.alpha(grid[0]) == 0 and name not in DATA_PREDICTION:
            with pytest.raises(ValueError, match="alpha"):
                fn(mix.denoiser(schedule), np.zeros((4, 2)), grid, schedule, noise=np.random.default_rng(0))
            grid = grid[1:]
        calls = []

        def den(x, t, schedule=schedule):
            assert isinstance(t, float) and schedule.sigma(t) > 0, t
            calls.append(t)
            return mix.denoiser(schedule)(x, t)

        x_T = np.random.default_rng(0).standard_normal((32, 2)) * schedule.sigma(grid[0])
        out = fn(den, x_T, grid, schedule, noise=np.random.default_rng(1))
        assert out.shape == x_T.shape and np.all(np.isfinite(out)) and out.dtype == np.float64
        if name not in ("euler_maruyama", "pc"):  # Euler-Maruyama is unstable on 8 coarse steps, by nature
            assert np.abs(out).max() < 10


# --- stochastic samplers against the mixture ------------------------------------------------------------------------

STOCHASTIC = [
    ("dpmpp_2s_ancestral", dpm_solver_pp.sample_dpmpp_2s_ancestral, 60),
    ("dpmpp_2m_sde", dpm_solver_pp.sample_dpmpp_2m_sde, 60),
    ("dpmpp_2m_sde-heun", partial(dpm_solver_pp.sample_dpmpp_2m_sde, solver_type="heun"), 60),
    ("dpmpp_3m_sde", dpm_solver_pp.sample_dpmpp_3m_sde, 60),
    ("dpmpp_sde", dpm_solver_pp.sample_dpmpp_sde, 40),
    ("dpmpp_sde-1", partial(dpm_solver_pp.sample_dpmpp_sde, order=1), 80),
    ("euler_maruyama", sde.sample_euler_maruyama, 400),
    ("pc-reverse_diffusion", sde.sample_pc, 200),
    ("pc-euler_maruyama", partial(sde.sample_pc, predictor="euler_maruyama"), 200),
]


@pytest.mark.parametrize("name, fn, steps", STOCHASTIC, ids=[s[0] for s in STOCHASTIC])
def test_stochastic_samplers_match_the_mixture(name, fn, steps):
    n = 2000
    mix, schedule = standard_mixture_2d(), make_schedule("vp")
    grid = make_grid("uniform_lam", schedule, steps - 1, t_start=float(schedule.t_of_lam(-5.0)))
    grid = np.append(grid, 0.0)  # uniform in lam from lam = -5 to t_eps, then onto the clean end t = 0
    rng = np.random.default_rng(3)
    x_T = mix.sample_xt(n, schedule.alpha(grid[0]), schedule.sigma(grid[0]), rng)
    out = fn(mix.denoiser(schedule), x_T, grid, schedule, noise=rng)
    target, cov = mix.sample(n, np.random.default_rng(4))[0], mix.cov()
    # Moments: 5 standard errors of the sample mean and of the sample covariance entries (Gaussian approximation).
    mean_se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(out.mean(0) - mix.mean()) < 5 * mean_se + 0.01), out.mean(0)
    cov_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(out.T) - cov) < 5 * cov_se + 0.02), np.cov(out.T)
    for d in range(2):
        assert stats.ks_2samp(out[:, d], target[:, d]).pvalue > 1e-3
    radius = np.hypot(*out.T)
    assert stats.ks_2samp(radius, np.hypot(*target.T)).pvalue > 1e-3


# --- likelihood -----------------------------------------------------------------------------------------------------


def _gauss_divergence(schedule):
    def divergence(x, t):
        a, s = schedule.alpha(t), schedule.sigma(t)
        return np.full(len(x), 2 * a * SD**2 / (a**2 * SD**2 + s**2))

    return divergence


@pytest.mark.parametrize("schedule_name, tol", [("vp_cosine", 1e-4), ("vp", 1e-2)])
def test_bits_per_dim_of_gaussian_data_is_exact(schedule_name, tol):
    schedule = make_schedule(schedule_name)
    t_data = schedule.t_min if schedule.sigma(schedule.t_min) > 0 else schedule.t_eps
    x = GAUSS.sample_xt(6, schedule.alpha(t_data), schedule.sigma(t_data), np.random.default_rng(5))
    truth = -GAUSS.log_density(x, schedule.alpha(t_data), schedule.sigma(t_data)) / (2 * np.log(2))
    bpd = bits_per_dim(GAUSS.denoiser(schedule), x, schedule, divergence=_gauss_divergence(schedule), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(bpd, truth, atol=tol, rtol=0)


def test_bits_per_dim_hutchinson_on_the_mixture():
    schedule, mix = make_schedule("vp_cosine"), standard_mixture_2d()
    n = 300
    x = mix.sample_xt(n, schedule.alpha(0.0), schedule.sigma(0.0), np.random.default_rng(6))
    truth = -mix.log_density(x, schedule.alpha(0.0), schedule.sigma(0.0)) / (2 * np.log(2))
    bpd = bits_per_dim(mix.denoiser(schedule), x, schedule, noise=np.random.default_rng(7), rtol=1e-4, atol=1e-4)
    diff = bpd - truth
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(n) + 0.02, (diff.mean(), diff.std())
    with pytest.raises(ValueError, match="noise"):
        bits_per_dim(mix.denoiser(schedule), x, schedule)


# --- noise contract and bad input -------------------------------------------------------------------------------------

DRAWS = {  # draws for n steps on a grid ending at a clean end
    "dpmpp_2s_ancestral": lambda n: n - 1, "dpmpp_2m_sde": lambda n: n - 1, "dpmpp_3m_sde": lambda n: n - 1,
    "dpmpp_sde": lambda n: 2 * (n - 1), "euler_maruyama": lambda n: n - 1, "pc": lambda n: 2 * n - 1,
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_noise_contract(name):
    fn, schedule, mix = ALL[name], make_schedule("edm"), standard_mixture_2d()
    grid = make_grid("karras", schedule, 7)
    x_T = np.random.default_rng(0).standard_normal((8, 2)) * 80
    counting = CountingNoise(1)
    out = fn(mix.denoiser(schedule), x_T, grid, schedule, noise=counting)
    assert len(counting.shapes) == DRAWS.get(name, lambda n: 0)(7)
    assert all(s == x_T.shape for s in counting.shapes)
    again = fn(mix.denoiser(schedule), x_T, grid, schedule, noise=CountingNoise(1))
    np.testing.assert_array_equal(out, again)
    if name in DRAWS:
        with pytest.raises(ValueError, match="noise"):
            fn(mix.denoiser(schedule), x_T, grid, schedule)
    else:
        np.testing.assert_array_equal(fn(mix.denoiser(schedule), x_T, grid, schedule), out)
    with pytest.raises(ValueError, match="grid"):
        fn(mix.denoiser(schedule), x_T, grid[::-1], schedule, noise=counting)
    assert np.all(x_T == np.random.default_rng(0).standard_normal((8, 2)) * 80)  # the caller's array is untouched


BAD_OPTIONS = [
    (dpm_solver.sample_dpm_solver_adaptive, {"order": 1}, "order"),
    (dpm_solver.sample_dpm_solver_adaptive, {"rtol": 0.0}, "rtol"),
    (dpm_solver.sample_dpm_solver_adaptive, {"atol": -1.0}, "atol"),
    (dpm_solver_pp.sample_dpmpp_2s_ancestral, {"eta": -0.1}, "eta"),
    (dpm_solver_pp.sample_dpmpp_2m_sde, {"eta": -1.0}, "eta"),
    (dpm_solver_pp.sample_dpmpp_2m_sde, {"solver_type": "euler"}, "solver_type"),
    (dpm_solver_pp.sample_dpmpp_3m_sde, {"eta": float("nan")}, "eta"),
    (dpm_solver_pp.sample_dpmpp_sde, {"order": 3}, "order"),
    (unipc.sample_unipc, {"order": 4}, "order"),
    (unipc.sample_unipc, {"variant": "bh3"}, "variant"),
    (unipc.sample_unipc, {"use_corrector": "yes"}, "use_corrector"),
    (deis.sample_deis, {"order": 0}, "order"),
    (deis.sample_deis, {"fit_in": "rho"}, "fit_in"),
    (sde.sample_pc, {"predictor": "ancestral"}, "predictor"),
    (sde.sample_pc, {"snr": 0.0}, "snr"),
    (sde.sample_pc, {"corrector_steps": -1}, "corrector_steps"),
    (ode.sample_pf_ode_rk45, {"rtol": 0.0}, "rtol"),
]


@pytest.mark.parametrize("fn, options, word", BAD_OPTIONS)
def test_bad_options_raise(fn, options, word):
    schedule = make_schedule("edm")
    with pytest.raises(ValueError, match=word):
        fn(GAUSS.denoiser(schedule), np.zeros((2, 2)), make_grid("karras", schedule, 4), schedule,
           noise=np.random.default_rng(0), **options)
    with pytest.raises(ValueError, match="x_T"):
        fn(GAUSS.denoiser(schedule), np.full((2, 2), np.nan), make_grid("karras", schedule, 4), schedule,
           noise=np.random.default_rng(0))


@pytest.mark.parametrize("name", ["dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_sde_solvers_at_eta_zero_start_where_alpha_is_zero(name):
    """Flow at t = 1 has lam = -inf, so h = inf on the first step: e^{-eta h} must be 1 at eta = 0 (not 0 * inf)."""
    from diffspec.reference.samplers import SAMPLERS

    schedule = make_schedule("flow")
    grid = make_grid("uniform", schedule, 10)
    denoise = standard_mixture_2d().denoiser(schedule)
    x_T = np.random.default_rng(0).standard_normal((64, 2))
    out = SAMPLERS[name](denoise, x_T, grid, schedule, eta=0.0, noise=np.random.default_rng(1))
    assert np.all(np.isfinite(out))
    if name == "dpmpp_2m_sde":
        np.testing.assert_allclose(out, SAMPLERS["dpmpp_2m"](denoise, x_T, grid, schedule), rtol=1e-12, atol=1e-12)
