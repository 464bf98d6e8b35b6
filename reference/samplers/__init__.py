"""Every sampler, one paper family per module; `SAMPLERS` maps a name to its function.

Signature: fn(denoise, x_T, grid, schedule, *, noise=None, <options>) -> x, with denoise(x, t) -> x0_hat.
`SAMPLER_INFO[name]` is its contract (`SamplerInfo`): options and their allowed values, noise draws as a function
of the options, requirements, order (and for which options), denoiser calls per step, aliases. The conformance
kit (`diffspec.conformance`) turns it into checks for any backend.
`INVERSIONS` holds the data -> noise maps (grid increasing).
"""

import importlib
from collections.abc import Callable

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.samplers._info import Option, Requirement, SamplerInfo

_FAMILIES = (
    "ddpm",
    "ddim",
    "pndm",
    "k_diffusion",
    "lms",
    "dpm_solver",
    "dpm_solver_pp",
    "unipc",
    "deis",
    "sde",
    "ode",
    "flow",
    "consistency",
    "inversion",
)

SAMPLER_INFO: dict[str, SamplerInfo] = {}
INVERSIONS: dict[str, Callable] = {}
for _family in _FAMILIES:
    _module = importlib.import_module(f"diffspec.reference.samplers.{_family}")
    for _info in getattr(_module, "INFO", ()):
        SAMPLER_INFO[_info.name] = _info
    INVERSIONS.update(getattr(_module, "INVERSIONS", {}))

SAMPLERS = {name: info.fn for name, info in SAMPLER_INFO.items()}
# Other names a sampler is known by (k-diffusion's function names without `sample_`, ...) -> registry name.
SAMPLER_ALIASES = {alias: info.name for info in SAMPLER_INFO.values() for alias in info.aliases}


def get_sampler(name: str) -> Callable[..., np.ndarray]:
    """SAMPLERS[name] (an alias resolves to its registry name), or a ValueError listing the known names."""
    name = SAMPLER_ALIASES.get(name, name) if isinstance(name, str) else name
    return _checks.lookup(SAMPLERS, name, what="sampler")


__all__ = [
    "INVERSIONS",
    "Option",
    "Requirement",
    "SAMPLERS",
    "SAMPLER_ALIASES",
    "SAMPLER_INFO",
    "SamplerInfo",
    "get_sampler",
]
