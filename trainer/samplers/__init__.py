"""Torch samplers, one paper family per module, under the reference's registry names.

Signature: fn(denoise, x_T, grid, schedule, *, noise=None, <options>) -> x, with x_T a tensor, grid any 1-D
sequence of times (used as float64), schedule a `diffspec.trainer.schedules` schedule, denoise(x, t) -> x0_hat
called with t a tensor of shape (B,) in x's dtype, and noise a torch.Generator or a callable shape -> array.
"""

from diffspec.trainer.samplers.consistency import sample_consistency, sample_lcm
from diffspec.trainer.samplers.ddim import sample_ddim
from diffspec.trainer.samplers.ddpm import sample_ddpm
from diffspec.trainer.samplers.dpm_solver import sample_dpm_solver_1, sample_dpm_solver_2, sample_dpm_solver_3
from diffspec.trainer.samplers.dpm_solver_pp import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m
from diffspec.trainer.samplers.flow import sample_flow_euler
from diffspec.trainer.samplers.k_diffusion import sample_euler, sample_euler_ancestral, sample_heun
from diffspec.trainer.samplers.unipc import sample_unipc

SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_solver_1": sample_dpm_solver_1,
    "dpm_solver_2": sample_dpm_solver_2,
    "dpm_solver_3": sample_dpm_solver_3,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_3m": sample_dpmpp_3m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "unipc": sample_unipc,
    "flow_euler": sample_flow_euler,
    "consistency": sample_consistency,
    "lcm": sample_lcm,
}


def get_sampler(name):
    """SAMPLERS[name], or a ValueError listing the known names."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: expected one of {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


__all__ = ["SAMPLERS", "get_sampler"]
