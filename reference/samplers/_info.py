"""The sampler contract: what the registry knows about a sampler besides its function.

One `SamplerInfo` per registered sampler, in its family module's `INFO` list, says everything a test, the runtime,
a benchmark or `diffspec.conformance` needs, machine-readably:

- `options`: each keyword option with its default, its allowed values (a finite set or a closed interval) and
  values that must be refused with a ValueError naming the option;
- `draws(options)`: standard-normal draws of x's shape as (per step, on the last step), for a grid that ends at
  the clean end (sigma = 0); None where the count depends on the grid itself (Heun's churn window);
- `requires`: what the grid and schedule must satisfy (`Requirement`);
- `order` and `order_options`: the order of convergence of the deterministic method, measured with these
  options (e.g. eta = 0, no lower-order final step); `orders` lists further (options, order) pairs;
- `aliases`: the names other projects give it (k-diffusion's, diffusers').
"""

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class Requirement(enum.StrEnum):
    """What a sampler needs of its grid and schedule (anything else must work, a clean end included)."""

    ALPHA_START = "alpha > 0 at grid[0]"  # it divides by alpha (noise-prediction or sigma_ve form)
    FLOW_SCHEDULE = "a flow schedule (alpha = 1 - t, sigma = t)"
    CLEAN_END = "a grid that ends at sigma = 0 (the model's output is taken as clean data)"
    CONSISTENCY_MODEL = "a consistency function as the model (its output is a sample, not E[x0 | x_t])"


@dataclass(frozen=True)
class Option:
    """One keyword option: its default, the values it allows, and values that must be refused.

    `choices`: the allowed values when they are a finite set. `low`, `high`: a closed interval for numbers (None:
    unbounded); `integer`: only integers. `invalid`: values the sampler must refuse with a ValueError naming the
    option (checked by the conformance kit). `probe`: allowed values worth exercising besides the default.
    """

    default: object
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    integer: bool = False
    invalid: tuple = ()
    probe: tuple = ()
    callable: bool = False  # a callable (x, t) -> array rather than a value
    low_open: bool = False  # the interval excludes `low` (a positive tolerance, say)
    nullable: bool = False  # None is allowed (an option that only one variant reads)

    def allows(self, value) -> bool:
        """Whether `value` is an allowed value of this option."""
        if self.callable:
            return value is None or callable(value)
        if value is None:
            return self.nullable
        if self.choices:
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return False
        if self.integer and value != int(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = "an integer" if self.integer else "a number"
        lo = "-inf" if self.low is None else repr(self.low)
        hi = "inf" if self.high is None else repr(self.high)
        return f"{kind} in {'(' if self.low_open else '['}{lo}, {hi}]" + (" or None" if self.nullable else "")


VARIANT = Option("diffspec", choices=("diffspec", "k-diffusion"), invalid=("kdiffusion",))  # k-diffusion's own form


def no_draws(options: Mapping) -> tuple[int, int]:
    """A deterministic sampler: no draws."""
    return (0, 0)


def one_per_step(options: Mapping) -> tuple[int, int]:
    """One draw per step, none on the last (deterministic) step."""
    return (1, 0)


def one_per_step_if(option: str) -> Callable[[Mapping], tuple[int, int]]:
    """One draw per step (none on the last) while `option` is non-zero, none at zero."""

    def draws(options: Mapping) -> tuple[int, int]:
        return (1, 0) if options[option] else (0, 0)

    draws.__doc__ = f"one draw per step (none on the last) while {option} > 0"
    return draws


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    fn: Callable
    order: float | None  # order of the deterministic method under `order_options` (None: not an ODE solver)
    stochastic: bool  # draws noise with its default options (then `noise` is required)
    calls_per_step: int | None  # denoiser calls per grid step (None: adaptive)
    min_grid: int = 2  # the fewest grid points it accepts
    aliases: tuple[str, ...] = ()  # other names it is known by (k-diffusion's, diffusers'), resolved by get_sampler
    options: Mapping[str, Option] = field(default_factory=dict)  # keyword options (noise excluded)
    draws: Callable[[Mapping], tuple[int, int] | None] = no_draws  # (per step, last step) for given options
    requires: frozenset[Requirement] = frozenset()
    order_options: Mapping = field(default_factory=dict)  # the options under which `order` holds
    orders: tuple[tuple[Mapping, float], ...] = ()  # further (options, order) pairs
    adaptive: bool = False  # chooses its own steps inside the grid's span (its order is not measured on a grid)

    def __post_init__(self):
        object.__setattr__(self, "options", _frozen(self.options))
        object.__setattr__(self, "order_options", _frozen(self.order_options))
        object.__setattr__(self, "requires", frozenset(self.requires))

    def with_defaults(self, options: Mapping | None = None) -> dict:
        """The options a call runs with: defaults updated by `options`."""
        return {**{k: o.default for k, o in self.options.items()}, **dict(options or {})}

    def draw_count(self, steps: int, options: Mapping | None = None) -> int | None:
        """Draws for `steps` steps on a grid ending at the clean end (None: depends on the grid)."""
        counts = self.draws(self.with_defaults(options))
        if counts is None:
            return None
        per_step, last = counts
        return per_step * (steps - 1) + last if steps >= 1 else 0

    def order_cases(self) -> tuple[tuple[Mapping, float], ...]:
        """Every (options, order) pair the contract declares, the main one first."""
        if self.order is None or self.adaptive:
            return self.orders
        return ((self.order_options, self.order),) + self.orders

    def __hash__(self):
        return hash(self.name)
