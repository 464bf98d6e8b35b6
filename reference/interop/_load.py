"""`from_diffusers`: the class table and the entry point."""

from diffspec.reference import _checks
from diffspec.reference.interop._config import STEP_OPTIONS, _validate
from diffspec.reference.interop.consistency import _plan_lcm, _plan_tcd
from diffspec.reference.interop.ddpm import _plan_ddim, _plan_ddpm, _plan_pndm
from diffspec.reference.interop.dpm_solver import _plan_deis, _plan_dpm_multistep, _plan_dpm_singlestep, _plan_unipc
from diffspec.reference.interop.edm import _plan_edm_dpm_multistep, _plan_edm_euler
from diffspec.reference.interop.flow import _plan_flow_match_euler
from diffspec.reference.interop.k_style import (
    _plan_dpm_sde,
    _plan_euler,
    _plan_euler_ancestral,
    _plan_heun,
    _plan_kdpm2,
    _plan_kdpm2_ancestral,
    _plan_lms,
)

_PLANS = {
    "DDIMScheduler": _plan_ddim,
    "DDPMScheduler": _plan_ddpm,
    "PNDMScheduler": _plan_pndm,
    "EulerDiscreteScheduler": _plan_euler,
    "EulerAncestralDiscreteScheduler": _plan_euler_ancestral,
    "HeunDiscreteScheduler": _plan_heun,
    "LMSDiscreteScheduler": _plan_lms,
    "DPMSolverMultistepScheduler": _plan_dpm_multistep,
    "UniPCMultistepScheduler": _plan_unipc,
    "DPMSolverSinglestepScheduler": _plan_dpm_singlestep,
    "DEISMultistepScheduler": _plan_deis,
    "KDPM2DiscreteScheduler": _plan_kdpm2,
    "DPMSolverSDEScheduler": _plan_dpm_sde,
    "KDPM2AncestralDiscreteScheduler": _plan_kdpm2_ancestral,
    "FlowMatchEulerDiscreteScheduler": _plan_flow_match_euler,
    "LCMScheduler": _plan_lcm,
    "TCDScheduler": _plan_tcd,
    "EDMEulerScheduler": _plan_edm_euler,
    "EDMDPMSolverMultistepScheduler": _plan_edm_dpm_multistep,
}

SUPPORTED_CLASSES = tuple(_PLANS)


# What each class's set_timesteps accepts besides num_inference_steps, as implemented here (the pipelines of FLUX,
# SD3, HunyuanVideo and LTX-Video pass custom sigmas and mu).
CUSTOM_INPUTS = {
    "FlowMatchEulerDiscreteScheduler": ("timesteps", "sigmas", "mu"),
}


def from_diffusers(config, num_inference_steps=None, *, timesteps=None, sigmas=None, mu=None, **step_options):
    """A `DiffusersPlan` reproducing a diffusers pipeline loop for `config` (a scheduler_config.json dict).

    The arguments are those a pipeline gives `scheduler.set_timesteps`: `num_inference_steps` (may be None when
    `sigmas` or `timesteps` are given), custom `timesteps` or `sigmas`, and `mu` (the resolution-dependent shift of
    `use_dynamic_shifting`); the classes that accept the custom ones are listed in `CUSTOM_INPUTS`, any other
    combination is a ValueError. step_options are what a pipeline passes to `scheduler.step` (`STEP_OPTIONS`: DDIM
    eta and use_clipped_model_output; LMS order; TCD eta (the paper's gamma); DPMSolverSDE s_noise; Euler and
    EDMEuler s_churn, s_tmin, s_tmax, s_noise); any other is a ValueError. See the package docstring for the
    departures from the papers reproduced.
    """
    name, cfg = _validate(config)
    cfg["_class_name"] = name
    allowed = STEP_OPTIONS.get(name, {})
    unknown = sorted(set(step_options) - set(allowed))
    if unknown:
        raise ValueError(
            f"step option {unknown[0]!r} is not implemented for {name}: expected some of {sorted(allowed) or 'none'}"
        )
    custom = {k: v for k, v in (("timesteps", timesteps), ("sigmas", sigmas), ("mu", mu)) if v is not None}
    for key, value in custom.items():
        if key not in CUSTOM_INPUTS.get(name, ()):
            accepting = sorted(c for c, keys in CUSTOM_INPUTS.items() if key in keys)
            raise ValueError(f"{key}={value!r}: custom {key} are implemented for {', '.join(accepting)}, not {name}")
    if custom or name in CUSTOM_INPUTS:
        return _PLANS[name](cfg, num_inference_steps, step_options, **custom)
    n = _checks.integer("num_inference_steps", num_inference_steps, minimum=1)
    return _PLANS[name](cfg, n, step_options)
