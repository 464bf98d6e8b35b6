"""Config keys (honoured, inert, foreign no-ops), their validation, and schedules and timesteps as diffusers
computes them."""

import enum
import math
from typing import Any

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.incomplete_beta import betaincinv
from diffspec.reference.schedules import (
    CosineBetas,
    ExplicitBetas,
    LinearBetas,
    ScaledLinearBetas,
    SigmoidBetas,
)

_ANY = None


class TimestepSpacing(enum.StrEnum):
    """`timestep_spacing` (Lin et al. 2023, Table 2): linspace, leading (+ steps_offset) or trailing."""

    LINSPACE = "linspace"
    LEADING = "leading"
    TRAILING = "trailing"


class PredictionType(enum.StrEnum):
    """diffusers' `prediction_type`: what the network returns."""

    EPSILON = "epsilon"
    SAMPLE = "sample"
    V = "v_prediction"
    FLOW = "flow_prediction"


class AlgorithmType(enum.StrEnum):
    """The DPM-Solver family's `algorithm_type`: data prediction (++), noise prediction, their SDE forms, DEIS."""

    DPMSOLVER_PP = "dpmsolver++"
    DPMSOLVER = "dpmsolver"
    SDE_DPMSOLVER_PP = "sde-dpmsolver++"
    SDE_DPMSOLVER = "sde-dpmsolver"
    DEIS = "deis"


class SolverType(enum.StrEnum):
    """The second-order variant (`solver_type`): DPM-Solver's midpoint / heun, DEIS's logrho, UniPC's B(h)."""

    MIDPOINT = "midpoint"
    HEUN = "heun"
    LOGRHO = "logrho"
    BH1 = "bh1"
    BH2 = "bh2"


class FinalSigmas(enum.StrEnum):
    """`final_sigmas_type`: the last step lands on sigma = 0 or on sigma(t = 0)."""

    ZERO = "zero"
    SIGMA_MIN = "sigma_min"


_ENUM_KEYS = {
    "timestep_spacing": TimestepSpacing,
    "prediction_type": PredictionType,
    "algorithm_type": AlgorithmType,
    "solver_type": SolverType,
    "final_sigmas_type": FinalSigmas,
}


def parsed(cfg, key):
    """cfg[key] as its enum (`_ENUM_KEYS`), with a one-line ValueError naming the key, the value and the choices.
    The config keeps the strings diffusers wrote; the plans compare enum members."""
    kind = _ENUM_KEYS[key]
    try:
        return kind(cfg[key])
    except ValueError:
        raise ValueError(f"config key {key!r}={cfg[key]!r}: expected one of {[m.value for m in kind]}") from None


def _values(*allowed):
    return tuple(allowed)


_BETAS = {
    "num_train_timesteps": (1000, _ANY),
    "beta_start": (0.0001, _ANY),
    "beta_end": (0.02, _ANY),
    "beta_schedule": ("linear", _values("linear", "scaled_linear", "squaredcos_cap_v2")),
    "trained_betas": (None, _ANY),
}
_SPACING = {
    "timestep_spacing": ("linspace", _values("linspace", "leading", "trailing")),
    "steps_offset": (0, _ANY),
}
_CLIP = {"clip_sample": (False, _values(True, False)), "clip_sample_range": (1.0, _ANY)}
_THRESH = {
    "thresholding": (False, _values(True, False)),
    "dynamic_thresholding_ratio": (0.995, _ANY),
    "sample_max_value": (1.0, _ANY),
}
_OFF = {
    "use_exponential_sigmas": (False, _values(True, False)),
    "use_beta_sigmas": (False, _values(True, False)),
}
_PRED3 = ("epsilon", _values("epsilon", "sample", "v_prediction"))
_PRED2 = ("epsilon", _values("epsilon", "v_prediction"))
_PRED4 = ("epsilon", _values("epsilon", "sample", "v_prediction", "flow_prediction"))  # flow with use_flow_sigmas

# KDPM2, KDPM2 ancestral and DPMSolverSDE share their keys (Karras-sigma schedulers with SD's default betas).
_KARRAS_FAMILY = {
    **_BETAS,
    **_SPACING,
    **_OFF,
    "beta_start": (0.00085, _ANY),
    "beta_end": (0.012, _ANY),
    "prediction_type": _PRED2,
    "use_karras_sigmas": (False, _values(True, False)),
}

# class name -> {config key: (default, allowed values or _ANY)}
HONOURED: dict[str, dict[str, tuple[Any, tuple | None]]] = {
    "DDIMScheduler": {
        **_BETAS,
        **_SPACING,
        **_CLIP,
        **_THRESH,
        "timestep_spacing": ("leading", _values("linspace", "leading", "trailing")),
        "clip_sample": (True, _values(True, False)),
        "set_alpha_to_one": (True, _values(True, False)),
        "prediction_type": _PRED3,
        "rescale_betas_zero_snr": (False, _values(True, False)),
    },
    "DDPMScheduler": {
        **_BETAS,
        **_SPACING,
        **_CLIP,
        **_THRESH,
        "beta_schedule": ("linear", _values("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")),
        "timestep_spacing": ("leading", _values("linspace", "leading", "trailing")),
        "clip_sample": (True, _values(True, False)),
        "variance_type": (
            "fixed_small",
            _values("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"),
        ),
        "prediction_type": _PRED3,
        "rescale_betas_zero_snr": (False, _values(True, False)),
    },
    "PNDMScheduler": {
        **_BETAS,
        **_SPACING,
        "timestep_spacing": ("leading", _values("linspace", "leading", "trailing")),
        "skip_prk_steps": (False, _values(True, False)),
        "set_alpha_to_one": (False, _values(True, False)),
        "prediction_type": _PRED2,
    },
    "EulerDiscreteScheduler": {
        **_BETAS,
        **_SPACING,
        **_OFF,
        "prediction_type": _PRED3,
        "interpolation_type": ("linear", _values("linear", "log_linear")),
        "use_karras_sigmas": (False, _values(True, False)),
        "use_exponential_sigmas": (False, _values(True, False)),
        "sigma_min": (None, _ANY),
        "sigma_max": (None, _ANY),
        "timestep_type": ("discrete", _values("discrete", "continuous")),
        "rescale_betas_zero_snr": (False, _values(True, False)),
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
    },
    "EulerAncestralDiscreteScheduler": {
        **_BETAS,
        **_SPACING,
        "prediction_type": _PRED2,
        "rescale_betas_zero_snr": (False, _values(True, False)),
    },
    "HeunDiscreteScheduler": {
        **_BETAS,
        **_SPACING,
        **_OFF,
        "use_exponential_sigmas": (False, _values(True, False)),
        **_CLIP,
        "beta_start": (0.00085, _ANY),
        "beta_end": (0.012, _ANY),
        "beta_schedule": ("linear", _values("linear", "scaled_linear", "squaredcos_cap_v2", "exp")),
        "prediction_type": _PRED3,
        "use_karras_sigmas": (False, _values(True, False)),
    },
    "KDPM2DiscreteScheduler": {**_KARRAS_FAMILY, "use_exponential_sigmas": (False, _values(True, False))},
    "KDPM2AncestralDiscreteScheduler": _KARRAS_FAMILY,
    "DPMSolverSDEScheduler": {
        **_KARRAS_FAMILY,
        "noise_sampler_seed": (None, _ANY),  # seeds the plan's default noise (see `_plan_dpm_sde`)
    },
    "LMSDiscreteScheduler": {
        **_BETAS,
        **_SPACING,
        **_OFF,
        "use_exponential_sigmas": (False, _values(True, False)),
        "prediction_type": _PRED3,
        "use_karras_sigmas": (False, _values(True, False)),
    },
    "DPMSolverMultistepScheduler": {
        **_BETAS,
        **_SPACING,
        **_OFF,
        "use_exponential_sigmas": (False, _values(True, False)),
        **_THRESH,
        "solver_order": (2, _values(1, 2, 3)),
        "prediction_type": _PRED4,
        "algorithm_type": ("dpmsolver++", _values("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver")),
        "solver_type": ("midpoint", _values("midpoint", "heun")),
        "lower_order_final": (True, _values(True, False)),
        "euler_at_final": (False, _values(True, False)),
        "use_karras_sigmas": (False, _values(True, False)),
        "use_lu_lambdas": (False, _values(True, False)),
        "use_flow_sigmas": (False, _values(True, False)),
        "flow_shift": (1.0, _ANY),  # inert without use_flow_sigmas
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
        "lambda_min_clipped": (-math.inf, _ANY),
        "variance_type": (None, _values(None)),
        "rescale_betas_zero_snr": (False, _values(True, False)),
        "use_dynamic_shifting": (False, _values(True, False)),
        "time_shift_type": ("exponential", _ANY),  # inert without use_dynamic_shifting
    },
    "DPMSolverSinglestepScheduler": {
        **_BETAS,
        **_OFF,
        **_THRESH,
        "solver_order": (2, _values(1, 2, 3)),
        "prediction_type": _PRED4,
        "algorithm_type": ("dpmsolver++", _values("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "deis")),
        "solver_type": ("midpoint", _values("midpoint", "heun", "logrho", "bh1", "bh2")),
        "lower_order_final": (False, _values(True, False)),
        "use_karras_sigmas": (False, _values(True, False)),
        "use_flow_sigmas": (False, _values(True, False)),
        "flow_shift": (1.0, _ANY),  # inert without use_flow_sigmas
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
        "lambda_min_clipped": (-math.inf, _ANY),
        "variance_type": (None, _values(None)),
        "use_dynamic_shifting": (False, _values(True, False)),
        "time_shift_type": ("exponential", _ANY),  # inert without use_dynamic_shifting
    },
    "DEISMultistepScheduler": {
        **_BETAS,
        **_SPACING,
        **_OFF,
        **_THRESH,
        "solver_order": (2, _values(1, 2, 3)),
        "prediction_type": _PRED4,
        "algorithm_type": ("deis", _values("deis", "dpmsolver", "dpmsolver++")),
        "solver_type": ("logrho", _values("logrho", "midpoint", "heun", "bh1", "bh2")),
        "lower_order_final": (True, _values(True, False)),
        "use_karras_sigmas": (False, _values(True, False)),
        "use_flow_sigmas": (False, _values(True, False)),
        "flow_shift": (1.0, _ANY),  # inert without use_flow_sigmas
        "use_dynamic_shifting": (False, _values(True, False)),
        "time_shift_type": ("exponential", _ANY),  # inert without use_dynamic_shifting
    },
    "UniPCMultistepScheduler": {
        **_BETAS,
        **_SPACING,
        **_OFF,
        "use_exponential_sigmas": (False, _values(True, False)),
        "solver_order": (2, _values(1, 2, 3)),
        "prediction_type": _PRED4,
        "thresholding": (False, _values(True, False)),
        "dynamic_thresholding_ratio": (0.995, _ANY),
        "sample_max_value": (1.0, _ANY),
        "predict_x0": (True, _values(True, False)),
        "solver_type": ("bh2", _values("bh1", "bh2")),
        "lower_order_final": (True, _values(True)),
        "disable_corrector": ((), _ANY),
        "solver_p": (None, _values(None)),
        "use_karras_sigmas": (False, _values(True, False)),
        "use_flow_sigmas": (False, _values(True, False)),
        "flow_shift": (1.0, _ANY),
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
        "rescale_betas_zero_snr": (False, _values(True, False)),
        "use_dynamic_shifting": (False, _values(True, False)),
        "time_shift_type": ("exponential", _ANY),
        "sigma_min": (None, _values(None)),
        "sigma_max": (None, _values(None)),
        "shift_terminal": (None, _ANY),
    },
    "LCMScheduler": {
        **_BETAS,
        **_CLIP,
        **_THRESH,
        "beta_start": (0.00085, _ANY),
        "beta_end": (0.012, _ANY),
        "beta_schedule": ("scaled_linear", _values("linear", "scaled_linear", "squaredcos_cap_v2")),
        "original_inference_steps": (50, _ANY),
        "set_alpha_to_one": (True, _ANY),  # never read: no step lands below t = 0
        "steps_offset": (0, _ANY),  # stored, never read by LCM
        "timestep_spacing": ("leading", _ANY),  # stored, never read by LCM
        "prediction_type": _PRED3,
        "timestep_scaling": (10.0, _ANY),
        "rescale_betas_zero_snr": (False, _values(True, False)),
    },
    "TCDScheduler": {
        **_BETAS,
        "beta_start": (0.00085, _ANY),
        "beta_end": (0.012, _ANY),
        "beta_schedule": ("scaled_linear", _values("linear", "scaled_linear", "squaredcos_cap_v2")),
        "original_inference_steps": (50, _ANY),
        # stored by diffusers but never read by TCD's set_timesteps or step (0.42.1): inert
        "clip_sample": (False, _ANY),
        "clip_sample_range": (1.0, _ANY),
        "thresholding": (False, _ANY),
        "dynamic_thresholding_ratio": (0.995, _ANY),
        "sample_max_value": (1.0, _ANY),
        "set_alpha_to_one": (True, _ANY),
        "steps_offset": (0, _ANY),
        "timestep_spacing": ("leading", _ANY),
        "timestep_scaling": (10.0, _ANY),
        "prediction_type": _PRED3,
        "rescale_betas_zero_snr": (False, _values(True, False)),
    },
    "EDMEulerScheduler": {
        "sigma_min": (0.002, _ANY),
        "sigma_max": (80.0, _ANY),
        "sigma_data": (0.5, _ANY),
        "sigma_schedule": ("karras", _values("karras", "exponential")),
        "num_train_timesteps": (1000, _ANY),  # only sizes the unused training grid
        "prediction_type": _PRED2,
        "rho": (7.0, _ANY),
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
    },
    "EDMDPMSolverMultistepScheduler": {
        **_THRESH,
        "sigma_min": (0.002, _ANY),
        "sigma_max": (80.0, _ANY),
        "sigma_data": (0.5, _ANY),
        "sigma_schedule": ("karras", _values("karras", "exponential")),
        "num_train_timesteps": (1000, _ANY),  # only sizes the unused training grid
        "prediction_type": _PRED2,
        "rho": (7.0, _ANY),
        "solver_order": (2, _values(1, 2, 3)),
        "algorithm_type": ("dpmsolver++", _values("dpmsolver++", "sde-dpmsolver++", "deis")),
        "solver_type": ("midpoint", _values("midpoint", "heun", "logrho", "bh1", "bh2")),
        "lower_order_final": (True, _values(True, False)),
        "euler_at_final": (False, _values(True, False)),
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
    },
    "FlowMatchEulerDiscreteScheduler": {
        "num_train_timesteps": (1000, _ANY),
        "shift": (1.0, _ANY),
        "use_dynamic_shifting": (False, _values(True, False)),
        # read by pipelines to compute `mu` from the image size; the scheduler itself never reads them
        "base_shift": (0.5, _ANY),
        "max_shift": (1.15, _ANY),
        "base_image_seq_len": (256, _ANY),
        "max_image_seq_len": (4096, _ANY),
        "invert_sigmas": (False, _values(True, False)),
        "shift_terminal": (None, _ANY),
        "use_karras_sigmas": (False, _values(True, False)),
        "use_exponential_sigmas": (False, _values(True, False)),
        "use_beta_sigmas": (False, _values(True, False)),
        "time_shift_type": ("exponential", _values("exponential", "linear")),
        "stochastic_sampling": (False, _values(True, False)),
    },
}

INERT_ALWAYS = frozenset({"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values"})

# Keys of other scheduler classes (configs are often shared between classes) at the value that means "off".
FOREIGN_NOOP = {
    "clip_sample": False,
    "thresholding": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "rescale_betas_zero_snr": False,
    "use_dynamic_shifting": False,
    "use_flow_sigmas": False,
    "use_lu_lambdas": False,
    "trained_betas": None,
}
# Keys inert whatever their value, given the other keys (key -> predicate on the completed config).
_CONDITIONALLY_INERT = {
    "clip_sample_range": lambda c: not c.get("clip_sample", False),
    "dynamic_thresholding_ratio": lambda c: not c.get("thresholding", False),
    "sample_max_value": lambda c: not c.get("thresholding", False),
    "beta_start": lambda c: c.get("trained_betas") is not None,
    "beta_end": lambda c: c.get("trained_betas") is not None,
}
# Value keys of other scheduler classes, which diffusers ignores for this class (shared SD configs carry them).
FOREIGN_INERT = frozenset(
    {
        "clip_sample_range",
        "dynamic_thresholding_ratio",
        "sample_max_value",
        "set_alpha_to_one",
        "skip_prk_steps",
        "steps_offset",
        "timestep_spacing",
        "interpolation_type",
        "sigma_min",
        "sigma_max",
        "final_sigmas_type",
    }
)

HONOURED["CogVideoXDDIMScheduler"] = {
    **_BETAS,
    **_SPACING,
    "beta_start": (0.00085, _ANY),
    "beta_end": (0.012, _ANY),
    "beta_schedule": ("scaled_linear", _values("linear", "scaled_linear", "squaredcos_cap_v2")),
    "timestep_spacing": ("leading", _values("linspace", "leading", "trailing")),
    # read by __init__, never by step (CogVideoX's DDIM does not clip)
    "clip_sample": (True, _ANY),
    "clip_sample_range": (1.0, _ANY),
    "sample_max_value": (1.0, _ANY),
    "set_alpha_to_one": (True, _values(True, False)),
    "prediction_type": _PRED3,
    "rescale_betas_zero_snr": (False, _values(True, False)),
    "snr_shift_scale": (3.0, _ANY),
}
HONOURED["DDIMInverseScheduler"] = {
    **_BETAS,
    **_CLIP,
    "clip_sample": (True, _values(True, False)),
    "set_alpha_to_one": (True, _values(True, False)),
    "steps_offset": (0, _ANY),
    "prediction_type": _PRED3,
    "timestep_spacing": ("leading", _values("leading", "trailing")),
    "rescale_betas_zero_snr": (False, _values(True, False)),
}
HONOURED["IPNDMScheduler"] = {"num_train_timesteps": (1000, _ANY), "trained_betas": (None, _ANY)}
HONOURED["CMStochasticIterativeScheduler"] = {
    "num_train_timesteps": (40, _ANY),
    "sigma_min": (0.002, _ANY),
    "sigma_max": (80.0, _ANY),
    "sigma_data": (0.5, _ANY),
    "s_noise": (1.0, _ANY),
    "rho": (7.0, _ANY),
    "clip_denoised": (True, _values(True, False)),
}
HONOURED["ScoreSdeVeScheduler"] = {
    "num_train_timesteps": (2000, _ANY),  # read by __init__ only
    "snr": (0.15, _ANY),
    "sigma_min": (0.01, _ANY),
    "sigma_max": (1348.0, _ANY),
    "sampling_eps": (1e-5, _ANY),
    "correct_steps": (1, _ANY),
}
HONOURED["MiniMaxH3Scheduler"] = {"shift": (12.0, _ANY)}
HONOURED["FlowMatchLCMScheduler"] = {
    **{k: v for k, v in HONOURED["FlowMatchEulerDiscreteScheduler"].items() if k != "stochastic_sampling"},
    "scale_factors": (None, _ANY),
    "upscale_mode": ("bicubic", _ANY),  # inert without scale_factors
}
HONOURED["FlowMatchHeunDiscreteScheduler"] = {"num_train_timesteps": (1000, _ANY), "shift": (1.0, _ANY)}

# The "Parallel" classes (ParaDiGMS, Shih et al. 2023) have the same keys and the same `step`; they add a batched
# step over several timesteps that a sequential loop never calls.
HONOURED["DDPMParallelScheduler"] = HONOURED["DDPMScheduler"]
HONOURED["DDIMParallelScheduler"] = HONOURED["DDIMScheduler"]

STEP_OPTIONS: dict[str, dict[str, Any]] = {
    "DDIMScheduler": {"eta": 0.0, "use_clipped_model_output": False},
    "DDIMParallelScheduler": {"eta": 0.0, "use_clipped_model_output": False},
    "LMSDiscreteScheduler": {"order": 4},
    "TCDScheduler": {"eta": 0.3},
    "DPMSolverSDEScheduler": {"s_noise": 1.0},
    "EulerDiscreteScheduler": {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0},
    "EDMEulerScheduler": {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0},
}

# The DPM-Solver variants (`dpm_variants`) and SA-Solver (`sa_solver`).
HONOURED["CogVideoXDPMScheduler"] = HONOURED["CogVideoXDDIMScheduler"]  # the same keys, read the same way
STEP_OPTIONS["CogVideoXDPMScheduler"] = {"eta": 0.0}  # passed by the CogVideoX pipeline, ignored by the step
_DPM_VP = {
    **_BETAS,
    **_SPACING,
    **_THRESH,
    "prediction_type": _PRED4,  # flow_prediction with use_flow_sigmas
    "use_karras_sigmas": (False, _values(True, False)),
    "use_exponential_sigmas": (False, _values(True, False)),
    "use_beta_sigmas": (False, _values(True, False)),
    "use_flow_sigmas": (False, _values(True, False)),
    "flow_shift": (1.0, _ANY),  # inert without use_flow_sigmas
    "lambda_min_clipped": (-math.inf, _ANY),
    "variance_type": (None, _values(None)),
    "lower_order_final": (True, _values(True, False)),
}
HONOURED["DPMSolverMultistepInverseScheduler"] = {
    **_DPM_VP,
    "solver_order": (2, _values(1, 2, 3)),
    "algorithm_type": (
        "dpmsolver++",
        _values("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver", "deis"),
    ),
    "solver_type": ("midpoint", _values("midpoint", "heun", "logrho", "bh1", "bh2")),
    "euler_at_final": (False, _values(True, False)),
}
HONOURED["SASolverScheduler"] = {
    **_DPM_VP,
    "predictor_order": (2, _values(1, 2, 3, 4)),
    "corrector_order": (2, _values(1, 2, 3, 4)),
    "algorithm_type": ("data_prediction", _values("data_prediction", "noise_prediction")),
    "tau_func": (None, _ANY),  # None (diffusers' default window) or a callable timestep -> tau
}
HONOURED["CosineDPMSolverMultistepScheduler"] = {
    "sigma_min": (0.3, _ANY),
    "sigma_max": (500.0, _ANY),
    "sigma_data": (1.0, _ANY),
    "sigma_schedule": ("exponential", _values("exponential", "karras")),
    "num_train_timesteps": (1000, _ANY),  # only sizes the unused training grid
    "solver_order": (2, _values(1, 2)),  # diffusers 0.42.1 has no third-order update in this class
    "prediction_type": ("v_prediction", _values("epsilon", "v_prediction")),  # its preconditioning rejects "sample"
    "rho": (7.0, _ANY),
    "solver_type": ("midpoint", _values("midpoint", "heun", "logrho", "bh1", "bh2")),
    "lower_order_final": (True, _values(True, False)),
    "euler_at_final": (False, _values(True, False)),
    "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
}

# UnCLIP, Wuerstchen, LTX's Euler ancestral, sCM, flow maps, Helios (`unclip`, `video`, `flow_map`).
_PIPELINE_SHIFT_KEYS = {  # read by pipelines to compute `mu`, never by the scheduler
    "base_shift": (0.5, _ANY),
    "max_shift": (1.15, _ANY),
    "base_image_seq_len": (256, _ANY),
    "max_image_seq_len": (4096, _ANY),
}
HONOURED["UnCLIPScheduler"] = {
    "num_train_timesteps": (1000, _ANY),
    "variance_type": ("fixed_small_log", _values("fixed_small_log", "learned_range")),
    "clip_sample": (True, _values(True, False)),
    "clip_sample_range": (1.0, _ANY),
    "prediction_type": ("epsilon", _values("epsilon", "sample")),
    "beta_schedule": ("squaredcos_cap_v2", _values("squaredcos_cap_v2")),
}
HONOURED["DDPMWuerstchenScheduler"] = {"scaler": (1.0, _ANY), "s": (0.008, _ANY)}
HONOURED["LTXEulerAncestralRFScheduler"] = {
    # FlowMatchEuler's keys too: set_timesteps builds a FlowMatchEulerDiscreteScheduler from this config
    **HONOURED["FlowMatchEulerDiscreteScheduler"],
    "stochastic_sampling": (False, _ANY),  # read by FlowMatchEuler's step only, never here
    "invert_sigmas": (False, _values(False)),
    "eta": (1.0, _ANY),
    "s_noise": (1.0, _ANY),
}
HONOURED["SCMScheduler"] = {
    "num_train_timesteps": (1000, _ANY),
    "prediction_type": ("trigflow", _values("trigflow")),
    "sigma_data": (0.5, _ANY),
}
HONOURED["FlowMapEulerDiscreteScheduler"] = {"num_train_timesteps": (1000, _ANY), "shift": (1.0, _ANY)}
_HELIOS_COMMON = {
    "num_train_timesteps": (1000, _ANY),
    "shift": (1.0, _ANY),
    "stages": (3, _ANY),  # only 1 has a counterpart: the plan says why
    "stage_range": ((0, 1 / 3, 2 / 3, 1), _ANY),  # inert with stages=1
    "gamma": (1 / 3, _ANY),  # inert with stages=1
    "prediction_type": ("flow_prediction", _values("flow_prediction")),
    "use_dynamic_shifting": (False, _values(True, False)),
    **_PIPELINE_SHIFT_KEYS,
}
HONOURED["HeliosScheduler"] = {
    **_HELIOS_COMMON,
    "time_shift_type": ("exponential", _values("exponential", "linear")),
    "thresholding": (False, _values(False)),  # True fails in diffusers 0.42.1 (no _threshold_sample)
    "solver_order": (2, _values(1, 2, 3)),
    "predict_x0": (True, _values(True)),
    "solver_type": ("bh2", _values("bh1", "bh2", "midpoint", "heun", "logrho")),  # the last three read as bh2
    "lower_order_final": (True, _values(True, False)),
    "disable_corrector": ((), _ANY),
    "solver_p": (None, _values(None)),
    "use_flow_sigmas": (True, _values(True)),
    "scheduler_type": ("unipc", _values("unipc", "euler")),
}
HONOURED["HeliosDMDScheduler"] = {
    **_HELIOS_COMMON,
    "time_shift_type": ("linear", _values("exponential", "linear")),
    "use_flow_sigmas": (True, _ANY),  # stored, never read by HeliosDMDScheduler
}


# Option values that diffusers runs but `from_diffusers` refuses: (class, key) -> (the refused values, or None for
# every non-default value; the reason). `_validate` raises with the reason; a test walks the installed diffusers and
# checks that every option value of the interop's list is either reproduced by a case or listed here.
_NAN_IN_DIFFUSERS = (
    "diffusers takes the square root of log(beta) < 0 for it, so its samples are NaN: nothing to reproduce"
)
REFUSED_OPTIONS: dict[tuple[str, str], tuple[tuple | None, str]] = {
    ("DDPMScheduler", "variance_type"): (("fixed_large_log",), _NAN_IN_DIFFUSERS),
    ("DDPMParallelScheduler", "variance_type"): (("fixed_large_log",), _NAN_IN_DIFFUSERS),
    ("DPMSolverMultistepInverseScheduler", "algorithm_type"): (
        ("sde-dpmsolver",),
        "its reverse-time SDE step cannot run from data to noise (h < 0 makes sqrt(1 - e^(-2h)) imaginary; "
        "diffusers 0.42.1 returns NaN); use an ODE algorithm (dpmsolver++ or dpmsolver)",
    ),
}


def _validate(config):
    if not isinstance(config, dict) or "_class_name" not in config:
        raise ValueError("config: expected a dict loaded from scheduler_config.json, with a '_class_name' key")
    name = config["_class_name"]
    spec = _checks.lookup(HONOURED, name, what="diffusers scheduler class (config['_class_name'])")
    cfg = {k: d for k, (d, _) in spec.items()}
    for key, value in config.items():
        if key in INERT_ALWAYS:
            continue
        if key in spec:
            if isinstance(value, list) and key == "disable_corrector":
                value = tuple(value)
            cfg[key] = value
        elif key in FOREIGN_NOOP and value == FOREIGN_NOOP[key]:
            continue
        elif key in FOREIGN_INERT:
            continue  # a key of another class, which diffusers ignores here too
        else:
            raise ValueError(
                f"config key {key!r}={value!r} is not a key {name} reads in diffusers 0.42.1: honoured keys are "
                f"{sorted(spec)}"
            )
    for key, value in config.items():
        refused = REFUSED_OPTIONS.get((name, key))
        if refused and (value in refused[0] if refused[0] is not None else value != spec[key][0]):
            raise ValueError(f"config key {key!r}={value!r} in {name}: {refused[1]}")
    for key, (_, allowed) in spec.items():
        inert = key in _CONDITIONALLY_INERT and _CONDITIONALLY_INERT[key](cfg)
        if allowed is not _ANY and not inert and cfg[key] not in allowed:
            raise ValueError(f"config key {key!r}={cfg[key]!r} in {name}: expected one of {list(allowed)}")
    return name, cfg


# --------------------------------------------------------------------------------------------------------
# Schedules and timesteps, as diffusers computes them
# --------------------------------------------------------------------------------------------------------


def schedule_from_config(cfg):
    """The diffspec schedule of a beta-based diffusers config (betas, rescale to zero terminal SNR)."""
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    zero_snr = bool(cfg.get("rescale_betas_zero_snr", False))
    if cfg.get("trained_betas") is not None:
        return ExplicitBetas(tuple(float(b) for b in cfg["trained_betas"]), rescale_zero_snr=zero_snr)
    kind = cfg["beta_schedule"]
    b0, b1 = float(cfg["beta_start"]), float(cfg["beta_end"])
    match kind:
        case "linear":
            return LinearBetas(T, b0, b1, rescale_zero_snr=zero_snr)
        case "scaled_linear":
            return ScaledLinearBetas(T, b0, b1, rescale_zero_snr=zero_snr)
        case "squaredcos_cap_v2":
            return CosineBetas(T, rescale_zero_snr=zero_snr)  # diffusers' betas_for_alpha_bar(cosine), s = 0.008
        case "sigmoid":
            return SigmoidBetas(T, b0, b1, rescale_zero_snr=zero_snr)
        case "laplace" | "exp":
            return ExplicitBetas(_alpha_bar_betas(T, kind), rescale_zero_snr=zero_snr)
    raise ValueError(f"config key 'beta_schedule'={kind!r}: expected linear, scaled_linear or squaredcos_cap_v2")


def _alpha_bar_betas(T, kind, max_beta=0.999):
    """diffusers' `betas_for_alpha_bar` for its "laplace" and "exp" alphabar functions (the cosine one is
    `CosineBetas`): beta_i = min(1 - abar((i + 1) / T) / abar(i / T), max_beta), with
    laplace: lam(t) = -sign(1/2 - t) log(1 - 2 |1/2 - t| + 1e-6) / 2, abar = sqrt(e^lam / (1 + e^lam)) (a Laplace
    density of the log-SNR, Hang & Gu 2024; diffusers' square root kept), and exp: abar = e^{-12 t}."""

    def alpha_bar(t):
        if kind == "exp":
            return math.exp(-12.0 * t)
        lam = -0.5 * math.copysign(1, 0.5 - t) * math.log(1 - 2 * math.fabs(0.5 - t) + 1e-6)
        return math.sqrt(math.exp(lam) / (1 + math.exp(lam)))

    return tuple(min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T))


def grid_train_timesteps(cfg: dict) -> int:
    """The T the timestep spacing spans: set_timesteps' `num_train_timesteps` where the class takes it (Heun,
    KDPM2, KDPM2Ancestral, DPMSolverSDE: diffusers spaces the grid over it while the sigmas stay those of the
    config's training table, np.interp holding the end value past it), else the config's."""
    return int(cfg.get("_grid_num_train_timesteps") or cfg["num_train_timesteps"])


def _spaced(cfg, n, *, dtype, plus_one=False, last=None):
    """diffusers' timestep spacings. plus_one: the multistep solvers' variant (N + 1 points, the last dropped).
    last: DPMSolverMultistep's `lambda_min_clipped` end (T minus the timesteps whose lam is below the clip), which
    replaces T except in trailing's step ratio (diffusers keeps T / N there)."""
    T, m = grid_train_timesteps(cfg), n + (1 if plus_one else 0)
    L = T if last is None else last
    match parsed(cfg, "timestep_spacing"):
        case TimestepSpacing.LINSPACE:
            if dtype == np.float32:
                ts = np.linspace(0, L - 1, m, dtype=np.float32)[::-1]
            else:
                ts = np.linspace(0, L - 1, m).round()[::-1]
        case TimestepSpacing.LEADING:
            ratio = L // m
            ts = (np.arange(0, m) * ratio).round()[::-1] + cfg["steps_offset"]
        case TimestepSpacing.TRAILING:
            ratio = T / n
            ts = np.round(np.arange(L, 0, -ratio)) - 1
    ts = ts[:n] if plus_one else ts
    return np.ascontiguousarray(ts).astype(dtype)


def _sigma_to_t(sigma, log_sigmas):
    """diffusers' `_sigma_to_t`: interpolate log sigma between the training sigmas, giving a fractional timestep."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=len(log_sigmas) - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


def _karras(sigma_max, sigma_min, n, rho=7.0):
    """Karras et al. (2022), eq. 5: sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho. (diffusers' arithmetic on the diffusers-side ends; `grids.karras` is the same spacing
    over a schedule's own times.)"""
    ramp = np.linspace(0, 1, n)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


class SigmaSpacing(enum.StrEnum):
    """How a k-diffusion-style or DPM-Solver-family class places its N sigmas: interpolated at the spaced
    timesteps (linearly in t, or Euler's log_linear), or re-spaced between the two ends as Karras, exponential
    (geometric), beta-quantile sigmas, or Lu et al.'s uniform lambdas."""

    LINEAR = "linear"
    LOG_LINEAR = "log_linear"
    KARRAS = "karras"
    EXPONENTIAL = "exponential"
    BETA = "beta"
    LU_LAMBDAS = "lu_lambdas"


def sigma_spacing(cfg):
    """The `SigmaSpacing` of a config's flags (use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas,
    use_lu_lambdas, Euler's interpolation_type); more than one flag on is a ValueError, as in diffusers."""
    flags = [
        (SigmaSpacing.KARRAS, "use_karras_sigmas"),
        (SigmaSpacing.EXPONENTIAL, "use_exponential_sigmas"),
        (SigmaSpacing.BETA, "use_beta_sigmas"),
        (SigmaSpacing.LU_LAMBDAS, "use_lu_lambdas"),
    ]
    on = [(kind, key) for kind, key in flags if cfg.get(key)]
    if len(on) > 1:
        keys = ", ".join(f"{key}=True" for _, key in on)
        raise ValueError(f"config keys {keys}: expected at most one of them on (diffusers refuses it too)")
    if on:
        return on[0][0]
    return SigmaSpacing(cfg.get("interpolation_type", "linear"))


# The Beta(alpha, beta) of diffusers' `_convert_to_beta` (Lee et al. 2024, "Beta Sampling is All You Need",
# arXiv:2407.12173): fixed at 0.6, 0.6 in diffusers 0.42.1 (no config key).
BETA_SIGMAS_ALPHA = 0.6
BETA_SIGMAS_BETA = 0.6


def _respace(spacing, sigma_max, sigma_min, n):
    """N sigmas from sigma_max down to sigma_min: Karras (rho 7), exponential (log-uniform), or beta:
    sigma_min + F^-1(1 - i / (N - 1)) (sigma_max - sigma_min) with F the Beta(0.6, 0.6) CDF (Lee et al. 2024), whose
    quantile `incomplete_beta.betaincinv` computes in numpy (diffusers calls scipy.stats.beta.ppf). The ends are
    taken as Python floats, as diffusers' `.item()` gives them (a float32 scalar would keep the arithmetic in float32)."""
    sigma_max, sigma_min = float(sigma_max), float(sigma_min)
    match spacing:
        case SigmaSpacing.KARRAS:
            return _karras(sigma_max, sigma_min, n)
        case SigmaSpacing.EXPONENTIAL:
            return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))
        case SigmaSpacing.BETA:
            ppf = betaincinv(BETA_SIGMAS_ALPHA, BETA_SIGMAS_BETA, 1 - np.linspace(0, 1, n))
            return sigma_min + ppf * (sigma_max - sigma_min)
    raise ValueError(f"sigma spacing {spacing!r}: expected karras, exponential or beta")  # pragma: no cover


def _one_of(n, name, values):
    """(n, the custom array or None) of a set_timesteps that takes exactly one of num_inference_steps and a custom
    `name` (timesteps or sigmas; diffusers' rule in Euler, Heun, DDPM, the DPM-Solver family and CM), with n the
    number of custom values when they are given."""
    if (n is None) == (values is None):
        raise ValueError(f"num_inference_steps={n!r} with {name}={values!r}: expected exactly one of them")
    if values is None:
        return n, None
    values = _checks.finite_array(name, values)
    if values.ndim != 1 or len(values) < 1:
        raise ValueError(f"{name} of shape {values.shape}: expected a non-empty 1-D list")
    return len(values), values


def _no_custom_with_respacing(cfg, name):
    """diffusers refuses custom timesteps with Karras / exponential / beta sigmas (they would be re-spaced away)."""
    spacing = sigma_spacing(cfg)
    if spacing in (SigmaSpacing.KARRAS, SigmaSpacing.EXPONENTIAL, SigmaSpacing.BETA, SigmaSpacing.LU_LAMBDAS):
        raise ValueError(
            f"{name} with {spacing.value} sigmas: diffusers refuses the combination (it would re-space them)"
        )


def _float32(a):
    """a rounded to float32 and back: diffusers casts its sigmas to float32 before stepping with them."""
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def _linspace_float32(start, end, n):
    """torch.linspace(start, end, n, dtype=float32) on a CPU, bit for bit: step = (end - start) / (n - 1) in
    float32, the first n // 2 points start + step i and the rest end - step (n - 1 - i), each one fused
    multiply-add rounded once to float32."""
    a, b = np.float32(start), np.float32(end)
    step = np.float64((b - a) / np.float32(n - 1))
    i = np.arange(n, dtype=np.float64)
    up = (np.float64(a) + step * i).astype(np.float32)
    down = (np.float64(b) - step * (n - 1 - i)).astype(np.float32)
    return np.where(np.arange(n) < n // 2, up, down)


def _cumprod_float32(alphas):
    """torch.cumprod of a float32 vector on a CPU: the products accumulate in float64 and each is rounded to
    float32."""
    return np.cumprod(np.asarray(alphas, dtype=np.float64)).astype(np.float32)


def diffusers_alphas_cumprod(cfg):
    """alphas_cumprod as diffusers builds it in float32 (betas from torch.linspace in float32, or from float64 then
    cast; alphas = 1 - betas in float32; the cumulative product; the zero-terminal-SNR rescale (Lin et al. 2023,
    Alg. 1) in float32), returned as float32. These are the values diffusers interpolates its sigmas from: the
    float64 schedule (`schedule_from_config`) differs by up to ~1e-6 relatively, which moves a timestep mapped back
    from a sigma across an integer now and then (int64 casts then differ by one)."""
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    kind = cfg.get("beta_schedule")
    b0, b1 = float(cfg.get("beta_start", 0.0)), float(cfg.get("beta_end", 0.0))
    if cfg.get("trained_betas") is None and kind == "linear":
        betas = _linspace_float32(b0, b1, T)
    elif cfg.get("trained_betas") is None and kind == "scaled_linear":
        betas = _linspace_float32(b0**0.5, b1**0.5, T) ** 2
    else:  # float64 formulas cast to float32 (sigmoid: torch's float32 sigmoid, matched to an ulp)
        betas = np.asarray(schedule_from_config({**cfg, "rescale_betas_zero_snr": False}).betas(), np.float32)
    if cfg.get("rescale_betas_zero_snr"):
        root = np.sqrt(_cumprod_float32(np.float32(1) - betas))
        first, last = root[0], root[-1]
        root = (root - last) * (first / (first - last))
        abar = root**2
        betas = np.float32(1) - np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return _cumprod_float32(np.float32(1) - betas)


def diffusers_train_sigmas(cfg):
    """diffusers' float32 table sigma_ve = ((1 - abar) / abar)^(1/2) at the training timesteps, from
    `diffusers_alphas_cumprod` (with abar[T-1] = 2^-24 under the zero-terminal-SNR rescale, as the sigma-based
    classes set it), as a float32 array: numpy's promotions on it then follow diffusers' own."""
    abar = diffusers_alphas_cumprod(cfg)
    if cfg.get("rescale_betas_zero_snr"):
        abar[-1] = np.float32(2.0**-24)
    return np.sqrt((np.float32(1) - abar) / abar)


def _train_sigmas(schedule):
    """sigma_ve = sqrt((1 - abar) / abar) at the training timesteps 0..T-1.

    With the zero-terminal-SNR rescale (Lin et al. 2023) abar[T-1] = 0; the diffusers classes that read
    `rescale_betas_zero_snr` set it to 2^-24 (the smallest float32 step above 0 near 1) so that the top sigma stays
    finite, sqrt(2^24 - 1) ~ 4096, and sample from there."""
    T = schedule.num_steps
    if not getattr(schedule, "rescale_zero_snr", False):
        return np.exp(-schedule.lam(np.arange(T, dtype=np.float64)))
    floor = 2.0**-24
    return np.append(np.exp(-schedule.lam(np.arange(T - 1, dtype=np.float64))), math.sqrt((1 - floor) / floor))
