"""Backends: each of the project's implementations of the registry's samplers, adapted to diffspec's calling
convention on float64 numpy arrays, so that `check_sampler` scores every one of them with the same checks.

- `reference`: `diffspec.reference.samplers` (the truth; float64).
- `trainer64`, `trainer32`: `diffspec.trainer.samplers` on torch tensors of that dtype (the model's output is cast
  to it, the sampler's state stays in it); the float32 tolerance is derived in `samplers.tolerance`.
- the runtime: `runtime_report(name)` drives `diffspec.runtime.sample` (its grid, its per-sample noise, its option
  checks) through a numpy network (the exact mixture denoiser, in float32 as an ONNX network would return it) and
  compares it with the reference sampler run on the same network and the same noise.

Adding a backend (the pipeline graph of `diffspec.export.pipeline`, say) is one `register_backend(Backend(...))`
whose `sampler(name)` returns a callable `run(denoise, x_T, grid, schedule, *, noise=None, **options)` (or None
where the backend does not implement `name`): for the pipeline graph, export the sampler for that grid and
schedule around a network that calls `denoise`, feed x_T and the draws, run it with onnxruntime. The conformance
suite (`tests/conformance/`) parametrizes over `BACKENDS` and picks it up.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from diffspec.conformance.report import Report


@dataclass(frozen=True)
class Backend:
    name: str
    precision: str  # "float64" or "float32": sets the agreement tolerance
    sampler: Callable[[str], Callable | None]  # registry name -> diffspec-convention callable, None if absent
    checks: tuple[str, ...] | None = None  # the checks that apply (None: all)


def _reference_sampler(name):
    from diffspec.reference.samplers import SAMPLERS

    return SAMPLERS.get(name)


def _numpy_draws(noise):
    if isinstance(noise, np.random.Generator):
        gen = noise
        return lambda shape: gen.standard_normal(tuple(shape))
    return noise


def _trainer_sampler(dtype_name):
    def get(name):
        import torch
        from diffspec.trainer.samplers import SAMPLERS
        from diffspec.trainer.schedules import schedule_from_dict

        fn = SAMPLERS.get(name)
        if fn is None:
            return None
        dtype = getattr(torch, dtype_name)

        def run(denoise, x_T, grid, schedule, *, noise=None, **options):
            twin = schedule_from_dict(schedule.to_dict())
            lo, hi = float(schedule.t_min), float(schedule.t_max)

            def model(x, t):
                # a float32 time may round past the domain's ends: nudge it back in (the network sees it as is)
                tt = min(max(float(t.reshape(-1)[0]), lo), hi)
                out = denoise(x.detach().cpu().numpy().astype(np.float64), tt)
                return torch.as_tensor(np.asarray(out), dtype=x.dtype)

            opts = dict(options)
            if callable(opts.get("variance_v")):
                v = opts["variance_v"]
                opts["variance_v"] = lambda x, t: torch.as_tensor(
                    v(x.detach().cpu().numpy().astype(np.float64), float(t.reshape(-1)[0])), dtype=x.dtype
                )
            out = fn(
                model, torch.as_tensor(np.asarray(x_T), dtype=dtype), grid, twin, noise=_numpy_draws(noise), **opts
            )
            if out.dtype != dtype:
                raise TypeError(f"returned {out.dtype} for an x_T of {dtype}")
            return out.detach().cpu().numpy().astype(np.float64)

        run.__name__ = run.__qualname__ = f"trainer.{fn.__name__}[{dtype_name}]"
        return run

    return get


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    BACKENDS[backend.name] = backend


register_backend(Backend("reference", "float64", _reference_sampler))
# The trainer mirrors the reference's math independently: step-by-step agreement, draws, clean ends and option
# validation carry the order and distribution over from the reference (re-measuring them adds nothing in CI).
_TWIN_CHECKS = (
    "clean end",
    "draws",
    "noise contract",
    "option validation",
    "input validation",
    "requirements",
    "agreement",
)
register_backend(Backend("trainer64", "float64", _trainer_sampler("float64"), _TWIN_CHECKS))
register_backend(Backend("trainer32", "float32", _trainer_sampler("float32"), ("clean end", "agreement")))


# ------------------------------------------------------------------------------------------------- runtime
def numpy_network_model(schedule, mixture, *, dtype=np.float32):
    """A `diffspec.runtime.Model` whose network is numpy: the mixture's exact x0 (parameterization "x0"), returned
    in `dtype` as an ONNX float32 network would. Everything else (grid, noise, options, conversion) is the
    runtime's own code."""
    from diffspec.reference.modelcard import DataInfo, ModelCard
    from diffspec.reference.parameterizations import parse as parse_parameterization
    from diffspec.runtime.model import Model

    class NumpyNetworkModel(Model):
        def __init__(self):  # no onnxruntime session: the network below replaces it
            self.session, self.path, self.provider = None, "<numpy network>", "numpy"
            self.card = ModelCard(
                schedule=schedule.to_dict(),
                parameterization="x0",
                data=DataInfo(shape=(mixture.dim,), kind="points", range=(-3.0, 3.0)),
            )
            self.schedule = self.card.reference_schedule()
            self.parameterization = parse_parameterization("x0")
            self._coefficients = {}

        def network(self, x, t, y=None, *, guidance_scale=None, return_variance=False):
            x = np.asarray(x, dtype=np.float64)
            tt = self.times(t, x.shape[0])
            out = mixture.x0_mean(x, self.schedule.alpha(tt), self.schedule.sigma(tt)).astype(dtype)
            return (out, None) if return_variance else out

    return NumpyNetworkModel()


def runtime_report(name: str, options=None, *, steps: int = 8, schedule_name: str | None = None) -> Report:
    """The runtime's `sample` for registry sampler `name` against the reference sampler on the same numpy network,
    grid and per-sample noise (x_T first, then the sampler's draws): rows `agreement (runtime ...)`."""
    from diffspec.reference.oracles import standard_mixture_2d
    from diffspec.reference.samplers import SAMPLER_INFO, Requirement
    from diffspec.reference.schedules import make_schedule
    from diffspec.runtime import sampling

    info = SAMPLER_INFO[name]
    options = dict(options or {})
    report = Report(f"runtime {name} (numpy network, float32 outputs)")
    flow = Requirement.FLOW_SCHEDULE in info.requires
    if schedule_name is None:
        schedule_name = "flow" if flow else ("edm" if Requirement.ALPHA_START in info.requires else "cosine")
    schedule = make_schedule(schedule_name)
    mixture = standard_mixture_2d()
    model = numpy_network_model(schedule, mixture)
    idx, seed = np.arange(5), 11
    check = f"agreement (runtime, {schedule_name}, {steps} steps)"
    try:
        with np.errstate(all="ignore"):
            got = sampling.sample(model, sampler=name, steps=steps, indices=idx, seed=seed, raw=False, **options)
    except Exception as exc:
        report.fail(check, f"runtime raised {type(exc).__name__}: {exc}", expected="the reference's samples")
        return report
    grid = sampling.make_sampling_grid(model.schedule, steps)
    noise = sampling.SampleNoise(seed, idx)
    x_T = float(model.schedule.sigma(grid[0])) * noise((len(idx), mixture.dim))
    with np.errstate(all="ignore"):
        want = info.fn(lambda x, t: model.denoise(x, t), x_T, grid, model.schedule, noise=noise, **options)
    err = float(np.max(np.abs(got - want))) / max(1.0, float(np.max(np.abs(want))))
    tol = 1e-12  # the same float64 sampler on the same float32 network outputs: only summation order may differ
    report.add(check, err, 0.0, tol, err <= tol)
    return report
