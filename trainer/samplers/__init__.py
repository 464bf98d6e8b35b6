"""Torch samplers, one paper family per module, under the reference's registry names.

Signature: fn(denoise, x_T, grid, schedule, *, noise=None, <options>) -> x, with x_T a tensor, grid any 1-D
sequence of times (used as float64), schedule a `diffspec.trainer.schedules` schedule, denoise(x, t) -> x0_hat
called with t a tensor of shape (B,) in x's dtype, and noise a torch.Generator or a callable shape -> array.
Options, defaults, draw order and step orders follow the reference sampler of the same name.
"""

from diffspec.trainer.samplers import (
    consistency, ddim, ddpm, deis, dpm_solver, dpm_solver_pp, flow, inversion, k_diffusion, lms, ode, pndm, sde, unipc,
)
from diffspec.trainer.samplers.inversion import INVERSIONS

SAMPLERS = {
    "ddpm": ddpm.sample_ddpm,
    "ddim": ddim.sample_ddim,
    "pndm": pndm.sample_pndm,
    "plms": pndm.sample_plms,
    "ipndm": pndm.sample_ipndm,
    "euler": k_diffusion.sample_euler,
    "euler_ancestral": k_diffusion.sample_euler_ancestral,
    "heun": k_diffusion.sample_heun,
    "dpm2": k_diffusion.sample_dpm2,
    "dpm2_ancestral": k_diffusion.sample_dpm2_ancestral,
    "lms": lms.sample_lms,
    "dpm_solver_1": dpm_solver.sample_dpm_solver_1,
    "dpm_solver_2": dpm_solver.sample_dpm_solver_2,
    "dpm_solver_3": dpm_solver.sample_dpm_solver_3,
    "dpm_solver_fast": dpm_solver.sample_dpm_solver_fast,
    "dpm_solver_adaptive": dpm_solver.sample_dpm_solver_adaptive,
    "dpmpp_2s_ancestral": dpm_solver_pp.sample_dpmpp_2s_ancestral,
    "dpmpp_2m": dpm_solver_pp.sample_dpmpp_2m,
    "dpmpp_3m": dpm_solver_pp.sample_dpmpp_3m,
    "dpmpp_2m_sde": dpm_solver_pp.sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": dpm_solver_pp.sample_dpmpp_3m_sde,
    "dpmpp_sde": dpm_solver_pp.sample_dpmpp_sde,
    "unipc": unipc.sample_unipc,
    "deis": deis.sample_deis,
    "euler_maruyama": sde.sample_euler_maruyama,
    "pc": sde.sample_pc,
    "pf_ode_rk45": ode.sample_pf_ode_rk45,
    "flow_euler": flow.sample_flow_euler,
    "flow_heun": flow.sample_flow_heun,
    "flow_midpoint": flow.sample_flow_midpoint,
    "consistency": consistency.sample_consistency,
    "lcm": consistency.sample_lcm,
    "tcd": consistency.sample_tcd,
}


def get_sampler(name):
    """SAMPLERS[name], or a ValueError listing the known names."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: expected one of {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


__all__ = ["INVERSIONS", "SAMPLERS", "get_sampler"]
