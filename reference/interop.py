"""Interoperability with diffusers: read a `scheduler_config.json` and do what a diffusers pipeline loop does.

`from_diffusers(config, num_inference_steps, **step_options)` returns a `DiffusersPlan` whose
`run(model, x_T, noise=None)` reproduces the pipeline loop

    latents = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = unet(scheduler.scale_model_input(latents, t), t)
        latents = scheduler.step(out, t, latents, **step_options).prev_sample

in float64 NumPy: `model(x, timestep)` receives exactly the scaled model input and the timestep value (a 0-d
numpy array, int64 or float32 as diffusers has it) the UNet would; its output is read according to the config's
`prediction_type`; `noise(shape)` (a numpy Generator or a callable) supplies the draws in the order diffusers
makes them. No torch is imported: this module is part of the numpy-only reference.

The betas come from `diffspec.reference.schedules` (`make_schedule` / `ExplicitBetas`), and the diffusers departures
from the papers are reproduced on purpose, each named where it happens:

- timestep spacings "leading" (+ `steps_offset`) and "trailing" (`grids.leading` / `grids.trailing`), and the
  multistep solvers' own "linspace", which takes N + 1 points and drops the last (so t = 0 is never a model time);
- DDIM and PNDM step to `t - T // N` whatever the spacing (issues 11347, 12633); with `set_alpha_to_one=False` the
  last step lands on alphabar[0], not the clean end;
- k-diffusion-style schedulers interpolate sigma = sqrt((1 - abar) / abar) *linearly* in the timestep (the
  reference interpolates log alpha); Karras sigmas are mapped back to (fractional) timesteps by interpolating
  log sigma, and the DPM-Solver family *rounds* them to integers while stepping with the exact sigmas;
- `final_sigmas_type="sigma_min"` ends at sigma(t=0) instead of the clean end;
- Euler-ancestral and DDIM with eta > 0 draw noise on their last step too (multiplied by 0);
- FlowMatchEuler applies `shift` twice to its last sigma (issue 13243): the grid is linspace(1, shift(1/T), N)
  shifted again;
- Euler / EDMEuler churn: the model is called before the churn noise is added and its output read at sigma_hat;
- PNDM's pseudo Runge-Kutta warm-up transfers every stage from the step's start and covers the grid's last three
  intervals above t_{N-4}; DEIS ends at alphabar[0] (and, with Karras sigmas, repeats the last sigma); TCD floors
  s = (1 - gamma) t_next in float32 and ends at alphabar[0]; the EDM schedulers start from sqrt(sigma_max^2 + 1) eps;
- DPMSolverSDE's Brownian-tree noise (torchsde) is reproduced in law, not draw for draw: two standard-normal
  draws per step combined into the tree's two correlated increments (see `_plan_dpm_sde`).

Classes: `SUPPORTED_CLASSES`. Step options (what a pipeline passes to `scheduler.step`): `STEP_OPTIONS`.

The paper-faithful choices live in `grids` and `samplers`; this module exists to match diffusers bit for bit
(up to diffusers' float32 arithmetic: about 1e-4 relative to max |x|, see FACTS.md).

Keys: every config key is either honoured (read and implemented, with the values listed per class in
`HONOURED`), inert (`INERT_ALWAYS`, or inert given other keys, e.g. `clip_sample_range` with `clip_sample`
False), or a key of another scheduler class at its no-op value (`FOREIGN_NOOP`). Anything else — unknown keys,
or known keys with values not implemented here — raises ValueError naming the key; nothing is silently dropped.
"""

import math

import numpy as np

from diffspec.reference import _checks
from diffspec.reference.noise import as_noise_source
from diffspec.reference.schedules import (
    CosineBetas,
    EDM,
    ExplicitBetas,
    Flow,
    LinearBetas,
    ScaledLinearBetas,
    SigmoidBetas,
    make_schedule,
)

# --------------------------------------------------------------------------------------------------------
# Config keys: what is honoured, what is inert
# --------------------------------------------------------------------------------------------------------

_ANY = None


def _values(*allowed):
    return tuple(allowed)


_BETAS = {
    "num_train_timesteps": (1000, _ANY),
    "beta_start": (0.0001, _ANY),
    "beta_end": (0.02, _ANY),
    "beta_schedule": ("linear", _values("linear", "scaled_linear", "squaredcos_cap_v2")),
    "trained_betas": (None, _ANY),
}
_SPACING = {
    "timestep_spacing": ("linspace", _values("linspace", "leading", "trailing")),
    "steps_offset": (0, _ANY),
}
_CLIP = {"clip_sample": (False, _values(True, False)), "clip_sample_range": (1.0, _ANY)}
_THRESH = {
    "thresholding": (False, _values(True, False)),
    "dynamic_thresholding_ratio": (0.995, _ANY),
    "sample_max_value": (1.0, _ANY),
}
_OFF = {
    "use_exponential_sigmas": (False, _values(False)),
    "use_beta_sigmas": (False, _values(False)),
}
_PRED3 = ("epsilon", _values("epsilon", "sample", "v_prediction"))
_PRED2 = ("epsilon", _values("epsilon", "v_prediction"))

# KDPM2, KDPM2 ancestral and DPMSolverSDE share their keys (Karras-sigma schedulers with SD's default betas).
_KARRAS_FAMILY = {
    **_BETAS, **_SPACING, **_OFF,
    "beta_start": (0.00085, _ANY),
    "beta_end": (0.012, _ANY),
    "prediction_type": _PRED2,
    "use_karras_sigmas": (False, _values(True, False)),
}

HONOURED = {
    "DDIMScheduler": {
        **_BETAS, **_SPACING, **_CLIP, **_THRESH,
        "timestep_spacing": ("leading", _values("linspace", "leading", "trailing")),
        "clip_sample": (True, _values(True, False)),
        "set_alpha_to_one": (True, _values(True, False)),
        "prediction_type": _PRED3,
        "rescale_betas_zero_snr": (False, _values(True, False)),
    },
    "DDPMScheduler": {
        **_BETAS, **_SPACING, **_CLIP, **_THRESH,
        "beta_schedule": ("linear", _values("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")),
        "timestep_spacing": ("leading", _values("linspace", "leading", "trailing")),
        "clip_sample": (True, _values(True, False)),
        "variance_type": ("fixed_small", _values("fixed_small", "fixed_large")),
        "prediction_type": _PRED3,
        "rescale_betas_zero_snr": (False, _values(True, False)),
    },
    "PNDMScheduler": {
        **_BETAS, **_SPACING,
        "timestep_spacing": ("leading", _values("linspace", "leading", "trailing")),
        "skip_prk_steps": (False, _values(True, False)),
        "set_alpha_to_one": (False, _values(True, False)),
        "prediction_type": _PRED2,
    },
    "EulerDiscreteScheduler": {
        **_BETAS, **_SPACING, **_OFF,
        "prediction_type": _PRED3,
        "interpolation_type": ("linear", _values("linear")),
        "use_karras_sigmas": (False, _values(True, False)),
        "sigma_min": (None, _ANY),
        "sigma_max": (None, _ANY),
        "timestep_type": ("discrete", _values("discrete")),
        "rescale_betas_zero_snr": (False, _values(False)),
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
    },
    "EulerAncestralDiscreteScheduler": {
        **_BETAS, **_SPACING,
        "prediction_type": _PRED2,
        "rescale_betas_zero_snr": (False, _values(False)),
    },
    "HeunDiscreteScheduler": {
        **_BETAS, **_SPACING, **_OFF, **_CLIP,
        "beta_start": (0.00085, _ANY),
        "beta_end": (0.012, _ANY),
        "prediction_type": _PRED3,
        "use_karras_sigmas": (False, _values(True, False)),
    },
    "KDPM2DiscreteScheduler": _KARRAS_FAMILY,
    "KDPM2AncestralDiscreteScheduler": _KARRAS_FAMILY,
    "DPMSolverSDEScheduler": {
        **_KARRAS_FAMILY,
        "noise_sampler_seed": (None, _values(None)),  # seeds torchsde's Brownian tree: pass `noise` instead
    },
    "LMSDiscreteScheduler": {
        **_BETAS, **_SPACING, **_OFF,
        "prediction_type": _PRED3,
        "use_karras_sigmas": (False, _values(True, False)),
    },
    "DPMSolverMultistepScheduler": {
        **_BETAS, **_SPACING, **_OFF, **_THRESH,
        "solver_order": (2, _values(1, 2, 3)),
        "prediction_type": _PRED3,
        "algorithm_type": ("dpmsolver++", _values("dpmsolver++", "dpmsolver", "sde-dpmsolver++")),
        "solver_type": ("midpoint", _values("midpoint", "heun")),
        "lower_order_final": (True, _values(True, False)),
        "euler_at_final": (False, _values(True, False)),
        "use_karras_sigmas": (False, _values(True, False)),
        "use_lu_lambdas": (False, _values(False)),
        "use_flow_sigmas": (False, _values(False)),
        "flow_shift": (1.0, _ANY),  # inert without use_flow_sigmas
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
        "lambda_min_clipped": (-math.inf, _values(-math.inf)),
        "variance_type": (None, _values(None)),
        "rescale_betas_zero_snr": (False, _values(False)),
        "use_dynamic_shifting": (False, _values(False)),
        "time_shift_type": ("exponential", _ANY),  # inert without use_dynamic_shifting
    },
    "DPMSolverSinglestepScheduler": {
        **_BETAS, **_OFF, **_THRESH,
        "solver_order": (2, _values(1, 2, 3)),
        "prediction_type": _PRED3,
        "algorithm_type": ("dpmsolver++", _values("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "deis")),
        "solver_type": ("midpoint", _values("midpoint", "heun", "logrho", "bh1", "bh2")),
        "lower_order_final": (False, _values(True, False)),
        "use_karras_sigmas": (False, _values(True, False)),
        "use_flow_sigmas": (False, _values(False)),
        "flow_shift": (1.0, _ANY),  # inert without use_flow_sigmas
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
        "lambda_min_clipped": (-math.inf, _values(-math.inf)),
        "variance_type": (None, _values(None)),
        "use_dynamic_shifting": (False, _values(False)),
        "time_shift_type": ("exponential", _ANY),  # inert without use_dynamic_shifting
    },
    "DEISMultistepScheduler": {
        **_BETAS, **_SPACING, **_OFF, **_THRESH,
        "solver_order": (2, _values(1, 2, 3)),
        "prediction_type": _PRED3,
        "algorithm_type": ("deis", _values("deis", "dpmsolver", "dpmsolver++")),
        "solver_type": ("logrho", _values("logrho", "midpoint", "heun", "bh1", "bh2")),
        "lower_order_final": (True, _values(True, False)),
        "use_karras_sigmas": (False, _values(True, False)),
        "use_flow_sigmas": (False, _values(False)),
        "flow_shift": (1.0, _ANY),  # inert without use_flow_sigmas
        "use_dynamic_shifting": (False, _values(False)),
        "time_shift_type": ("exponential", _ANY),  # inert without use_dynamic_shifting
    },
    "UniPCMultistepScheduler": {
        **_BETAS, **_SPACING, **_OFF,
        "solver_order": (2, _values(1, 2, 3)),
        "prediction_type": _PRED3,
        "thresholding": (False, _values(False)),
        "dynamic_thresholding_ratio": (0.995, _ANY),
        "sample_max_value": (1.0, _ANY),
        "predict_x0": (True, _values(True)),
        "solver_type": ("bh2", _values("bh1", "bh2")),
        "lower_order_final": (True, _values(True)),
        "disable_corrector": ((), _ANY),
        "solver_p": (None, _values(None)),
        "use_karras_sigmas": (False, _values(True, False)),
        "use_flow_sigmas": (False, _values(False)),
        "flow_shift": (1.0, _ANY),
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
        "rescale_betas_zero_snr": (False, _values(False)),
        "use_dynamic_shifting": (False, _values(False)),
        "time_shift_type": ("exponential", _ANY),
        "sigma_min": (None, _values(None)),
        "sigma_max": (None, _values(None)),
        "shift_terminal": (None, _values(None)),
    },
    "LCMScheduler": {
        **_BETAS, **_CLIP, **_THRESH,
        "beta_start": (0.00085, _ANY),
        "beta_end": (0.012, _ANY),
        "beta_schedule": ("scaled_linear", _values("linear", "scaled_linear", "squaredcos_cap_v2")),
        "original_inference_steps": (50, _ANY),
        "set_alpha_to_one": (True, _ANY),  # never read: no step lands below t = 0
        "steps_offset": (0, _ANY),  # stored, never read by LCM
        "timestep_spacing": ("leading", _ANY),  # stored, never read by LCM
        "prediction_type": _PRED3,
        "timestep_scaling": (10.0, _ANY),
        "rescale_betas_zero_snr": (False, _values(True, False)),
    },
    "TCDScheduler": {
        **_BETAS,
        "beta_start": (0.00085, _ANY),
        "beta_end": (0.012, _ANY),
        "beta_schedule": ("scaled_linear", _values("linear", "scaled_linear", "squaredcos_cap_v2")),
        "original_inference_steps": (50, _ANY),
        # stored by diffusers but never read by TCD's set_timesteps or step (0.42.1): inert
        "clip_sample": (False, _ANY), "clip_sample_range": (1.0, _ANY), "thresholding": (False, _ANY),
        "dynamic_thresholding_ratio": (0.995, _ANY), "sample_max_value": (1.0, _ANY), "set_alpha_to_one": (True, _ANY),
        "steps_offset": (0, _ANY), "timestep_spacing": ("leading", _ANY), "timestep_scaling": (10.0, _ANY),
        "prediction_type": _PRED3,
        "rescale_betas_zero_snr": (False, _values(True, False)),
    },
    "EDMEulerScheduler": {
        "sigma_min": (0.002, _ANY),
        "sigma_max": (80.0, _ANY),
        "sigma_data": (0.5, _ANY),
        "sigma_schedule": ("karras", _values("karras", "exponential")),
        "num_train_timesteps": (1000, _ANY),  # only sizes the unused training grid
        "prediction_type": _PRED2,
        "rho": (7.0, _ANY),
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
    },
    "EDMDPMSolverMultistepScheduler": {
        **_THRESH,
        "sigma_min": (0.002, _ANY),
        "sigma_max": (80.0, _ANY),
        "sigma_data": (0.5, _ANY),
        "sigma_schedule": ("karras", _values("karras", "exponential")),
        "num_train_timesteps": (1000, _ANY),  # only sizes the unused training grid
        "prediction_type": _PRED2,
        "rho": (7.0, _ANY),
        "solver_order": (2, _values(1, 2, 3)),
        "algorithm_type": ("dpmsolver++", _values("dpmsolver++", "sde-dpmsolver++", "deis")),
        "solver_type": ("midpoint", _values("midpoint", "heun", "logrho", "bh1", "bh2")),
        "lower_order_final": (True, _values(True, False)),
        "euler_at_final": (False, _values(True, False)),
        "final_sigmas_type": ("zero", _values("zero", "sigma_min")),
    },
    "FlowMatchEulerDiscreteScheduler": {
        "num_train_timesteps": (1000, _ANY),
        "shift": (1.0, _ANY),
        "use_dynamic_shifting": (False, _values(False)),
        "base_shift": (0.5, _ANY),  # inert without use_dynamic_shifting
        "max_shift": (1.15, _ANY),
        "base_image_seq_len": (256, _ANY),
        "max_image_seq_len": (4096, _ANY),
        "invert_sigmas": (False, _values(False)),
        "shift_terminal": (None, _values(None)),
        "use_karras_sigmas": (False, _values(False)),
        **_OFF,
        "time_shift_type": ("exponential", _ANY),
        "stochastic_sampling": (False, _values(True, False)),
    },
}

INERT_ALWAYS = frozenset({"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values"})

# Keys of other scheduler classes (configs are often shared between classes) at the value that means "off".
FOREIGN_NOOP = {
    "clip_sample": False, "thresholding": False, "use_karras_sigmas": False, "use_exponential_sigmas": False,
    "use_beta_sigmas": False, "rescale_betas_zero_snr": False, "use_dynamic_shifting": False,
    "use_flow_sigmas": False, "use_lu_lambdas": False, "trained_betas": None,
}
# Keys inert whatever their value, given the other keys (key -> predicate on the completed config).
_CONDITIONALLY_INERT = {
    "clip_sample_range": lambda c: not c.get("clip_sample", False),
    "dynamic_thresholding_ratio": lambda c: not c.get("thresholding", False),
    "sample_max_value": lambda c: not c.get("thresholding", False),
    "beta_start": lambda c: c.get("trained_betas") is not None,
    "beta_end": lambda c: c.get("trained_betas") is not None,
}
# Value keys of other scheduler classes, which diffusers ignores for this class (shared SD configs carry them).
FOREIGN_INERT = frozenset({
    "clip_sample_range", "dynamic_thresholding_ratio", "sample_max_value", "set_alpha_to_one", "skip_prk_steps",
    "steps_offset", "timestep_spacing", "interpolation_type", "sigma_min", "sigma_max", "final_sigmas_type",
})

STEP_OPTIONS = {
    "DDIMScheduler": {"eta": 0.0, "use_clipped_model_output": False},
    "LMSDiscreteScheduler": {"order": 4},
    "TCDScheduler": {"eta": 0.3},
    "DPMSolverSDEScheduler": {"s_noise": 1.0},
    "EulerDiscreteScheduler": {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0},
    "EDMEulerScheduler": {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0},
}


def _validate(config):
    if not isinstance(config, dict) or "_class_name" not in config:
        raise ValueError("config: expected a dict loaded from scheduler_config.json, with a '_class_name' key")
    name = config["_class_name"]
    spec = _checks.lookup(HONOURED, name, what="diffusers scheduler class (config['_class_name'])")
    cfg = {k: d for k, (d, _) in spec.items()}
    for key, value in config.items():
        if key in INERT_ALWAYS:
            continue
        if key in spec:
            if isinstance(value, list) and key == "disable_corrector":
                value = tuple(value)
            cfg[key] = value
        elif key in FOREIGN_NOOP and value == FOREIGN_NOOP[key]:
            continue
        elif key in FOREIGN_INERT:
            continue  # a key of another class, which diffusers ignores here too
        else:
            raise ValueError(
                f"config key {key!r}={value!r} is not implemented for {name}: honoured keys are {sorted(spec)}"
            )
    for key, (_, allowed) in spec.items():
        inert = key in _CONDITIONALLY_INERT and _CONDITIONALLY_INERT[key](cfg)
        if allowed is not _ANY and not inert and cfg[key] not in allowed:
            raise ValueError(
                f"config key {key!r}={cfg[key]!r} is not implemented for {name}: expected one of {list(allowed)}"
            )
    if cfg.get("thresholding") and cfg.get("sample_max_value", 1.0) < 1.0:
        raise ValueError(
            f"config key 'sample_max_value'={cfg['sample_max_value']}: expected >= 1 (below 1 diffusers' clamp turns "
            "dynamic thresholding into a fixed divisor, which is not implemented)"
        )
    return name, cfg


# --------------------------------------------------------------------------------------------------------
# Schedules and timesteps, as diffusers computes them
# --------------------------------------------------------------------------------------------------------


def schedule_from_config(cfg):
    """The diffspec schedule of a beta-based diffusers config (betas, rescale to zero terminal SNR)."""
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    zero_snr = bool(cfg.get("rescale_betas_zero_snr", False))
    if cfg.get("trained_betas") is not None:
        return ExplicitBetas(tuple(float(b) for b in cfg["trained_betas"]), rescale_zero_snr=zero_snr)
    kind = cfg["beta_schedule"]
    b0, b1 = float(cfg["beta_start"]), float(cfg["beta_end"])
    match kind:
        case "linear":
            return LinearBetas(T, b0, b1, rescale_zero_snr=zero_snr)
        case "scaled_linear":
            return ScaledLinearBetas(T, b0, b1, rescale_zero_snr=zero_snr)
        case "squaredcos_cap_v2":
            return CosineBetas(T, rescale_zero_snr=zero_snr)  # diffusers' betas_for_alpha_bar(cosine), s = 0.008
        case "sigmoid":
            return SigmoidBetas(T, b0, b1, rescale_zero_snr=zero_snr)
    raise ValueError(f"config key 'beta_schedule'={kind!r}: expected linear, scaled_linear or squaredcos_cap_v2")


def _spaced(cfg, n, *, dtype, plus_one=False):
    """diffusers' timestep spacings. plus_one: the multistep solvers' variant (N + 1 points, the last dropped)."""
    T, m = cfg["num_train_timesteps"], n + (1 if plus_one else 0)
    match cfg["timestep_spacing"]:
        case "linspace":
            if dtype == np.float32:
                ts = np.linspace(0, T - 1, m, dtype=np.float32)[::-1]
            else:
                ts = np.linspace(0, T - 1, m).round()[::-1]
        case "leading":
            ratio = T // m
            ts = (np.arange(0, m) * ratio).round()[::-1] + cfg["steps_offset"]
        case "trailing":
            ratio = T / n
            ts = np.round(np.arange(T, 0, -ratio)) - 1
    ts = ts[:n] if plus_one else ts
    return np.ascontiguousarray(ts).astype(dtype)


def _sigma_to_t(sigma, log_sigmas):
    """diffusers' `_sigma_to_t`: interpolate log sigma between the training sigmas, giving a fractional timestep."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=len(log_sigmas) - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


def _karras(sigma_max, sigma_min, n, rho=7.0):
    ramp = np.linspace(0, 1, n)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def _train_sigmas(schedule):
    """sigma_ve = sqrt((1 - abar) / abar) at the training timesteps 0..T-1."""
    return np.exp(-schedule.lam(np.arange(schedule.num_steps, dtype=np.float64)))


# --------------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------------


class DiffusersPlan:
    """What `from_diffusers` returns: the schedule, the model timesteps and a runner that mirrors the pipeline.

    Attributes: `class_name`, `config` (completed with diffusers' defaults), `schedule` (a diffspec schedule),
    `prediction_type`, `timesteps` (one per model call, as diffusers gives them to the model), `sigmas` (where
    the class has them), `init_noise_sigma`, `stochastic`. `run(model, x_T, noise=None)` -> final sample.
    """

    def __init__(self, class_name, config, schedule, timesteps, init_noise_sigma, runner, *, sigmas=None, stochastic):
        self.class_name = class_name
        self.config = config
        self.schedule = schedule
        self.prediction_type = config.get("prediction_type", "flow_prediction")
        self.timesteps = timesteps
        self.sigmas = sigmas
        self.init_noise_sigma = float(init_noise_sigma)
        self.stochastic = stochastic
        self._runner = runner

    def run(self, model, x_T, noise=None):
        x_T = _checks.finite_array("x_T", x_T)
        draw = as_noise_source(noise, sampler=self.class_name) if self.stochastic else _no_draws(self.class_name)

        def call(x, t):
            out = np.asarray(model(x, np.asarray(t)), dtype=np.float64)
            if out.shape != x.shape:
                raise ValueError(f"model output of shape {out.shape}: expected the input's shape {x.shape}")
            return out

        return self._runner(call, x_T * self.init_noise_sigma, draw)

    def __repr__(self):
        return f"DiffusersPlan({self.class_name}, steps={len(self.timesteps)}, prediction_type={self.prediction_type})"


def _no_draws(name):
    def draw(shape):
        raise RuntimeError(f"{name} plan drew noise although it is deterministic")  # pragma: no cover

    return draw


def _threshold(x0, cfg):
    """diffusers' `_threshold_sample` (Imagen dynamic thresholding), or clip_sample, as the config says."""
    if cfg.get("thresholding"):
        flat = x0.reshape(x0.shape[0], -1)
        s = np.quantile(np.abs(flat), cfg["dynamic_thresholding_ratio"], axis=1, keepdims=True)
        s = np.clip(s, 1.0, cfg["sample_max_value"])
        return (np.clip(flat, -s, s) / s).reshape(x0.shape)
    if cfg.get("clip_sample"):
        r = cfg["clip_sample_range"]
        return np.clip(x0, -r, r)
    return x0


def _vp_x0_eps(pred, out, x, abar):
    """(x0, eps) from the model output at alphabar = abar, in diffusers' DDIM/DDPM algebra."""
    a, b = np.sqrt(abar), np.sqrt(1.0 - abar)
    match pred:
        case "epsilon":
            return (x - b * out) / a, out
        case "sample":
            return out, (x - a * out) / b
        case "v_prediction":
            return a * x - b * out, a * out + b * x


def _ve_x0(pred, out, x, s):
    """x0 from the model output in k-diffusion scaling (x = x_vp * sqrt(s^2 + 1), s = sigma_ve)."""
    match pred:
        case "epsilon":
            return x - s * out
        case "v_prediction":
            return out * (-s / np.sqrt(s**2 + 1)) + x / (s**2 + 1)
        case "sample":
            return out


# ---- DDIM, DDPM, PNDM ---------------------------------------------------------------------------------------


def _plan_ddim(cfg, n, opts):
    """DDIM (Song et al. 2021, eq. 12) as diffusers' DDIMScheduler steps it.

    Departure: the previous timestep is t - T // N whatever the spacing (with "linspace" or "trailing" this is not
    the next grid time; the reference `sample_ddim` steps grid[i] -> grid[i + 1]). eta > 0 draws one array per
    step, the last included (times std = 0 when it lands on alphabar = 1)."""
    eta = _checks.nonnegative("eta", opts.get("eta", 0.0))
    use_clipped = bool(opts.get("use_clipped_model_output", False))
    schedule = schedule_from_config(cfg)
    abar = schedule.alphas_cumprod()
    T = cfg["num_train_timesteps"]
    _checks.integer("num_inference_steps", n, minimum=1, maximum=T)
    ts = _spaced(cfg, n, dtype=np.int64)
    final = 1.0 if cfg["set_alpha_to_one"] else abar[0]
    pred = cfg["prediction_type"]

    def run(model, x, draw):
        for t in ts:
            prev = t - T // n
            a_t, a_prev = abar[t], (abar[prev] if prev >= 0 else final)
            x0, eps = _vp_x0_eps(pred, model(x, t), x, a_t)
            x0 = _threshold(x0, cfg)
            var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
            std = eta * np.sqrt(var)
            if use_clipped:
                eps = (x - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
            x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - std**2) * eps
            if eta > 0:
                x = x + std * draw(x.shape)
        return x

    return DiffusersPlan("DDIMScheduler", cfg, schedule, ts, 1.0, run, stochastic=eta > 0)


def _plan_ddpm(cfg, n, opts):
    """Ancestral DDPM (Ho et al. 2020, eqs. 6-7) as diffusers' DDPMScheduler steps it between its timesteps.

    Equal to the reference `sample_ddpm` on the same grid with the clean end appended, except: a noise array is
    drawn on every step whose timestep is > 0 (so with "trailing" spacing also on the last step, times the
    clamped variance 1e-20), and "fixed_large" uses beta_t = 1 - abar_t / abar_prev as the variance."""
    schedule = schedule_from_config(cfg)
    abar = schedule.alphas_cumprod()
    _checks.integer("num_inference_steps", n, minimum=1, maximum=cfg["num_train_timesteps"])
    ts = _spaced(cfg, n, dtype=np.int64)
    pred = cfg["prediction_type"]

    def run(model, x, draw):
        for i, t in enumerate(ts):
            a_t = abar[t]
            a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else 1.0
            beta = 1 - a_t / a_prev
            x0, _ = _vp_x0_eps(pred, model(x, t), x, a_t)
            x0 = _threshold(x0, cfg)
            mean = np.sqrt(a_prev) * beta / (1 - a_t) * x0 + np.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t) * x
            if t > 0:
                small = max((1 - a_prev) / (1 - a_t) * beta, 1e-20)
                var = small if cfg["variance_type"] == "fixed_small" else beta
                mean = mean + np.sqrt(var) * draw(x.shape)
            x = mean
        return x

    return DiffusersPlan("DDPMScheduler", cfg, schedule, ts, 1.0, run, stochastic=True)


def _adams_bashforth(ets):
    """PLMS's eps combination (Liu et al. 2022, eq. 12): Adams-Bashforth of order len(ets) <= 4, newest last."""
    match len(ets):
        case 1:
            return ets[-1]
        case 2:
            return (3 * ets[-1] - ets[-2]) / 2
        case 3:
            return (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
    return (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24


def _plan_pndm(cfg, n, opts):
    """PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models", arXiv:2202.09778, Alg. 2) as
    diffusers' PNDMScheduler. Every update is the paper's transfer (eq. 9), written as DDIM's
    x_prev = sqrt(abar_prev) x0(eps') + sqrt(1 - abar_prev) eps'. The step is t -> t - T // N, and with
    set_alpha_to_one=False (PNDM's default) the result is x at alphabar[0], not x0.

    skip_prk_steps=False (the class default): the first three steps are pseudo Runge-Kutta (eq. 13), four model
    calls each at t, t - h, t - h, t - 2h with h = T // N // 2, the stages combined as (e1 + 2 e2 + 2 e3 + e4) / 6;
    then PLMS of order 4. Departures reproduced: every stage is transferred from the step's *start* sample and
    time (for v_prediction, each stage's v is turned into eps with that start sample); stage 1 lands on t - h but
    the model is called at (t - 2h + h), which differs by one when T // N is odd; the three PRK steps cover the
    *last three* intervals of the grid above t_{N-4} (12 calls, timesteps listed as diffusers lists them), so
    N >= 4 (diffusers fails below). Model calls: 12 + (N - 3).

    skip_prk_steps=True (PLMS alone): the first step is a 2-stage (Heun-like) step (the model is called twice at
    the first two timesteps; the second timestep appears twice in `timesteps`), then Adams-Bashforth combinations
    of eps of order 2, 3, 4."""
    schedule = schedule_from_config(cfg)
    abar = schedule.alphas_cumprod()
    T = cfg["num_train_timesteps"]
    prk = not cfg["skip_prk_steps"]
    _checks.integer("num_inference_steps", n, minimum=4 if prk else 1, maximum=T)
    base = _spaced(cfg, n, dtype=np.int64)[::-1]  # ascending, as PNDM builds it
    h, r = T // n // 2, T // n
    if prk:
        stages = np.repeat(base[-4:], 2) + np.tile([0, h], 4)
        prk_ts = np.repeat(stages[:-1], 2)[1:-1][::-1]
        ts = np.concatenate([prk_ts, base[:-3][::-1]]).astype(np.int64)
    else:
        ts = np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1].astype(np.int64)
        prk_ts = ts[:0]
    final = 1.0 if cfg["set_alpha_to_one"] else abar[0]
    pred = cfg["prediction_type"]

    def transfer(x, t, t_prev, eps_like):
        a_t, a_prev = abar[t], (abar[t_prev] if t_prev >= 0 else final)
        if pred == "v_prediction":
            eps_like = np.sqrt(a_t) * eps_like + np.sqrt(1 - a_t) * x
        x0 = (x - np.sqrt(1 - a_t) * eps_like) / np.sqrt(a_t)
        return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps_like

    def prk_stage(x, c, t, out, state):
        """Stage c % 4 of pseudo Runge-Kutta step c // 4; state = [ets, start sample, accumulated eps]."""
        ets, start, acc = state
        t_prev, t_start = int(t) - (0 if c % 2 else h), int(prk_ts[c // 4 * 4])
        match c % 4:
            case 0:
                ets, start, acc, e = ets + [out], x, out / 6, out
            case 1 | 2:
                acc, e = acc + out / 3, out
            case _:
                e = acc + out / 6
        state[:] = [ets, start, acc]
        return transfer(start, t_start, t_prev, e)

    def run(model, x, draw):
        state, cur = [[], None, 0.0], None
        for counter, t in enumerate(ts):
            out = model(x, t)
            if counter < len(prk_ts):
                x = prk_stage(x, counter, t, out, state)
                continue
            ets = state[0]
            t_cur, t_prev = int(t), int(t) - r
            if counter != 1:
                ets = ets[-3:] + [out]
            else:
                t_prev, t_cur = t_cur, t_cur + r
            if len(ets) == 1 and counter == 0:
                e, cur = out, x
            elif len(ets) == 1 and counter == 1:
                e, x = (out + ets[-1]) / 2, cur
            else:
                e = _adams_bashforth(ets)
            state[0] = ets
            x = transfer(x, t_cur, t_prev, e)
        return x

    return DiffusersPlan("PNDMScheduler", cfg, schedule, ts, 1.0, run, stochastic=False)


# ---- k-diffusion family: Euler, Euler ancestral, Heun, KDPM2 (+ ancestral), DPMSolverSDE, LMS ------------


def _k_sigmas(cfg, n, schedule, *, karras, final_sigmas_type="zero", sigma_min=None, sigma_max=None):
    """Timesteps (float32) and sigmas (+ the final one) of diffusers' Euler/Heun/LMS set_timesteps."""
    _checks.integer("num_inference_steps", n, minimum=1, maximum=cfg["num_train_timesteps"])
    ts = _spaced(cfg, n, dtype=np.float32)
    train = _train_sigmas(schedule)
    sigmas = np.interp(ts.astype(np.float64), np.arange(len(train)), train)  # linear in t (diffusers)
    if karras:
        lo = sigmas[-1] if sigma_min is None else sigma_min
        hi = sigmas[0] if sigma_max is None else sigma_max
        sigmas = _karras(hi, lo, n)
        ts = _sigma_to_t(sigmas, np.log(train)).astype(np.float32)
    last = train[0] if final_sigmas_type == "sigma_min" else 0.0
    return ts, np.append(sigmas, last)


def _k_init_sigma(cfg, sigmas):
    top = float(np.max(sigmas))
    return top if cfg["timestep_spacing"] in ("linspace", "trailing") else math.sqrt(top**2 + 1)


def _churn(opts, sig, n):
    """Per-step churn gamma_i of Karras et al. (2022, Alg. 2) as diffusers' Euler schedulers compute it:
    min(s_churn / N, sqrt(2) - 1) where s_tmin <= sigma_i <= s_tmax, else 0; and s_noise."""
    s_churn = _checks.nonnegative("s_churn", opts.get("s_churn", 0.0))
    s_tmin = float(opts.get("s_tmin", 0.0))
    s_tmax = float(opts.get("s_tmax", math.inf))
    s_noise = _checks.nonnegative("s_noise", opts.get("s_noise", 1.0))
    inside = (s_tmin <= sig[:-1]) & (sig[:-1] <= s_tmax)
    return np.where(inside, min(s_churn / n, math.sqrt(2) - 1), 0.0), s_noise


def _plan_euler(cfg, n, opts):
    """Euler's method on the probability-flow ODE in sigma_ve (Karras et al. 2022, Alg. 1; Alg. 2 with churn), as
    diffusers' EulerDiscreteScheduler: x is scaled by sqrt(sigma^2 + 1) (the model sees x / sqrt(sigma^2 + 1)),
    x_next = x + (sigma_next - sigma) (x - x0) / sigma. The reference counterpart is `euler` on the same sigmas.

    Step options s_churn, s_tmin, s_tmax, s_noise (Alg. 2): with gamma = min(s_churn / N, sqrt(2) - 1) where
    s_tmin <= sigma <= s_tmax, sigma_hat = (1 + gamma) sigma, x_hat = x + s_noise sqrt(sigma_hat^2 - sigma^2) z, then
    an Euler step from sigma_hat. Departure reproduced: diffusers calls the model *before* the churn, at (x, sigma),
    and reads its output as if it were taken at (x_hat, sigma_hat): eps -> x0 = x_hat - sigma_hat eps; v -> x0 with
    sigma's coefficients applied to x_hat (the paper evaluates the denoiser at x_hat, sigma_hat). Noise draws: one
    per step with gamma > 0, the last step included."""
    schedule = schedule_from_config(cfg)
    ts, sig = _k_sigmas(
        cfg, n, schedule, karras=cfg["use_karras_sigmas"], final_sigmas_type=cfg["final_sigmas_type"],
        sigma_min=cfg["sigma_min"], sigma_max=cfg["sigma_max"],
    )
    gammas, s_noise = _churn(opts, sig, n)
    pred = cfg["prediction_type"]

    def run(model, x, draw):
        for i, t in enumerate(ts):
            s = sig[i]
            out = model(x / np.sqrt(s**2 + 1), t)
            s_hat = s * (1 + gammas[i])
            if gammas[i] > 0:
                x = x + s_noise * np.sqrt(s_hat**2 - s**2) * draw(x.shape)
            match pred:
                case "epsilon":
                    x0 = x - s_hat * out
                case "v_prediction":
                    x0 = out * (-s / np.sqrt(s**2 + 1)) + x / (s**2 + 1)
                case "sample":
                    x0 = out
            x = x + (sig[i + 1] - s_hat) * (x - x0) / s_hat
        return x

    return DiffusersPlan("EulerDiscreteScheduler", cfg, schedule, ts, _k_init_sigma(cfg, sig), run,
                         sigmas=sig, stochastic=bool(np.any(gammas > 0)))


def _plan_euler_ancestral(cfg, n, opts):
    """Euler ancestral (k-diffusion `sample_euler_ancestral`, eta = 1) as diffusers steps it: sigma_up =
    sqrt(s'^2 (s^2 - s'^2) / s^2), sigma_down = sqrt(s'^2 - sigma_up^2), an Euler step to sigma_down plus
    sigma_up z. One draw per step, the last included (times sigma_up = 0)."""
    schedule = schedule_from_config(cfg)
    ts, sig = _k_sigmas(cfg, n, schedule, karras=False)
    pred = cfg["prediction_type"]

    def run(model, x, draw):
        for i, t in enumerate(ts):
            s, s_next = sig[i], sig[i + 1]
            x0 = _ve_x0(pred, model(x / np.sqrt(s**2 + 1), t), x, s)
            up = np.sqrt(s_next**2 * (s**2 - s_next**2) / s**2)
            down = np.sqrt(s_next**2 - up**2)
            x = x + (down - s) * (x - x0) / s + up * draw(x.shape)
        return x

    return DiffusersPlan("EulerAncestralDiscreteScheduler", cfg, schedule, ts, _k_init_sigma(cfg, sig), run,
                         sigmas=sig, stochastic=True)


def _plan_heun(cfg, n, opts):
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1, no churn) as diffusers' HeunDiscreteScheduler: two
    model calls per step (the second at sigma_next, with the timestep of sigma_next), an Euler step onto the
    final sigma = 0. Model timesteps: t_0, t_1, t_1, t_2, t_2, ..., t_{N-1}, t_{N-1}."""
    schedule = schedule_from_config(cfg)
    ts, sig = _k_sigmas(cfg, n, schedule, karras=cfg["use_karras_sigmas"])
    calls = np.concatenate([ts[:1], np.repeat(ts[1:], 2)])
    pred = cfg["prediction_type"]

    def x0_at(model, x, t, s):
        return _threshold(_ve_x0(pred, model(x / np.sqrt(s**2 + 1), t), x, s), cfg)

    def run(model, x, draw):
        for i in range(len(ts)):
            s, s_next = sig[i], sig[i + 1]
            d = (x - x0_at(model, x, ts[i], s)) / s
            x_euler = x + (s_next - s) * d
            if s_next == 0:
                x = x_euler
            else:
                d_next = (x_euler - x0_at(model, x_euler, ts[i + 1], s_next)) / s_next
                x = x + (s_next - s) * (d + d_next) / 2
        return x

    return DiffusersPlan("HeunDiscreteScheduler", cfg, schedule, calls, _k_init_sigma(cfg, sig), run,
                         sigmas=sig, stochastic=False)


def _kdpm2_sigmas(cfg, n, schedule):
    """_k_sigmas as KDPM2 / KDPM2-ancestral build them: Karras timesteps are rounded (the sigmas stay exact)."""
    ts, sig = _k_sigmas(cfg, n, schedule, karras=cfg["use_karras_sigmas"])
    return (ts.round() if cfg["use_karras_sigmas"] else ts), sig


def _plan_kdpm2(cfg, n, opts):
    """DPM-Solver-2 in sigma_ve (Karras et al. 2022, Alg. 1 with the midpoint of Lu et al. 2022; k-diffusion
    `sample_dpm_2`) as diffusers' KDPM2DiscreteScheduler: an Euler step to the geometric midpoint
    sigma_mid = sqrt(sigma sigma_next), the model there, then x_next = x + (sigma_next - sigma) (x_mid - x0_mid) /
    sigma_mid; the step onto sigma = 0 is Euler (one call). The midpoint model call gets the fractional timestep
    of sigma_mid (log-sigma interpolation, unrounded). Model timesteps: t_0, tm_1, t_1, ..., tm_{N-1}, t_{N-1}
    (2N - 1 calls). Model inputs are x / sqrt(sigma^2 + 1) at the sigma of the call."""
    schedule = schedule_from_config(cfg)
    ts, sig = _kdpm2_sigmas(cfg, n, schedule)
    log_train = np.log(_train_sigmas(schedule))
    mids = np.sqrt(sig[:-1] * sig[1:])
    t_mids = _sigma_to_t(mids, log_train).astype(ts.dtype)
    calls = np.concatenate([ts[:1], np.stack([t_mids[:-1], ts[1:]], axis=1).ravel()])
    pred = cfg["prediction_type"]

    def x0_at(model, x, t, s):
        return _ve_x0(pred, model(x / np.sqrt(s**2 + 1), t), x, s)

    def run(model, x, draw):
        for i in range(len(ts)):
            s, s_next = sig[i], sig[i + 1]
            d = (x - x0_at(model, x, ts[i], s)) / s
            if s_next == 0:
                x = x - s * d
            else:
                x_mid = x + (mids[i] - s) * d
                x = x + (s_next - s) * (x_mid - x0_at(model, x_mid, t_mids[i], mids[i])) / mids[i]
        return x

    return DiffusersPlan("KDPM2DiscreteScheduler", cfg, schedule, calls, _k_init_sigma(cfg, sig), run,
                         sigmas=sig, stochastic=False)


def _plan_kdpm2_ancestral(cfg, n, opts):
    """DPM-Solver-2 ancestral (k-diffusion `sample_dpm_2_ancestral`, eta = 1) as diffusers'
    KDPM2AncestralDiscreteScheduler: with sigma_up = sqrt(s'^2 (s^2 - s'^2) / s^2) and sigma_down =
    sqrt(s'^2 - sigma_up^2), an Euler step to sigma_mid = sqrt(sigma sigma_down), the model there, x_next = x +
    (sigma_down - sigma) (x_mid - x0_mid) / sigma_mid + sigma_up z. The last step (onto sigma = 0) is Euler and
    draws nothing. Noise draws: one per step after its second model call, N - 1 in all. Model timesteps: t_0,
    tm_0, t_1, tm_1, ..., tm_{N-2}, t_{N-1}."""
    schedule = schedule_from_config(cfg)
    ts, sig = _kdpm2_sigmas(cfg, n, schedule)
    s, s_next = sig[:-1], sig[1:]
    up = np.sqrt(s_next**2 * (s**2 - s_next**2) / s**2)
    down = np.sqrt(s_next**2 - up**2)
    mids = np.sqrt(s * down)  # 0 on the last step (sigma_down = 0), which is Euler
    t_mids = _sigma_to_t(mids, np.log(_train_sigmas(schedule))).astype(ts.dtype)
    calls = np.concatenate([ts[:1], np.stack([t_mids[:-1], ts[1:]], axis=1).ravel()])
    pred = cfg["prediction_type"]

    def x0_at(model, x, t, sigma):
        return _ve_x0(pred, model(x / np.sqrt(sigma**2 + 1), t), x, sigma)

    def run(model, x, draw):
        for i in range(len(ts)):
            d = (x - x0_at(model, x, ts[i], s[i])) / s[i]
            if s_next[i] == 0:
                x = x - s[i] * d
            else:
                x_mid = x + (mids[i] - s[i]) * d
                d_mid = (x_mid - x0_at(model, x_mid, t_mids[i], mids[i])) / mids[i]
                x = x + (down[i] - s[i]) * d_mid + up[i] * draw(x.shape)
        return x

    return DiffusersPlan("KDPM2AncestralDiscreteScheduler", cfg, schedule, calls, _k_init_sigma(cfg, sig), run,
                         sigmas=sig, stochastic=True)


def _plan_dpm_sde(cfg, n, opts):
    """DPM-Solver++(2S) SDE (Lu et al. 2022, arXiv:2211.01095, with k-diffusion's `sample_dpmpp_sde` noise: eta = 1,
    r = 1/2) as diffusers' DPMSolverSDEScheduler. Per step from sigma to sigma_next, with sigma_mid =
    sqrt(sigma sigma_next) (the lambda-midpoint) and anc(a, b) = (sigma_down, sigma_up) the ancestral split of a
    step a -> b (sigma_up = min(b, sqrt(b^2 (a^2 - b^2) / a^2)), sigma_down = sqrt(b^2 - sigma_up^2)):

        x_mid  = x0 + (d1 / sigma) (x - x0) + s_noise u1 W(sigma, sigma_mid),        (d1, u1) = anc(sigma, sigma_mid)
        x_next = x0_mid + (d2 / sigma) (x - x0_mid) + s_noise u2 W(sigma, sigma_next), (d2, u2) = anc(sigma, sigma_next)

    with x0_mid the model at x_mid, sigma_mid (its timestep: the unrounded log-sigma interpolation). The step onto
    sigma = 0 is Euler (one call). W(a, b) is the increment of one Brownian path in sigma, normalised to unit
    variance: diffusers samples it from a torchsde BrownianTree, so the two increments of a step are correlated.
    Noise draws: two arrays per step except the last, z1 then z2, with W(sigma, sigma_mid) = z1 and
    W(sigma, sigma_next) = (sqrt(sigma - sigma_mid) z1 + sqrt(sigma_mid - sigma_next) z2) / sqrt(sigma - sigma_next),
    the same joint law as the Brownian tree (which a plan without torch cannot reproduce draw for draw; the
    `noise_sampler_seed` key, which seeds that tree, is therefore rejected: pass `noise` instead). Step option:
    s_noise (1.0). Timesteps are float64 and unrounded, Karras included."""
    s_noise = _checks.nonnegative("s_noise", opts.get("s_noise", 1.0))
    schedule = schedule_from_config(cfg)
    _checks.integer("num_inference_steps", n, minimum=1, maximum=cfg["num_train_timesteps"])
    train = _train_sigmas(schedule)
    if cfg["timestep_spacing"] == "linspace":
        ts = np.linspace(0, cfg["num_train_timesteps"] - 1, n)[::-1].copy()
    else:
        ts = _spaced(cfg, n, dtype=np.float64)
    sig = np.interp(ts, np.arange(len(train)), train)
    if cfg["use_karras_sigmas"]:
        sig = _karras(sig[0], sig[-1], n)
        ts = _sigma_to_t(sig, np.log(train))
    mids = np.sqrt(sig[:-1] * sig[1:])
    t_mids = _sigma_to_t(mids, np.log(train))
    calls = np.concatenate([ts[:1], np.stack([t_mids, ts[1:]], axis=1).ravel()])
    sig = np.append(sig, 0.0)
    pred = cfg["prediction_type"]

    def x0_at(model, x, t, s):
        return _ve_x0(pred, model(x / np.sqrt(s**2 + 1), t), x, s)

    def ancestral(a, b):
        up = min(b, np.sqrt(b**2 * (a**2 - b**2) / a**2))
        return np.sqrt(b**2 - up**2), up

    def run(model, x, draw):
        for i in range(n):
            s, s_next = sig[i], sig[i + 1]
            x0 = x0_at(model, x, ts[i], s)
            if s_next == 0:
                x = x0 + (x - x0) * (s_next / s)
                continue
            s_mid = mids[i]
            (d1, u1), (d2, u2) = ancestral(s, s_mid), ancestral(s, s_next)
            z1 = draw(x.shape)
            x_mid = x0 + d1 / s * (x - x0) + s_noise * u1 * z1
            x0_mid = x0_at(model, x_mid, t_mids[i], s_mid)
            z2 = draw(x.shape)
            w = (np.sqrt(s - s_mid) * z1 + np.sqrt(s_mid - s_next) * z2) / np.sqrt(s - s_next)
            x = x0_mid + d2 / s * (x - x0_mid) + s_noise * u2 * w
        return x

    return DiffusersPlan("DPMSolverSDEScheduler", cfg, schedule, calls, _k_init_sigma(cfg, sig), run,
                         sigmas=sig, stochastic=n > 1)


def _lms_coefficient(sig, order, i, j):
    """int_{sig[i]}^{sig[i+1]} prod_{k != j} (tau - sig[i-k]) / (sig[i-j] - sig[i-k]) dtau: the Lagrange basis
    integrated exactly (diffusers uses scipy.integrate.quad with epsrel 1e-4 on the same polynomial)."""
    poly = np.polynomial.Polynomial([1.0])
    for k in range(order):
        if k != j:
            poly = poly * np.polynomial.Polynomial([-sig[i - k], 1.0]) / (sig[i - j] - sig[i - k])
    integral = poly.integ()
    return integral(sig[i + 1]) - integral(sig[i])


def _plan_lms(cfg, n, opts):
    """Linear multistep in sigma_ve (k-diffusion `sample_lms`, Adams-Bashforth on a variable grid, order 4 by
    default): x_next = x + sum_j c_j d_{i-j}, d = (x - x0) / sigma, c_j the integrated Lagrange basis."""
    order = _checks.integer("order", opts.get("order", 4), minimum=1)
    schedule = schedule_from_config(cfg)
    ts, sig = _k_sigmas(cfg, n, schedule, karras=cfg["use_karras_sigmas"])
    pred = cfg["prediction_type"]

    def run(model, x, draw):
        ds = []
        for i, t in enumerate(ts):
            s = sig[i]
            x0 = _ve_x0(pred, model(x / np.sqrt(s**2 + 1), t), x, s)
            ds = (ds + [(x - x0) / s])[-order:]
            cur = min(i + 1, order)
            x = x + sum(_lms_coefficient(sig, cur, i, j) * d for j, d in enumerate(reversed(ds)))
        return x

    return DiffusersPlan("LMSDiscreteScheduler", cfg, schedule, ts, _k_init_sigma(cfg, sig), run,
                         sigmas=sig, stochastic=False)


# ---- DPM-Solver family: DPMSolverMultistep, DPMSolverSinglestep, DEIS, UniPC ------------------------------


def _dpm_sigmas(cfg, n, schedule):
    """Timesteps (int64) and sigmas of DPMSolverMultistep/UniPC set_timesteps (N + 1 linspace points, last dropped;
    Karras sigmas mapped to timesteps and rounded, while the steps use the exact Karras sigmas)."""
    _checks.integer("num_inference_steps", n, minimum=1, maximum=cfg["num_train_timesteps"])
    ts = _spaced(cfg, n, dtype=np.float64, plus_one=True)
    train = _train_sigmas(schedule)
    if cfg["use_karras_sigmas"]:
        sigmas = _karras(train[-1], train[0], n)
        ts = _sigma_to_t(sigmas, np.log(train))
        if cfg["beta_schedule"] != "squaredcos_cap_v2" or cfg["_class_name"] != "DPMSolverMultistepScheduler":
            ts = ts.round()
    else:
        sigmas = np.interp(ts, np.arange(len(train)), train)
    last = train[0] if cfg["final_sigmas_type"] == "sigma_min" else 0.0
    return ts.astype(np.int64), np.append(sigmas, last)


def _vp_of(s):
    """(alpha, sigma, lam) of a VP process at sigma_ve = s; s = 0 gives (1, 0, inf) without warnings."""
    alpha = 1.0 / np.sqrt(s**2 + 1)
    with np.errstate(divide="ignore"):
        return alpha, s * alpha, -np.log(s) if s > 0 else np.inf


def _dpm_multistep_update(sig, of, algo, solver_type):
    """The DPM-Solver(++) multistep update of diffusers (orders 1-3, midpoint/heun, sde-dpmsolver++) for sigmas
    `sig` (sigma_ve), with `of(s)` -> (alpha, sigma, lam): VP (`_vp_of`) or EDM's alpha = 1 (`_edm_of`)."""

    def update(x, ms, i, k, z):
        a_t, s_t, l_t = of(sig[i + 1])
        a_0, s_0, l_0 = of(sig[i])
        if np.isinf(l_t):  # onto sigma = 0: the first-order data-prediction step returns x0 exactly
            return ms[-1]
        h = l_t - l_0
        m0 = ms[-1]
        if k == 1:
            D0, D1, D2 = m0, 0.0, 0.0
        else:
            l_1 = of(sig[i - 1])[2]
            r0 = (l_0 - l_1) / h
            D1_0 = (m0 - ms[-2]) / r0
            if k == 2:
                D0, D1, D2 = m0, D1_0, 0.0
            else:
                l_2 = of(sig[i - 2])[2]
                r1 = (l_1 - l_2) / h
                D1_1 = (ms[-2] - ms[-3]) / r1
                D0, D1, D2 = m0, D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1), (D1_0 - D1_1) / (r0 + r1)
        if algo == "dpmsolver++":
            base = s_t / s_0 * x - a_t * np.expm1(-h) * D0
            if k == 2 and solver_type == "midpoint":
                return base - 0.5 * a_t * np.expm1(-h) * D1
            return base + a_t * (np.expm1(-h) / h + 1.0) * D1 - a_t * ((np.expm1(-h) + h) / h**2 - 0.5) * D2
        if algo == "dpmsolver":
            base = a_t / a_0 * x - s_t * np.expm1(h) * D0
            if k == 2 and solver_type == "midpoint":
                return base - 0.5 * s_t * np.expm1(h) * D1
            return base - s_t * (np.expm1(h) / h - 1.0) * D1 - s_t * ((np.expm1(h) - h) / h**2 - 0.5) * D2
        # sde-dpmsolver++
        e2 = -np.expm1(-2.0 * h)
        base = s_t / s_0 * np.exp(-h) * x + a_t * e2 * D0 + s_t * np.sqrt(e2) * z
        if k == 2 and solver_type == "midpoint":
            return base + 0.5 * a_t * e2 * D1
        return base + a_t * (e2 / (-2.0 * h) + 1.0) * D1 + a_t * ((e2 - 2.0 * h) / (2.0 * h) ** 2 - 0.5) * D2

    return update


def _multistep_order(cfg, order, i, N):
    """The order of step i of N in diffusers' DPM-Solver multistep schedulers: warm-up 1, 2, ...; first order on
    the last step (euler_at_final, lower_order_final below 15 steps, or a final sigma of zero) and at most second
    order on the one before (lower_order_final below 15 steps)."""
    final = i == N - 1 and (
        cfg["euler_at_final"] or (cfg["lower_order_final"] and N < 15) or cfg["final_sigmas_type"] == "zero"
    )
    second = i == N - 2 and cfg["lower_order_final"] and N < 15
    return 1 if (order == 1 or i < 1 or final) else 2 if (order == 2 or i < 2 or second) else 3


def _plan_dpm_multistep(cfg, n, opts):
    """DPM-Solver++ / DPM-Solver multistep (Lu et al. 2022, arXiv:2211.01095, Alg. 2; 2206.00927) as diffusers'
    DPMSolverMultistepScheduler: orders 1-3, "midpoint" or "heun" second-order variants, lower-order warm-up and
    final steps (lower_order_final below 15 steps, first order onto a final sigma of zero), and the SDE variant
    sde-dpmsolver++ (one draw per step, the last included). The model sees the rounded (Karras) timestep while
    the update uses the exact sigma."""
    schedule = schedule_from_config(cfg)
    ts, sig = _dpm_sigmas(cfg, n, schedule)
    pred, algo, order = cfg["prediction_type"], cfg["algorithm_type"], cfg["solver_order"]
    N = len(ts)
    data_pred = algo in ("dpmsolver++", "sde-dpmsolver++")
    if not data_pred and cfg["final_sigmas_type"] == "zero":
        raise ValueError(
            f"config key 'algorithm_type'={algo!r} with final_sigmas_type='zero': diffusers rejects it too "
            "(the noise-prediction update is 0 * inf at sigma = 0); use final_sigmas_type='sigma_min'"
        )

    def convert(out, x, s):
        alpha, sigma, _ = _vp_of(s)
        x0, eps = _vp_x0_eps(pred, out, x, alpha**2)
        if data_pred:
            return _threshold(x0, cfg)
        if cfg["thresholding"]:
            x0 = _threshold(x0, cfg)
            eps = (x - alpha * x0) / sigma
        return eps

    update = _dpm_multistep_update(sig, _vp_of, algo, cfg["solver_type"])

    def run(model, x, draw):
        ms = []
        for i, t in enumerate(ts):
            ms = (ms + [convert(model(x, t), x, sig[i])])[-order:]
            k = _multistep_order(cfg, order, i, N)
            z = draw(x.shape) if algo == "sde-dpmsolver++" else None
            if z is not None and np.isinf(_vp_of(sig[i + 1])[2]):
                x = ms[-1]
            else:
                x = update(x, ms, i, k, z)
        return x

    return DiffusersPlan("DPMSolverMultistepScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig,
                         stochastic=algo == "sde-dpmsolver++")


def _singlestep_orders(order, n, lower_order_final, final_zero):
    """diffusers' DPMSolverSinglestepScheduler.get_order_list: the order of each step, in repeating groups 1, 2, ..
    (a group of order k spans k steps and restarts from the sample at its first step)."""
    if lower_order_final:
        if order == 3:
            tail = {0: [1, 2, 1], 1: [1], 2: [1, 2]}[n % 3]
            orders = [1, 2, 3] * (n // 3 - (1 if n % 3 == 0 else 0)) + tail
        elif order == 2:
            orders = [1, 2] * (n // 2 - 1) + [1, 1] if n % 2 == 0 else [1, 2] * (n // 2) + [1]
        else:
            orders = [1] * n
    else:
        orders = {1: [1], 2: [1, 2], 3: [1, 2, 3]}[order] * (n // order)
    if final_zero:
        orders[-1] = 1
    return orders


def _plan_dpm_singlestep(cfg, n, opts):
    """Singlestep DPM-Solver / DPM-Solver++ (Lu et al. 2022, arXiv:2206.00927 Alg. 1; arXiv:2211.01095 Alg. 1) as
    diffusers' DPMSolverSinglestepScheduler: steps in groups of orders 1, 2, 3 (`_singlestep_orders`); a group of
    order k goes from the sample at grid[i - k + 1] to grid[i + 1] with the k model values of the group, so the
    intermediate points of the paper's singlestep solver are the grid points themselves (the paper places them at
    r = 1/2 or 1/3, 2/3 of the step in lambda). Third order with solver_type="midpoint" uses only D1 = (m0 - m2)/r0
    (the paper's DPM-Solver-3 form); "heun" adds the D2 term. sde-dpmsolver++ draws one array per step, the last
    included. Timesteps: N + 1 linspace points, the last dropped (no timestep_spacing key); Karras sigmas are
    mapped to rounded timesteps while the updates use the exact sigmas.

    diffusers forces lower_order_final=True when N is not a multiple of solver_order or the final sigma is zero
    (the default), and so does this plan. Departure kept out: with algorithm_type="dpmsolver" and thresholding,
    diffusers 0.42.1 indexes alpha_t with timestep None (a shape error): rejected here."""
    schedule = schedule_from_config(cfg)
    cfg = {**cfg, "timestep_spacing": "linspace"}
    ts, sig = _dpm_sigmas(cfg, n, schedule)
    pred, algo, order = cfg["prediction_type"], cfg["algorithm_type"], cfg["solver_order"]
    algo = "dpmsolver++" if algo == "deis" else algo  # diffusers' own alias
    solver_type = "midpoint" if cfg["solver_type"] in ("logrho", "bh1", "bh2") else cfg["solver_type"]
    final_zero = cfg["final_sigmas_type"] == "zero"
    if algo == "dpmsolver" and final_zero:
        raise ValueError(
            f"config key 'algorithm_type'={algo!r} with final_sigmas_type='zero': diffusers rejects it too "
            "(the noise-prediction update is 0 * inf at sigma = 0); use final_sigmas_type='sigma_min'"
        )
    if algo == "dpmsolver" and cfg["thresholding"]:
        raise ValueError(
            "config key 'thresholding'=True with algorithm_type='dpmsolver' is not implemented for "
            "DPMSolverSinglestepScheduler: diffusers 0.42.1 fails on it (alpha_t indexed with timestep None)"
        )
    lower_final = cfg["lower_order_final"] or n % order != 0 or final_zero
    orders = _singlestep_orders(order, n, lower_final, final_zero)
    data_pred = algo != "dpmsolver"

    def convert(out, x, s):
        alpha, sigma, _ = _vp_of(s)
        x0, eps = _vp_x0_eps(pred, out, x, alpha**2)
        return _threshold(x0, cfg) if data_pred else eps

    def update(x, ms, i, k, z):
        a_t, s_t, l_t = _vp_of(sig[i + 1])
        a_s, s_s, l_s = _vp_of(sig[i - k + 1])
        if np.isinf(l_t):  # onto sigma = 0 (k = 1): the data-prediction step returns x0 exactly
            return ms[-1]
        h = l_t - l_s
        if k == 1:
            D0, D1, D1_1, D2 = ms[-1], 0.0, 0.0, 0.0
        elif k == 2:
            r0 = (_vp_of(sig[i])[2] - l_s) / h
            D0, D1, D1_1, D2 = ms[-2], (ms[-1] - ms[-2]) / r0, 0.0, 0.0
        else:
            r0, r1 = (_vp_of(sig[i])[2] - l_s) / h, (_vp_of(sig[i - 1])[2] - l_s) / h
            D0 = ms[-3]
            D1_0, D1_1 = (ms[-2] - ms[-3]) / r1, (ms[-1] - ms[-3]) / r0
            D1, D2 = (r0 * D1_0 - r1 * D1_1) / (r0 - r1), 2.0 * (D1_1 - D1_0) / (r0 - r1)
        mid = solver_type == "midpoint"
        if algo == "dpmsolver++":
            phi1, phi2, phi3 = np.expm1(-h), np.expm1(-h) / h + 1.0, (np.expm1(-h) + h) / h**2 - 0.5
            x_t = s_t / s_s * x - a_t * phi1 * D0
            if k == 2:
                return x_t - 0.5 * a_t * phi1 * D1 if mid else x_t + a_t * phi2 * D1
            if k == 3:
                return x_t + a_t * phi2 * D1_1 if mid else x_t + a_t * phi2 * D1 - a_t * phi3 * D2
            return x_t
        if algo == "dpmsolver":
            phi1, phi2, phi3 = np.expm1(h), np.expm1(h) / h - 1.0, (np.expm1(h) - h) / h**2 - 0.5
            x_t = a_t / a_s * x - s_t * phi1 * D0
            if k == 2:
                return x_t - 0.5 * s_t * phi1 * D1 if mid else x_t - s_t * phi2 * D1
            if k == 3:
                return x_t - s_t * phi2 * D1_1 if mid else x_t - s_t * phi2 * D1 - s_t * phi3 * D2
            return x_t
        e2 = -np.expm1(-2.0 * h)  # sde-dpmsolver++
        phi2, phi3 = e2 / (-2.0 * h) + 1.0, (e2 - 2.0 * h) / (2.0 * h) ** 2 - 0.5
        x_t = s_t / s_s * np.exp(-h) * x + a_t * e2 * D0 + s_t * np.sqrt(e2) * z
        if k == 2:
            return x_t + 0.5 * a_t * e2 * D1 if mid else x_t + a_t * phi2 * D1
        if k == 3:
            return x_t + a_t * phi2 * D1_1 if mid else x_t + a_t * phi2 * D1 + a_t * phi3 * D2
        return x_t

    def run(model, x, draw):
        ms, x_start = [], x
        for i, t in enumerate(ts):
            ms = (ms + [convert(model(x, t), x, sig[i])])[-order:]
            k = min(orders[i], len(ms))
            if k == 1:
                x_start = x
            z = draw(x.shape) if algo == "sde-dpmsolver++" else None
            x = update(x_start, ms, i, k, z)
        return x

    return DiffusersPlan("DPMSolverSinglestepScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig,
                         stochastic=algo == "sde-dpmsolver++")


def _deis_coefficients(rho_t, rho_s):
    """DEIS log-rho coefficients (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
    Integrator", arXiv:2204.13902, eq. 15 with the polynomial in log rho): c_j = int_{rho_s[0]}^{rho_t} L_j(log rho)
    d rho, L_j the Lagrange basis through (log rho_s[0], log rho_s[1], ...), in diffusers' closed forms."""
    logs = [np.log(r) for r in rho_s]
    if len(rho_s) == 2:
        def ind(r, b, c):  # an antiderivative of (log r - c) / (b - c)
            return r * (np.log(r) - c - 1) / (b - c)

        b, c = logs
        return [ind(rho_t, b, c) - ind(rho_s[0], b, c), ind(rho_t, c, b) - ind(rho_s[0], c, b)]

    def ind3(r, b, c, d):  # an antiderivative of (log r - c)(log r - d) / ((b - c)(b - d))
        lr = np.log(r)
        return r * (c * (d - lr + 1) - d * lr + d + lr**2 - 2 * lr + 2) / ((b - c) * (b - d))

    b, c, d = logs
    return [ind3(rho_t, b, c, d) - ind3(rho_s[0], b, c, d), ind3(rho_t, c, d, b) - ind3(rho_s[0], c, d, b),
            ind3(rho_t, d, b, c) - ind3(rho_s[0], d, b, c)]


def _plan_deis(cfg, n, opts):
    """DEIS multistep in its log-rho form (Zhang & Chen 2023, arXiv:2204.13902, Sec. 4, "tAB-DEIS" with rho =
    sigma / alpha = sigma_ve) as diffusers' DEISMultistepScheduler: eps-form exponential integrator,
    x_t = alpha_t (x / alpha_s + sum_j c_j eps_j), orders 1-3 with the DPM-Solver warm-up and lower_order_final
    (below 15 steps); order 1 is DDIM. Thresholding acts on x0 before it is turned back into eps.

    Departures reproduced: the last step never reaches the clean end, it lands on sigma(t = 0) (alphabar[0]); with
    use_karras_sigmas the final sigma *repeats* the last Karras sigma, so the last model call changes nothing and
    the result is x at sigma_min of the Karras grid. algorithm_type "dpmsolver"/"dpmsolver++" and solver_type
    "midpoint"/"heun"/"bh1"/"bh2" are renamed to "deis"/"logrho" by diffusers itself, and so here."""
    schedule = schedule_from_config(cfg)
    ts, sig = _dpm_sigmas({**cfg, "final_sigmas_type": "sigma_min"}, n, schedule)
    if cfg["use_karras_sigmas"]:
        sig[-1] = sig[-2]
    pred, order, N = cfg["prediction_type"], cfg["solver_order"], len(ts)

    def eps_of(out, x, s):
        alpha, sigma, _ = _vp_of(s)
        x0, eps = _vp_x0_eps(pred, out, x, alpha**2)
        if cfg["thresholding"]:
            eps = (x - alpha * _threshold(x0, cfg)) / sigma
        return eps

    def update(x, es, i, k):
        a_t, s_t, l_t = _vp_of(sig[i + 1])
        a_s, _, l_s = _vp_of(sig[i])
        if k == 1:
            return a_t / a_s * x - s_t * np.expm1(l_t - l_s) * es[-1]
        coefs = _deis_coefficients(sig[i + 1], [sig[i - j] for j in range(k)])
        return a_t * (x / a_s + sum(c * es[-1 - j] for j, c in enumerate(coefs)))

    def run(model, x, draw):
        es = []
        for i, t in enumerate(ts):
            es = (es + [eps_of(model(x, t), x, sig[i])])[-order:]
            low = cfg["lower_order_final"] and N < 15
            k = 1 if (order == 1 or i < 1 or (low and i == N - 1)) else 2 if (
                order == 2 or i < 2 or (low and i == N - 2)) else 3
            x = update(x, es, i, k)
        return x

    return DiffusersPlan("DEISMultistepScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig, stochastic=False)


def _unipc_coefficients(rks, hh, order, solver_type):
    """UniPC's B(h) and b_k (Zhao et al. 2023, arXiv:2302.04867, Alg. 1-2, the phi functions of -h)."""
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    B_h = hh if solver_type == "bh1" else np.expm1(hh)
    R, b = [], []
    for i in range(1, order + 1):
        R.append(np.power(rks, i - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, B_h, np.array(R), np.array(b)


def _plan_unipc(cfg, n, opts):
    """UniPC (Zhao et al. 2023, "UniPC", arXiv:2302.04867): UniP-p predictor + UniC corrector in data-prediction
    form, as diffusers' UniPCMultistepScheduler (bh1/bh2, lower_order_final, disable_corrector). The corrector
    at step i re-uses the model call of step i (no extra call); the last predictor step is not corrected.
    Departure kept out: with solver_type="bh1" and a final sigma of zero diffusers 0.42.1 returns NaN
    (B(h) = h = -inf times a zero correction); the plan returns that step's limit, x0."""
    schedule = schedule_from_config(cfg)
    ts, sig = _dpm_sigmas(cfg, n, schedule)
    pred, order, N = cfg["prediction_type"], cfg["solver_order"], len(ts)
    disabled = set(cfg["disable_corrector"])
    lams = [_vp_of(s)[2] for s in sig]

    def predictor(x, ms, i, k):
        a_t, s_t, l_t = _vp_of(sig[i + 1])
        _, s_0, l_0 = _vp_of(sig[i])
        m0 = ms[-1]
        if np.isinf(l_t):
            if k != 1:
                raise ValueError("UniPC above order 1 onto sigma = 0 is undefined (diffusers gives NaN)")
            return m0
        h = l_t - l_0
        rks = [(lams[i - j] - l_0) / h for j in range(1, k)] + [1.0]
        D1s = [(ms[-(j + 1)] - m0) / rks[j - 1] for j in range(1, k)]
        h_phi_1, B_h, R, b = _unipc_coefficients(np.array(rks), -h, k, cfg["solver_type"])
        x_t = s_t / s_0 * x - a_t * h_phi_1 * m0
        if D1s:
            rhos = np.array([0.5]) if k == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
            x_t = x_t - a_t * B_h * sum(r * d for r, d in zip(rhos, D1s))
        return x_t

    def corrector(x_last, ms, m_new, i, k):
        a_t, s_t, l_t = _vp_of(sig[i])
        _, s_0, l_0 = _vp_of(sig[i - 1])
        m0 = ms[-1]
        h = l_t - l_0
        rks = [(lams[i - 1 - j] - l_0) / h for j in range(1, k)] + [1.0]
        D1s = [(ms[-(j + 1)] - m0) / rks[j - 1] for j in range(1, k)]
        h_phi_1, B_h, R, b = _unipc_coefficients(np.array(rks), -h, k, cfg["solver_type"])
        rhos = np.array([0.5]) if k == 1 else np.linalg.solve(R, b)
        corr = sum(r * d for r, d in zip(rhos[:-1], D1s)) if D1s else 0.0
        return s_t / s_0 * x_last - a_t * h_phi_1 * m0 - a_t * B_h * (corr + rhos[-1] * (m_new - m0))

    def run(model, x, draw):
        ms, x_last, k_prev = [], None, 0
        for i, t in enumerate(ts):
            alpha, sigma, _ = _vp_of(sig[i])
            m = _vp_x0_eps(pred, model(x, t), x, alpha**2)[0]
            if i > 0 and (i - 1) not in disabled and x_last is not None:
                x = corrector(x_last, ms, m, i, k_prev)
            ms = (ms + [m])[-order:]
            k = min(order, N - i)  # lower_order_final
            k = min(k, i + 1)  # warm-up
            x_last, k_prev = x, k
            x = predictor(x, ms, i, k)
        return x

    return DiffusersPlan("UniPCMultistepScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig, stochastic=False)


# ---- Consistency models: LCM, TCD ----------------------------------------------------------------------------


def _lcm_timesteps(cfg, n):
    """LCM/TCD set_timesteps (strength 1): the distillation grid t = k j - 1 (j = 1..original_inference_steps,
    k = T // original_inference_steps), descending, sampled at floor(linspace(0, len, N, endpoint=False))."""
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    orig = _checks.integer("original_inference_steps", cfg["original_inference_steps"], minimum=1, maximum=T)
    _checks.integer("num_inference_steps", n, minimum=1, maximum=orig)
    origin = (np.arange(1, orig + 1) * (T // orig) - 1)[::-1]
    return origin[np.floor(np.linspace(0, len(origin), num=n, endpoint=False)).astype(np.int64)].astype(np.int64)


def _plan_lcm(cfg, n, opts):
    """Latent consistency model multistep sampling (Luo et al. 2023, arXiv:2310.04378, Alg. 3; Song et al. 2023,
    "Consistency Models", Alg. 1) as diffusers' LCMScheduler: x0 from the model output (thresholded or clipped as
    configured), the consistency boundary condition f = c_skip(t) x + c_out(t) x0 with c_skip = sd^2 / (s^2 + sd^2),
    c_out = s / sqrt(s^2 + sd^2), s = timestep_scaling * t (the integer timestep, not a noise level) and
    sd = 0.5, then re-noise to the next grid time: x = sqrt(abar') f + sqrt(1 - abar') z. The last step returns f.
    Noise draws: one per step except the last. timestep_spacing, steps_offset and set_alpha_to_one are stored by
    diffusers but never read by LCM's timesteps or step (inert)."""
    schedule = schedule_from_config(cfg)
    abar = schedule.alphas_cumprod()
    ts = _lcm_timesteps(cfg, n)
    pred, scaling = cfg["prediction_type"], float(cfg["timestep_scaling"])

    def run(model, x, draw):
        for i, t in enumerate(ts):
            x0 = _threshold(_vp_x0_eps(pred, model(x, t), x, abar[t])[0], cfg)
            s = t * scaling
            f = 0.25 / (s**2 + 0.25) * x + s / np.sqrt(s**2 + 0.25) * x0
            if i == len(ts) - 1:
                return f
            a_next = abar[ts[i + 1]]
            x = np.sqrt(a_next) * f + np.sqrt(1 - a_next) * draw(x.shape)
        return x

    return DiffusersPlan("LCMScheduler", cfg, schedule, ts, 1.0, run, stochastic=n > 1)


def _plan_tcd(cfg, n, opts):
    """Trajectory consistency distillation's strategic stochastic sampling (Zheng et al. 2024, arXiv:2402.19159,
    Alg. 4, gamma = the step option `eta`, 0.3 by default as in diffusers' pipelines) as diffusers' TCDScheduler:
    from (x0, eps) of the model output, jump to s = floor((1 - gamma) t_next) along the ODE,
    x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps, then forward-noise to t_next:
    x = sqrt(abar_next / abar_s) x_s + sqrt(1 - abar_next / abar_s) z. gamma = 0 is deterministic (DDIM between the
    grid times); gamma > 0 draws one array per step except the last.

    Departures reproduced: s is floored in float32 ((1 - 0.3) * 700 gives 489 in float64 but 490 in diffusers); the
    last step jumps to s = 0 and returns x at alphabar[0], not the clean end. TCD's step never reads clip_sample,
    thresholding, timestep_spacing, steps_offset or set_alpha_to_one in diffusers 0.42.1: inert here too."""
    gamma = _checks.in_range("eta", opts.get("eta", 0.3), 0.0, 1.0)
    schedule = schedule_from_config(cfg)
    abar = schedule.alphas_cumprod()
    ts = _lcm_timesteps(cfg, n)
    pred = cfg["prediction_type"]

    def run(model, x, draw):
        for i, t in enumerate(ts):
            t_next = ts[i + 1] if i + 1 < len(ts) else 0
            s = int(np.floor(np.float32(1 - gamma) * np.float32(t_next)))
            x0, eps = _vp_x0_eps(pred, model(x, t), x, abar[t])
            x = np.sqrt(abar[s]) * x0 + np.sqrt(1 - abar[s]) * eps
            if gamma > 0 and i != len(ts) - 1:
                x = np.sqrt(abar[t_next] / abar[s]) * x + np.sqrt(1 - abar[t_next] / abar[s]) * draw(x.shape)
        return x

    return DiffusersPlan("TCDScheduler", cfg, schedule, ts, 1.0, run, stochastic=gamma > 0 and n > 1)


# ---- EDM: EDMEuler, EDMDPMSolverMultistep --------------------------------------------------------------------


def _edm_sigmas(cfg, n):
    """EDM schedulers' set_timesteps: Karras sigmas (rho) or log-uniform ("exponential") between sigma_min and
    sigma_max, N of them; model timestep c_noise = log(sigma) / 4 (float32)."""
    _checks.integer("num_inference_steps", n, minimum=1)
    lo, hi = _checks.positive("sigma_min", cfg["sigma_min"]), _checks.positive("sigma_max", cfg["sigma_max"])
    if cfg["sigma_schedule"] == "karras":
        sig = _karras(hi, lo, n, rho=_checks.positive("rho", cfg["rho"]))
    else:
        sig = np.exp(np.linspace(math.log(lo), math.log(hi), n))[::-1].copy()
    ts = (0.25 * np.log(sig.astype(np.float32))).astype(np.float32)
    return ts, np.append(sig, lo if cfg["final_sigmas_type"] == "sigma_min" else 0.0)


def _edm_x0(cfg, out, x, s):
    """EDM preconditioning (Karras et al. 2022, Table 1): x0 = c_skip x + c_out F with c_skip = sd^2 / (s^2 + sd^2)
    and c_out = s sd / sqrt(s^2 + sd^2), negated for diffusers' "v_prediction"."""
    sd = float(cfg["sigma_data"])
    c_out = s * sd / np.sqrt(s**2 + sd**2) * (-1.0 if cfg["prediction_type"] == "v_prediction" else 1.0)
    return sd**2 / (s**2 + sd**2) * x + c_out * out


def _edm_of(s):
    """(alpha, sigma, lam) of the EDM process (alpha = 1) at sigma = s; s = 0 gives (1, 0, inf)."""
    with np.errstate(divide="ignore"):
        return 1.0, s, -np.log(s) if s > 0 else np.inf


def _edm_schedule(cfg):
    return EDM(sigma_min=float(cfg["sigma_min"]), sigma_max=float(cfg["sigma_max"]),
               sigma_data=float(cfg["sigma_data"]))


def _plan_edm_euler(cfg, n, opts):
    """Euler (Karras et al. 2022, Alg. 1; Alg. 2 with churn) in EDM's own parameterization, as diffusers'
    EDMEulerScheduler: the model sees c_in x = x / sqrt(sigma^2 + sigma_data^2) and c_noise = log(sigma) / 4, its
    output F gives x0 = c_skip x + c_out F; x_next = x + (sigma_next - sigma_hat) (x_hat - x0) / sigma_hat, churn as
    in `_plan_euler` (step options s_churn, s_tmin, s_tmax, s_noise; the model is called before the churn and F is
    read at sigma_hat: a diffusers departure from Alg. 2). Departure: x_T = sqrt(sigma_max^2 + 1) eps
    (init_noise_sigma), where the paper starts from sigma_max eps."""
    ts, sig = _edm_sigmas(cfg, n)
    gammas, s_noise = _churn(opts, sig, n)
    sd = float(cfg["sigma_data"])

    def run(model, x, draw):
        for i, t in enumerate(ts):
            s = sig[i]
            out = model(x / np.sqrt(s**2 + sd**2), t)
            s_hat = s * (1 + gammas[i])
            if gammas[i] > 0:
                x = x + s_noise * np.sqrt(s_hat**2 - s**2) * draw(x.shape)
            x = x + (sig[i + 1] - s_hat) * (x - _edm_x0(cfg, out, x, s_hat)) / s_hat
        return x

    return DiffusersPlan("EDMEulerScheduler", cfg, _edm_schedule(cfg), ts, math.sqrt(cfg["sigma_max"] ** 2 + 1), run,
                         sigmas=sig, stochastic=bool(np.any(gammas > 0)))


def _plan_edm_dpm_multistep(cfg, n, opts):
    """DPM-Solver++ multistep (Lu et al. 2022, arXiv:2211.01095) on the EDM process (alpha = 1, sigma = sigma_ve,
    lam = -log sigma) as diffusers' EDMDPMSolverMultistepScheduler: the DPMSolverMultistep update and order rules
    (`_dpm_multistep_update`) on EDM sigmas, with the model called as in EDMEuler (c_in, c_noise) and x0 from EDM's
    preconditioning (then thresholded if configured). Departures: x_T = sqrt(sigma_max^2 + 1) eps; diffusers 0.42.1
    has no third-order SDE update (sde-dpmsolver++ with solver_order 3 is rejected here)."""
    algo = "dpmsolver++" if cfg["algorithm_type"] == "deis" else cfg["algorithm_type"]
    solver_type = "midpoint" if cfg["solver_type"] in ("logrho", "bh1", "bh2") else cfg["solver_type"]
    order = cfg["solver_order"]
    if algo == "sde-dpmsolver++" and order == 3:
        raise ValueError(
            "config key 'solver_order'=3 with algorithm_type='sde-dpmsolver++' is not implemented for "
            "EDMDPMSolverMultistepScheduler: diffusers 0.42.1 has no third-order SDE update"
        )
    ts, sig = _edm_sigmas(cfg, n)
    sd, N = float(cfg["sigma_data"]), len(ts)
    update = _dpm_multistep_update(sig, _edm_of, algo, solver_type)

    def run(model, x, draw):
        ms = []
        for i, t in enumerate(ts):
            out = model(x / np.sqrt(sig[i] ** 2 + sd**2), t)
            ms = (ms + [_threshold(_edm_x0(cfg, out, x, sig[i]), cfg)])[-order:]
            k = _multistep_order(cfg, order, i, N)
            z = draw(x.shape) if algo == "sde-dpmsolver++" else None
            x = ms[-1] if sig[i + 1] == 0 else update(x, ms, i, k, z)
        return x

    return DiffusersPlan("EDMDPMSolverMultistepScheduler", cfg, _edm_schedule(cfg), ts,
                         math.sqrt(cfg["sigma_max"] ** 2 + 1), run, sigmas=sig, stochastic=algo == "sde-dpmsolver++")


# ---- Flow matching -------------------------------------------------------------------------------------------


def _plan_flow_match_euler(cfg, n, opts):
    """Euler on the rectified-flow ODE dx/dt = u (Liu et al. 2022; Esser et al. 2024) as diffusers'
    FlowMatchEulerDiscreteScheduler: model timestep = 1000 sigma, x_next = x + (sigma_next - sigma) u.

    Departure (issue 13243, still in 0.42.1): `shift` is applied in __init__ to the training sigmas and again in
    set_timesteps, so the grid is shift(linspace(1, shift(1/T), N)) rather than the paper's shift(linspace(1,
    1/T, N)) (the reference's `grids.shifted`). stochastic_sampling: x_next = (1 - s') x0 + s' z, one draw per
    step, the last included."""
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    _checks.integer("num_inference_steps", n, minimum=1)
    shift = _checks.positive("shift", cfg["shift"])

    def shifted(s):
        return shift * s / (1 + (shift - 1) * s)

    train = shifted(np.linspace(1, T, T)[::-1] / T)  # __init__: the first application
    s_max, s_min = train[0], train[-1]
    sig = shifted(np.linspace(s_max * T, s_min * T, n) / T)  # set_timesteps: the second
    ts = (sig * T).astype(np.float32)
    sig = np.append(sig, 0.0)
    schedule = Flow(shift=shift)
    stochastic = bool(cfg["stochastic_sampling"])

    def run(model, x, draw):
        for i, t in enumerate(ts):
            u = model(x, t)
            if stochastic:
                x0 = x - sig[i] * u
                x = (1 - sig[i + 1]) * x0 + sig[i + 1] * draw(x.shape)
            else:
                x = x + (sig[i + 1] - sig[i]) * u
        return x

    plan = DiffusersPlan("FlowMatchEulerDiscreteScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig,
                         stochastic=stochastic)
    plan.prediction_type = "flow_prediction"
    return plan


_PLANS = {
    "DDIMScheduler": _plan_ddim,
    "DDPMScheduler": _plan_ddpm,
    "PNDMScheduler": _plan_pndm,
    "EulerDiscreteScheduler": _plan_euler,
    "EulerAncestralDiscreteScheduler": _plan_euler_ancestral,
    "HeunDiscreteScheduler": _plan_heun,
    "LMSDiscreteScheduler": _plan_lms,
    "DPMSolverMultistepScheduler": _plan_dpm_multistep,
    "UniPCMultistepScheduler": _plan_unipc,
    "DPMSolverSinglestepScheduler": _plan_dpm_singlestep,
    "DEISMultistepScheduler": _plan_deis,
    "KDPM2DiscreteScheduler": _plan_kdpm2,
    "DPMSolverSDEScheduler": _plan_dpm_sde,
    "KDPM2AncestralDiscreteScheduler": _plan_kdpm2_ancestral,
    "FlowMatchEulerDiscreteScheduler": _plan_flow_match_euler,
    "LCMScheduler": _plan_lcm,
    "TCDScheduler": _plan_tcd,
    "EDMEulerScheduler": _plan_edm_euler,
    "EDMDPMSolverMultistepScheduler": _plan_edm_dpm_multistep,
}

SUPPORTED_CLASSES = tuple(_PLANS)


def from_diffusers(config, num_inference_steps, **step_options):
    """A `DiffusersPlan` reproducing a diffusers pipeline loop for `config` (a scheduler_config.json dict).

    step_options are what a pipeline passes to `scheduler.step` (`STEP_OPTIONS`: DDIM eta and
    use_clipped_model_output; LMS order; TCD eta (the paper's gamma); DPMSolverSDE s_noise; Euler and EDMEuler
    s_churn, s_tmin, s_tmax, s_noise); any other is a ValueError. See the module docstring for the departures from
    the papers reproduced.
    """
    name, cfg = _validate(config)
    cfg["_class_name"] = name
    allowed = STEP_OPTIONS.get(name, {})
    unknown = sorted(set(step_options) - set(allowed))
    if unknown:
        raise ValueError(
            f"step option {unknown[0]!r} is not implemented for {name}: expected some of {sorted(allowed) or 'none'}"
        )
    n = _checks.integer("num_inference_steps", num_inference_steps, minimum=1)
    return _PLANS[name](cfg, n, step_options)


# --------------------------------------------------------------------------------------------------------
# Writing configs back
# --------------------------------------------------------------------------------------------------------


def to_diffusers(schedule, *, class_name=None, prediction_type="epsilon", **extra):
    """A scheduler_config dict diffusers loads with `from_config` for a diffspec schedule.

    Discrete VP schedules: LinearBetas / ScaledLinearBetas -> beta_schedule linear / scaled_linear; CosineBetas with
    the paper's s = 0.008 and cap 0.999 -> squaredcos_cap_v2; anything else (sigmoid, explicit, other cosine
    parameters) -> trained_betas; rescale_zero_snr -> rescale_betas_zero_snr. class_name defaults to
    DDIMScheduler. Flow -> FlowMatchEulerDiscreteScheduler with `shift`; EDM -> EDMEulerScheduler (sigma_min,
    sigma_max, sigma_data). Other schedules have no diffusers counterpart: ValueError. `extra` keys are added
    as given (e.g. timestep_spacing).
    """
    if getattr(schedule, "is_discrete", False):
        cfg = {"_class_name": class_name or "DDIMScheduler", "num_train_timesteps": schedule.num_steps,
               "prediction_type": prediction_type}
        if isinstance(schedule, (LinearBetas, ScaledLinearBetas)):
            cfg.update(beta_schedule=schedule.name, beta_start=schedule.beta_start, beta_end=schedule.beta_end)
        elif isinstance(schedule, CosineBetas) and schedule.s == 0.008 and schedule.max_beta == 0.999:
            cfg.update(beta_schedule="squaredcos_cap_v2")
        else:
            base = dataclass_replace_no_rescale(schedule)
            cfg.update(trained_betas=[float(b) for b in base.betas()])
        if schedule.rescale_zero_snr:
            cfg["rescale_betas_zero_snr"] = True
        return {**cfg, **extra}
    if isinstance(schedule, Flow):
        return {"_class_name": class_name or "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                "shift": schedule.shift, **extra}
    if isinstance(schedule, EDM):
        return {"_class_name": class_name or "EDMEulerScheduler", "sigma_min": schedule.sigma_min,
                "sigma_max": schedule.sigma_max, "sigma_data": schedule.sigma_data,
                "prediction_type": prediction_type, **extra}
    raise ValueError(
        f"schedule {type(schedule).__name__}: diffusers has no scheduler config for it; expected a discrete VP "
        "(betas), flow or EDM schedule"
    )


def dataclass_replace_no_rescale(schedule):
    """The same discrete schedule without the zero-terminal-SNR rescale (diffusers applies it to trained_betas)."""
    import dataclasses

    return dataclasses.replace(schedule, rescale_zero_snr=False)


__all__ = ["DiffusersPlan", "HONOURED", "SUPPORTED_CLASSES", "from_diffusers", "schedule_from_config", "to_diffusers",
           "make_schedule"]
