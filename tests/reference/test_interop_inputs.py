"""from_diffusers with what pipelines pass to set_timesteps (custom sigmas, timesteps, mu) and FlowMatchEuler's options,
against diffusers' own loop with the same model and draws (at 1e-4 of max |x|, as in test_interop)."""

import numpy as np
import pytest
from diffspec.conformance.diffusers_loops import run_pipeline
from diffspec.reference import interop
from test_interop import SHAPE, TOL, NoiseList, diffusers, model_for

FLUX = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def run_diffusers(config, n, model, x_T, noise, **set_timesteps):
    sched = getattr(diffusers, config["_class_name"]).from_config(config)
    return run_pipeline(sched, model, x_T, noise, n, set_timesteps=set_timesteps)


def compare(config, n, custom, *, seed):
    """Run the plan and diffusers' loop with the same set_timesteps inputs, model and draws; check draws, model
    timesteps and the final sample (to TOL of max |x|)."""
    plan = interop.from_diffusers(config, n, **custom)
    model = model_for(plan)
    x_T = np.random.default_rng(seed).standard_normal(SHAPE)
    ours_noise, theirs_noise = NoiseList(seed + 1), NoiseList(seed + 1)
    ours = plan.run(model, x_T, noise=ours_noise if plan.stochastic else None)
    theirs, their_ts = run_diffusers(config, n, model, x_T, theirs_noise, **custom)
    assert len(ours_noise.drawn) == len(theirs_noise.drawn)
    np.testing.assert_allclose(plan.timesteps, their_ts, rtol=2e-5, atol=1e-3)
    dev = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    assert dev < TOL, f"{config['_class_name']} {sorted(custom)}: max deviation {dev:.2e} of max |x|"


SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
FLOW_UNIPC = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
# What pipelines pass to set_timesteps besides num_inference_steps, in every other class that accepts it
CUSTOM_CASES = [
    ("EulerDiscreteScheduler", {}, {"timesteps": [999.0, 800.0, 600.0, 350.0, 100.0, 10.0]}),
    (
        "EulerDiscreteScheduler",
        {**SD, "prediction_type": "v_prediction"},
        {"sigmas": [14.6, 8.0, 3.0, 1.0, 0.3, 0.05, 0.0]},
    ),
    ("HeunDiscreteScheduler", {}, {"timesteps": [999.0, 700.0, 400.0, 100.0]}),
    ("DDPMScheduler", {}, {"timesteps": [999, 750, 500, 250, 0]}),
    ("DDPMParallelScheduler", {"variance_type": "fixed_large"}, {"timesteps": [900, 600, 300, 50]}),
    ("DPMSolverMultistepScheduler", {}, {"timesteps": [999, 800, 600, 400, 200, 50]}),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3}, {"timesteps": [999, 850, 700, 500, 300, 150, 20]}),
    ("UniPCMultistepScheduler", {**FLOW_UNIPC, "flow_shift": 3.0}, {"sigmas": [1.0, 0.8, 0.6, 0.4, 0.2]}),
    ("EDMEulerScheduler", {}, {"sigmas": [0.0, 0.2, 0.5, 0.7, 0.9, 1.0]}),
    ("CMStochasticIterativeScheduler", {}, {"timesteps": [38, 20, 5]}),  # index 39 is sigma_min, where c_out = 0
    ("MiniMaxH3Scheduler", {}, {"sigmas": [1.0, 0.7, 0.4, 0.1, 0.0]}),
    ("LCMScheduler", {}, {"timesteps": [999, 759, 499, 259]}),
    ("TCDScheduler", {}, {"timesteps": [999, 799, 499, 199, 19]}),
    ("FlowMatchLCMScheduler", {"shift": 3.0}, {"timesteps": [1000.0, 800.0, 500.0, 200.0]}),
    ("FlowMatchLCMScheduler", {"invert_sigmas": True}, {"sigmas": [0.9, 0.6, 0.3]}),  # the model never at sigma = 0
    # diffusers keeps only the count of these timesteps and steps on the flow grid of that many steps
    ("DPMSolverSinglestepScheduler", {**FLOW_UNIPC, "flow_shift": 3.0}, {"timesteps": [999, 700, 400, 100, 50]}),
    # custom sigmas are the ends of UniPC's Karras grid, from the last to the first
    ("UniPCMultistepScheduler", {**FLOW_UNIPC, "use_karras_sigmas": True}, {"sigmas": [0.03, 0.5, 2.0, 14.0, 80.0]}),
    ("UniPCMultistepScheduler", {**FLOW_UNIPC, "use_karras_sigmas": True}, {"sigmas": [9.0, 3.0, 1.0, 0.3]}),
]


@pytest.mark.parametrize(
    "cls, overrides, custom", CUSTOM_CASES, ids=[f"{c[0]}-{sorted(c[2])[0]}" for c in CUSTOM_CASES]
)
def test_custom_timesteps_and_sigmas_match_diffusers(cls, overrides, custom):
    compare({"_class_name": cls, **overrides}, None, custom, seed=3)


@pytest.mark.parametrize(
    "cls, overrides, n, custom, match",
    [
        ("EulerDiscreteScheduler", {}, 4, {"timesteps": [900.0, 500.0]}, "exactly one"),
        ("EulerDiscreteScheduler", {}, None, {"timesteps": [900.0], "sigmas": [1.0, 0.0]}, "not both"),
        ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, None, {"timesteps": [900.0]}, "karras sigmas"),
        ("DDPMScheduler", {}, None, {"timesteps": [500, 700]}, "strictly decreasing"),
        ("DDPMScheduler", {}, None, {"timesteps": [1000, 700]}, r"\[0, 999\]"),
        ("UniPCMultistepScheduler", {}, None, {"sigmas": [1.0, 0.5]}, "use_flow_sigmas only"),
        ("MiniMaxH3Scheduler", {}, None, {"sigmas": [1.0, 0.5]}, "ending at 0"),
        ("DPMSolverMultistepScheduler", FLOW_UNIPC, None, {"timesteps": [900, 500]}, "fails on them"),
    ],
)
def test_refused_custom_inputs_say_why(cls, overrides, n, custom, match):
    with pytest.raises(ValueError, match=match):
        interop.from_diffusers({"_class_name": cls, **overrides}, n, **custom)


@pytest.mark.parametrize(
    "cls, overrides, n, grid_T",
    [
        ("HeunDiscreteScheduler", {}, 6, 500),
        ("KDPM2DiscreteScheduler", {"timestep_spacing": "leading", "steps_offset": 1}, 5, 600),
        ("KDPM2AncestralDiscreteScheduler", {"timestep_spacing": "trailing"}, 5, 900),
        ("DPMSolverSDEScheduler", {}, 4, 800),
    ],
)
def test_set_timesteps_num_train_timesteps_matches_diffusers(cls, overrides, n, grid_T):
    if cls == "DPMSolverSDEScheduler":
        pytest.importorskip("torchsde")  # diffusers imports it with the class
    compare({"_class_name": cls, **overrides}, n, {"num_train_timesteps": grid_T}, seed=4)


@pytest.mark.parametrize("cls, n, orig", [("LCMScheduler", 4, 20), ("TCDScheduler", 5, 30)])
def test_set_timesteps_original_inference_steps_matches_diffusers(cls, n, orig):
    compare({"_class_name": cls}, n, {"original_inference_steps": orig}, seed=5)


@pytest.mark.parametrize(
    "cls, n, custom",
    [
        ("LCMScheduler", 4, {"strength": 0.6}),
        ("TCDScheduler", 4, {"strength": 0.5, "original_inference_steps": 50}),
    ],
)
def test_set_timesteps_strength_matches_diffusers(cls, n, custom):
    compare({"_class_name": cls}, n, custom, seed=6)


@pytest.mark.parametrize(
    "cls, timesteps, strength",
    [
        ("LCMScheduler", [999, 759, 499, 259, 19], 0.6),
        ("LCMScheduler", [999, 499], 0.5),
        ("TCDScheduler", [999, 799, 499, 199, 19], 0.7),
    ],
)
def test_strength_with_custom_timesteps_matches_the_pipeline_loop(cls, timesteps, strength):
    """diffusers keeps the last int(N strength) custom timesteps but its step still counts N, so its last kept
    step re-noises (LCM at its own timestep, TCD by a draw times 0); the LCM pipelines return the denoised sample."""
    compare({"_class_name": cls}, None, {"timesteps": timesteps, "strength": strength}, seed=7)
    sched = getattr(diffusers, cls).from_config({"_class_name": cls})
    sched.set_timesteps(timesteps=timesteps, strength=strength)
    assert len(sched.timesteps) == int(len(timesteps) * strength) < sched.num_inference_steps


def test_strength_keeping_no_custom_timestep_is_refused():
    with pytest.raises(ValueError, match="strength=0.4: int"):
        interop.from_diffusers({"_class_name": "LCMScheduler"}, None, timesteps=[999, 499], strength=0.4)


def test_set_timesteps_options_name_the_classes_that_take_them():
    with pytest.raises(ValueError, match="HeunDiscreteScheduler.*not EulerDiscreteScheduler"):
        interop.from_diffusers({"_class_name": "EulerDiscreteScheduler"}, 4, num_train_timesteps=500)
    with pytest.raises(ValueError, match="sampling_eps=0.1: a set_timesteps argument of ScoreSdeVeScheduler, not"):
        interop.from_diffusers({"_class_name": "HeunDiscreteScheduler"}, 4, sampling_eps=0.1)
    with pytest.raises(ValueError, match="strength=0.2: int"):
        interop.from_diffusers({"_class_name": "LCMScheduler"}, 20, strength=0.2)  # 10 distillation times < 20
    with pytest.raises(ValueError, match="at most original_inference_steps=8"):
        interop.from_diffusers({"_class_name": "TCDScheduler"}, 10, original_inference_steps=8)


def test_dpm_multistep_fails_in_diffusers_on_timesteps_with_flow_sigmas():
    """The refusal's reason: diffusers 0.42.1 builds the flow grid from num_inference_steps, None here."""
    sched = diffusers.DPMSolverMultistepScheduler.from_config(FLOW_UNIPC)
    with pytest.raises(TypeError):
        sched.set_timesteps(timesteps=[900, 500])


CASES = [
    ("flux_sigmas_and_mu", FLUX, None, {"sigmas": list(np.linspace(1.0, 1 / 8, 8)), "mu": 0.8}),
    ("dynamic_linear", {**FLUX, "time_shift_type": "linear"}, 10, {"mu": 2.0}),
    ("ltx_shift_terminal", {**FLUX, "shift_terminal": 0.1}, 12, {"mu": 1.2}),
    ("custom_timesteps", {"shift": 3.0}, None, {"timesteps": [999.0, 900.0, 700.0, 400.0, 150.0]}),
    ("sigmas_and_timesteps", {"shift": 1.0}, 4, {"sigmas": [1.0, 0.7, 0.4, 0.1], "timesteps": [1000, 700, 400, 100]}),
    ("karras", {"shift": 3.0, "use_karras_sigmas": True}, 10, {}),
    ("exponential", {"shift": 2.0, "use_exponential_sigmas": True}, 9, {}),
    ("invert_sigmas", {"shift": 1.0, "invert_sigmas": True}, None, {"sigmas": [0.9, 0.6, 0.3]}),
    ("stochastic_dynamic", {**FLUX, "stochastic_sampling": True}, 6, {"mu": 0.5}),
]


@pytest.mark.parametrize("name, overrides, n, custom", CASES, ids=[c[0] for c in CASES])
def test_flow_match_inputs_match_diffusers(name, overrides, n, custom):
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.42.1", **overrides}
    compare(config, n, custom, seed=2)


@pytest.mark.parametrize(
    "config, n, custom, match",
    [
        ({"_class_name": "FlowMatchEulerDiscreteScheduler", **FLUX}, 8, {}, "mu=None"),
        ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}, 8, {"mu": 0.5}, "mu=0.5"),
        ({"_class_name": "FlowMatchEulerDiscreteScheduler"}, None, {}, "num_inference_steps=None"),
        ({"_class_name": "FlowMatchEulerDiscreteScheduler"}, 3, {"sigmas": [1.0, 0.5]}, "num_inference_steps=3"),
        (
            {"_class_name": "FlowMatchEulerDiscreteScheduler"},
            None,
            {"sigmas": [1.0, 0.5], "timesteps": [900.0]},
            "same length",
        ),
        (
            {"_class_name": "FlowMatchEulerDiscreteScheduler", "use_beta_sigmas": True, "use_exponential_sigmas": True},
            8,
            {},
            "use_exponential_sigmas=True, use_beta_sigmas=True",
        ),
        ({"_class_name": "DDIMScheduler"}, 8, {"sigmas": [1.0, 0.5]}, "sigmas="),
        ({"_class_name": "EulerDiscreteScheduler"}, 8, {"mu": 0.5}, "mu="),
    ],
)
def test_refused_inputs_name_the_argument(config, n, custom, match):
    with pytest.raises(ValueError, match=match):
        interop.from_diffusers(config, n, **custom)


DYNAMIC_CASES = [
    ("UniPCMultistepScheduler", {"time_shift_type": "exponential"}, 10, 1.1),
    ("UniPCMultistepScheduler", {"time_shift_type": "linear"}, 8, 2.0),
    ("DPMSolverMultistepScheduler", {}, 10, 0.9),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3}, 9, 1.3),
    ("DEISMultistepScheduler", {}, 8, 0.7),
]
DYNAMIC = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "use_dynamic_shifting": True}


@pytest.mark.parametrize("cls, overrides, n, mu", DYNAMIC_CASES)
def test_dynamic_flow_shift_with_mu_matches_diffusers(cls, overrides, n, mu):
    config = {"_class_name": cls, **DYNAMIC, **overrides}
    plan = interop.from_diffusers(config, n, mu=mu)
    model = model_for(plan)
    x_T = np.random.default_rng(4).standard_normal(SHAPE)
    ours = plan.run(model, x_T)
    theirs, their_ts = run_diffusers(config, n, model, x_T, NoiseList(0), mu=mu)
    np.testing.assert_allclose(plan.timesteps, their_ts, atol=1.0)  # int64 of a float32 T sigma may truncate lower
    assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < TOL


FLOW_MATCH_LCM_CUSTOM = {"sigmas": list(np.linspace(1.0, 0.25, 4)), "mu": 0.7}


def test_flow_match_lcm_takes_the_same_inputs():
    config = {"_class_name": "FlowMatchLCMScheduler", **FLUX}
    custom = FLOW_MATCH_LCM_CUSTOM
    plan = interop.from_diffusers(config, **custom)
    model = model_for(plan)
    x_T = np.random.default_rng(6).standard_normal(SHAPE)
    ours_noise, theirs_noise = NoiseList(8), NoiseList(8)
    ours = plan.run(model, x_T, noise=ours_noise)
    theirs, their_ts = run_diffusers(config, None, model, x_T, theirs_noise, **custom)
    assert len(ours_noise.drawn) == len(theirs_noise.drawn) == 4
    np.testing.assert_allclose(plan.timesteps, their_ts, rtol=2e-5, atol=1e-3)
    assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < TOL


# Every (class, config overrides, custom set_timesteps inputs) this module runs against diffusers, for the coverage
# test in test_interop_classes
EXERCISED = (
    [("FlowMatchEulerDiscreteScheduler", overrides, set(custom)) for _, overrides, _, custom in CASES]
    + [(cls, {**DYNAMIC, **overrides}, {"mu"}) for cls, overrides, _, _ in DYNAMIC_CASES]
    + [(cls, overrides, set(custom)) for cls, overrides, custom in CUSTOM_CASES]
    + [("FlowMatchLCMScheduler", FLUX, set(FLOW_MATCH_LCM_CUSTOM))]
)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest", "nearest-exact", "area"])
def test_flow_match_lcm_scale_factors_match_diffusers(mode):
    """FlowMatchLCM resizes x0 between steps (torch's interpolate): the sample and the draws grow with it."""
    config = {
        "_class_name": "FlowMatchLCMScheduler",
        "shift": 2.0,
        "scale_factors": [1.5, 2.0, 2.5],
        "upscale_mode": mode,
    }
    plan = interop.from_diffusers(config, 4)

    def model(x, timestep):  # any smooth elementwise velocity: the two loops see the same one
        return np.tanh(0.5 * x) + 1e-3 * float(np.asarray(timestep))

    x_T = np.random.default_rng(5).standard_normal((3, 2, 5, 4))
    ours_noise, theirs_noise = NoiseList(6), NoiseList(6)
    ours = plan.run(model, x_T, noise=ours_noise)
    theirs, _ = run_diffusers(config, 4, model, x_T, theirs_noise)
    assert ours.shape == theirs.shape == (3, 2, 12, 10)
    assert [z.shape for z in ours_noise.drawn] == [z.shape for z in theirs_noise.drawn]
    assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < TOL


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"scale_factors": [1.5, 2.0], "upscale_mode": "bicubic"}, "one per step but the last"),
        ({"scale_factors": [1.5, 2.0, 2.5], "upscale_mode": "linear"}, "resizes 1 spatial axes"),
        ({"scale_factors": [1.5, 2.0, 2.5], "upscale_mode": "lanczos"}, "upscale_mode"),
    ],
)
def test_flow_match_lcm_scale_factors_refusals(overrides, match):
    config = {"_class_name": "FlowMatchLCMScheduler", **overrides}
    with pytest.raises(ValueError, match=match):
        interop.from_diffusers(config, 4).run(lambda x, t: x, np.zeros((1, 1, 3, 3)), noise=NoiseList(0))
