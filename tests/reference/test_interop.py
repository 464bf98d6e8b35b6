"""from_diffusers against diffusers itself: the same model function and the same noise through both loops.

diffusers runs in torch float32 (its own loop run in float64 moves final samples by up to 6e-5 of max |x|), so
final samples are compared at 1e-4 relative to max |x|. The model is the Gaussian-mixture oracle's exact denoiser,
converted to the config's prediction type at the schedule time that the diffusers timestep names.
"""

import os

import numpy as np
import pytest
from diffspec.conformance.diffusers_loops import (  # noqa: F401 (the other interop tests import them from here)
    MIX,
    BrownianPath,
    model_for,
    oracle_model,
    run_pipeline,
)
from diffspec.conformance.diffusers_loops import routed_randn as patched_randn  # noqa: F401
from diffspec.reference import interop
from diffspec.reference.schedules import make_schedule

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHAPE = (64, 2, 1, 1)
TOL = 1e-4
PARAM = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "flow_prediction": "flow"}


class NoiseList:
    """A seeded source that both loops consume in order; records shapes."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.drawn = []

    def __call__(self, shape):
        z = self.rng.standard_normal(tuple(shape))
        self.drawn.append(z)
        return z


def run_diffusers(config, n, model, x_T, noise, step_kwargs):
    sched = getattr(diffusers, config["_class_name"]).from_config(config)
    return run_pipeline(sched, model, x_T, noise, n, step_kwargs=step_kwargs)


SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
CASES = [
    ("DDIMScheduler", {"clip_sample": False}, 20, {}),
    ("DDIMScheduler", {"clip_sample": False, **SD, "steps_offset": 1}, 10, {"eta": 0.7}),
    (
        "DDIMScheduler",
        {
            "clip_sample": False,
            "prediction_type": "v_prediction",
            "timestep_spacing": "trailing",
            "rescale_betas_zero_snr": True,
        },
        12,
        {},
    ),
    (
        "DDIMScheduler",
        {"timestep_spacing": "linspace", "set_alpha_to_one": False, "thresholding": True, "sample_max_value": 1.5},
        15,
        {},
    ),
    ("DDIMScheduler", {"thresholding": True, "sample_max_value": 0.8, "dynamic_thresholding_ratio": 0.9}, 8, {}),
    ("DDPMScheduler", {"clip_sample": False}, 25, {}),
    ("DDPMScheduler", {"beta_schedule": "laplace", "prediction_type": "v_prediction"}, 10, {}),
    (
        "DDPMScheduler",
        {"timestep_spacing": "trailing", "variance_type": "fixed_large", "prediction_type": "v_prediction"},
        10,
        {},
    ),
    (
        "DDPMScheduler",
        {
            "beta_schedule": "squaredcos_cap_v2",
            "variance_type": "learned_range",
            "thresholding": True,
            "sample_max_value": 1.5,
            "dynamic_thresholding_ratio": 0.95,
        },
        10,
        {},
    ),  # DeepFloyd IF
    ("DDPMScheduler", {"variance_type": "learned", "timestep_spacing": "trailing"}, 8, {}),
    ("DDPMScheduler", {"variance_type": "fixed_small_log", "prediction_type": "v_prediction"}, 8, {}),
    ("DDPMParallelScheduler", {"variance_type": "learned_range"}, 6, {}),
    (
        "PNDMScheduler",
        {**SD, "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False},
        20,
        {},
    ),
    ("PNDMScheduler", {**SD, "steps_offset": 1}, 20, {}),
    (
        "PNDMScheduler",
        {"prediction_type": "v_prediction", "timestep_spacing": "linspace", "set_alpha_to_one": True},
        14,
        {},
    ),  # T // N odd: PRK's stage-1 landing and stage-2 model time differ by one
    ("PNDMScheduler", {"timestep_spacing": "trailing"}, 4, {}),
    ("EulerDiscreteScheduler", {}, 20, {}),
    (
        "EulerDiscreteScheduler",
        {**SD, "use_karras_sigmas": True, "timestep_spacing": "leading", "steps_offset": 1},
        15,
        {},
    ),
    (
        "EulerDiscreteScheduler",
        {"prediction_type": "v_prediction", "timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"},
        12,
        {},
    ),
    ("EulerDiscreteScheduler", {}, 10, {"s_churn": 5.0}),
    (
        "EulerDiscreteScheduler",
        {**SD, "use_karras_sigmas": True, "prediction_type": "v_prediction"},
        12,
        {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 10.0, "s_noise": 1.003},
    ),
    (
        "EulerDiscreteScheduler",
        {"prediction_type": "sample", "final_sigmas_type": "sigma_min"},
        8,
        {"s_churn": 1.0, "s_tmin": 0.5},
    ),
    (
        "EulerDiscreteScheduler",
        {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
        10,
        {},
    ),
    ("EulerDiscreteScheduler", {**SD, "interpolation_type": "log_linear"}, 10, {}),
    ("EulerDiscreteScheduler", {"use_exponential_sigmas": True, "timestep_spacing": "leading"}, 10, {}),
    (
        "EulerDiscreteScheduler",
        {
            **SD,
            "use_karras_sigmas": True,
            "sigma_min": 0.002,
            "sigma_max": 700.0,
            "timestep_type": "continuous",
            "prediction_type": "v_prediction",
            "timestep_spacing": "leading",
            "steps_offset": 1,
        },
        12,
        {},
    ),  # Stable Video Diffusion
    ("EulerAncestralDiscreteScheduler", {}, 20, {}),
    (
        "EulerAncestralDiscreteScheduler",
        {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
        10,
        {},
    ),
    ("EulerAncestralDiscreteScheduler", {**SD, "prediction_type": "v_prediction"}, 10, {}),
    ("HeunDiscreteScheduler", {}, 10, {}),
    ("HeunDiscreteScheduler", {"beta_schedule": "exp"}, 8, {}),
    ("HeunDiscreteScheduler", {"use_exponential_sigmas": True}, 8, {}),
    ("LMSDiscreteScheduler", {**SD, "use_exponential_sigmas": True}, 10, {}),
    ("KDPM2DiscreteScheduler", {"use_exponential_sigmas": True}, 8, {}),
    ("HeunDiscreteScheduler", {"use_karras_sigmas": True, "prediction_type": "v_prediction"}, 8, {}),
    ("LMSDiscreteScheduler", {}, 20, {}),
    ("LMSDiscreteScheduler", {**SD, "use_karras_sigmas": True}, 12, {}),
    ("DPMSolverMultistepScheduler", {}, 20, {}),
    ("DPMSolverMultistepScheduler", {**SD, "use_karras_sigmas": True, "solver_order": 3}, 15, {}),
    (
        "DPMSolverMultistepScheduler",
        {
            "algorithm_type": "dpmsolver",
            "solver_type": "heun",
            "final_sigmas_type": "sigma_min",
            "prediction_type": "v_prediction",
        },
        10,
        {},
    ),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "timestep_spacing": "trailing"}, 12, {}),
    (
        "DPMSolverMultistepScheduler",
        {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0},
        12,
        {},
    ),  # Sana
    (
        "DPMSolverMultistepScheduler",
        {
            "prediction_type": "flow_prediction",
            "use_flow_sigmas": True,
            "flow_shift": 2.0,
            "algorithm_type": "sde-dpmsolver++",
            "solver_order": 3,
        },
        10,
        {},
    ),
    (
        "DPMSolverMultistepScheduler",
        {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
        10,
        {},
    ),
    ("DPMSolverMultistepScheduler", {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}, 10, {}),
    (
        "DPMSolverMultistepScheduler",
        {
            "beta_schedule": "squaredcos_cap_v2",
            "lambda_min_clipped": -3.0,
            "timestep_spacing": "trailing",
            "prediction_type": "v_prediction",
        },
        8,
        {},
    ),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min"}, 10, {}),
    (
        "DPMSolverMultistepScheduler",
        {
            "algorithm_type": "sde-dpmsolver",
            "final_sigmas_type": "sigma_min",
            "solver_type": "heun",
            "prediction_type": "v_prediction",
            **SD,
        },
        12,
        {},
    ),
    ("DPMSolverMultistepScheduler", {**SD, "use_lu_lambdas": True}, 10, {}),
    ("DPMSolverMultistepScheduler", {"use_exponential_sigmas": True, "solver_order": 3}, 10, {}),
    ("UniPCMultistepScheduler", {}, 12, {}),
    ("UniPCMultistepScheduler", {**SD, "use_exponential_sigmas": True}, 10, {}),
    ("UniPCMultistepScheduler", {"predict_x0": False, "final_sigmas_type": "sigma_min"}, 10, {}),
    (
        "UniPCMultistepScheduler",
        {
            "predict_x0": False,
            "final_sigmas_type": "sigma_min",
            "solver_order": 3,
            "solver_type": "bh1",
            "prediction_type": "v_prediction",
            **SD,
        },
        12,
        {},
    ),
    (
        "UniPCMultistepScheduler",
        {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
        10,
        {},
    ),
    (
        "UniPCMultistepScheduler",
        {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 5.0},
        10,
        {},
    ),  # Wan 2.1
    (
        "UniPCMultistepScheduler",
        {
            "prediction_type": "flow_prediction",
            "use_flow_sigmas": True,
            "flow_shift": 3.0,
            "solver_order": 3,
            "shift_terminal": 0.05,
            "final_sigmas_type": "sigma_min",
        },
        9,
        {},
    ),
    (
        "UniPCMultistepScheduler",
        {
            **SD,
            "solver_order": 3,
            "solver_type": "bh1",
            "use_karras_sigmas": True,
            "disable_corrector": [0],
            "final_sigmas_type": "sigma_min",
        },
        10,
        {},
    ),
    ("UniPCMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}, 10, {}),
    ("DPMSolverSinglestepScheduler", {}, 20, {}),
    ("DPMSolverSinglestepScheduler", {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -3.0}, 9, {}),
    (
        "DPMSolverSinglestepScheduler",
        {**SD, "solver_order": 3, "solver_type": "heun", "use_karras_sigmas": True},
        15,
        {},
    ),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3, "prediction_type": "v_prediction"}, 11, {}),
    ("DPMSolverSinglestepScheduler", {"solver_order": 1}, 7, {}),
    (
        "DPMSolverSinglestepScheduler",
        {
            "algorithm_type": "dpmsolver",
            "solver_type": "heun",
            "lower_order_final": False,
            "final_sigmas_type": "sigma_min",
            "prediction_type": "sample",
        },
        12,
        {},
    ),
    (
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "dpmsolver", "solver_order": 3, "final_sigmas_type": "sigma_min"},
        10,
        {},
    ),
    (
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "thresholding": True, "sample_max_value": 1.5},
        10,
        {},
    ),
    ("KDPM2DiscreteScheduler", {}, 10, {}),
    ("KDPM2DiscreteScheduler", {**SD, "use_karras_sigmas": True, "prediction_type": "v_prediction"}, 8, {}),
    (
        "KDPM2DiscreteScheduler",
        {
            "beta_schedule": "linear",
            "beta_start": 0.0001,
            "beta_end": 0.02,
            "timestep_spacing": "leading",
            "steps_offset": 1,
        },
        12,
        {},
    ),
    ("KDPM2AncestralDiscreteScheduler", {}, 10, {}),
    (
        "KDPM2AncestralDiscreteScheduler",
        {**SD, "use_karras_sigmas": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
        8,
        {},
    ),
    ("DEISMultistepScheduler", {}, 20, {}),
    ("DEISMultistepScheduler", {**SD, "solver_order": 3, "use_karras_sigmas": True}, 12, {}),
    (
        "DEISMultistepScheduler",
        {
            "solver_order": 3,
            "timestep_spacing": "trailing",
            "prediction_type": "v_prediction",
            "lower_order_final": False,
        },
        10,
        {},
    ),
    (
        "DEISMultistepScheduler",
        {
            "solver_order": 3,
            "timestep_spacing": "leading",
            "steps_offset": 1,
            "prediction_type": "sample",
            "thresholding": True,
            "sample_max_value": 1.5,
        },
        16,
        {},
    ),
    ("LCMScheduler", {}, 4, {}),
    (
        "LCMScheduler",
        {
            "beta_schedule": "linear",
            "beta_start": 0.0001,
            "beta_end": 0.02,
            "clip_sample": True,
            "prediction_type": "v_prediction",
            "original_inference_steps": 30,
        },
        7,
        {},
    ),
    ("LCMScheduler", {"rescale_betas_zero_snr": True, "prediction_type": "sample", "timestep_scaling": 5.0}, 1, {}),
    ("TCDScheduler", {}, 4, {}),
    ("TCDScheduler", {}, 8, {"eta": 0.0}),
    (
        "TCDScheduler",
        {"prediction_type": "v_prediction", "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
        10,
        {"eta": 0.7},
    ),
    ("DPMSolverSDEScheduler", {}, 10, {}),
    (
        "DPMSolverSDEScheduler",
        {**SD, "use_karras_sigmas": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
        8,
        {"s_noise": 0.8},
    ),
    ("DPMSolverSDEScheduler", {"timestep_spacing": "leading", "steps_offset": 1}, 6, {}),
    ("EDMEulerScheduler", {}, 12, {}),
    (
        "EDMEulerScheduler",
        {
            "sigma_schedule": "exponential",
            "prediction_type": "v_prediction",
            "sigma_data": 1.0,
            "final_sigmas_type": "sigma_min",
        },
        15,
        {},
    ),
    ("EDMEulerScheduler", {"rho": 5.0}, 10, {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 50.0}),
    ("EDMDPMSolverMultistepScheduler", {}, 12, {}),
    (
        "EDMDPMSolverMultistepScheduler",
        {"solver_order": 3, "solver_type": "heun", "prediction_type": "v_prediction", "sigma_schedule": "exponential"},
        16,
        {},
    ),
    (
        "EDMDPMSolverMultistepScheduler",
        {
            "algorithm_type": "sde-dpmsolver++",
            "final_sigmas_type": "sigma_min",
            "thresholding": True,
            "sample_max_value": 1.5,
        },
        10,
        {},
    ),
    ("DDIMScheduler", {}, 10, {}),
    ("DDPMScheduler", {}, 10, {}),
    ("PNDMScheduler", {}, 10, {}),
    ("CogVideoXDDIMScheduler", {}, 10, {}),
    (
        "CogVideoXDDIMScheduler",
        {
            "prediction_type": "v_prediction",
            "rescale_betas_zero_snr": True,
            "timestep_spacing": "trailing",
            "snr_shift_scale": 1.0,
        },
        8,
        {},
    ),  # CogVideoX-5b
    ("CogVideoXDDIMScheduler", {"snr_shift_scale": 2.0, "set_alpha_to_one": False}, 6, {}),
    ("DDIMInverseScheduler", {}, 10, {}),
    (
        "DDIMInverseScheduler",
        {
            **SD,
            "clip_sample": False,
            "timestep_spacing": "trailing",
            "set_alpha_to_one": False,
            "prediction_type": "v_prediction",
        },
        8,
        {},
    ),
    ("IPNDMScheduler", {}, 10, {}),
    ("IPNDMScheduler", {}, 3, {}),
    ("IPNDMScheduler", {"trained_betas": [0.999, 0.8, 0.5, 0.2, 0.05, 0.0]}, 5, {}),  # its sigmas, given
    ("CMStochasticIterativeScheduler", {}, 4, {}),
    ("CMStochasticIterativeScheduler", {"clip_denoised": False, "s_noise": 0.9, "num_train_timesteps": 60}, 6, {}),
    ("CMStochasticIterativeScheduler", {}, 1, {}),
    ("DDPMParallelScheduler", {}, 10, {}),
    ("DDIMParallelScheduler", {}, 10, {}),
    (
        "DDIMParallelScheduler",
        {**SD, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
        8,
        {"eta": 0.5},
    ),
    ("FlowMatchEulerDiscreteScheduler", {}, 10, {}),
    ("FlowMatchHeunDiscreteScheduler", {}, 8, {}),
    ("FlowMatchLCMScheduler", {}, 4, {}),
    ("FlowMatchLCMScheduler", {"shift": 3.0, "use_karras_sigmas": True}, 6, {}),
    ("MiniMaxH3Scheduler", {}, 10, {}),
    ("MiniMaxH3Scheduler", {"shift": 3.0}, 6, {}),
    ("FlowMatchHeunDiscreteScheduler", {"shift": 3.0}, 5, {}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, 12, {}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 1.0, "stochastic_sampling": True}, 8, {}),
    # beta sigmas (Lee et al. 2024) and exponential sigmas in every class that has them
    ("EulerDiscreteScheduler", {"use_beta_sigmas": True}, 10, {}),
    ("EulerDiscreteScheduler", {**SD, "use_beta_sigmas": True, "sigma_min": 0.05, "sigma_max": 10.0}, 8, {}),
    ("HeunDiscreteScheduler", {**SD, "use_beta_sigmas": True}, 8, {}),
    ("LMSDiscreteScheduler", {"use_beta_sigmas": True}, 10, {}),
    ("KDPM2DiscreteScheduler", {"use_beta_sigmas": True}, 8, {}),
    ("KDPM2AncestralDiscreteScheduler", {"use_exponential_sigmas": True}, 8, {}),
    ("KDPM2AncestralDiscreteScheduler", {**SD, "use_beta_sigmas": True}, 8, {}),
    ("DPMSolverSDEScheduler", {"use_exponential_sigmas": True}, 6, {}),
    ("DPMSolverSDEScheduler", {**SD, "use_beta_sigmas": True}, 6, {}),
    ("DPMSolverMultistepScheduler", {**SD, "use_beta_sigmas": True}, 10, {}),
    ("UniPCMultistepScheduler", {"use_beta_sigmas": True, "solver_order": 3}, 10, {}),
    ("DPMSolverSinglestepScheduler", {"use_exponential_sigmas": True}, 10, {}),
    ("DPMSolverSinglestepScheduler", {**SD, "use_beta_sigmas": True, "solver_order": 3}, 9, {}),
    ("DEISMultistepScheduler", {"use_exponential_sigmas": True}, 10, {}),
    ("DEISMultistepScheduler", {**SD, "use_beta_sigmas": True, "solver_order": 3}, 12, {}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "use_beta_sigmas": True}, 10, {}),
    ("FlowMatchLCMScheduler", {"use_beta_sigmas": True}, 5, {}),
    # the rest of the option list, one case per class and option value (test_interop_classes checks the coverage)
    ("DDIMScheduler", {"prediction_type": "sample", "clip_sample": False}, 8, {}),
    ("DDIMParallelScheduler", {"prediction_type": "sample", "rescale_betas_zero_snr": True}, 8, {}),
    ("DDIMParallelScheduler", {"thresholding": True, "sample_max_value": 0.8}, 6, {"eta": 0.3}),
    (
        "DDIMInverseScheduler",
        {"prediction_type": "sample", "set_alpha_to_one": False},
        6,
        {},
    ),  # from abar = 1, x0 -> eps is 0/0
    ("DDIMInverseScheduler", {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}, 6, {}),
    ("DDPMScheduler", {"prediction_type": "sample", "rescale_betas_zero_snr": True, "clip_sample": False}, 8, {}),
    ("DDPMScheduler", {"thresholding": True, "sample_max_value": 0.8}, 6, {}),
    ("DDPMParallelScheduler", {"beta_schedule": "laplace", "prediction_type": "sample"}, 6, {}),
    ("DDPMParallelScheduler", {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}, 6, {}),
    (
        "DDPMParallelScheduler",
        {"variance_type": "fixed_small_log", "thresholding": True, "sample_max_value": 0.8},
        6,
        {},
    ),
    ("DDPMParallelScheduler", {"variance_type": "learned"}, 6, {}),
    ("HeunDiscreteScheduler", {"prediction_type": "sample"}, 6, {}),
    ("LMSDiscreteScheduler", {"prediction_type": "sample"}, 8, {}),
    ("LMSDiscreteScheduler", {**SD, "prediction_type": "v_prediction"}, 8, {}),
    (
        "DPMSolverMultistepScheduler",
        {"prediction_type": "sample", "thresholding": True, "sample_max_value": 0.8},
        8,
        {},
    ),
    ("UniPCMultistepScheduler", {"prediction_type": "sample", "thresholding": True, "sample_max_value": 0.8}, 8, {}),
    (
        "UniPCMultistepScheduler",
        {"predict_x0": False, "final_sigmas_type": "sigma_min", "thresholding": True, "sample_max_value": 1.5},
        8,
        {},
    ),
    ("DPMSolverSinglestepScheduler", {"thresholding": True, "sample_max_value": 0.8}, 8, {}),
    (
        "DPMSolverSinglestepScheduler",
        {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0, "solver_order": 3},
        9,
        {},
    ),
    ("DEISMultistepScheduler", {"algorithm_type": "dpmsolver", "thresholding": True, "sample_max_value": 0.8}, 8, {}),
    ("DEISMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}, 8, {}),
    (
        "DEISMultistepScheduler",
        {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0, "solver_order": 3},
        10,
        {},
    ),
    ("EDMDPMSolverMultistepScheduler", {"thresholding": True, "sample_max_value": 0.8}, 8, {}),
    ("DPMSolverSDEScheduler", {"noise_sampler_seed": 3}, 5, {}),
    ("LCMScheduler", {"thresholding": True, "sample_max_value": 0.8}, 4, {}),
    ("TCDScheduler", {"prediction_type": "sample", "rescale_betas_zero_snr": True}, 4, {}),
    ("TCDScheduler", {"thresholding": True, "sample_max_value": 0.8}, 4, {}),  # stored, never read by TCD
    ("CogVideoXDDIMScheduler", {"prediction_type": "sample", "sample_max_value": 0.8}, 6, {}),  # never read
    ("FlowMatchLCMScheduler", {"shift_terminal": 0.1, "use_exponential_sigmas": True}, 5, {}),
    ("DDIMScheduler", {"clip_sample_range": 1.5}, 8, {"eta": 0.5, "use_clipped_model_output": True}),
    ("DPMSolverMultistepScheduler", {"euler_at_final": True, "solver_order": 3}, 16, {}),
    ("EDMDPMSolverMultistepScheduler", {"euler_at_final": True, "lower_order_final": False}, 16, {}),
    ("LMSDiscreteScheduler", {**SD, "use_karras_sigmas": True}, 10, {"order": 2}),
    (
        "UniPCMultistepScheduler",
        {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "use_karras_sigmas": True, "solver_order": 3},
        10,
        {},
    ),  # Karras sigmas converted to flow sigmas s / (1 + s)
    (
        "UniPCMultistepScheduler",
        {
            "prediction_type": "flow_prediction",
            "use_flow_sigmas": True,
            "use_karras_sigmas": True,
            "final_sigmas_type": "sigma_min",
        },
        8,
        {},
    ),
    # epsilon / sample / v_prediction on flow sigmas (alpha = 1 - sigma), and flow_prediction on VP sigmas
    ("DPMSolverMultistepScheduler", {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "epsilon"}, 9, {}),
    (
        "DPMSolverMultistepScheduler",
        {"use_flow_sigmas": True, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
        8,
        {},
    ),
    ("DPMSolverSinglestepScheduler", {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "sample"}, 9, {}),
    ("UniPCMultistepScheduler", {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "v_prediction"}, 9, {}),
    ("DEISMultistepScheduler", {"use_flow_sigmas": True, "flow_shift": 3.0, "thresholding": True}, 8, {}),
    ("DPMSolverMultistepScheduler", {"prediction_type": "flow_prediction"}, 8, {}),
    ("DEISMultistepScheduler", {"prediction_type": "flow_prediction", "thresholding": True}, 8, {}),
]


@pytest.mark.parametrize("cls, overrides, n, step_options", CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_plan_matches_diffusers_loop(cls, overrides, n, step_options):
    if cls == "DPMSolverSDEScheduler":
        pytest.importorskip("torchsde")  # diffusers imports it with the class; the plan itself needs no torchsde
    config = {"_class_name": cls, "_diffusers_version": "0.42.1", **overrides}
    plan = interop.from_diffusers(config, n, **step_options)
    model = model_for(plan)
    x_T = np.random.default_rng(1).standard_normal(SHAPE)
    ours_noise, theirs_noise = NoiseList(7), NoiseList(7)
    ours = plan.run(model, x_T, noise=ours_noise if plan.stochastic else None)
    theirs, their_ts = run_diffusers(config, n, model, x_T, theirs_noise, step_options)
    assert len(ours_noise.drawn) == len(theirs_noise.drawn)
    # the plans build diffusers' float32 sigma table, so the timesteps agree up to its last ulps (torch's square
    # root differs from numpy's by an ulp on a few entries)
    np.testing.assert_allclose(plan.timesteps, their_ts, rtol=2e-5, atol=1e-3)
    dev = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    assert np.all(np.isfinite(ours))
    assert dev < TOL, f"{cls}: max deviation {dev:.2e} of max |x|"


def test_stochastic_plan_requires_noise():
    plan = interop.from_diffusers({"_class_name": "EulerAncestralDiscreteScheduler"}, 5)
    with pytest.raises(ValueError, match="noise"):
        plan.run(lambda x, t: x, np.zeros(SHAPE))


@pytest.mark.parametrize(
    "config, match",
    [
        ({"_class_name": "EulerDiscreteScheduler", "beta_shedule": "linear"}, "beta_shedule"),
        ({"_class_name": "UniPCMultistepScheduler", "solver_p": "x"}, "solver_p"),
        (
            {"_class_name": "EulerDiscreteScheduler", "use_beta_sigmas": True, "use_karras_sigmas": True},
            "use_karras_sigmas=True, use_beta_sigmas=True",
        ),
        ({"_class_name": "PNDMScheduler", "skip_prk_steps": "yes"}, "skip_prk_steps"),
        ({"_class_name": "DDIMScheduler", "timestep_spacing": "weird"}, "timestep_spacing"),
        (
            {
                "_class_name": "DPMSolverSinglestepScheduler",
                "algorithm_type": "dpmsolver",
                "thresholding": True,
                "final_sigmas_type": "sigma_min",
            },
            "thresholding",
        ),
        (
            {"_class_name": "EDMDPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++", "solver_order": 3},
            "solver_order",
        ),
        (
            {
                "_class_name": "DPMSolverMultistepScheduler",
                "prediction_type": "flow_prediction",
                "use_flow_sigmas": True,
                "use_exponential_sigmas": True,
            },
            "unconverted",
        ),
        ({"_class_name": "KarrasVeScheduler"}, "_class_name"),
        ({"beta_start": 0.1}, "_class_name"),
    ],
)
def test_unhonoured_keys_raise(config, match):
    with pytest.raises(ValueError, match=match):
        interop.from_diffusers(config, 10)


def test_inert_and_foreign_keys_accepted():
    # Stable Diffusion v1.5's scheduler config, loaded into Euler (keys of PNDM/DDIM at inert values)
    sd = {
        "_class_name": "EulerDiscreteScheduler",
        "_diffusers_version": "0.6.0",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
        "clip_sample": False,
    }
    assert len(interop.from_diffusers(sd, 20).timesteps) == 20
    with pytest.raises(ValueError, match="eta"):
        interop.from_diffusers(sd, 20, eta=0.5)


@pytest.mark.parametrize(
    "schedule, cls",
    [
        (make_schedule("linear"), "DDPMScheduler"),
        (make_schedule("scaled_linear"), "EulerDiscreteScheduler"),
        (make_schedule("cosine"), "DDIMScheduler"),
        (make_schedule("sigmoid", T=500), "DDIMScheduler"),
        (make_schedule("linear", rescale_zero_snr=True), "DDIMScheduler"),
    ],
)
def test_to_diffusers_round_trips_alphas_cumprod(schedule, cls):
    config = interop.to_diffusers(schedule, class_name=cls)
    sched = getattr(diffusers, cls).from_config(config)
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), schedule.alphas_cumprod(), rtol=2e-5, atol=1e-7)
    back = interop.schedule_from_config(interop._validate(config)[1])
    np.testing.assert_allclose(back.alphas_cumprod(), schedule.alphas_cumprod(), rtol=1e-12, atol=1e-15)


def test_to_diffusers_flow_and_edm():
    flow = interop.to_diffusers(make_schedule("flow", shift=3.0))
    sched = diffusers.FlowMatchEulerDiscreteScheduler.from_config(flow)
    assert sched.config.shift == 3.0
    edm = interop.to_diffusers(make_schedule("edm"))
    sched = diffusers.EDMEulerScheduler.from_config(edm)
    assert sched.config.sigma_max == 80.0 and sched.config.sigma_data == 0.5
    with pytest.raises(ValueError, match="SubVP"):
        interop.to_diffusers(make_schedule("subvp"))


def test_noise_sampler_seed_seeds_the_plans_default_noise():
    """DPMSolverSDE's noise_sampler_seed: without `noise`, the plan draws from numpy's generator with that seed
    (the Brownian tree's law, not torchsde's numbers); an explicit `noise` wins."""
    config = {"_class_name": "DPMSolverSDEScheduler", "noise_sampler_seed": 3}
    plan = interop.from_diffusers(config, 6)
    model = model_for(plan)
    x_T = np.random.default_rng(1).standard_normal(SHAPE)
    seeded = plan.run(model, x_T)
    np.testing.assert_array_equal(plan.run(model, x_T), seeded)
    np.testing.assert_array_equal(plan.run(model, x_T, noise=np.random.default_rng(3)), seeded)
    assert np.abs(plan.run(model, x_T, noise=np.random.default_rng(4)) - seeded).max() > 1e-3
    with pytest.raises(ValueError, match="noise"):
        interop.from_diffusers({"_class_name": "DPMSolverSDEScheduler"}, 6).run(model, x_T)


@pytest.mark.parametrize("predict_x0", [True, False])
def test_unipc_epsilon_on_flow_sigmas_is_rounding_noise_in_diffusers(predict_x0):
    """The refusal's reason: UniPC's first flow sigma is 1 - 1e-6, so diffusers' epsilon-prediction loop (or its
    noise-prediction form) lands far from its own sample-prediction loop over the same denoiser, which the
    interop reproduces."""
    config = {"_class_name": "UniPCMultistepScheduler", "use_flow_sigmas": True, "flow_shift": 3.0}
    config |= {"final_sigmas_type": "sigma_min", "solver_order": 2}
    refused = {**config, "predict_x0": predict_x0, "prediction_type": "epsilon" if predict_x0 else "sample"}
    with pytest.raises(ValueError, match="1 - 1e-6"):
        interop.from_diffusers(refused, 6)
    plan = interop.from_diffusers({**config, "prediction_type": "sample"}, 6)
    x_T = np.random.default_rng(1).standard_normal(SHAPE)
    runs = [
        run_diffusers(c, 6, oracle_model(plan.schedule, c["prediction_type"], lambda ts: ts / 1000.0), x_T, None, {})
        for c in (refused, {**config, "prediction_type": "sample"})
    ]
    ours = plan.run(model_for(plan), x_T)
    assert np.max(np.abs(ours - runs[1][0])) < TOL * np.max(np.abs(runs[1][0]))
    assert np.max(np.abs(runs[0][0] - runs[1][0])) > 0.1 * np.max(np.abs(runs[1][0]))
