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


@pytest.mark.parametrize(("name", "options", "order", "case"), HIGH_ORDER, ids=[f"{h[0]}{h[2]}-{h[3][0]}" for h in HIGH_ORDER])
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


@pytest.mark.parametrize("schedule_name", ["linear", "edm", "flow"])
@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize("name", MINE + ["flow_euler", "flow_heun", "flow_midpoint"])
def test_clean_end(name, steps, schedule_name):
    if name.startswith("flow") != (schedule_name == "flow"):
        pytest.skip("flow samplers run on the flow schedule only")
    schedule = make_schedule(schedule_name)
    grid = make_grid("karras" if schedule_name == "edm" else "uniform", schedule, steps)
    if schedule_name == "flow" and not name.startswith("flow"):
        grid = grid[1:]
    assert schedule.sigma(grid[-1]) == 0
    x_T = np.random.default_rng(0).standard_normal((5, 2)) * schedule.sigma(grid[0])
    out = SAMPLERS[name](_guarded(schedule), x_T, grid, schedule, noise=np.random.default_rng(1))
    assert out.shape == x_T.shape and out.dtype == np.float64 and np.all(np.isfinite(out))
    assert not np.shares_memory(out, x_T)
