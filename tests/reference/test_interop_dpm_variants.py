"""from_diffusers against diffusers for the DPM-Solver variants and SA-Solver: CogVideoXDPMScheduler,
DPMSolverMultistepInverseScheduler, CosineDPMSolverMultistepScheduler and SASolverScheduler.

The same oracle model and the same recorded draws go through both loops (the machinery of test_interop); final
samples agree to 1e-4 of max |x|. The default run covers each class on its default config and a slice of its
options; HYPOTHESIS_PROFILE=thorough runs the full option matrix.
"""

import itertools
import os

import numpy as np
import pytest
from diffspec.conformance.diffusers_loops import run_pipeline
from diffspec.reference import interop
from diffspec.reference.interop.sa_solver import _adams_weights
from diffspec.reference.oracles import GaussianMixture, gaussian_flow_map

from tests.reference.test_interop import SHAPE, NoiseList, model_for

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

TOL = 1e-4
TOL64 = 1e-5  # median 1e-8 over the matrix; diffusers' monomial SA-Solver weights cancel to ~2e-6 in float64
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
_MODULES = ("scheduling_sasolver", "scheduling_dpmsolver_multistep_inverse", "scheduling_dpm_cogvideox")


def run_diffusers(config, n, model, x_T, noise, step_kwargs, *, float64=False):
    """diffusers' loop for these classes (`run_pipeline`: CogVideoXDPM's own step signature, CosineDPM's Brownian
    tree fed from `noise`). float64=True runs the same loop on float64 tensors, its sigmas (alphas_cumprod for
    CogVideoXDPM) promoted from the float32 values diffusers computed: what is left of a difference is then the
    algorithm, not float32 rounding."""
    sched = getattr(diffusers, config["_class_name"]).from_config(config)
    return run_pipeline(sched, model, x_T, noise, n, step_kwargs=step_kwargs, float64=float64)


def compare(cls, overrides, n, step_options=None, *, mode="both"):
    """The plan against diffusers' loop run in float64 (to TOL64) and in float32 (to TOL); mode "float64" or
    "float32" runs one of the two."""
    step_options = step_options or {}
    config = {"_class_name": cls, "_diffusers_version": "0.42.1", **overrides}
    plan = interop.from_diffusers(config, n, **step_options)
    model = model_for(plan)
    x_T = np.random.default_rng(1).standard_normal(SHAPE)
    ours_noise = NoiseList(7)
    ours = plan.run(model, x_T, noise=ours_noise)
    assert np.all(np.isfinite(ours))
    devs = {}
    for float64 in {"both": (True, False), "float64": (True,), "float32": (False,)}[mode]:
        theirs_noise = NoiseList(7)
        theirs, their_ts = run_diffusers(config, n, model, x_T, theirs_noise, step_options, float64=float64)
        assert len(ours_noise.drawn) == len(theirs_noise.drawn)
        np.testing.assert_allclose(np.asarray(plan.timesteps, dtype=np.float64), their_ts, rtol=1e-6, atol=1e-6)
        devs[float64] = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    if True in devs:
        assert devs[True] < TOL64, f"{cls} {overrides} n={n}: max deviation {devs[True]:.2e} of max |x| (float64)"
    if False in devs:
        assert devs[False] < TOL, f"{cls} {overrides} n={n}: max deviation {devs[False]:.2e} of max |x|"
    return devs


SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
COG = "CogVideoXDPMScheduler"
INV = "DPMSolverMultistepInverseScheduler"
COS = "CosineDPMSolverMultistepScheduler"
SA = "SASolverScheduler"
FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}

CASES = [
    (COG, {}, 10, {}),
    (
        COG,
        {
            "prediction_type": "v_prediction",
            "rescale_betas_zero_snr": True,
            "timestep_spacing": "trailing",
            "snr_shift_scale": 1.0,
        },
        8,
        {"eta": 0.0},
    ),  # CogVideoX-5b
    (
        COG,
        {
            "snr_shift_scale": 2.0,
            "set_alpha_to_one": False,
            "timestep_spacing": "linspace",
            "prediction_type": "sample",
            "beta_schedule": "linear",
            "beta_start": 0.0001,
            "beta_end": 0.02,
        },
        7,
        {},
    ),
    (INV, {}, 10, {}),
    (INV, {**SD, "solver_order": 3, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 8, {}),
    (INV, {"use_karras_sigmas": True, "thresholding": True, "sample_max_value": 1.5, "solver_order": 3}, 8, {}),
    (
        INV,
        {
            "algorithm_type": "dpmsolver",
            "solver_type": "heun",
            "timestep_spacing": "leading",
            "steps_offset": 1,
            "prediction_type": "sample",
        },
        9,
        {},
    ),
    (COS, {}, 10, {}),
    (
        COS,
        {
            "sigma_schedule": "karras",
            "prediction_type": "epsilon",
            "solver_type": "heun",
            "lower_order_final": False,
        },
        8,
        {},
    ),
    (SA, {}, 10, {}),
    (SA, {**SD, "predictor_order": 3, "corrector_order": 3, "prediction_type": "v_prediction"}, 12, {}),
    (
        SA,
        {
            "algorithm_type": "noise_prediction",
            "predictor_order": 1,
            "corrector_order": 1,
            "timestep_spacing": "trailing",
        },
        8,
        {},
    ),
    (
        SA,
        {
            "use_karras_sigmas": True,
            "prediction_type": "sample",
            "thresholding": True,
            "sample_max_value": 1.5,
            "tau_func": lambda t: 0.5,
        },
        10,
        {},
    ),
    (INV, {"use_exponential_sigmas": True, "algorithm_type": "deis", "lambda_min_clipped": -5.0}, 9, {}),
    (INV, {"use_beta_sigmas": True, "thresholding": True, "sample_max_value": 0.8}, 9, {}),
    (INV, {**FLOW, "flow_shift": 3.0, "algorithm_type": "sde-dpmsolver++"}, 8, {}),
    (INV, {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "v_prediction", "solver_order": 3}, 8, {}),
    (INV, {"use_flow_sigmas": True, "prediction_type": "sample", "algorithm_type": "sde-dpmsolver++"}, 8, {}),
    (INV, {"prediction_type": "flow_prediction", "thresholding": True}, 8, {}),  # x0 = x - s out on VP sigmas
    (SA, {"use_exponential_sigmas": True, "lambda_min_clipped": -5.0}, 9, {}),
    (
        SA,
        {"use_beta_sigmas": True, "thresholding": True, "sample_max_value": 0.8, "algorithm_type": "data_prediction"},
        9,
        {},
    ),
    (SA, {**FLOW, "flow_shift": 3.0}, 8, {}),
    (SA, {"use_flow_sigmas": True, "flow_shift": 3.0, "algorithm_type": "data_prediction"}, 8, {}),
    (SA, {"use_flow_sigmas": True, "prediction_type": "v_prediction", "algorithm_type": "data_prediction"}, 8, {}),
    (SA, {"prediction_type": "flow_prediction", "algorithm_type": "data_prediction"}, 8, {}),  # x0 = x - s out
]


@pytest.mark.parametrize("cls, overrides, n, step_options", CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_plan_matches_diffusers_loop(cls, overrides, n, step_options):
    compare(cls, overrides, n, step_options)


def _matrix():
    """Every option value of the four classes, one or two at a time, with the crossings that change the update
    (SA-Solver's predictor x corrector x algorithm; the inverse's algorithm x solver type x order). Each entry is
    (class, config overrides, steps, compare in float32 too); the float32 comparison is left out where diffusers'
    float32 arithmetic alone moves the result by more than TOL (see `FLOAT32_LIMITED`)."""
    cos_betas = {"beta_schedule": "squaredcos_cap_v2"}
    trained = {"trained_betas": [float(b) for b in np.linspace(1e-4, 0.02, 1000, dtype=np.float32)]}
    m = []
    for spacing in ("linspace", "leading", "trailing"):
        m += [(c, {"timestep_spacing": spacing}, 10) for c in (COG, INV, SA)]
    m += [(c, {"timestep_spacing": "leading", "steps_offset": 1}, 10) for c in (COG, INV, SA)]
    for pred in ("epsilon", "sample", "v_prediction"):
        m += [(COG, {"prediction_type": pred}, 9), (INV, {"prediction_type": pred}, 9)]
        m += [(SA, {"prediction_type": pred, "algorithm_type": a}, 9) for a in ("data_prediction", "noise_prediction")]
    for betas in (SD, cos_betas, trained, {"beta_schedule": "linear"}):
        m += [(c, betas, 8) for c in (COG, INV, SA) if not (c == SA and betas is cos_betas)]  # SA: below
    # CogVideoXDPM
    m += [(COG, {"snr_shift_scale": s}, 8) for s in (0.5, 1.0, 2.0, 3.0)]
    m += [(COG, {"set_alpha_to_one": False}, 8), (COG, {"clip_sample": False, "clip_sample_range": 2.0}, 8)]
    m += [
        (COG, {"rescale_betas_zero_snr": True, "prediction_type": p, "timestep_spacing": "trailing", **b}, 8)
        for p in ("v_prediction", "sample")
        for b in ({}, SD)
    ]
    m += [(COG, {}, n) for n in (1, 2, 3, 25)]
    # DPMSolverMultistepInverse (the SDE algorithms have no inversion: see test_refusals)
    for algo, solver, order in itertools.product(
        ("dpmsolver++", "dpmsolver", "deis"), ("midpoint", "heun", "logrho"), (1, 2, 3)
    ):
        m.append((INV, {"algorithm_type": algo, "solver_type": solver, "solver_order": order}, 10))
    m += [(INV, {"solver_order": o, "lower_order_final": False}, 10) for o in (2, 3)]
    m += [(INV, {"euler_at_final": True, "solver_order": 3}, 10), (INV, {"solver_order": 3}, 16)]
    m += [
        (INV, {s: True}, n) for s in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas") for n in (8, 16)
    ]
    m += [(INV, {"use_karras_sigmas": True, "solver_order": 3, "algorithm_type": "dpmsolver"}, 10)]
    flow = FLOW
    m += [(INV, {**flow, "flow_shift": s}, 10) for s in (1.0, 3.0)]
    m += [(INV, {**flow, "algorithm_type": "sde-dpmsolver++", "solver_order": o}, 8) for o in (1, 2)]
    m += [
        (INV, {"thresholding": True, "sample_max_value": 1.5, "algorithm_type": a}, 10)
        for a in ("dpmsolver++", "dpmsolver")
    ]
    m += [
        (INV, {**cos_betas, "lambda_min_clipped": -3.0, "timestep_spacing": sp}, 8) for sp in ("linspace", "trailing")
    ]
    m += [(INV, {}, n) for n in (2, 3)]  # one step: below
    # CosineDPMSolverMultistep
    for sched, order, pred, solver in itertools.product(
        ("exponential", "karras"), (1, 2), ("epsilon", "v_prediction"), ("midpoint", "heun", "bh2")
    ):
        options = {"sigma_schedule": sched, "solver_order": order, "prediction_type": pred, "solver_type": solver}
        m.append((COS, options, 10))
    m += [(COS, {"lower_order_final": False}, n) for n in (10, 16)]
    m += [(COS, {"euler_at_final": True}, 10), (COS, {"euler_at_final": True, "lower_order_final": False}, 16)]
    m += [(COS, {"sigma_schedule": "karras", "rho": 5.0, "sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5}, 12)]
    m += [(COS, {}, n) for n in (1, 2, 3)]
    # SASolver
    for p, c, algo in itertools.product((1, 2, 3, 4), (1, 2, 3, 4), ("data_prediction", "noise_prediction")):
        m.append((SA, {"predictor_order": p, "corrector_order": c, "algorithm_type": algo}, 10))
    m += [(SA, {"predictor_order": 3, "corrector_order": 3, "lower_order_final": False}, 10)]
    for sigmas in ({"use_karras_sigmas": True}, {"use_exponential_sigmas": True}, {"use_beta_sigmas": True}):
        m += [(SA, {**sigmas, "algorithm_type": a}, 10) for a in ("data_prediction", "noise_prediction")]
    m += [(SA, {**flow, "flow_shift": s}, 10) for s in (1.0, 3.0)] + [(SA, {**flow, "thresholding": True}, 10)]
    for tau in (lambda t: 0.0, lambda t: 0.5, lambda t: 1.0, lambda t: float(t) / 1000.0):
        m += [(SA, {"tau_func": tau, "algorithm_type": a}, 10) for a in ("data_prediction", "noise_prediction")]
    m += [(SA, {"thresholding": True, "sample_max_value": s, "prediction_type": "sample"}, 10) for s in (0.8, 1.5)]
    m += [(SA, {**cos_betas, "lambda_min_clipped": -3.0}, 8), (SA, {**cos_betas, "prediction_type": "v_prediction"}, 8)]
    m += [(SA, {}, n) for n in (2, 25)]
    # float64 only, where diffusers' float32 rounding alone comes within a factor 2 of TOL: inversions from
    # sigma(t = 0) ~ 0.01 in few or beta-spaced steps, and the monomial SA-Solver weights at corrector order 4
    near = [(INV, {}, 2), (SA, {"predictor_order": 1, "corrector_order": 4, "algorithm_type": "noise_prediction"}, 10)]
    near += [(INV, {"use_beta_sigmas": True}, 8), (INV, {"use_beta_sigmas": True}, 16)]
    m = [(c, o, n, "float64" if (c, o, n) in near else "both") for c, o, n in m]
    # CosineDPM with final_sigmas_type="sigma_min": float32 only (a float64 loop turns the ulp between the last sigma
    # and float32(sigma_min) into a step of negative length, NaN)
    m += [(COS, {"final_sigmas_type": "sigma_min", "lower_order_final": low}, 16, "float32") for low in (True, False)]
    m += [(COS, {"euler_at_final": True, "final_sigmas_type": "sigma_min"}, 10, "float32")]
    # SA-Solver with epsilon prediction from alpha ~ 1e-4 (the cosine betas' last timestep), and one step from
    # T - 1 (a final sample ~ 0.04 in scale): float64 only (diffusers' float32 coefficients, e.g. sigma_t in
    # x0 = (x - sigma_t eps) / alpha_t, move x0 by their rounding / alpha: 1e-3 of max |x|)
    m += [(SA, cos_betas, 8, "float64"), (SA, {}, 1, "float64"), (INV, {}, 1, "float64")]
    return m


MATRIX = _matrix()


def test_matrix_slice_matches_diffusers_loop():
    """A representative slice of the option matrix (every 10th entry, and the float32- or float64-only ones) in the
    default run."""
    for cls, overrides, n, mode in MATRIX[::10] + [e for e in MATRIX if e[3] != "both"]:
        compare(cls, overrides, n, mode=mode)


if THOROUGH:  # defined only there, so the default run neither runs nor skips it

    @pytest.mark.parametrize("cls, overrides, n, mode", MATRIX, ids=lambda v: v if isinstance(v, str) else "")
    def test_option_matrix_matches_diffusers_loop(cls, overrides, n, mode):
        compare(cls, overrides, n, mode=mode)


SIGMA_MIN = {"final_sigmas_type": "sigma_min"}

# Noise-prediction updates from the first flow sigma 0.999 (alpha = 1e-3): x_t = (alpha_t / alpha_s) x - ... eps
# multiplies by alpha_t / alpha_s ~ 10^2 and then cancels, so diffusers' float32 loop is its float64 loop plus
# rounding of 5e-4 to 7e-2 of max |x|; the plan is compared with the float64 loop.
FLOW_NOISE_FORM = [
    ("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver", "prediction_type": "epsilon", **SIGMA_MIN}, 9),
    (
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "dpmsolver", "prediction_type": "v_prediction", "solver_order": 3, **SIGMA_MIN},
        8,
    ),
    (SA, {"algorithm_type": "noise_prediction", "prediction_type": "epsilon"}, 8),
    (SA, {"algorithm_type": "noise_prediction", "prediction_type": "sample", "flow_shift": 3.0}, 8),
]


@pytest.mark.parametrize("cls, overrides, n", FLOW_NOISE_FORM, ids=lambda v: v if isinstance(v, str) else "")
def test_noise_form_on_flow_sigmas_matches_the_float64_loop(cls, overrides, n):
    """The plan follows diffusers' float64 loop to 1e-5 of max |x|; diffusers' own float32 loop departs from that
    float64 loop by more than the 1e-4 contract, so no float64 plan can be held to it."""
    overrides = {"use_flow_sigmas": True, **overrides}
    compare(cls, overrides, n, mode="float64")
    config = {"_class_name": cls, **overrides}
    plan = interop.from_diffusers(config, n)
    model = model_for(plan)
    x_T = np.random.default_rng(1).standard_normal(SHAPE)
    d64, _ = run_diffusers(config, n, model, x_T, NoiseList(7), {}, float64=True)
    d32, _ = run_diffusers(config, n, model, x_T, NoiseList(7), {}, float64=False)
    assert np.max(np.abs(d32 - d64)) / np.max(np.abs(d64)) > TOL


DIFFUSERS_FAILS = [
    (
        "DPMSolverSinglestepScheduler",
        {"thresholding": True, "algorithm_type": "dpmsolver", **SIGMA_MIN},
        "thresholding",
    ),
    ("EDMDPMSolverMultistepScheduler", {"solver_order": 3, "algorithm_type": "sde-dpmsolver++"}, "solver_order"),
    (INV, {"algorithm_type": "sde-dpmsolver++"}, "algorithm_type"),  # NaN: sqrt(1 - e^{-2h}) with h < 0
    (INV, {"algorithm_type": "sde-dpmsolver", "solver_type": "heun"}, "algorithm_type"),
    (INV, {**FLOW, "algorithm_type": "sde-dpmsolver++", "solver_order": 3}, "solver_order"),
    (INV, {**FLOW, "algorithm_type": "dpmsolver"}, "algorithm_type"),
    (COS, {"solver_order": 3}, "solver_order"),
    (COS, {"prediction_type": "sample"}, "prediction_type"),
    (SA, {"thresholding": True, "algorithm_type": "noise_prediction"}, "thresholding"),
    (SA, {**FLOW, "algorithm_type": "noise_prediction"}, "prediction_type"),
    (COG, {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}, "prediction_type"),  # x0 = (x - eps) / 0
]


@pytest.mark.parametrize("cls, overrides, key", DIFFUSERS_FAILS, ids=lambda v: v if isinstance(v, str) else "")
def test_refusals_where_diffusers_fails(cls, overrides, key):
    """Option values with no counterpart: diffusers 0.42.1 raises, returns NaN or a result not of the sample's
    shape on them, and from_diffusers says so in a ValueError naming the key."""
    config = {"_class_name": cls, **overrides}
    with pytest.raises(ValueError, match=key):
        interop.from_diffusers(config, 8)
    x_T = np.random.default_rng(1).standard_normal(SHAPE)
    try:
        with np.errstate(all="ignore"):
            out, _ = run_diffusers(config, 8, lambda x, t: 0.1 * x, x_T, NoiseList(0), {})
    except Exception:  # noqa: BLE001 - diffusers fails in several ways (AssertionError, UnboundLocalError, ...)
        return
    meaningless = out.shape != x_T.shape or not np.all(np.isfinite(out))
    assert meaningless, "diffusers runs this config: it should not be refused"


@pytest.mark.parametrize(
    "config, match",
    [
        ({"_class_name": SA, "use_beta_sigmas": True, "use_karras_sigmas": True}, "at most one"),
        ({"_class_name": INV, "use_beta_sigmas": True, **FLOW}, "use_flow_sigmas"),
        ({"_class_name": SA, "variance_type": "learned_range"}, "variance_type"),
        ({"_class_name": SA, "tau_func": 0.5}, "tau_func"),
        ({"_class_name": SA, "predictor_order": 5}, "predictor_order"),
        ({"_class_name": INV, "rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
        ({"_class_name": COS, "sigma_schedule": "linear"}, "sigma_schedule"),
        ({"_class_name": COG, "snr_shift_scale": 0.0}, "snr_shift_scale"),
    ],
)
def test_unimplemented_values_raise(config, match):
    with pytest.raises(ValueError, match=match):
        interop.from_diffusers(config, 8)


def test_step_options():
    """CogVideoXDPM accepts the pipeline's eta (ignored by its step, as in diffusers); the other classes take none."""
    x_T = np.random.default_rng(1).standard_normal(SHAPE)
    plan = interop.from_diffusers({"_class_name": COG}, 6, eta=0.7)
    model = model_for(plan)
    np.testing.assert_array_equal(
        plan.run(model, x_T, noise=NoiseList(3)),
        interop.from_diffusers({"_class_name": COG}, 6).run(model, x_T, noise=NoiseList(3)),
    )
    with pytest.raises(ValueError, match="eta"):
        interop.from_diffusers({"_class_name": SA}, 6, eta=0.5)
    with pytest.raises(ValueError, match="noise"):  # stochastic: the noise contract
        plan.run(model, x_T)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("c", [1.0, 1.5, 2.0, -1.0])
def test_adams_weights_integrate_polynomials_exactly(k, c):
    """SA-Solver's weights W_j = int_{-h}^0 e^{cu} l_j(u) du make sum_j W_j p(node_j) the exact integral of e^{cu} p(u)
    for every polynomial p of degree < k: checked against Gauss-Legendre quadrature on random nodes."""
    rng = np.random.default_rng(k)
    h = 0.7
    lam_t = 1.3
    nodes = lam_t - h - np.concatenate([[0.0], np.cumsum(rng.uniform(0.2, 0.8, k - 1))])  # lam_s, lam_{s-1}, ...
    weights = _adams_weights(nodes, lam_t, h, c)
    x, w = np.polynomial.legendre.leggauss(40)
    u = -h / 2 + h / 2 * x
    for degree in range(k):
        p = np.polynomial.Polynomial(rng.standard_normal(degree + 1))
        exact = h / 2 * np.sum(w * np.exp(c * u) * p(u))
        ours = sum(wj * p(nj - lam_t) for wj, nj in zip(weights, nodes))
        np.testing.assert_allclose(ours, exact, rtol=1e-11, atol=1e-13)


def test_sa_solver_ode_converges_to_the_exact_flow_map():
    """With tau = 0 SA-Solver integrates the probability-flow ODE: on Gaussian data, whose flow map is exact, the
    predictor of order 1 with the corrector of order 2 converges at about second order (from 80 to 320 steps the
    error falls by more than 2^(2 x 1.5)); the model reads each step's sigma from the plan."""
    mean, std = np.array([0.5, -1.0]), np.array([0.7, 1.3])
    data = GaussianMixture.gaussian(mean, std)

    def vp(s):
        return 1 / np.sqrt(1 + s * s), s / np.sqrt(1 + s * s)

    errors = []
    for n in (80, 320):
        config = {"_class_name": SA, "tau_func": lambda t: 0.0, "predictor_order": 1, "corrector_order": 2}
        plan = interop.from_diffusers(config, n)
        sigma_of = dict(zip(plan.timesteps.tolist(), plan.sigmas[:-1]))

        def model(x, t, sigma_of=sigma_of):
            alpha, sigma = vp(sigma_of[int(t)])
            return (x - alpha * data.x0_mean(x, alpha, sigma)) / sigma

        x_T = np.random.default_rng(0).standard_normal((256, 2))
        out = plan.run(model, x_T, noise=NoiseList(0))
        exact = gaussian_flow_map(x_T, mean, std, *vp(plan.sigmas[0]), *vp(plan.sigmas[-1]))
        errors.append(np.abs(out - exact).max())
    assert errors[1] < errors[0] / 2 ** (2 * 1.5), errors


@pytest.mark.parametrize("order, rate", [(1, 0.9), (2, 1.4)])
def test_inverse_converges_to_the_exact_flow_map(order, rate):
    """DPMSolverMultistepInverse integrates the probability-flow ODE from data to noise: on Gaussian data, whose
    flow map is exact, its error falls from 20 to 80 steps by more than 4^rate (first order: rate 0.9; second
    order: 1.4, its observed order rising towards 2)."""
    mean, std = np.array([0.5, -1.0]), np.array([0.7, 1.3])
    data = GaussianMixture.gaussian(mean, std)

    def vp(s):
        return 1 / np.sqrt(1 + s * s), s / np.sqrt(1 + s * s)

    errors = []
    for n in (20, 80):
        plan = interop.from_diffusers({"_class_name": INV, "solver_order": order}, n)
        sigma_of = dict(zip(plan.timesteps.tolist(), plan.sigmas[:-1]))

        def model(x, t, sigma_of=sigma_of):
            alpha, sigma = vp(sigma_of[int(t)])
            return (x - alpha * data.x0_mean(x, alpha, sigma)) / sigma

        alpha0, sigma0 = vp(plan.sigmas[0])
        x0, _ = data.sample(256, np.random.default_rng(0))
        x = alpha0 * x0 + sigma0 * np.random.default_rng(1).standard_normal(x0.shape)
        exact = gaussian_flow_map(x, mean, std, alpha0, sigma0, *vp(plan.sigmas[-1]))
        errors.append(np.abs(plan.run(model, x) - exact).max())
    assert errors[1] < errors[0] / 4**rate, errors
