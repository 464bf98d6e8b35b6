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
  `dpmpp_3m_sde` (diffspec's exact phi_3 weight -2 phi_3 D2, third order; k-diffusion writes -phi_3 D2) and
  `dpm_adaptive` (diffspec's is Lu et al.'s controller with the error read in the VP scale; k-diffusion's is a
  PID controller with its error read in sigma_ve's scale).

Noise: where k-diffusion calls `noise_sampler(sigma, sigma_next)` once per step, each call is one draw of
`noise`, in order (`euler_ancestral`, `dpm_2_ancestral`, `dpmpp_2s_ancestral`, `dpmpp_2m_sde`,
`dpmpp_3m_sde`); `dpmpp_sde` takes two draws per step that build the Brownian path of its two overlapping
increments (see `diffspec.reference.samplers.dpm_solver_pp._dpmpp_sde_k_diffusion`); `heun` with churn draws
one array per churned step where k-diffusion calls `torch.randn_like` on every step and discards the unused ones.

Not reproduced (`k_diffusion_sampler` refuses them, naming the option): `s_noise != 1` outside `heun`, `euler`
with churn (diffspec's `heun` has EDM's churn; its `euler` none), and eta > 0 in `dpm_fast` / `dpm_adaptive`
(an ancestral DPM-Solver whose noise lands between the embedded pair's evaluations).
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.samplers import get_sampler
from diffspec.reference.samplers.dpm_solver import fast_orders

_NO_LOF = {"lower_order_final": False}

K_DIFFUSION_SAMPLERS = {
    "euler": ("euler", {}),
    "euler_ancestral": ("euler_ancestral", {}),
    "heun": ("heun", {}),
    "dpm_2": ("dpm2", {}),
    "dpm_2_ancestral": ("dpm2_ancestral", {}),
    "lms": ("lms", {}),
    "dpm_fast": ("dpm_solver_fast", {}),
    "dpm_adaptive": ("dpm_solver_adaptive", {"variant": "k-diffusion"}),
    "dpmpp_2s_ancestral": ("dpmpp_2s_ancestral", _NO_LOF),
    "dpmpp_sde": ("dpmpp_sde", {"variant": "k-diffusion", **_NO_LOF}),
    "dpmpp_2m": ("dpmpp_2m", _NO_LOF),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", _NO_LOF),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", {"variant": "k-diffusion", **_NO_LOF}),
}

# k-diffusion's options per function that the reference takes under the same name and meaning; (option, value)
# pairs that are accepted only at that value (k-diffusion's default) because nothing in the reference differs there.
_PASSED = {
    "euler": (),
    "euler_ancestral": ("eta",),
    "heun": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    "dpm_2": (),
    "dpm_2_ancestral": ("eta",),
    "lms": ("order",),
    "dpm_fast": (),
    "dpm_adaptive": ("order", "rtol", "atol", "h_init", "pcoeff", "icoeff", "dcoeff", "accept_safety"),
    "dpmpp_2s_ancestral": ("eta",),
    "dpmpp_sde": ("eta", "r"),
    "dpmpp_2m": (),
    "dpmpp_2m_sde": ("eta", "solver_type"),
    "dpmpp_3m_sde": ("eta",),
}
_AT_DEFAULT = {
    "euler": {"s_churn": 0.0, "s_noise": 1.0, "s_tmin": 0.0, "s_tmax": float("inf")},
    "euler_ancestral": {"s_noise": 1.0},
    "dpm_2": {"s_churn": 0.0, "s_noise": 1.0, "s_tmin": 0.0, "s_tmax": float("inf")},
    "dpm_2_ancestral": {"s_noise": 1.0},
    "dpm_fast": {"eta": 0.0, "s_noise": 1.0},
    "dpm_adaptive": {"eta": 0.0, "s_noise": 1.0},
    "dpmpp_2s_ancestral": {"s_noise": 1.0},
    "dpmpp_sde": {"s_noise": 1.0},
    "dpmpp_2m_sde": {"s_noise": 1.0},
    "dpmpp_3m_sde": {"s_noise": 1.0},
}


def _name(name):
    name = name.removeprefix("sample_") if isinstance(name, str) else name
    _checks.lookup(K_DIFFUSION_SAMPLERS, name, what="k-diffusion sampler")
    return name


def k_diffusion_sampler(name, **options):
    """(fn, kwargs): the reference sampler that reproduces `k_diffusion.sampling.sample_<name>` called with
    `options` (k-diffusion's keyword arguments), and the keyword arguments that make it do so.

    `name` may carry the `sample_` prefix. Options the reference does not reproduce raise ValueError.
    """
    name = _name(name)
    registry_name, fixed = K_DIFFUSION_SAMPLERS[name]
    kwargs = dict(fixed)
    for key, value in options.items():
        if key in _PASSED[name]:
            kwargs[key] = value
        elif key in _AT_DEFAULT.get(name, {}):
            if value != _AT_DEFAULT[name][key]:
                raise ValueError(
                    f"{key}={value!r}: k-diffusion's sample_{name} with {key} other than {_AT_DEFAULT[name][key]!r} "
                    "has no counterpart in diffspec"
                )
        else:
            known = sorted(set(_PASSED[name]) | set(_AT_DEFAULT.get(name, {})))
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
