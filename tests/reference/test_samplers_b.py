"""DPM-Solver, DPM-Solver++, UniPC, DEIS, score-SDE, RK45 samplers and the likelihood, against analytic oracles:
the checks beyond the contract that `tests/conformance/` applies to every sampler (order, distribution, draws, clean
ends, option validation): accuracy of the adaptive and fast solvers, identities between first-order methods, the
same path in VP and EDM coordinates, starts where alpha = 0 at eta = 0, and bits per dimension."""

from functools import partial

import numpy as np
import pytest
from diffspec.reference import make_grid, make_schedule
from diffspec.reference.likelihood import bits_per_dim
from diffspec.reference.oracles import GaussianMixture, gaussian_flow_map, standard_mixture_2d
from diffspec.reference.samplers import deis, dpm_solver, dpm_solver_pp, ode, unipc

MU, SD = 0.5, 0.3
GAUSS = GaussianMixture.gaussian([MU, MU], [SD, SD])


def _gauss_start(schedule, t0, n=8, seed=0):
    a, s = schedule.alpha(t0), schedule.sigma(t0)
    return a * MU + np.sqrt(a**2 * SD**2 + s**2) * np.random.default_rng(seed).standard_normal((n, 2))


def test_dpm_solver_fast_and_adaptive_are_accurate():
    schedule = make_schedule("flow")
    t0, t1 = float(schedule.t_of_lam(-2.0)), float(schedule.t_of_lam(4.0))
    x_T = _gauss_start(schedule, t0)
    exact = gaussian_flow_map(
        x_T, MU, SD, schedule.alpha(t0), schedule.sigma(t0), schedule.alpha(t1), schedule.sigma(t1)
    )
    den = GAUSS.denoiser(schedule)
    errs = [
        np.abs(
            dpm_solver.sample_dpm_solver_fast(
                den, x_T, make_grid("uniform_lam", schedule, n, t_start=t0, t_end=t1), schedule
            )
            - exact
        ).max()
        for n in (9, 18, 36)
    ]
    first = np.abs(
        dpm_solver.sample_dpm_solver_1(den, x_T, make_grid("uniform_lam", schedule, 36, t_start=t0, t_end=t1), schedule)
        - exact
    ).max()
    assert errs[0] > errs[1] > errs[2] and errs[2] < first / 100, (errs, first)
    for order in (2, 3):
        out = dpm_solver.sample_dpm_solver_adaptive(
            den, x_T, np.array([t0, t1]), schedule, order=order, rtol=1e-4, atol=1e-6
        )
        assert np.abs(out - exact).max() < 1e-3


@pytest.mark.parametrize(
    "sampler, options, tol",
    [
        (dpm_solver.sample_dpm_solver_fast, {}, 1e-4),
        # the adaptive controller's steps also move by O(eta), amplified by its cancelling error estimate
        (dpm_solver.sample_dpm_solver_adaptive, {"variant": "k-diffusion"}, 1e-2),
    ],
)
def test_ancestral_dpm_solver_noise_is_linear_in_small_eta(sampler, options, tol):
    """k-diffusion's ancestral DPM-Solver adds noise of std sigma_up ~ eta s_next. What it adds (the run with
    s_noise = 1 minus the run with s_noise = 0, same draws) divided by eta must tend to a limit as eta -> 0: at
    eta = 1e-10 the std recomputed as sqrt(s_next^2 - sigma_down^2) was 0 (the difference of squares cancels), so
    no noise was added at all; at 1e-6 it carried a 7e-5 relative error."""
    schedule = make_schedule("edm")
    grid = make_grid("karras", schedule, 10)[:-1]
    mixture = standard_mixture_2d()
    x_T = mixture.sample_xt(8, schedule.alpha(grid[0]), schedule.sigma(grid[0]), np.random.default_rng(0))

    def added_per_eta(eta):
        runs = [
            sampler(
                mixture.denoiser(schedule),
                x_T,
                grid,
                schedule,
                eta=eta,
                s_noise=s,
                noise=np.random.default_rng(1),
                **options,
            )
            for s in (1.0, 0.0)
        ]
        return (runs[0] - runs[1]) / eta

    limit = added_per_eta(1e-6)
    assert np.abs(limit).max() > 1.0
    # O(eta) from the step's shift to lam_down
    np.testing.assert_allclose(added_per_eta(1e-10), limit, atol=tol * np.abs(limit).max())


def test_rk45_at_tight_tolerance_is_exact():
    for name in ("vp_cosine", "edm"):
        schedule = make_schedule(name)
        t0, t1 = float(schedule.t_of_lam(-2.0)), float(schedule.t_of_lam(4.0))
        x_T = _gauss_start(schedule, t0)
        exact = gaussian_flow_map(
            x_T, MU, SD, schedule.alpha(t0), schedule.sigma(t0), schedule.alpha(t1), schedule.sigma(t1)
        )
        out = ode.sample_pf_ode_rk45(
            GAUSS.denoiser(schedule), x_T, np.array([t0, t1]), schedule, rtol=1e-10, atol=1e-10
        )
        np.testing.assert_allclose(out, exact, atol=1e-8, rtol=0)
        loose = ode.sample_pf_ode_rk45(
            GAUSS.denoiser(schedule), x_T, np.array([t0, t1]), schedule, rtol=1e-4, atol=1e-4
        )
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
    bpd = bits_per_dim(
        GAUSS.denoiser(schedule), x, schedule, divergence=_gauss_divergence(schedule), rtol=1e-7, atol=1e-7
    )
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


# Inverses that round just outside the domain. Each parameter set below is one where, before the inverse held its
# result inside [t_min, t_max], the round trip t_of_lam(lam(end)) left the domain by one ulp (1.0000000000000002,
# 88.00000000000003 or -2.2e-16) and every later alpha(t) refused the time the sampler had computed itself.
ROUNDING_OUTSIDE = [
    ("vp", {"beta_min": 0.04, "beta_max": 8.1}),
    ("subvp", {"beta_min": 0.88, "beta_max": 20.0}),
    ("vp_cosine", {"s": 0.0172}),
    ("ve", {"sigma_min": 0.006, "sigma_max": 69.1}),
    ("edm", {"sigma_max": 88.0}),
]
CONTINUOUS_PARAMS = {
    "vp": lambda r: {"beta_min": r.uniform(0.01, 1.0), "beta_max": r.uniform(5.0, 30.0)},
    "subvp": lambda r: {"beta_min": r.uniform(0.01, 1.0), "beta_max": r.uniform(5.0, 30.0)},
    "vp_cosine": lambda r: {"s": r.uniform(1e-3, 0.05)},
    "ve": lambda r: {"sigma_min": r.uniform(1e-3, 0.1), "sigma_max": r.uniform(10.0, 100.0)},
    "edm": lambda r: {"sigma_min": r.uniform(1e-3, 0.05), "sigma_max": r.uniform(10.0, 100.0)},
    "flow": lambda r: {"shift": r.uniform(0.3, 5.0)},
}


def _assert_round_trips_stay_inside(schedule):
    for end in (schedule.t_min, schedule.t_max):
        lam = schedule.lam(end)
        if not np.isfinite(lam):  # a clean end or alpha = 0: no finite lam to invert
            continue
        for back in (schedule.t_of_lam(lam), schedule.t_of_sigma_ve(schedule.sigma_ve(end))):
            assert schedule.t_min <= float(back) <= schedule.t_max, (schedule, end, float(back))
            np.testing.assert_allclose(float(back), end, rtol=1e-12, atol=1e-12)
            schedule.alpha(back)  # a time the schedule itself accepts


@pytest.mark.parametrize("name, params", ROUNDING_OUTSIDE)
def test_inverse_at_a_domain_end_stays_inside(name, params):
    _assert_round_trips_stay_inside(make_schedule(name, **params))


@pytest.mark.parametrize("name", sorted(CONTINUOUS_PARAMS))
def test_inverses_stay_inside_the_domain_over_random_parameters(name):
    """About one parameter set in ten rounded outside at an end (measured over 300 per family); 200 each here."""
    rng = np.random.default_rng(12)
    for _ in range(200):
        _assert_round_trips_stay_inside(make_schedule(name, **CONTINUOUS_PARAMS[name](rng)))


def test_inverse_beyond_the_domain_is_not_held():
    """Only rounding is held: a lam past the domain's end has no time inside it, and the inverse says so."""
    schedule = make_schedule("vp_cosine")
    assert schedule.t_of_lam(schedule.lam(0.0) + 1e-3) < 0.0
    assert make_schedule("edm").t_of_lam(-np.log(80.001)) > 80.0


def test_shifted_flow_grid_starts_inside_the_domain():
    """shift t / (1 + (shift - 1) t) gave 1.0000000000000002 at t = 1 for shift = 0.3014132435025377 (and about one
    shift in 140); the grid's first time then failed every sampler's domain check."""
    rng = np.random.default_rng(3)
    for shift in [0.3014132435025377, *rng.uniform(0.3, 5.0, 500)]:
        schedule = make_schedule("flow", shift=float(shift))
        grid = make_grid("shifted", schedule, 3)
        assert grid[0] == 1.0 and grid[-1] == 0.0 and np.all((grid >= 0.0) & (grid <= 1.0)), (shift, grid[0])
        t = np.linspace(0.0, 1.0, 101)
        np.testing.assert_allclose(schedule.shifted(t), shift * t / (1 + (shift - 1) * t), rtol=1e-15, atol=0)


def test_unipc_runs_on_a_shifted_flow_grid_from_t_max():
    """The case that found the bug: unipc (which needs no alpha > 0 at its start) on Flow(shift=0.3014...) over the
    shifted grid from t = 1 refused the grid as outside [0, 1]; now it runs and lands on the data end."""
    schedule = make_schedule("flow", shift=0.3014132435025377)
    grid = make_grid("shifted", schedule, 6)
    x_T = np.random.default_rng(0).standard_normal((16, 2))
    out = unipc.sample_unipc(standard_mixture_2d().denoiser(schedule), x_T, grid, schedule)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("name", ["euler", "heun", "dpm2"])
def test_churn_capped_at_the_top_stays_inside_the_domain(name):
    """EDM's churn caps sigma_hat at sigma_ve(t_max); the time of that capped level, t_of_sigma_ve(sigma_ve(t_max)),
    is 88.00000000000003 on EDM(sigma_max=88) unless the inverse holds it. Every model time is inside the domain."""
    from diffspec.reference.samplers import SAMPLERS

    schedule = make_schedule("edm", sigma_max=88.0)
    grid = make_grid("karras", schedule, 4)
    times = []
    den = standard_mixture_2d().denoiser(schedule)
    x_T = 88.0 * np.random.default_rng(0).standard_normal((8, 2))
    out = SAMPLERS[name](
        lambda x, t: (times.append(t), den(x, t))[1], x_T, grid, schedule, noise=np.random.default_rng(1), s_churn=40.0
    )
    assert np.all(np.isfinite(out)) and max(times) <= schedule.t_max and max(times) == schedule.t_max


def test_unipc_from_a_zero_snr_start_is_the_limit_of_finite_starts():
    """UniPC-3 (bh2) from lam = -inf is the limit of the same run from lam_0 -> -inf: the distance shrinks as
    lam_0 falls (like 1 / |lam_0|, the rate at which the far point's weight vanishes)."""
    schedule = make_schedule("linear", beta_start=0.0005542954331915175, beta_end=0.03125, rescale_zero_snr=True)
    mixture = standard_mixture_2d()
    x_T = mixture.sample_xt(8, 0.0, 1.0, np.random.default_rng(0))
    opts = dict(order=3, variant="bh2", lower_order_final=False)

    def run(t0):
        return unipc.sample_unipc(
            mixture.denoiser(schedule), x_T, np.array([t0, 444.0, 111.0, 0.0, -1.0]), schedule, **opts
        )

    limit = run(999.0)
    assert np.all(np.isfinite(limit))
    lams = [float(schedule.lam(999.0 - eps)) for eps in (1e-3, 1e-6, 1e-9)]
    dists = [np.max(np.abs(run(999.0 - eps) - limit)) for eps in (1e-3, 1e-6, 1e-9)]
    assert dists[0] > dists[1] > dists[2]
    scaled = [d * abs(lam) for d, lam in zip(dists, lams, strict=True)]
    assert max(scaled) < 1.5 * min(scaled)
