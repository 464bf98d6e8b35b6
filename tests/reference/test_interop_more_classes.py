"""from_diffusers against diffusers' own loops for UnCLIP, DDPMWuerstchen, LTXEulerAncestralRF, SCM, FlowMapEuler,
Helios and HeliosDMD: the same model function and the same recorded draws through both.

These classes' `step`s take what their pipeline passes besides the model output (UnCLIP's prev_timestep,
Wuerstchen's batch of continuous times, sCM's TrigFlow wrapping of a flow transformer, a flow map's second time,
HeliosDMD's start latents), so each diffusers loop (`diffspec.conformance.diffusers_loops.LOOPS`, which the
conformance kit runs too) mirrors the pipeline that drives the class. Final samples
agree to 1e-4 of max |x|. The default run covers each class on its default config and a slice of its options; the
whole matrix runs under HYPOTHESIS_PROFILE=thorough.
"""

import os

import numpy as np
import pytest
from diffspec.conformance.diffusers_loops import LOOPS, helios_loop, latent_shape, oracle_model
from diffspec.conformance.diffusers_loops import model_for as model_of
from diffspec.reference import interop
from diffspec.reference.schedules import Flow
from test_interop import SHAPE, NoiseList, diffusers, torch

TOL = 1e-4
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


# ---- the cases ------------------------------------------------------------------------------------------------------

# (class, config overrides, num_inference_steps, custom set_timesteps inputs, in the default run)
CASES = [
    ("UnCLIPScheduler", {}, 10, {}, True),
    ("UnCLIPScheduler", {"variance_type": "learned_range", "clip_sample": False}, 8, {}, True),
    ("UnCLIPScheduler", {"prediction_type": "sample", "clip_sample_range": 10.0}, 6, {}, True),  # Karlo's prior
    ("UnCLIPScheduler", {"clip_sample_range": 0.5, "num_train_timesteps": 500}, 5, {}, False),
    ("UnCLIPScheduler", {"variance_type": "learned_range", "prediction_type": "sample"}, 5, {}, False),
    ("DDPMWuerstchenScheduler", {}, 10, {}, True),
    ("DDPMWuerstchenScheduler", {"scaler": 2.0}, 6, {}, True),
    ("DDPMWuerstchenScheduler", {"scaler": 0.5, "s": 0.02}, 6, {}, False),
    ("DDPMWuerstchenScheduler", {}, None, {"timesteps": [1.0, 0.6667, 0.3, 0.0]}, True),
    ("DDPMWuerstchenScheduler", {"scaler": 1.5}, 2, {}, False),
    ("LTXEulerAncestralRFScheduler", {}, 10, {}, True),
    ("LTXEulerAncestralRFScheduler", {"eta": 0.0}, 8, {}, True),
    ("LTXEulerAncestralRFScheduler", {"eta": 0.5, "s_noise": 0.9, "shift": 3.0}, 8, {}, True),
    ("LTXEulerAncestralRFScheduler", {"use_dynamic_shifting": True}, 6, {"mu": 0.8}, False),
    ("LTXEulerAncestralRFScheduler", {}, None, {"sigmas": [1.0, 0.9, 0.6, 0.3, 0.1, 0.0]}, True),
    ("LTXEulerAncestralRFScheduler", {"shift_terminal": 0.1, "use_karras_sigmas": True}, 8, {}, False),
    ("LTXEulerAncestralRFScheduler", {"eta": 0.7}, None, {"timesteps": [1.0, 0.8, 0.45, 0.0]}, False),  # as sigmas
    (
        "LTXEulerAncestralRFScheduler",
        {"use_dynamic_shifting": True, "time_shift_type": "linear", "stochastic_sampling": True},  # the last: inert
        6,
        {"mu": 2.0},
        False,
    ),
    ("LTXEulerAncestralRFScheduler", {"s_noise": 0.0}, 6, {}, False),
    ("LTXEulerAncestralRFScheduler", {"use_exponential_sigmas": True, "eta": 1.5}, 6, {}, False),
    ("SCMScheduler", {}, 2, {}, True),
    ("SCMScheduler", {}, 1, {}, False),
    ("SCMScheduler", {}, 4, {}, True),
    ("SCMScheduler", {"sigma_data": 1.0}, 3, {}, False),
    ("SCMScheduler", {}, None, {"timesteps": [1.5708, 1.1, 0.5, 0.0]}, False),
    ("FlowMapEulerDiscreteScheduler", {}, 4, {}, True),
    ("FlowMapEulerDiscreteScheduler", {"shift": 5.0}, 8, {}, True),
    ("FlowMapEulerDiscreteScheduler", {}, 1, {}, False),
    ("FlowMapEulerDiscreteScheduler", {"shift": 3.0}, None, {"sigmas": [1.0, 0.7, 0.7, 0.2]}, False),
    ("FlowMapEulerDiscreteScheduler", {}, None, {"timesteps": [1000.0, 500.0, 250.0]}, False),
    ("HeliosScheduler", {"stages": 1}, 10, {}, True),
    ("HeliosScheduler", {"stages": 1, "scheduler_type": "euler"}, 8, {}, True),
    ("HeliosScheduler", {"stages": 1, "use_dynamic_shifting": True}, 8, {"sigmas": "pipeline", "mu": 0.9}, True),
    ("HeliosScheduler", {"stages": 1, "solver_order": 3, "lower_order_final": False}, 8, {"sigmas": "pipeline"}, False),
    (
        "HeliosScheduler",
        {"stages": 1, "solver_type": "bh1", "disable_corrector": [0, 2]},
        8,
        {"sigmas": "pipeline"},  # from sigma = 1, bh1 is NaN in diffusers
        False,
    ),
    ("HeliosScheduler", {"stages": 1, "solver_order": 1, "shift": 2.0}, 6, {}, False),
    ("HeliosScheduler", {"stages": 1, "gamma": 0.5, "stage_range": [0, 1], "solver_type": "logrho"}, 6, {}, False),
    ("HeliosScheduler", {"stages": 1, "shift": 3.0, "time_shift_type": "linear", "solver_type": "heun"}, 6, {}, False),
    (
        "HeliosScheduler",
        {"stages": 1, "use_dynamic_shifting": True, "time_shift_type": "linear", "solver_order": 3},
        8,
        {"sigmas": "pipeline", "mu": 1.5},
        False,
    ),
    ("HeliosDMDScheduler", {"stages": 1}, 4, {}, True),
    ("HeliosDMDScheduler", {"stages": 1, "shift": 3.0}, 3, {}, True),
    ("HeliosDMDScheduler", {"stages": 1, "use_dynamic_shifting": True}, 4, {"mu": 1.2}, False),
    ("HeliosDMDScheduler", {"stages": 1, "shift": 2.0, "time_shift_type": "exponential"}, 5, {}, False),
    ("HeliosDMDScheduler", {"stages": 1}, 3, {"sigmas": [0.999, 0.75, 0.5, 0.25]}, False),
]


def _custom_inputs(n, custom):
    custom = dict(custom)
    if custom.get("sigmas") == "pipeline":  # what HeliosPipeline passes
        custom["sigmas"] = np.linspace(0.999, 0.0, n + 1)[:-1]
    return custom


@pytest.mark.parametrize(
    "cls, overrides, n, custom",
    [case[:4] for case in CASES if case[4] or THOROUGH],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_plan_matches_the_pipeline_loop(cls, overrides, n, custom):
    config = {"_class_name": cls, "_diffusers_version": "0.42.1", **overrides}
    custom = _custom_inputs(n, custom)
    ours_custom = {k: np.asarray(v) if isinstance(v, list) else v for k, v in custom.items()}
    plan = interop.from_diffusers(config, n, **ours_custom)
    model = model_of(plan)
    shape = latent_shape(cls, SHAPE[0])
    x_T = np.random.default_rng(1).standard_normal(shape)
    ours_noise, theirs_noise = NoiseList(7), NoiseList(7)
    ours = plan.run(model, x_T, noise=ours_noise if plan.stochastic else None)
    sched = getattr(diffusers, cls).from_config(config)
    latents = torch.from_numpy(x_T).float() * getattr(sched, "init_noise_sigma", 1.0)
    theirs, their_ts = LOOPS[cls](sched, model, latents, theirs_noise, {"n": n, **custom})
    theirs = theirs.double().numpy()
    assert len(ours_noise.drawn) == len(theirs_noise.drawn)
    np.testing.assert_allclose(plan.timesteps, their_ts.double().numpy(), rtol=2e-6, atol=1e-6)
    assert np.all(np.isfinite(ours))
    dev = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    assert dev < TOL, f"{cls}: max deviation {dev:.2e} of max |x|"


# ---- what each plan promises beyond agreement ------------------------------------------------------------------------


def test_flow_map_plan_is_exact_for_an_exact_flow_map():
    """With the exact flow map of a Gaussian (the mean velocity over [r, t] in closed form), one step from pure
    noise lands on the ODE solution: x_r = (1 - r) mu + sqrt((1 - r)^2 s^2 + r^2) z for x_1 = mu + sqrt(1 + ...) z,
    where z is the standardised start."""
    mu, s = 0.7, 0.4
    T = 1000

    def std(t):
        return np.sqrt((1 - t) ** 2 * s**2 + t**2)

    def exact_map(x, t_step, r_step):
        t, r = float(t_step) / T, float(r_step) / T
        z = (x - (1 - t) * mu) / std(t)
        x_r = (1 - r) * mu + std(r) * z
        return (x - x_r) / (t - r)

    x_T = np.random.default_rng(3).standard_normal((200, 1, 1, 1))
    for n in (1, 3):
        plan = interop.from_diffusers({"_class_name": "FlowMapEulerDiscreteScheduler", "shift": 2.0}, n)
        out = plan.run(exact_map, x_T)
        np.testing.assert_allclose(out, mu + s * x_T, rtol=1e-12, atol=1e-12)
    assert plan.r_timesteps[-1] == 0.0 and np.all(plan.r_timesteps < plan.timesteps)


def test_scm_plan_returns_the_data_for_an_exact_model():
    """For a point mass (data = mu everywhere), the exact velocity is u = (x - mu) / t - ... : every x0 estimate is
    mu, so sCM's loop returns mu whatever the noise."""
    mu = np.array([0.3, -1.2]).reshape(1, 2, 1, 1)

    def velocity(x, t):  # x = (1 - t) mu + t eps, u = eps - mu = (x - mu) / t
        return (x - mu) / float(np.asarray(t))

    for n in (1, 2, 5):
        plan = interop.from_diffusers({"_class_name": "SCMScheduler"}, n)
        out = plan.run(velocity, np.random.default_rng(0).standard_normal(SHAPE), noise=np.random.default_rng(1))
        # to float32 rounding: the model sees the flow time t in float32, as diffusers computes it
        np.testing.assert_allclose(out, np.broadcast_to(mu, SHAPE), rtol=0, atol=1e-5)


def test_wuerstchen_schedule_inverts_on_its_unclamped_part():
    for scaler in (0.5, 1.0, 2.0):
        sched = interop.from_diffusers({"_class_name": "DDPMWuerstchenScheduler", "scaler": scaler}, 3).schedule
        t = np.linspace(0.0, 1.0, 101)
        abar = sched.alphas_cumprod(t)
        t = t[(abar > 2e-4) & (abar < 0.9998)]  # away from the clamp
        assert len(t) > 50
        np.testing.assert_allclose(sched.t_of_lam(sched.lam(t)), t, rtol=1e-9, atol=1e-12)
        abar = sched.alphas_cumprod(np.array([0.0, 1.0]))
        np.testing.assert_allclose(abar, [0.9999, 1e-4])  # the clamp diffusers applies


@pytest.mark.parametrize("overrides", [{"solver_type": "bh1"}, {"solver_order": 3}])
def test_helios_unipc_from_sigma_one_is_nan_in_diffusers_and_refused(overrides):
    config = {"_class_name": "HeliosScheduler", "stages": 1, **overrides}
    model = oracle_model(Flow(), "flow_prediction", lambda ts: ts / 1000)
    x_T = torch.from_numpy(np.random.default_rng(1).standard_normal(SHAPE)).float()
    theirs, _ = helios_loop(diffusers.HeliosScheduler.from_config(config), model, x_T, None, {"n": 6})
    assert torch.isnan(theirs).all()
    with pytest.raises(ValueError, match="first sigma of 1: diffusers 0.42.1 returns NaN"):
        interop.from_diffusers(config, 6)
    assert interop.from_diffusers(config, 6, sigmas=np.linspace(0.999, 0.0, 7)[:-1]).sigmas[0] == 0.999


def test_unclip_learned_range_reads_the_variance_half():
    plan = interop.from_diffusers({"_class_name": "UnCLIPScheduler", "variance_type": "learned_range"}, 4)
    assert plan.learned_variance
    with pytest.raises(ValueError, match="variance output"):
        plan.run(lambda x, t: x, np.zeros(SHAPE), noise=np.random.default_rng(0))


# ---- refusals ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["HeliosScheduler", "HeliosDMDScheduler"])
def test_helios_pyramid_has_no_counterpart(cls):
    for config in ({"_class_name": cls}, {"_class_name": cls, "stages": 2, "stage_range": [0, 0.5, 1]}):
        with pytest.raises(ValueError, match=r"'stages'\]=\d: no counterpart in diffspec: .*own spatial resolution"):
            interop.from_diffusers(config, 4)


@pytest.mark.parametrize(
    "config, n, custom, match",
    [
        ({"_class_name": "UnCLIPScheduler", "beta_schedule": "linear"}, 4, {}, "beta_schedule"),
        ({"_class_name": "UnCLIPScheduler", "prediction_type": "v_prediction"}, 4, {}, "prediction_type"),
        ({"_class_name": "UnCLIPScheduler"}, 1, {}, "num_inference_steps=1"),
        ({"_class_name": "DDPMWuerstchenScheduler"}, None, {"timesteps": [0.2, 0.5, 0.0]}, "decreasing"),
        ({"_class_name": "DDPMWuerstchenScheduler"}, 3, {"timesteps": [1.0, 0.0]}, "num_inference_steps"),
        ({"_class_name": "LTXEulerAncestralRFScheduler", "invert_sigmas": True}, 4, {}, "invert_sigmas"),
        ({"_class_name": "LTXEulerAncestralRFScheduler"}, 4, {"mu": 0.5}, "mu"),
        ({"_class_name": "LTXEulerAncestralRFScheduler"}, 3, {"sigmas": [1.0, 0.5, 0.0]}, "num_inference_steps=3"),
        ({"_class_name": "LTXEulerAncestralRFScheduler", "eta": -1.0}, 4, {}, "eta"),
        ({"_class_name": "LTXEulerAncestralRFScheduler"}, None, {"sigmas": [1.0, 0.0, 0.0]}, "positive"),
        ({"_class_name": "SCMScheduler", "prediction_type": "epsilon"}, 2, {}, "prediction_type"),
        ({"_class_name": "SCMScheduler"}, 2, {"timesteps": [1.5, 0.0]}, "timesteps"),
        ({"_class_name": "SCMScheduler"}, 4, {"sigmas": [1.0, 0.0]}, "sigmas"),
        ({"_class_name": "FlowMapEulerDiscreteScheduler"}, 2, {"sigmas": [1.0, 0.5, 0.2]}, "sigmas"),
        ({"_class_name": "FlowMapEulerDiscreteScheduler"}, 2, {"mu": 1.0}, "mu"),
        ({"_class_name": "HeliosScheduler", "stages": 1, "thresholding": True}, 4, {}, "thresholding"),
        ({"_class_name": "HeliosScheduler", "stages": 1, "predict_x0": False}, 4, {}, "predict_x0"),
        ({"_class_name": "HeliosScheduler", "stages": 1, "scheduler_type": "dmd"}, 4, {}, "scheduler_type"),
        ({"_class_name": "HeliosScheduler", "stages": 1, "use_flow_sigmas": False}, 4, {}, "use_flow_sigmas"),
        ({"_class_name": "HeliosScheduler", "stages": 1, "solver_p": "x"}, 4, {}, "solver_p"),
        ({"_class_name": "HeliosScheduler", "stages": 1}, 4, {"mu": 0.5}, "mu"),
        ({"_class_name": "HeliosScheduler", "stages": 1, "use_dynamic_shifting": True}, 4, {}, "mu=None"),
        (
            {"_class_name": "HeliosDMDScheduler", "stages": 1, "use_dynamic_shifting": True, "shift": 2.0},
            4,
            {"mu": 1.0},
            "shift",
        ),  # fmt: skip
        ({"_class_name": "HeliosDMDScheduler", "stages": 1, "prediction_type": "epsilon"}, 4, {}, "prediction_type"),
        ({"_class_name": "HeliosScheduler", "stages": 1}, 2, {"sigmas": np.array([0.9, 0.0])}, "sigmas"),
    ],
)
def test_unimplemented_options_raise(config, n, custom, match):
    with pytest.raises(ValueError, match=match):
        interop.from_diffusers(config, n, **custom)


def test_every_class_here_runs_on_its_default_config_or_refuses_it():
    """Each class is compared with its pipeline on its default config in the default run, except Helios's, whose
    default (stages=3) is the pyramid sampler, refused above with the reason (ScoreSdeVe's pipeline loop runs in
    test_interop_classes)."""
    defaults = {cls for cls, overrides, _, custom, default in CASES if default and not overrides and not custom}
    assert sorted(set(LOOPS) - defaults - {"ScoreSdeVeScheduler"}) == ["HeliosDMDScheduler", "HeliosScheduler"]
    assert set(LOOPS) <= set(interop.SUPPORTED_CLASSES)
    assert not set(LOOPS) & set(interop.REFUSED)


# ---- the plans are the reference's samplers, plus the departures their docstrings name -------------------------------


def _denoiser_at_plan_times(plan, model, to_x0):
    """A reference denoiser (x, t) -> x0 that calls `model` at the plan's own timestep for the grid time t."""
    times = {float(s): t for s, t in zip(plan.sigmas, plan.timesteps)}

    def denoise(x, t):
        return to_x0(x, t, model(x, np.asarray(times[float(t)])))

    return denoise


def test_ltx_without_noise_is_the_reference_ddim_on_the_flow():
    from diffspec.reference.samplers import get_sampler

    plan = interop.from_diffusers({"_class_name": "LTXEulerAncestralRFScheduler", "eta": 0.0, "shift": 3.0}, 8)
    model = model_of(plan)
    x_T = np.random.default_rng(2).standard_normal(SHAPE)
    denoise = _denoiser_at_plan_times(plan, model, lambda x, s, u: x - s * u)
    ref = get_sampler("ddim")(denoise, x_T, plan.sigmas, Flow())
    np.testing.assert_allclose(plan.run(model, x_T), ref, rtol=1e-10, atol=1e-12)


def test_flow_map_with_a_velocity_model_is_the_reference_flow_euler():
    from diffspec.reference.samplers import get_sampler

    plan = interop.from_diffusers({"_class_name": "FlowMapEulerDiscreteScheduler", "shift": 2.0}, 6)
    u = oracle_model(Flow(), "flow_prediction", lambda ts: ts / 1000)
    x_T = np.random.default_rng(2).standard_normal(SHAPE)
    denoise = _denoiser_at_plan_times(plan, u, lambda x, s, v: x - s * v)
    ref = get_sampler("flow_euler")(denoise, x_T, plan.sigmas, Flow())
    np.testing.assert_allclose(plan.run(lambda x, t, r: u(x, t), x_T), ref, rtol=1e-10, atol=1e-12)


def test_helios_unipc_is_the_reference_unipc_on_the_flow():
    """Up to Helios's clamp sigma >= 1e-8 on the last step (the reference lands on the clean end exactly)."""
    from diffspec.reference.samplers import get_sampler

    n = 10
    config = {"_class_name": "HeliosScheduler", "stages": 1}
    plan = interop.from_diffusers(config, n, sigmas=np.linspace(0.999, 0.0, n + 1)[:-1])
    model = model_of(plan)
    x_T = np.random.default_rng(2).standard_normal(SHAPE)
    denoise = _denoiser_at_plan_times(plan, model, lambda x, s, u: x - s * u)
    ref = get_sampler("unipc")(denoise, x_T, plan.sigmas, Flow(), order=2, variant="bh2")
    np.testing.assert_allclose(plan.run(model, x_T), ref, rtol=1e-6, atol=1e-7)


def test_wuerstchen_is_the_reference_ddpm_on_its_schedule():
    """The same draws: the plan's extra draw on the last step is multiplied by 0."""
    from diffspec.reference.samplers import get_sampler

    plan = interop.from_diffusers({"_class_name": "DDPMWuerstchenScheduler", "scaler": 1.5}, 10)
    sched, model = plan.schedule, model_of(plan)
    times = np.append(plan.timesteps.astype(np.float64), 0.0)
    x_T = np.random.default_rng(2).standard_normal(SHAPE)

    def denoise(x, t):
        return (x - sched.sigma(t) * model(x, np.float32(t))) / sched.alpha(t)

    ref = get_sampler("ddpm")(denoise, x_T, times, sched, noise=np.random.default_rng(4))
    ours = plan.run(model, x_T, noise=np.random.default_rng(4))
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-10)
