"""What the registry knows about a sampler besides its function (used by tests, the runtime and benchmarks)."""

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    fn: Callable
    order: float | None  # theoretical order of the deterministic method (None: not an ODE solver)
    stochastic: bool  # draws noise with its default options (then `noise` is required)
    calls_per_step: int | None  # denoiser calls per grid step (None: adaptive)
    min_grid: int = 2  # the fewest grid points it accepts
    aliases: tuple[str, ...] = ()  # other names it is known by (k-diffusion's, diffusers'), resolved by get_sampler
