"""`from_diffusers`: the class table and the entry point."""

import numpy.typing as npt
from diffspec.reference import _checks
from diffspec.reference.interop._config import STEP_OPTIONS, _validate
from diffspec.reference.interop._plan import DiffusersPlan
from diffspec.reference.interop.consistency import _plan_cm_stochastic_iterative, _plan_lcm, _plan_tcd
from diffspec.reference.interop.ddpm import (
    _plan_cogvideox_ddim,
    _plan_ddim,
    _plan_ddim_inverse,
    _plan_ddpm,
    _plan_ipndm,
    _plan_pndm,
)
from diffspec.reference.interop.dpm_solver import _plan_deis, _plan_dpm_multistep, _plan_dpm_singlestep, _plan_unipc
from diffspec.reference.interop.dpm_variants import (
    _plan_cogvideox_dpm,
    _plan_cosine_dpm_multistep,
    _plan_dpm_multistep_inverse,
)
from diffspec.reference.interop.edm import _plan_edm_dpm_multistep, _plan_edm_euler
from diffspec.reference.interop.flow import (
    _plan_flow_match_euler,
    _plan_flow_match_heun,
    _plan_flow_match_lcm,
    _plan_minimax_h3,
)
from diffspec.reference.interop.flow_map import _plan_flow_map_euler, _plan_scm
from diffspec.reference.interop.k_style import (
    _plan_dpm_sde,
    _plan_euler,
    _plan_euler_ancestral,
    _plan_heun,
    _plan_kdpm2,
    _plan_kdpm2_ancestral,
    _plan_lms,
    _plan_score_sde_ve,
)
from diffspec.reference.interop.sa_solver import _plan_sa_solver
from diffspec.reference.interop.unclip import _plan_unclip, _plan_wuerstchen
from diffspec.reference.interop.video import _plan_helios, _plan_helios_dmd, _plan_ltx_euler_ancestral_rf

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

_PLANS["FlowMatchHeunDiscreteScheduler"] = _plan_flow_match_heun
_PLANS["CogVideoXDDIMScheduler"] = _plan_cogvideox_ddim
_PLANS["DDIMInverseScheduler"] = _plan_ddim_inverse
_PLANS["IPNDMScheduler"] = _plan_ipndm
_PLANS["CMStochasticIterativeScheduler"] = _plan_cm_stochastic_iterative
_PLANS["ScoreSdeVeScheduler"] = _plan_score_sde_ve
_PLANS["MiniMaxH3Scheduler"] = _plan_minimax_h3
_PLANS["FlowMatchLCMScheduler"] = _plan_flow_match_lcm
_PLANS["DDPMParallelScheduler"] = _plan_ddpm
_PLANS["DDIMParallelScheduler"] = _plan_ddim
_PLANS["CogVideoXDPMScheduler"] = _plan_cogvideox_dpm
_PLANS["DPMSolverMultistepInverseScheduler"] = _plan_dpm_multistep_inverse
_PLANS["CosineDPMSolverMultistepScheduler"] = _plan_cosine_dpm_multistep
_PLANS["SASolverScheduler"] = _plan_sa_solver

_PLANS["UnCLIPScheduler"] = _plan_unclip
_PLANS["DDPMWuerstchenScheduler"] = _plan_wuerstchen
_PLANS["LTXEulerAncestralRFScheduler"] = _plan_ltx_euler_ancestral_rf
_PLANS["SCMScheduler"] = _plan_scm
_PLANS["FlowMapEulerDiscreteScheduler"] = _plan_flow_map_euler
_PLANS["HeliosScheduler"] = _plan_helios  # stages=1; the pyramid (stages > 1) is refused by the plan
_PLANS["HeliosDMDScheduler"] = _plan_helios_dmd

SUPPORTED_CLASSES = tuple(_PLANS)

# Every other class of diffusers 0.42.1 that has a `step`, and why `from_diffusers` refuses it: none samples a
# Gaussian diffusion or flow of continuous data through its `step` alone, so no diffspec schedule, grid and sampler
# can be its equivalent.
_NO_COUNTERPART = "no counterpart in diffspec: "
REFUSED = {
    "AmusedScheduler": _NO_COUNTERPART + "masked-token generation over discrete codes",
    "VQDiffusionScheduler": _NO_COUNTERPART + "a discrete diffusion over vector-quantized codes",
    "BlockRefinementScheduler": _NO_COUNTERPART + "block-wise commit-by-confidence refinement of discrete tokens",
    "DiscreteDDIMScheduler": _NO_COUNTERPART + "DDIM for a uniform corruption process over discrete tokens",
    "EntropyBoundScheduler": _NO_COUNTERPART + "entropy-bounded unmasking of discrete tokens (uniform corruption)",
    "RePaintScheduler": _NO_COUNTERPART + "its loop needs the known image and mask and jumps back in time (undo "
    "steps); diffspec's inpainting is a denoiser wrapper over any sampler",
    "RFD4ProteinaScheduler": _NO_COUNTERPART + "a temporal-score-rescaled flow for one modality of a protein model, "
    "whose step reads modality-specific state",
    "ConsistencyDecoderScheduler": _NO_COUNTERPART + "the consistency decoder of a VAE, whose step conditions on "
    "latents outside the sample",
    "PiflowScheduler": _NO_COUNTERPART + "the model output is a widened policy (several velocity components per "
    "sample), not one prediction of the sample's shape",
}


# What each class's set_timesteps accepts besides num_inference_steps, as implemented here (the pipelines of FLUX,
# SD3, HunyuanVideo and LTX-Video pass custom sigmas and mu).
CUSTOM_INPUTS = {
    "FlowMatchEulerDiscreteScheduler": ("timesteps", "sigmas", "mu"),
    "FlowMatchLCMScheduler": ("timesteps", "sigmas", "mu"),
    "DPMSolverMultistepScheduler": ("mu", "timesteps"),  # mu with use_flow_sigmas and use_dynamic_shifting
    "UniPCMultistepScheduler": ("mu", "sigmas"),  # sigmas with use_flow_sigmas (Karras: the ends of the grid)
    "EulerDiscreteScheduler": ("timesteps", "sigmas"),
    "HeunDiscreteScheduler": ("timesteps",),
    "DDPMScheduler": ("timesteps",),
    "DDPMParallelScheduler": ("timesteps",),
    "DPMSolverSinglestepScheduler": ("timesteps", "mu"),  # mu with use_flow_sigmas and use_dynamic_shifting
    "DEISMultistepScheduler": ("mu",),  # with use_flow_sigmas and use_dynamic_shifting
    "EDMEulerScheduler": ("sigmas",),  # read as the ramp in [0, 1], as diffusers does
    "CMStochasticIterativeScheduler": ("timesteps",),
    "MiniMaxH3Scheduler": ("sigmas",),
    "LCMScheduler": ("timesteps",),
    "TCDScheduler": ("timesteps",),
    "DDPMWuerstchenScheduler": ("timesteps",),
    "LTXEulerAncestralRFScheduler": ("timesteps", "sigmas", "mu"),  # timesteps are read as sigmas
    "SCMScheduler": ("timesteps",),  # TrigFlow times, N + 1 of them
    "FlowMapEulerDiscreteScheduler": ("timesteps", "sigmas"),
    "HeliosScheduler": ("sigmas", "mu"),
    "HeliosDMDScheduler": ("sigmas", "mu"),
}

# set_timesteps' other arguments, as implemented here, by class
SET_TIMESTEPS_OPTIONS = {
    "HeunDiscreteScheduler": ("num_train_timesteps",),
    "KDPM2DiscreteScheduler": ("num_train_timesteps",),
    "KDPM2AncestralDiscreteScheduler": ("num_train_timesteps",),
    "DPMSolverSDEScheduler": ("num_train_timesteps",),
    "ScoreSdeVeScheduler": ("sampling_eps",),
    "LCMScheduler": ("original_inference_steps", "strength"),
    "TCDScheduler": ("original_inference_steps", "strength"),
}


def from_diffusers(
    config: dict,
    num_inference_steps: int | None = None,
    *,
    timesteps: npt.ArrayLike | None = None,
    sigmas: npt.ArrayLike | None = None,
    mu: float | None = None,
    num_train_timesteps: int | None = None,
    sampling_eps: float | None = None,
    original_inference_steps: int | None = None,
    strength: float | None = None,
    **step_options,
) -> DiffusersPlan:
    """A `DiffusersPlan` reproducing a diffusers pipeline loop for `config` (a scheduler_config.json dict).

    The arguments are those a pipeline gives `scheduler.set_timesteps`: `num_inference_steps` (may be None when
    `sigmas` or `timesteps` are given), custom `timesteps` or `sigmas`, and `mu` (the resolution-dependent shift of
    `use_dynamic_shifting`); the classes that accept the custom ones are listed in `CUSTOM_INPUTS`, any other
    combination is a ValueError. `num_train_timesteps` (Heun, KDPM2, KDPM2Ancestral, DPMSolverSDE; see
    `SET_TIMESTEPS_OPTIONS`): the T the timestep grid is spaced over, the sigmas staying the config's (as diffusers'
    set_timesteps does). `sampling_eps` (ScoreSdeVe): the last time of the grid linspace(1, sampling_eps, N), in
    place of the config's. `original_inference_steps` (LCM, TCD): the distillation grid's size, in place of the
    config's (TCD, as diffusers, then samples every training timestep whatever the value); `strength` (LCM, TCD;
    img2img): the grid is drawn from the first int(original_inference_steps strength) distillation times (the
    run then starts from the noised image; with custom timesteps the last int(N strength) of them, the step still
    counting N, as diffusers does). step_options are what a pipeline passes to `scheduler.step` (`STEP_OPTIONS`: DDIM
    eta and use_clipped_model_output; LMS order; TCD eta (the paper's gamma); DPMSolverSDE s_noise; Euler and
    EDMEuler s_churn, s_tmin, s_tmax, s_noise); any other is a ValueError. See the package docstring for the
    departures from the papers reproduced.
    """
    name = config.get("_class_name") if isinstance(config, dict) else None
    if name in REFUSED:
        raise ValueError(f"config['_class_name']={name!r}: {REFUSED[name]}")
    name, cfg = _validate(config)
    cfg["_class_name"] = name
    allowed = STEP_OPTIONS.get(name, {})
    unknown = sorted(set(step_options) - set(allowed))
    if unknown:
        raise ValueError(
            f"step option {unknown[0]!r} is not one {name}'s step takes in diffusers 0.42.1: expected some of "
            f"{sorted(allowed) or 'none'}"
        )
    given = {"num_train_timesteps": num_train_timesteps, "sampling_eps": sampling_eps}
    given |= {"original_inference_steps": original_inference_steps, "strength": strength}
    for key, value in given.items():
        if value is not None and key not in SET_TIMESTEPS_OPTIONS.get(name, ()):
            taking = sorted(c for c, keys in SET_TIMESTEPS_OPTIONS.items() if key in keys)
            raise ValueError(f"{key}={value!r}: a set_timesteps argument of {', '.join(taking)}, not {name}")
    if num_train_timesteps is not None:  # diffusers: `num_train_timesteps or config.num_train_timesteps`
        cfg["_grid_num_train_timesteps"] = _checks.integer("num_train_timesteps", num_train_timesteps, minimum=0)
    if sampling_eps is not None:  # it only moves the timesteps, from which set_sigmas then computes the sigmas
        cfg["sampling_eps"] = _checks.positive("sampling_eps", sampling_eps)
    if strength is not None:
        cfg["_strength"] = _checks.positive("strength", strength)
    if original_inference_steps is not None:  # used by set_timesteps only
        orig = _checks.integer("original_inference_steps", original_inference_steps, minimum=1)
        if num_inference_steps is not None and num_inference_steps > orig:  # diffusers' check, TCD included
            raise ValueError(
                f"num_inference_steps={num_inference_steps!r}: expected at most original_inference_steps={orig}"
            )
        # diffusers' TCD, given the argument, samples all T training timesteps whatever its value (a grid of
        # original_inference_steps = T); LCM uses the value
        cfg["original_inference_steps"] = cfg["num_train_timesteps"] if name == "TCDScheduler" else orig
    custom = {k: v for k, v in (("timesteps", timesteps), ("sigmas", sigmas), ("mu", mu)) if v is not None}
    for key, given_input in custom.items():
        if key not in CUSTOM_INPUTS.get(name, ()):
            accepting = sorted(c for c, keys in CUSTOM_INPUTS.items() if key in keys)
            raise ValueError(
                f"{key}={given_input!r}: custom {key} are implemented for {', '.join(accepting)}, not {name}"
            )
    if custom or name in CUSTOM_INPUTS:
        plan = _PLANS[name](cfg, num_inference_steps, step_options, **custom)
    else:
        plan = _PLANS[name](cfg, _checks.integer("num_inference_steps", num_inference_steps, minimum=1), step_options)
    plan.class_name = name
    return plan
