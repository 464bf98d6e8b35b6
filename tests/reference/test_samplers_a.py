"""Reference samplers of issue 4 (part a): DDPM, DDIM, PNDM family, k-diffusion, LMS, flow, consistency, inversions.

Checked against the analytic oracles: the exact probability-flow map of Gaussian data (error and observed order of
convergence), the output distribution for a Gaussian mixture, exact identities between samplers, the noise
contract and input validation.
"""

import numpy as np
import pytest
from scipy import stats
from scipy.integrate import solve_ivp

from diffspec.reference.grids import make_grid
from diffspec.reference.noise import CountingNoise
from diffspec.reference.oracles import GaussianMixture, gaussian_flow_map, standard_mixture_2d
from diffspec.reference.samplers import INVERSIONS, SAMPLER_INFO, SAMPLERS
from diffspec.reference.schedules import make_schedule

MEAN, STD = np.array([0.5, -0.2]), np.array([0.3, 0.8])
GAUSS = GaussianMixture.gaussian(MEAN, STD)

# (schedule name, grid name, grid options) for order tests; every grid ends at a noisy time.
VP_COSINE = ("vp_cosine", "uniform_lam", {"t_start": 0.99})
LINEAR = ("linear", "uniform_lam", {})
EDM_KARRAS = ("edm", "karras", {"t_end": 0.002})
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

LOW_ORDER = [  # (sampler, options, theoretical order on smooth grids)
    ("ddim", {}, 1),
    ("euler", {}, 1),
    ("heun", {}, 2),
    ("dpm2", {}, 2),
    ("pndm", {}, 2),
    ("plms", {}, 2),
    ("lms", {"order": 1}, 1),
    ("lms", {"order": 2}, 2),
    ("ipndm", {"order": 2}, 2),
]


@pytest.mark.parametrize("case", [VP_COSINE, LINEAR, EDM_KARRAS], ids=["vp_cosine", "linear", "edm"])
@pytest.mark.parametrize(("name", "options", "order"), LOW_ORDER, ids=[f"{n}{o or ''}" for n, o, _ in LOW_ORDER])
def test_order_low(name, options, order, case):
    steps = [16, 32, 64, 128]
    errors = [_flow_error(name, case, n, **options) for n in steps]
    assert abs(_observed_order(steps, errors) - order) < 0.25, errors


HIGH_ORDER = [
    ("lms", {"order": 3}, 3, VP_COSINE),
    ("lms", {"order": 4}, 4, VP_COSINE),
    ("lms", {"order": 4}, 4, EDM_KARRAS),
    ("ipndm", {}, 4, LINEAR),
    ("ipndm", {}, 4, EDM_KARRAS),
    ("pndm", {}, 4, EDM_UNIFORM),  # the fixed PLMS weights are fourth order on grids uniform in sigma_ve
]


@pytest.mark.parametrize(("name", "options", "order", "case"), HIGH_ORDER,
                         ids=[f"{h[0]}{h[2]}-{h[3][0]}" for h in HIGH_ORDER])
def test_order_high(name, options, order, case):
    steps = [128, 256, 512]
    errors = [_flow_error(name, case, n, **options) for n in steps]
    assert abs(_observed_order(steps, errors) - order) < 0.25, errors


def test_declared_orders_match_tests():
    expected = {"ddim": 1, "euler": 1, "heun": 2, "dpm2": 2, "pndm": 2, "plms": 2, "lms": 4, "ipndm": 4,
                "flow_euler": 1, "flow_heun": 2, "flow_midpoint": 2}
    assert {name: SAMPLER_INFO[name].order for name in expected} == expected


FLOW_SAMPLERS = [("flow_euler", 1), ("flow_heun", 2), ("flow_midpoint", 2)]


@pytest.mark.parametrize(("name", "order"), FLOW_SAMPLERS)
def test_flow_samplers_gaussian(name, order):
    """On the Flow schedule from t = 1 to the clean end t = 0 the Gaussian flow map is exact."""
    schedule = make_schedule("flow")
    steps, errors = [16, 32, 64, 128], []
    for n in steps:
        grid = make_grid("uniform", schedule, n)
        x_T = _x_T(schedule, grid)
        out = SAMPLERS[name](GAUSS.denoiser(schedule), x_T, grid, schedule)
        errors.append(np.max(np.abs(out - gaussian_flow_map(x_T, MEAN, STD, 0.0, 1.0, 1.0, 0.0))))
    # flow_midpoint is superconvergent (order 3) on this linear problem; the mixture test below sees order 2.
    assert _observed_order(steps, errors) > order - 0.25, errors


@pytest.mark.parametrize(("name", "order"), FLOW_SAMPLERS)
def test_flow_samplers_mixture_order(name, order):
    """Against a tight scipy solution of dx/dt = (x - x0_hat)/t for a two-component mixture."""
    schedule = make_schedule("flow")
    mixture = GaussianMixture.create([1, 1], [[0.5, 0.5], [-1.0, 0.2]], [0.4, 0.6])
    denoise = mixture.denoiser(schedule)
    x_T = np.random.default_rng(1).standard_normal((6, 2))
    t_end = 0.02

    def f(t, y):
        x = y.reshape(x_T.shape)
        return ((x - denoise(x, t)) / t).ravel()

    ref = solve_ivp(f, (1.0, t_end), x_T.ravel(), method="DOP853", rtol=1e-12, atol=1e-12).y[:, -1].reshape(x_T.shape)
    steps = [16, 32, 64, 128]
    errors = [np.abs(SAMPLERS[name](denoise, x_T, make_grid("uniform", schedule, n, t_end=t_end), schedule) - ref).max()
              for n in steps]
    assert abs(_observed_order(steps, errors) - order) < 0.25, errors


@pytest.mark.parametrize("name", ["flow_euler", "flow_heun", "flow_midpoint"])
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
    for name, fn in INVERSIONS.items():
        with pytest.raises(ValueError, match="increasing"):
            fn(GAUSS.denoiser(schedule), np.zeros((2, 2)), grid, schedule)
        with pytest.raises(ValueError, match="clean end"):
            fn(GAUSS.denoiser(schedule), np.zeros((2, 2)), grid[::-1].copy(), schedule)


# ------------------------------------------------------------------------------------------------------------
# Clean ends: never a model call at sigma = 0, no warnings (RuntimeWarning is an error here), finite output.
# ------------------------------------------------------------------------------------------------------------

MINE = ["ddpm", "ddim", "pndm", "plms", "ipndm", "euler", "euler_ancestral", "heun", "dpm2", "dpm2_ancestral",
        "lms", "consistency", "lcm", "tcd"]


def _guarded(schedule):
    denoise = standard_mixture_2d().denoiser(schedule)

    def guarded(x, t):
        assert isinstance(t, float), type(t)
        assert schedule.sigma(t) > 0, f"denoise called at a clean end t={t}"
        return denoise(x, t)

    return guarded


CLEAN_CASES = [(name, sched) for name in MINE for sched in ("linear", "edm", "flow")] + [
    (name, "flow") for name in ("flow_euler", "flow_heun", "flow_midpoint")]


@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize(("name", "schedule_name"), CLEAN_CASES)
def test_clean_end(name, steps, schedule_name):
    schedule = make_schedule(schedule_name)
    t_start = 0.98 if schedule_name == "flow" and not name.startswith("flow") else None  # alpha > 0 at the start
    grid = make_grid("karras" if schedule_name == "edm" else "uniform", schedule, steps, t_start=t_start)
    assert schedule.sigma(grid[-1]) == 0
    x_T = np.random.default_rng(0).standard_normal((5, 2)) * schedule.sigma(grid[0])
    out = SAMPLERS[name](_guarded(schedule), x_T, grid, schedule, noise=np.random.default_rng(1))
    assert out.shape == x_T.shape and out.dtype == np.float64 and np.all(np.isfinite(out))
    assert not np.shares_memory(out, x_T)


# ------------------------------------------------------------------------------------------------------------
# Stochastic samplers: the output distribution against the data (N samples, 5 standard errors, KS p > 1e-3).
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


@pytest.fixture(scope="module")
def mixture_data():
    mixture = standard_mixture_2d()
    reference = mixture.sample(100_000, np.random.default_rng(99))[0]
    return mixture, reference, mixture.sample(N_SAMPLES, np.random.default_rng(7))[0]


STOCHASTIC = [  # (sampler, schedule, grid, steps, options)
    ("ddpm", "linear", "uniform", 200, {}),
    ("ddpm", "linear", "uniform", 200, {"variance": "fixed_large"}),
    ("ddpm", "linear", "uniform", 200, {"variance": "learned_range", "variance_v": lambda x, t: np.full_like(x, 0.3)}),
    ("ddim", "linear", "uniform", 200, {"eta": 1.0}),
    ("ddim", "vp_cosine", "uniform", 200, {"eta": 0.5}),
    ("euler_ancestral", "edm", "karras", 100, {}),
    ("euler_ancestral", "linear", "karras", 100, {"eta": 0.5}),
    ("dpm2_ancestral", "edm", "karras", 100, {}),
    ("heun", "edm", "karras", 100, {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0}),
    ("tcd", "linear", "uniform", 200, {"gamma": 0.3}),
]


@pytest.mark.parametrize(("name", "schedule_name", "grid_name", "steps", "options"), STOCHASTIC,
                         ids=[f"{s[0]}-{s[1]}-{i}" for i, s in enumerate(STOCHASTIC)])
def test_stochastic_distribution(name, schedule_name, grid_name, steps, options, mixture_data):
    mixture, reference, fresh = mixture_data
    schedule = make_schedule(schedule_name)
    t_start = 0.995 if schedule_name == "vp_cosine" else None
    grid = make_grid(grid_name, schedule, steps, **({"t_start": t_start} if t_start else {}))
    rng = np.random.default_rng(5)
    x_T = mixture.sample_xt(N_SAMPLES, schedule.alpha(grid[0]), schedule.sigma(grid[0]), rng)
    out = SAMPLERS[name](mixture.denoiser(schedule), x_T, grid, schedule, noise=rng, **options)
    _assert_matches(out, fresh, mixture.mean(), mixture.cov(), reference)


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
    np.testing.assert_allclose(_run("ddpm", schedule, grid, seed=3, variance_v=lambda x, t: -np.ones_like(x), **v),
                               ddpm, **close)
    np.testing.assert_allclose(_run("ddpm", schedule, grid, seed=3, variance_v=lambda x, t: np.ones_like(x), **v),
                               _run("ddpm", schedule, grid, seed=3, variance="fixed_large"), **close)
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
# The noise contract.
# ------------------------------------------------------------------------------------------------------------

DRAWS = [  # (sampler, options, draws for a grid of `steps` steps ending at a clean end)
    ("ddpm", {}, lambda n: n - 1),
    ("ddpm", {"variance": "fixed_large"}, lambda n: n - 1),
    ("ddim", {"eta": 0.5}, lambda n: n - 1),
    ("ddim", {}, lambda n: 0),
    ("euler_ancestral", {}, lambda n: n - 1),
    ("dpm2_ancestral", {}, lambda n: n - 1),
    ("heun", {"s_churn": 10.0}, lambda n: n - 1),  # churn on every noisy step (sigma_hat < sigma_max except step 0)
    ("heun", {}, lambda n: 0),
    ("consistency", {}, lambda n: n - 1),
    ("lcm", {}, lambda n: n - 1),
    ("tcd", {"gamma": 0.3}, lambda n: n - 1),
    ("tcd", {"gamma": 0.0}, lambda n: 0),
] + [(name, {}, lambda n: 0) for name in ("euler", "dpm2", "pndm", "plms", "ipndm", "lms")]


@pytest.mark.parametrize(("name", "options", "count"), DRAWS, ids=[f"{d[0]}{d[1] or ''}" for d in DRAWS])
def test_draw_counts_and_replay(name, options, count):
    schedule = make_schedule("vp_cosine")
    grid = make_grid("uniform", schedule, 10, t_start=0.99)
    counting, denoise = CountingNoise(0), standard_mixture_2d().denoiser(schedule)
    x_T = np.random.default_rng(42).standard_normal((64, 2))
    first = SAMPLERS[name](denoise, x_T, grid, schedule, noise=counting, **options)
    expected = count(10) if not (name == "heun" and options) else _churned_steps(schedule, grid, options)
    assert counting.shapes == [x_T.shape] * expected
    again = SAMPLERS[name](denoise, x_T, grid, schedule, noise=CountingNoise(0), **options)
    np.testing.assert_array_equal(first, again)
    if expected == 0:  # deterministic: noise=None works and gives the same answer
        np.testing.assert_array_equal(SAMPLERS[name](denoise, x_T, grid, schedule, **options), first)


def _churned_steps(schedule, grid, options):
    sigma_ve = schedule.sigma(grid) / schedule.alpha(grid)
    top = schedule.sigma_ve(schedule.t_max)
    gamma = min(options["s_churn"] / (len(grid) - 1), np.sqrt(2) - 1)
    return int(np.sum(np.minimum(sigma_ve[:-1] * (1 + gamma), top) > sigma_ve[:-1]))


@pytest.mark.parametrize(("name", "options"), [
    ("ddpm", {}), ("ddim", {"eta": 0.1}), ("euler_ancestral", {}), ("dpm2_ancestral", {}), ("heun", {"s_churn": 1.0}),
    ("consistency", {}), ("lcm", {}), ("tcd", {}),
])
def test_stochastic_without_noise_raises(name, options):
    schedule = make_schedule("edm")
    with pytest.raises(ValueError, match="noise"):
        grid = make_grid("karras", schedule, 4)
        SAMPLERS[name](GAUSS.denoiser(schedule), np.zeros((2, 2)), grid, schedule, **options)


def test_stochastic_flags():
    for name in ("ddpm", "euler_ancestral", "dpm2_ancestral", "consistency", "lcm", "tcd"):
        assert SAMPLER_INFO[name].stochastic, name
    for name in ("ddim", "pndm", "plms", "ipndm", "euler", "heun", "dpm2", "lms", "flow_euler", "flow_heun"):
        assert not SAMPLER_INFO[name].stochastic, name


# ------------------------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MINE)
def test_bad_grids(name):
    schedule = make_schedule("edm")
    denoise, x = GAUSS.denoiser(schedule), np.zeros((2, 2))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="decreasing"):
        SAMPLERS[name](denoise, x, np.array([1.0, 2.0, 0.0]), schedule, noise=rng)
    with pytest.raises(ValueError, match="decreasing"):
        SAMPLERS[name](denoise, x, np.array([2.0, 2.0, 0.0]), schedule, noise=rng)
    with pytest.raises(ValueError, match="at least 2"):
        SAMPLERS[name](denoise, x, np.array([2.0]), schedule, noise=rng)


@pytest.mark.parametrize(("name", "options", "option"), [
    ("ddim", {"eta": -0.1}, "eta"), ("ddim", {"eta": 1.5}, "eta"), ("euler_ancestral", {"eta": -1.0}, "eta"),
    ("dpm2_ancestral", {"eta": -1.0}, "eta"), ("lms", {"order": 0}, "order"), ("lms", {"order": 5}, "order"),
    ("ipndm", {"order": 5}, "order"), ("tcd", {"gamma": 1.5}, "gamma"), ("tcd", {"gamma": -0.1}, "gamma"),
    ("ddpm", {"variance": "fixed"}, "variance"), ("ddpm", {"variance": "learned_range"}, "variance_v"),
    ("heun", {"s_churn": -1.0}, "s_churn"), ("heun", {"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmin"),
])
def test_bad_options(name, options, option):
    schedule = make_schedule("edm")
    with pytest.raises(ValueError, match=option):
        SAMPLERS[name](GAUSS.denoiser(schedule), np.zeros((2, 2)), make_grid("karras", schedule, 4), schedule,
                       noise=np.random.default_rng(0), **options)


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
