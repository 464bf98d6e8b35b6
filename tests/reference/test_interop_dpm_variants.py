"""from_diffusers against diffusers for the DPM-Solver variants and SA-Solver: CogVideoXDPMScheduler,
DPMSolverMultistepInverseScheduler, CosineDPMSolverMultistepScheduler and SASolverScheduler.

The same oracle model and the same recorded draws go through both loops (the machinery of test_interop); final
samples agree to 1e-4 of max |x|. The default run covers each class on its default config and a slice of its
options; HYPOTHESIS_PROFILE=thorough runs the full option matrix.
"""

import contextlib
import dataclasses
import importlib
import itertools
import math
import os

import numpy as np
import pytest
from diffspec.reference import interop
from diffspec.reference.interop.sa_solver import _adams_weights

from tests.reference.test_interop import MIX, SHAPE, BrownianPath, NoiseList, model_for

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

TOL = 1e-4
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
_MODULES = ("scheduling_sasolver", "scheduling_dpmsolver_multistep_inverse", "scheduling_dpm_cogvideox")


@contextlib.contextmanager
def routed_randn(source):
    """Route `randn_tensor` of these classes' modules to `source`."""
    mods = [importlib.import_module(f"diffusers.schedulers.{name}") for name in _MODULES]
    saved = [m.randn_tensor for m in mods]

    def fake(shape, generator=None, device=None, dtype=None, layout=None):
        return torch.from_numpy(source(tuple(shape))).to(dtype or torch.float32)

    for m in mods:
        m.randn_tensor = fake
    try:
        yield
    finally:
        for m, fn in zip(mods, saved):
            m.randn_tensor = fn


def cosine_oracle_model(schedule, prediction_type):
    """CosineDPMSolverMultistep's network: input x / sqrt(sigma^2 + sd^2), timestep atan(sigma) 2 / pi, output F
    with x0 = c_skip x + c_out F (c_out negated for v_prediction), x0 the exact denoiser at sigma."""
    den, sd = MIX.denoiser(dataclasses.replace(schedule, sigma_max=2 * schedule.sigma_max)), schedule.sigma_data

    def model(x_in, timestep):
        s = math.tan(float(np.asarray(timestep, dtype=np.float64)) * math.pi / 2)
        x = x_in * np.sqrt(s**2 + sd**2)
        x0 = den(x.reshape(x.shape[0], -1), s).reshape(x.shape)
        c_out = s * sd / np.sqrt(s**2 + sd**2) * (-1.0 if prediction_type == "v_prediction" else 1.0)
        return (x0 - sd**2 / (s**2 + sd**2) * x) / c_out

    return model


def run_diffusers(config, n, model, x_T, noise, step_kwargs):
    """diffusers' loop for these classes: CogVideoXDPM's own step signature (the previous x0 and grid time, as the
    CogVideoX pipeline calls it), CosineDPM's Brownian tree replaced by a path fed from `noise`."""
    sched = getattr(diffusers, config["_class_name"]).from_config(config)
    sched.set_timesteps(n)
    name = config["_class_name"]
    if name == "CosineDPMSolverMultistepScheduler":
        sched.noise_sampler = BrownianPath(noise, x_T.shape)
    latents = torch.from_numpy(x_T).float() * sched.init_noise_sigma
    timesteps, old_x0 = [], None
    with routed_randn(noise):
        for i, t in enumerate(sched.timesteps):
            timesteps.append(t.item())
            out = torch.from_numpy(model(sched.scale_model_input(latents, t).double().numpy(), t.numpy())).float()
            if name == "CogVideoXDPMScheduler":
                back = sched.timesteps[i - 1] if i > 0 else None
                latents, old_x0 = sched.step(out, old_x0, t, back, latents, **step_kwargs, return_dict=False)
            else:
                latents = sched.step(out, t, latents, **step_kwargs).prev_sample
    return latents.double().numpy(), np.array(timesteps)


def compare(cls, overrides, n, step_options=None):
    step_options = step_options or {}
    config = {"_class_name": cls, "_diffusers_version": "0.42.1", **overrides}
    plan = interop.from_diffusers(config, n, **step_options)
    if cls == "CosineDPMSolverMultistepScheduler":
        model = cosine_oracle_model(plan.schedule, plan.prediction_type)
    else:
        model = model_for(plan)
    x_T = np.random.default_rng(1).standard_normal(SHAPE)
    ours_noise, theirs_noise = NoiseList(7), NoiseList(7)
    ours = plan.run(model, x_T, noise=ours_noise if plan.stochastic else None)
    theirs, their_ts = run_diffusers(config, n, model, x_T, theirs_noise, step_options)
    assert len(ours_noise.drawn) == len(theirs_noise.drawn)
    np.testing.assert_allclose(np.asarray(plan.timesteps, dtype=np.float64), their_ts, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(ours))
    dev = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    assert dev < TOL, f"{cls} {overrides} n={n}: max deviation {dev:.2e} of max |x|"


SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
COG = "CogVideoXDPMScheduler"
INV = "DPMSolverMultistepInverseScheduler"
COS = "CosineDPMSolverMultistepScheduler"
SA = "SASolverScheduler"

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
    (
        INV,
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True, "thresholding": True, "sample_max_value": 1.5},
        8,
        {},
    ),
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
            "final_sigmas_type": "sigma_min",
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
]


@pytest.mark.parametrize("cls, overrides, n, step_options", CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_plan_matches_diffusers_loop(cls, overrides, n, step_options):
    compare(cls, overrides, n, step_options)
