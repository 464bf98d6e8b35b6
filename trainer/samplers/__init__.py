"""Torch samplers, one paper family per module, under the reference's registry names.

Signature: fn(denoise, x_T, grid, schedule, *, noise=None, <options>) -> x, with x_T a tensor, grid any 1-D
sequence of times (used as float64), schedule a `diffspec.trainer.schedules` schedule, denoise(x, t) -> x0_hat
called with t a tensor of shape (B,) in x's dtype, and noise a torch.Generator or a callable shape -> array.
Options, defaults, draw order and step orders follow the reference sampler of the same name.

The registry is built from the reference's contract (`diffspec.reference.samplers.SAMPLER_INFO`, plumbing only:
names and family modules, never the math): each registered sampler `name` implemented by the reference function
`sample_x` in `reference/samplers/<family>.py` is the function of the same name in `trainer/samplers/<family>.py`.
`MISSING` lists contract names without a torch twin (the conformance suite requires it to be empty).
"""

import importlib

from diffspec.reference.samplers import SAMPLER_ALIASES, SAMPLER_INFO
from diffspec.trainer.samplers.inversion import INVERSIONS


def _twin(info):
    family = info.fn.__module__.rsplit(".", 1)[-1]
    module = importlib.import_module(f"{__name__}.{family}")
    return getattr(module, info.fn.__name__, None)


_TWINS = {name: _twin(info) for name, info in SAMPLER_INFO.items()}
SAMPLERS = {name: fn for name, fn in _TWINS.items() if fn is not None}
MISSING = tuple(name for name, fn in _TWINS.items() if fn is None)


def get_sampler(name):
    """SAMPLERS[name] (an alias resolves to its registry name), or a ValueError listing the known names."""
    name = SAMPLER_ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: expected one of {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


__all__ = ["INVERSIONS", "MISSING", "SAMPLERS", "get_sampler"]
