"""Calling conventions: adapters that turn a user's sampler into diffspec's
`fn(denoise, x_T, grid, schedule, *, noise, **options)` on float64 numpy arrays.

- "diffspec": the function is used as is.
- "k-diffusion": `fn(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options)`
  on torch tensors (Crowson's k-diffusion). The adapter works in k-diffusion's world alpha = 1: any schedule maps
  onto it with y = x / alpha and sigma_ve = sigma / alpha, `sigmas` = sigma_ve over the grid (0 at a clean end),
  `model(y, sigma)` = denoise(alpha(t) y, t) at t = t_of_sigma_ve(sigma), and `noise_sampler(sigma, sigma_next)`
  returns the kit's next draw. `sample_dpm_fast` / `sample_dpm_adaptive`, which take (sigma_min, sigma_max[, n])
  instead of `sigmas`, are driven with the grid's end points (and its number of steps).
"""

import inspect

import numpy as np
from diffspec.reference.noise import as_noise_source

CONVENTIONS = ("diffspec", "k-diffusion")
SIGNATURES = {
    "diffspec": "fn(denoise, x_T, grid, schedule, *, noise=None, **options)",
    "k-diffusion": "fn(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options)",
}


def _parameters(fn):
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None


def signature_problem(fn, convention: str, options=None) -> str | None:
    """None if `fn` can be called in `convention` with `options`, else a one-line description of what is wrong."""
    if not callable(fn):
        return f"{fn!r} is not callable: expected {SIGNATURES[convention]}"
    params = _parameters(fn)
    if params is None:
        return None  # a builtin or C function: let the runs decide
    names = list(params)
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if convention == "diffspec":
        positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < 4 and not any(p.kind is p.VAR_POSITIONAL for p in params.values()):
            return (
                f"signature {inspect.signature(fn)} takes {len(positional)} positional arguments: expected "
                f"{SIGNATURES[convention]}"
            )
        if "noise" not in names and not var_kw:
            return f"signature {inspect.signature(fn)} has no keyword `noise`: expected {SIGNATURES[convention]}"
    else:
        if len(names) < 3 or not ({"sigmas", "sigma_min"} & set(names) or names[2] == "sigmas"):
            return f"signature {inspect.signature(fn)}: expected {SIGNATURES[convention]}"
    unknown = [k for k in (options or {}) if k not in names and not var_kw]
    if unknown:
        return f"option {unknown[0]!r} is not a parameter of {getattr(fn, '__name__', fn)}{inspect.signature(fn)}"
    return None


def accepts(fn, name: str) -> bool:
    params = _parameters(fn)
    return params is None or name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def adapt(fn, convention: str, options=None):
    """`fn` in `convention` -> (run, dtype), run in diffspec's convention on numpy arrays with `options` closed over."""
    options = dict(options or {})
    if convention == "diffspec":

        def run(denoise, x_T, grid, schedule, *, noise=None):
            return fn(denoise, x_T, grid, schedule, noise=noise, **options)

        return run
    if convention == "k-diffusion":
        return _k_diffusion(fn, options)
    raise ValueError(f"convention={convention!r}: expected one of {', '.join(CONVENTIONS)}")


def _k_diffusion(fn, options):
    import torch

    params = _parameters(fn) or {}
    endpoints = "sigma_min" in params and "sigmas" not in params

    def run(denoise, x_T, grid, schedule, *, noise=None):
        grid = np.asarray(grid, dtype=np.float64)
        alpha = schedule.alpha(grid)
        if alpha[0] == 0:
            raise ValueError(f"grid[0]={grid[0]} has alpha = 0: k-diffusion samplers work in sigma_ve = sigma / alpha")
        sigma_ve = schedule.sigma(grid) / alpha
        times = {}

        def model(y, sigma, **extra):
            s = float(sigma.reshape(-1)[0])
            t = times.get(s)
            if t is None:
                t = float(schedule.t_of_sigma_ve(s))
            y_np = y.detach().cpu().numpy().astype(np.float64)
            x0 = np.asarray(denoise(schedule.alpha(t) * y_np, t), dtype=np.float64)
            return torch.from_numpy(x0).to(y.dtype)

        for t, s in zip(grid, sigma_ve):
            times[float(s)] = float(t)
        draw = None if noise is None else as_noise_source(noise, sampler=getattr(fn, "__name__", "sampler"))

        def noise_sampler(sigma, sigma_next):
            if draw is None:
                raise ValueError("noise=None: this sampler drew noise; pass noise")
            return torch.from_numpy(draw(tuple(y0.shape)))

        y0 = torch.from_numpy(np.asarray(x_T, dtype=np.float64) / alpha[0])
        kwargs = dict(options)
        if accepts(fn, "noise_sampler"):
            kwargs["noise_sampler"] = noise_sampler
        if accepts(fn, "disable"):
            kwargs["disable"] = True
        with torch.no_grad():
            if endpoints:
                lo, hi = float(sigma_ve[-1]), float(sigma_ve[0])
                args = (lo, hi, len(grid) - 1) if "n" in params else (lo, hi)
                out = fn(model, y0, *args, **kwargs)
            else:
                out = fn(model, y0, torch.from_numpy(sigma_ve), **kwargs)
        if isinstance(out, tuple):  # sample_dpm_adaptive(return_info=True)
            out = out[0]
        out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
        return alpha[-1] * out.astype(np.float64)

    return run
