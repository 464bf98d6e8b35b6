"""Calling conventions: adapters that turn a user's sampler into diffspec's
`fn(denoise, x_T, grid, schedule, *, noise, **options)` on float64 numpy arrays.

- "diffspec": the function is used as is.
- "k-diffusion": `fn(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options)`
  on torch tensors (Crowson's k-diffusion). The adapter works in k-diffusion's world alpha = 1: any schedule maps
  onto it with y = x / alpha and sigma_ve = sigma / alpha, `sigmas` = sigma_ve over the grid (0 at a clean end),
  `model(y, sigma)` = denoise(alpha(t) y, t) at t = t_of_sigma_ve(sigma), and `noise_sampler(sigma, sigma_next)`
  returns the standardized increment of one Brownian path in sigma_ve built from the kit's draws (`BrownianPath`):
  the kit's next draw for a sampler that asks for one new interval per call, and for k-diffusion's `dpmpp_sde`,
  whose two calls per step overlap, the map the reference's variant="k-diffusion" documents. `sample_dpm_fast` /
  `sample_dpm_adaptive`, which take (sigma_min, sigma_max[, n]) instead of `sigmas` and log sigma_min, are driven
  with the grid's end points (and its number of steps); the kit scores them on the times they pick between the
  first and the last noisy time (`endpoint_grid`).
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


def takes_endpoints(fn) -> bool:
    """True for k-diffusion's `sample_dpm_fast` / `sample_dpm_adaptive` form, (model, x, sigma_min, sigma_max[, n])
    instead of `sigmas`: such a function picks its own times between the end points and takes log sigma_min."""
    params = _parameters(fn) or {}
    return "sigma_min" in params and "sigmas" not in params


def endpoint_grid(fn, schedule, grid):
    """The times a `takes_endpoints` function steps on when the kit drives it with `grid`: from grid[0] to the last
    time with sigma > 0 (it takes log sigma_min, so a clean end is left out), the intermediate times its own rule
    picks (`reference.interop.k_diffusion_grid`: n + 1 times for `sample_dpm_fast` with n = the noisy intervals,
    the two end points for `sample_dpm_adaptive`). The adapter below passes this grid's end points (and n) back."""
    from diffspec.reference.interop import k_diffusion_grid

    grid = np.asarray(grid, dtype=np.float64)
    sigma_ve = schedule.sigma(grid) / schedule.alpha(grid)
    noisy = int(np.sum(sigma_ve > 0))
    lo, hi = float(sigma_ve[noisy - 1]), float(sigma_ve[0])
    if "n" in (_parameters(fn) or {}):
        return k_diffusion_grid("dpm_fast", schedule, sigma_min=lo, sigma_max=hi, n=noisy - 1)
    return k_diffusion_grid("dpm_adaptive", schedule, sigma_min=lo, sigma_max=hi)


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


class BrownianPath:
    """k-diffusion's noise_sampler(sigma, sigma_next) = (W(sigma) - W(sigma_next)) / sqrt|sigma - sigma_next| for one
    Brownian path W in sigma_ve (what its BrownianTreeNoiseSampler computes), W built from `draw` on demand.

    W starts at 0 at the first point asked for; each new point takes one draw: past the known points,
    W(s) = W(p) +- sqrt|s - p| z from the nearest known point p, and between two known points lo < s < hi the
    Brownian bridge W(lo) + (s - lo)/(hi - lo) (W(hi) - W(lo)) + sqrt((s - lo)(hi - s)/(hi - lo)) z.
    A sampler that asks for consecutive intervals (sigma_i, sigma_{i+1}) gets exactly its draws in order (up to
    rounding). k-diffusion's `sample_dpmpp_sde`, which asks for (sigma, sigma_s) and then (sigma, sigma_next) in
    each step, gets a, then (sqrt(sigma - sigma_s) a + sqrt(sigma_s - sigma_next) b) / sqrt(sigma - sigma_next):
    two draws per step, the map of the reference's `dpmpp_sde(variant="k-diffusion")`. A point within 1e-12
    relative of a known one is that point (k-diffusion recomputes sigma as exp(-(-log sigma))).
    """

    def __init__(self, draw, shape):
        self.draw, self.shape = draw, tuple(shape)
        self.points: dict[float, np.ndarray] = {}

    def _at(self, s: float) -> np.ndarray:
        for p in self.points:
            if abs(p - s) <= 1e-12 * max(abs(p), abs(s)):
                return self.points[p]
        if not self.points:
            w = np.zeros(self.shape)
        else:
            below = [p for p in self.points if p < s]
            above = [p for p in self.points if p > s]
            if below and above:
                lo, hi = max(below), min(above)
                w_lo, w_hi = self.points[lo], self.points[hi]
                w = (
                    w_lo
                    + (s - lo) / (hi - lo) * (w_hi - w_lo)
                    + np.sqrt((s - lo) * (hi - s) / (hi - lo)) * self.draw(self.shape)
                )
            elif above:
                w = self.points[min(above)] - np.sqrt(min(above) - s) * self.draw(self.shape)
            else:
                w = self.points[max(below)] + np.sqrt(s - max(below)) * self.draw(self.shape)
        self.points[s] = w
        return w

    def __call__(self, sigma: float, sigma_next: float) -> np.ndarray:
        sigma, sigma_next = float(sigma), float(sigma_next)
        if sigma == sigma_next:
            return np.zeros(self.shape)
        w, w_next = self._at(sigma), self._at(sigma_next)
        return (w - w_next) / np.sqrt(abs(sigma - sigma_next))


def _k_diffusion(fn, options):
    import torch

    params = _parameters(fn) or {}
    endpoints = takes_endpoints(fn)

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
        path = None if draw is None else BrownianPath(draw, np.shape(x_T))

        def noise_sampler(sigma, sigma_next):
            if path is None:
                raise ValueError("noise=None: this sampler drew noise; pass noise")
            return torch.from_numpy(path(sigma, sigma_next))

        y0 = torch.from_numpy(np.asarray(x_T, dtype=np.float64) / alpha[0])
        kwargs = dict(options)
        if accepts(fn, "noise_sampler"):
            kwargs["noise_sampler"] = noise_sampler
        if accepts(fn, "disable"):
            kwargs["disable"] = True
        # k-diffusion builds tensors of its own (torch.tensor(sigma_max) in dpm_adaptive / dpm_fast, linspace) in
        # torch's default dtype: float64 for the call, or float32 end points move its adaptive steps
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            with torch.no_grad():
                if endpoints:
                    lo, hi = float(sigma_ve[-1]), float(sigma_ve[0])
                    args = (lo, hi, len(grid) - 1) if "n" in params else (lo, hi)
                    out = fn(model, y0, *args, **kwargs)
                else:
                    out = fn(model, y0, torch.from_numpy(sigma_ve), **kwargs)
        finally:
            torch.set_default_dtype(default_dtype)
        if isinstance(out, tuple):  # sample_dpm_adaptive(return_info=True)
            out = out[0]
        out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
        return alpha[-1] * out.astype(np.float64)

    return run
