"""Reference samplers (DDPM, DDIM, PNDM family, k-diffusion's, LMS, flow, consistency, inversions): the checks
beyond the contract that `tests/conformance/` applies to every sampler (order, distribution, draws, clean ends,
option validation): identities between samplers, exactness of consistency sampling, inversions, PNDM's pseudo
Runge-Kutta warm-up and fourth order on grids uniform in sigma_ve, Heun's churn window, cross-option validation.
"""

import numpy as np
import pytest
from diffspec.reference.grids import make_grid
from diffspec.reference.noise import CountingNoise
from diffspec.reference.oracles import GaussianMixture, gaussian_flow_map, standard_mixture_2d
from diffspec.reference.samplers import INVERSIONS, SAMPLER_INFO, SAMPLERS, Requirement
from diffspec.reference.schedules import make_schedule
from scipy import stats

MEAN, STD = np.array([0.5, -0.2]), np.array([0.3, 0.8])
GAUSS = GaussianMixture.gaussian(MEAN, STD)

# (schedule name, grid name, grid options) for order tests; every grid ends at a noisy time.
VP_COSINE = ("vp_cosine", "uniform_lam", {"t_start": 0.99})
LINEAR = ("linear", "uniform_lam", {})
EDM_UNIFORM = ("edm", "uniform", {"t_start": 1.0, "t_end": 0.1})  # uniform in sigma_ve


def _grid(case, steps):
    name, grid_name, options = case
    schedule = make_schedule(name)
    return schedule, make_grid(grid_name, schedule, steps, **options)


def _x_T(schedule, grid, n=8, seed=0):
    a, s = schedule.alpha(grid[0]), schedule.sigma(grid[0])
    return a * MEAN + np.sqrt(a**2 * STD**2 + s**2) * np.random.default_rng(seed).standard_normal((n, 2))


def _flow_error(name, case, steps, **options):
    schedule, grid = _grid(case, steps)
    x_T = _x_T(schedule, grid)
    out = SAMPLERS[name](GAUSS.denoiser(schedule), x_T, grid, schedule, **options)
    a, s = schedule.alpha(grid), schedule.sigma(grid)
    return np.max(np.abs(out - gaussian_flow_map(x_T, MEAN, STD, a[0], s[0], a[-1], s[-1])))


def _observed_order(steps, errors):
    errors = np.asarray(errors)
    assert np.all(np.diff(errors) < 0), f"error does not decrease with steps: {errors}"
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


# ------------------------------------------------------------------------------------------------------------
# Deterministic samplers: error against the exact flow map, observed order of convergence.
# ------------------------------------------------------------------------------------------------------------


def test_pndm_is_fourth_order_on_grids_uniform_in_sigma_ve():
    """The fixed PLMS weights (equal-step Adams-Bashforth) are fourth order where the steps in sigma_ve are equal."""
    steps = [128, 256, 512]
    errors = [_flow_error("pndm", EDM_UNIFORM, n) for n in steps]
    assert abs(_observed_order(steps, errors) - 4) < 0.25, errors


def test_flow_midpoint_is_superconvergent_on_gaussian_data():
    """On the Flow schedule from t = 1 to the clean end t = 0 the Gaussian flow map is exact; the midpoint rule is
    third order on this linear problem (the conformance suite measures its order 2 on the mixture)."""
    schedule = make_schedule("flow")
    steps, errors = [16, 32, 64, 128], []
    for n in steps:
        grid = make_grid("uniform", schedule, n)
        x_T = _x_T(schedule, grid)
        out = SAMPLERS["flow_midpoint"](GAUSS.denoiser(schedule), x_T, grid, schedule)
        errors.append(np.max(np.abs(out - gaussian_flow_map(x_T, MEAN, STD, 0.0, 1.0, 1.0, 0.0))))
    assert _observed_order(steps, errors) > 2.75, errors


@pytest.mark.parametrize("name", sorted(n for n, i in SAMPLER_INFO.items() if Requirement.FLOW_SCHEDULE in i.requires))
def test_flow_samplers_need_flow_schedule(name):
    schedule = make_schedule("edm")
    grid = make_grid("karras", schedule, 4)
    with pytest.raises(ValueError, match="flow"):
        SAMPLERS[name](GAUSS.denoiser(schedule), np.zeros((2, 2)), grid, schedule)


def test_dpmpp_inversion_order():
    """DPM-Solver++(2M) backwards converges to the exact data -> noise flow map at order 2."""
    for case in (VP_COSINE, LINEAR):
        steps, errors = [16, 32, 64, 128], []
        for n in steps:
            schedule, grid = _grid(case, n)
            grid = grid[::-1].copy()
            x0 = _x_T(schedule, grid)
            out = INVERSIONS["dpmpp_inversion"](GAUSS.denoiser(schedule), x0, grid, schedule)
            a, s = schedule.alpha(grid), schedule.sigma(grid)
            errors.append(np.max(np.abs(out - gaussian_flow_map(x0, MEAN, STD, a[0], s[0], a[-1], s[-1]))))
        assert abs(_observed_order(steps, errors) - 2) < 0.25, errors


def test_ddim_inversion_roundtrip():
    schedule = make_schedule("vp_cosine")
    x0 = GAUSS.sample(16, np.random.default_rng(3))[0]
    errors = []
    for n in (100, 400):
        grid = make_grid("uniform_lam", schedule, n, t_start=0.99)
        x_T = INVERSIONS["ddim_inversion"](GAUSS.denoiser(schedule), x0, grid[::-1].copy(), schedule)
        back = SAMPLERS["ddim"](GAUSS.denoiser(schedule), x_T, grid, schedule)
        errors.append(np.max(np.abs(back - x0)))
    assert errors[1] < errors[0] / 3 and errors[1] < 0.02, errors  # first order: error ~ 1/steps


def test_inversion_validation():
    schedule = make_schedule("edm")
    grid = make_grid("karras", schedule, 8)
    for fn in INVERSIONS.values():
        with pytest.raises(ValueError, match="increasing"):
            fn(GAUSS.denoiser(schedule), np.zeros((2, 2)), grid, schedule)
        with pytest.raises(ValueError, match="clean end"):
            fn(GAUSS.denoiser(schedule), np.zeros((2, 2)), grid[::-1].copy(), schedule)


# ------------------------------------------------------------------------------------------------------------
# Consistency samplers with the exact consistency function: exact for any step count (N samples, 5 standard
# errors, KS p > 1e-3).
# ------------------------------------------------------------------------------------------------------------

N_SAMPLES = 4000


def _assert_matches(out, data_sample, mean, cov, reference):
    """Mean and covariance within 5 standard errors (estimated from a large `reference` sample of the data), and a
    two-sample KS test per coordinate against fresh data."""
    n = len(out)
    centred = reference - mean
    se_cov = np.array([[np.std(centred[:, i] * centred[:, j]) for j in range(2)] for i in range(2)]) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(out.mean(0) - mean), 5 * np.sqrt(np.diag(cov) / n))
    np.testing.assert_array_less(np.abs(np.cov(out.T) - cov), 5 * se_cov)
    for k in range(out.shape[1]):
        assert stats.ks_2samp(out[:, k], data_sample[:, k]).pvalue > 1e-3, k


def _gaussian_consistency_function(schedule, t_eps):
    """The exact consistency function of GAUSS: the probability-flow map from t to t_eps."""
    a_eps, s_eps = schedule.alpha(t_eps), schedule.sigma(t_eps)

    def f(x, t):
        return gaussian_flow_map(x, MEAN, STD, schedule.alpha(t), schedule.sigma(t), a_eps, s_eps)

    return f


# lcm and tcd take the model's output as clean data, so they run only on grids that end at the clean end.
_CONSISTENCY_CASES = [
    (name, options, schedule_name, clean)
    for name, options in [("consistency", {}), ("lcm", {}), ("tcd", {"gamma": 1.0})]
    for schedule_name, clean in [("edm", True), ("edm", False), ("linear", True)]
    if name == "consistency" or clean
]


@pytest.mark.parametrize(("name", "options", "schedule_name", "clean"), _CONSISTENCY_CASES)
def test_consistency_samplers_exact(name, options, schedule_name, clean):
    """With the exact consistency function (Gaussian data), multistep sampling is exact for any step count."""
    schedule = make_schedule(schedule_name)
    grid = make_grid("karras", schedule, 4, **({} if clean else {"t_end": schedule.t_eps}))
    rng = np.random.default_rng(11)
    x_T = GAUSS.sample_xt(N_SAMPLES, schedule.alpha(grid[0]), schedule.sigma(grid[0]), rng)
    out = SAMPLERS[name](_gaussian_consistency_function(schedule, grid[-1]), x_T, grid, schedule, noise=rng, **options)
    a, s = schedule.alpha(grid[-1]), schedule.sigma(grid[-1])
    std = np.sqrt(a**2 * STD**2 + s**2)
    reference = a * MEAN + std * np.random.default_rng(2).standard_normal((100_000, 2))
    fresh = a * MEAN + std * np.random.default_rng(3).standard_normal((N_SAMPLES, 2))
    _assert_matches(out, fresh, a * MEAN, np.diag(std**2), reference)


# ------------------------------------------------------------------------------------------------------------
# Identities between samplers.
# ------------------------------------------------------------------------------------------------------------


def _run(name, schedule, grid, seed=None, denoise=None, **options):
    x_T = np.random.default_rng(42).standard_normal((64, 2)) * schedule.sigma(grid[0])
    noise = None if seed is None else np.random.default_rng(seed)
    denoise = standard_mixture_2d().denoiser(schedule) if denoise is None else denoise
    return SAMPLERS[name](denoise, x_T, grid, schedule, noise=noise, **options)


@pytest.mark.parametrize("schedule_name", ["linear", "vp_cosine", "edm"])
def test_identities(schedule_name):
    schedule = make_schedule(schedule_name)
    grid = make_grid("karras", schedule, 12, **({"t_start": 0.99} if schedule_name == "vp_cosine" else {}))
    close = dict(rtol=1e-9, atol=1e-11)
    ddpm = _run("ddpm", schedule, grid, seed=3)
    np.testing.assert_allclose(_run("ddim", schedule, grid, seed=3, eta=1.0), ddpm, **close)
    np.testing.assert_allclose(_run("euler_ancestral", schedule, grid, seed=3), ddpm, **close)
    np.testing.assert_allclose(_run("euler", schedule, grid), _run("ddim", schedule, grid), **close)
    np.testing.assert_allclose(_run("tcd", schedule, grid, gamma=0.0), _run("ddim", schedule, grid), **close)
    if schedule.has_clean_end():  # gamma = 1 jumps to t_min; consistency re-noises from grid[-1]
        lcm = _run("lcm", schedule, grid, seed=4)
        np.testing.assert_allclose(_run("tcd", schedule, grid, seed=4, gamma=1.0), lcm, **close)
        np.testing.assert_allclose(_run("consistency", schedule, grid, seed=4), lcm, **close)
    np.testing.assert_allclose(_run("dpm2_ancestral", schedule, grid, eta=0.0), _run("dpm2", schedule, grid), **close)
    np.testing.assert_allclose(_run("euler_ancestral", schedule, grid, eta=0.0), _run("euler", schedule, grid), **close)
    v = {"variance": "learned_range"}
    np.testing.assert_allclose(
        _run("ddpm", schedule, grid, seed=3, variance_v=lambda x, t: -np.ones_like(x), **v), ddpm, **close
    )
    np.testing.assert_allclose(
        _run("ddpm", schedule, grid, seed=3, variance_v=lambda x, t: np.ones_like(x), **v),
        _run("ddpm", schedule, grid, seed=3, variance="fixed_large"),
        **close,
    )
    # iPNDM (variable-step Adams-Bashforth, Newton form) = LMS (Lagrange integrals) away from a clean end.
    noisy = grid[:-1]
    for order in (1, 2, 3, 4):
        lms = _run("lms", schedule, noisy, order=order)
        np.testing.assert_allclose(_run("ipndm", schedule, noisy, order=order), lms, **close)


def test_ddpm_fixed_large_is_beta_on_full_grid():
    """On the full discrete grid, fixed_large's variance c sigma^2 is DDPM's beta_n."""
    schedule = make_schedule("linear", T=20)
    grid = make_grid("uniform", schedule, 20)[:-1]  # 19, ..., 0
    calls = []

    def noise(shape):
        calls.append(1)
        return np.ones(shape)

    x_T = np.zeros((1, 1))
    zero = lambda x, t: np.zeros_like(x)  # noqa: E731 - x0_hat = 0 makes x_next = a x + std
    out_large = SAMPLERS["ddpm"](zero, x_T, grid[:2], schedule, noise=noise, variance="fixed_large")
    out_three = SAMPLERS["ddpm"](zero, x_T, grid[:3], schedule, noise=noise, variance="fixed_large")
    betas = schedule.betas()
    assert out_large.shape == (1, 1) and len(calls) == 1
    alphas = 1 - betas
    # Two steps from x = 0: first x = sqrt(beta_19) z, second step returns the mean.
    mean_coef = np.sqrt(alphas[18]) * (1 - np.prod(alphas[:18])) / (1 - np.prod(alphas[:19]))
    np.testing.assert_allclose(out_three[0, 0], mean_coef * np.sqrt(betas[19]), rtol=1e-10)


# ------------------------------------------------------------------------------------------------------------
# Heun's churn: its draw count depends on the grid (the contract says so; counted here).
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s_churn", [1.0, 10.0, 40.0])
def test_heun_churn_draws_once_per_churned_step(s_churn):
    schedule = make_schedule("vp_cosine")
    grid = make_grid("uniform", schedule, 10, t_start=0.99)
    counting = CountingNoise(0)
    x_T = np.random.default_rng(42).standard_normal((64, 2))
    SAMPLERS["heun"](standard_mixture_2d().denoiser(schedule), x_T, grid, schedule, noise=counting, s_churn=s_churn)
    assert SAMPLER_INFO["heun"].draw_count(10, {"s_churn": s_churn}) is None
    assert counting.shapes == [x_T.shape] * _churned_steps(schedule, grid, {"s_churn": s_churn})


def _churned_steps(schedule, grid, options):
    sigma_ve = schedule.sigma(grid) / schedule.alpha(grid)
    top = schedule.sigma_ve(schedule.t_max)
    gamma = min(options["s_churn"] / (len(grid) - 1), np.sqrt(2) - 1)
    return int(np.sum(np.minimum(sigma_ve[:-1] * (1 + gamma), top) > sigma_ve[:-1]))


# ------------------------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "option"),
    [
        ("ddpm", {"variance": "learned_range"}, "variance_v"),
        ("heun", {"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmin"),
    ],
)  # values that are wrong only together (one option's values are the contract's, checked in tests/conformance)
def test_bad_options(name, options, option):
    schedule = make_schedule("edm")
    with pytest.raises(ValueError, match=option):
        SAMPLERS[name](
            GAUSS.denoiser(schedule),
            np.zeros((2, 2)),
            make_grid("karras", schedule, 4),
            schedule,
            noise=np.random.default_rng(0),
            **options,
        )


def test_pndm_warmup_is_fourth_order_runge_kutta():
    """Three PNDM steps are pure pseudo Runge-Kutta steps: their error over 3 steps of size h is O(h^5)."""
    schedule = make_schedule("edm")
    sizes, errors = [0.08, 0.04, 0.02], []
    for h in sizes:
        grid = 0.5 - h * np.arange(4.0)
        x_T = _x_T(schedule, grid)
        out = SAMPLERS["pndm"](GAUSS.denoiser(schedule), x_T, grid, schedule)
        errors.append(np.max(np.abs(out - gaussian_flow_map(x_T, MEAN, STD, 1.0, grid[0], 1.0, grid[-1]))))
    slope = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    assert abs(slope - 5) < 0.25, (slope, errors)
