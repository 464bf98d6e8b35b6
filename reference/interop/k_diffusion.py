"""k-diffusion's sampler names: each function of `k_diffusion.sampling` and the reference sampler that reproduces it.

k-diffusion (Crowson) lives in EDM's world, alpha = 1 and sigma = t, and its samplers take a model(x, sigma) and a
decreasing list of sigmas. A diffspec sampler takes denoise(x, t), a grid of times and a schedule; on the EDM
schedule t is sigma, and on any other schedule sigma is sigma_ve = sigma / alpha (`schedule.sigma_ve`), so the
grid of k-diffusion's sigmas is `schedule.t_of_sigma_ve(sigmas)` (`k_diffusion_grid`).

`K_DIFFUSION_SAMPLERS[name] = (registry name, options)`: the registry sampler (also reachable by k-diffusion's name,
an alias in `SAMPLER_ALIASES`) and the options that make it k-diffusion's function on the same inputs:

- `lower_order_final=False` wherever diffspec has diffusers' rule (k-diffusion has no lower-order final steps);
- `variant="k-diffusion"` where diffspec's sampler of that name is a different method on purpose: `dpmpp_sde`
  (the paper's SDE-DPM-Solver++ 2S, where k-diffusion has an ancestral eta/r form on a Brownian tree),
  `dpmpp_3m_sde` (diffspec's exact phi_3 weight -2 phi_3 D2, third order; k-diffusion writes -phi_3 D2),
  `dpm_adaptive` (diffspec's is Lu et al.'s controller with the error read in the VP scale; k-diffusion's is a
  PID controller with its error read in sigma_ve's scale), and `euler_ancestral` / `dpm_2_ancestral` (diffspec's
  last step returns the mean, as DDPM does; k-diffusion's adds its noise on a grid that ends at a noisy time, and
  its `dpm_2_ancestral` adds none where eta > 1 lets sigma_down reach 0).

Options: every keyword argument of every k-diffusion sampler either maps onto the reference sampler's option of
the same name and meaning (`K_DIFFUSION_OPTIONS`: eta, s_noise, EDM's churn s_churn / s_tmin / s_tmax, r,
solver_type, lms' order and dpm_adaptive's controller), is an input the call itself takes (`K_DIFFUSION_INPUTS`:
model, x, sigmas, sigma_min, sigma_max, n), has no effect on the result (`disable`, tqdm's progress bar), or is
refused at any value but its default with the reason no counterpart can exist (`K_DIFFUSION_REFUSED`: extra_args,
callback, noise_sampler, return_info).

Noise: the reference takes its draws from `noise`, one standard-normal array per draw, in the order each sampler's
docstring gives, and draws nothing it would multiply by zero. Where k-diffusion calls `noise_sampler(sigma,
sigma_next)` once per step and uses the result, each call is one draw, in order (`euler_ancestral`,
`dpm_2_ancestral`, `dpmpp_2s_ancestral`, `dpmpp_2m_sde`, `dpmpp_3m_sde`, `dpm_fast` and `dpm_adaptive` with
eta > 0). The calls whose result k-diffusion multiplies by zero have no draw here: eta = 0 or s_noise = 0 anywhere,
the last step of `dpm_fast` / `dpm_adaptive` (its std is 0), and the `torch.randn_like` that `euler`, `heun` and
`dpm_2` take on every step but use only on churned steps. `dpmpp_sde` takes two draws per step that build the
Brownian path of its two overlapping increments, over (sigma, sigma_s) and (sigma, sigma_next) (see
`diffspec.reference.samplers.dpm_solver_pp._dpmpp_sde_k_diffusion`); k-diffusion's default there is a seeded
Brownian tree, which no finite list of draws reproduces: replay its increments through `noise_sampler` instead.

Churn: the reference holds EDM's churned level sigma (1 + gamma) at or below the schedule's largest sigma_ve (its
model is not defined above t_max; 80 on the default EDM schedule), where k-diffusion does not cap it: with
s_churn > 0 the two agree while s_tmax < sigma_max / (1 + gamma) or the schedule reaches that high.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.samplers import get_sampler
from diffspec.reference.samplers.dpm_solver import fast_orders

_NO_LOF = {"lower_order_final": False}

K_DIFFUSION_SAMPLERS = {
    "euler": ("euler", {}),
    "euler_ancestral": ("euler_ancestral", {"variant": "k-diffusion"}),
    "heun": ("heun", {}),
    "dpm_2": ("dpm2", {}),
    "dpm_2_ancestral": ("dpm2_ancestral", {"variant": "k-diffusion"}),
    "lms": ("lms", {}),
    "dpm_fast": ("dpm_solver_fast", {}),
    "dpm_adaptive": ("dpm_solver_adaptive", {"variant": "k-diffusion"}),
    "dpmpp_2s_ancestral": ("dpmpp_2s_ancestral", _NO_LOF),
    "dpmpp_sde": ("dpmpp_sde", {"variant": "k-diffusion", **_NO_LOF}),
    "dpmpp_2m": ("dpmpp_2m", _NO_LOF),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", _NO_LOF),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", {"variant": "k-diffusion", **_NO_LOF}),
}

_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")
# k-diffusion's keyword arguments per function that the reference sampler takes under the same name and meaning.
K_DIFFUSION_OPTIONS = {
    "euler": _CHURN,
    "euler_ancestral": ("eta", "s_noise"),
    "heun": _CHURN,
    "dpm_2": _CHURN,
    "dpm_2_ancestral": ("eta", "s_noise"),
    "lms": ("order",),
    "dpm_fast": ("eta", "s_noise"),
    "dpm_adaptive": (
        "order",
        "rtol",
        "atol",
        "h_init",
        "pcoeff",
        "icoeff",
        "dcoeff",
        "accept_safety",
        "eta",
        "s_noise",
    ),
    "dpmpp_2s_ancestral": ("eta", "s_noise"),
    "dpmpp_sde": ("eta", "s_noise", "r"),
    "dpmpp_2m": (),
    "dpmpp_2m_sde": ("eta", "s_noise", "solver_type"),
    "dpmpp_3m_sde": ("eta", "s_noise"),
}
# k-diffusion's inputs (positional there) and what takes their place here.
K_DIFFUSION_INPUTS = {
    "model": "denoise(x, t), which k-diffusion's model(x, sigma) becomes at t = schedule.t_of_sigma_ve(sigma)",
    "x": "x_T = alpha(grid[0]) x (x itself on the EDM schedule)",
    "sigmas": "grid = k_diffusion_grid(name, schedule, sigmas=sigmas)",
    "sigma_min": "grid = k_diffusion_grid(name, schedule, sigma_min=..., sigma_max=...[, n=...])",
    "sigma_max": "grid = k_diffusion_grid(name, schedule, sigma_min=..., sigma_max=...[, n=...])",
    "n": "grid = k_diffusion_grid('dpm_fast', schedule, sigma_min=..., sigma_max=..., n=n)",
}
# Keywords with no effect on the result: accepted at any value and dropped.
K_DIFFUSION_IGNORED = {"disable": "tqdm's progress bar"}
# Keywords refused at any value but their default ((defaults), reason).
K_DIFFUSION_REFUSED: dict[str, tuple[tuple[object, ...], str]] = {
    "extra_args": (
        (None, {}),
        "the model's keyword arguments (conditioning): a reference sampler calls denoise(x, t) only; close them "
        "over in denoise (functools.partial, or diffspec.reference.guidance for classifier-free guidance)",
    ),
    "callback": (
        (None,),
        "a per-step hook with k-diffusion's dict of x, i, sigma, sigma_hat, denoised: the reference samplers are "
        "pure functions; wrap denoise to see every model input and output",
    ),
    "noise_sampler": (
        (None,),
        "k-diffusion's noise source: the reference takes `noise` (a numpy Generator or a callable shape -> array), "
        "with the map from k-diffusion's calls to its draws given in diffspec.reference.interop.k_diffusion",
    ),
    "return_info": (
        (False,),
        "dpm_adaptive's statistics (steps, nfe, accepted, rejected): the reference returns the sample only; count "
        "the calls of denoise for nfe",
    ),
}
_NOISE_SAMPLER = {name for name, options in K_DIFFUSION_OPTIONS.items() if "eta" in options}


def k_diffusion_keywords(name) -> tuple[str, ...]:
    """Every keyword argument of k-diffusion 0.1.1's `sample_<name>` besides its inputs (`K_DIFFUSION_INPUTS`)."""
    name = _name(name)
    return (
        K_DIFFUSION_OPTIONS[name]
        + ("extra_args", "callback", "disable")
        + (("noise_sampler",) if name in _NOISE_SAMPLER else ())
        + (("return_info",) if name == "dpm_adaptive" else ())
    )


def _name(name):
    name = name.removeprefix("sample_") if isinstance(name, str) else name
    _checks.lookup(K_DIFFUSION_SAMPLERS, name, what="k-diffusion sampler")
    return name


def k_diffusion_sampler(name, **options):
    """(fn, kwargs): the reference sampler that reproduces `k_diffusion.sampling.sample_<name>` called with
    `options` (k-diffusion's keyword arguments), and the keyword arguments that make it do so.

    `name` may carry the `sample_` prefix. k-diffusion's options pass through (`K_DIFFUSION_OPTIONS`), `disable` is
    dropped; its inputs (`K_DIFFUSION_INPUTS`), a keyword of `K_DIFFUSION_REFUSED` at a value other than its default,
    and anything that is not a keyword of that function raise ValueError, naming the keyword and the reason.
    """
    name = _name(name)
    registry_name, fixed = K_DIFFUSION_SAMPLERS[name]
    kwargs = dict(fixed)
    for key, value in options.items():
        if key in K_DIFFUSION_OPTIONS[name]:
            kwargs[key] = value
        elif key in K_DIFFUSION_IGNORED:
            continue
        elif key in K_DIFFUSION_INPUTS:
            raise ValueError(
                f"{key}=...: an input of k-diffusion's sample_{name}, not an option; here it is "
                f"{K_DIFFUSION_INPUTS[key]}"
            )
        elif key in K_DIFFUSION_REFUSED and key in k_diffusion_keywords(name):
            defaults, reason = K_DIFFUSION_REFUSED[key]
            if not any(value is d or (type(value) is type(d) and value == d) for d in defaults):
                raise ValueError(f"{key}={value!r}: k-diffusion's sample_{name} option has no counterpart: {reason}")
        else:
            known = sorted(k_diffusion_keywords(name))
            raise ValueError(f"{key}={value!r}: not an option of k-diffusion's sample_{name}; expected some of {known}")
    return get_sampler(registry_name), kwargs


def k_diffusion_grid(name, schedule, *, sigmas=None, sigma_min=None, sigma_max=None, n=None):
    """The grid of times on which the reference sampler for k-diffusion's `name` takes k-diffusion's steps.

    Most samplers take `sigmas` (decreasing sigma_ve, 0 last for a clean end): grid = t_of_sigma_ve(sigmas).
    `dpm_adaptive` takes (sigma_min, sigma_max): grid = [t(sigma_max), t(sigma_min)]. `dpm_fast` takes
    (sigma_min, sigma_max, n): k-diffusion steps uniformly in lam with K = n // 3 + 1 steps of orders
    `fast_orders(n)`, while `dpm_solver_fast` spans `order` grid intervals per step; the grid returned has n + 1
    times, the step boundaries at the cumulative orders and the skipped times at lam + h/3, lam + 2h/3 (or
    lam + h/2), where DPM-Solver-3 and -2 evaluate.
    """
    name = _name(name)
    if name in ("dpm_fast", "dpm_adaptive"):
        lo = _checks.positive("sigma_min", sigma_min)
        hi = _checks.positive("sigma_max", sigma_max)
        if not lo < hi:
            raise ValueError(f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}: expected sigma_min < sigma_max")
        if name == "dpm_adaptive":
            return np.asarray(schedule.t_of_sigma_ve(np.array([hi, lo])), dtype=np.float64)
        n = _checks.integer("n", n, minimum=1)
        orders = fast_orders(n)
        lams = np.linspace(-np.log(hi), -np.log(lo), len(orders) + 1)
        inner = [lams[k] + (lams[k + 1] - lams[k]) * np.arange(order) / order for k, order in enumerate(orders)]
        return np.asarray(schedule.t_of_lam(np.append(np.concatenate(inner), lams[-1])), dtype=np.float64)
    if sigmas is None:
        raise ValueError(f"sigmas=None: k-diffusion's sample_{name} takes a decreasing array of sigmas")
    sigmas = _checks.finite_array("sigmas", sigmas)
    return np.asarray(schedule.t_of_sigma_ve(sigmas), dtype=np.float64)
