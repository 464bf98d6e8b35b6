"""`DiffusersPlan` (what `from_diffusers` returns) and the model-output conversions shared by every family."""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._config import PredictionType
from diffspec.reference.noise import as_noise_source

# The plan
# --------------------------------------------------------------------------------------------------------


class DiffusersPlan:
    """What `from_diffusers` returns: the schedule, the model timesteps and a runner that mirrors the pipeline.

    Attributes: `class_name`, `config` (completed with diffusers' defaults), `schedule` (a diffspec schedule),
    `prediction_type`, `timesteps` (one per model call, as diffusers gives them to the model), `sigmas` (where
    the class has them), `init_noise_sigma`, `stochastic`. `run(model, x_T, noise=None)` -> final sample.
    """

    def __init__(
        self,
        class_name,
        config,
        schedule,
        timesteps,
        init_noise_sigma,
        runner,
        *,
        sigmas=None,
        stochastic,
        learned_variance=False,
    ):
        self.class_name = class_name
        # learned variance: the model returns 2C channels along axis 1, the prediction then the variance output
        self.learned_variance = learned_variance
        self.config = config
        self.schedule = schedule
        self.prediction_type = config.get("prediction_type", "flow_prediction")
        self.timesteps = timesteps
        self.sigmas = sigmas
        self.init_noise_sigma = float(init_noise_sigma)
        self.stochastic = stochastic
        self.default_noise_seed = None  # a config's own seed (DPMSolverSDE's noise_sampler_seed) used when noise=None
        self._runner = runner

    def run(self, model, x_T, noise=None):
        x_T = _checks.finite_array("x_T", x_T)
        if noise is None and self.stochastic and self.default_noise_seed is not None:
            noise = np.random.default_rng(self.default_noise_seed)
        draw = as_noise_source(noise, sampler=self.class_name) if self.stochastic else _no_draws(self.class_name)

        def call(x, t):
            out = np.asarray(model(x, np.asarray(t)), dtype=np.float64)
            want = x.shape if not self.learned_variance else (x.shape[0], 2 * x.shape[1], *x.shape[2:])
            if out.shape != want:
                raise ValueError(
                    f"model output of shape {out.shape}: expected {want}"
                    + (" (the prediction and the variance output along axis 1)" if self.learned_variance else "")
                )
            return out

        return self._runner(call, x_T * self.init_noise_sigma, draw)

    def __repr__(self):
        return f"DiffusersPlan({self.class_name}, steps={len(self.timesteps)}, prediction_type={self.prediction_type})"


def _no_draws(name):
    def draw(shape):
        raise RuntimeError(f"{name} plan drew noise although it is deterministic")  # pragma: no cover

    return draw


def _threshold(x0, cfg):
    """diffusers' `_threshold_sample` (Imagen dynamic thresholding, Saharia et al. 2022, Sec. 2.3), or clip_sample.

    s = the per-sample quantile of |x0| at dynamic_thresholding_ratio, clamped to [1, sample_max_value], then
    x0 = clip(x0, -s, s) / s. Departure reproduced: with sample_max_value < 1 the clamp's bounds cross and both
    torch and numpy return the upper one, so s = sample_max_value for every sample: a fixed divisor, not
    Imagen's dynamic threshold (which would use s = max(quantile, 1))."""
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
    return _x0_eps_ab(pred, out, x, np.sqrt(abar), np.sqrt(1.0 - abar))


def _x0_eps_ab(pred, out, x, a, b):
    """(x0, eps) from the model output where x = a x0 + b eps, in diffusers' formulas (its v_prediction reads
    x0 = a x - b v, the v of Salimans & Ho 2022 when a^2 + b^2 = 1)."""
    match PredictionType(pred):
        case PredictionType.EPSILON:
            return (x - b * out) / a, out
        case PredictionType.SAMPLE:
            return out, (x - a * out) / b
        case PredictionType.V:
            return a * x - b * out, a * out + b * x
    raise ValueError(f"prediction_type={pred!r}: expected epsilon, sample or v_prediction here")


def _ve_x0(pred, out, x, s):
    """x0 from the model output in k-diffusion scaling (x = x_vp * sqrt(s^2 + 1), s = sigma_ve)."""
    match PredictionType(pred):
        case PredictionType.EPSILON:
            return x - s * out
        case PredictionType.V:
            return out * (-s / np.sqrt(s**2 + 1)) + x / (s**2 + 1)
        case PredictionType.SAMPLE:
            return out
    raise ValueError(f"prediction_type={pred!r}: expected epsilon, sample or v_prediction here")
