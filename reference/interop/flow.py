"""Flow matching: FlowMatchEulerDiscreteScheduler, with what FLUX, SD3, LTX-Video, HunyuanVideo and Mochi pass."""

import enum
import math

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.interop._config import SigmaSpacing, _respace, sigma_spacing
from diffspec.reference.interop._plan import DiffusersPlan
from diffspec.reference.schedules import Flow


class TimeShift(enum.StrEnum):
    """`time_shift_type` of the resolution-dependent shift (`use_dynamic_shifting`)."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"


def _time_shift(kind, mu, sigmas):
    """The resolution-dependent shift of SD3 / FLUX (Esser et al. 2024, Sec. 5.3.2), with mu = log of the shift:
    exponential: e^mu / (e^mu + 1/s - 1); linear: mu / (mu + 1/s - 1)."""
    m = math.exp(mu) if kind == TimeShift.EXPONENTIAL else mu
    return m / (m + (1 / sigmas - 1))


def flow_match_sigmas(cfg, n=None, *, timesteps=None, sigmas=None, mu=None):
    """(model timesteps, sigmas with the terminal one appended) of FlowMatchEulerDiscreteScheduler.set_timesteps.

    Default: N times linspace(t(sigma_max), t(sigma_min)) / T, then shifted (static shift, or the time shift with
    `mu` when use_dynamic_shifting), then stretched to end at `shift_terminal` (LTX-Video: 1 - (1 - s) (1 - s_T) /
    (1 - s_last)), then re-spaced as Karras (rho 7), exponential or beta between the first and last; the model sees
    T sigma unless `timesteps` are given. `sigmas` replace the linspace (and are shifted like it); `invert_sigmas`
    (Mochi) steps on 1 - sigma towards 1. Departure (diffusers #13243, still in 0.42.1): with the static shift,
    __init__ shifts the training sigmas once and set_timesteps shifts the grid built between them again, so the grid
    is shift(linspace(1, shift(1/T), N)) rather than the paper's shift(linspace(1, 1/T, N)) (`grids.shifted`).
    """
    T = _checks.integer("num_train_timesteps", cfg["num_train_timesteps"], minimum=2)
    shift = _checks.positive("shift", cfg["shift"])
    dynamic = bool(cfg["use_dynamic_shifting"])
    if dynamic and mu is None:
        raise ValueError("mu=None: use_dynamic_shifting is on, so the pipeline's mu (log of the time shift) is needed")
    if not dynamic and mu is not None:
        raise ValueError(f"mu={mu!r}: diffusers ignores mu without use_dynamic_shifting; leave it None")
    if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
        raise ValueError(f"sigmas ({len(sigmas)}) and timesteps ({len(timesteps)}): expected the same length")
    given = sigmas if sigmas is not None else timesteps
    if n is None:
        if given is None:
            raise ValueError("num_inference_steps=None: pass it, or custom sigmas or timesteps")
        n = len(given)
    n = _checks.integer("num_inference_steps", n, minimum=1)
    if given is not None and len(given) != n:
        raise ValueError(f"num_inference_steps={n}: the custom sigmas / timesteps have {len(given)} values")

    def static(s):
        return shift * s / (1 + (shift - 1) * s)

    train = np.linspace(1, T, T, dtype=np.float32)[::-1] / np.float32(T)
    train = train if dynamic else static(train.astype(np.float32)).astype(np.float32)
    s_max, s_min = float(train[0]), float(train[-1])
    ts_given = None if timesteps is None else np.asarray(timesteps, dtype=np.float32)
    if sigmas is None:
        base = ts_given if ts_given is not None else np.linspace(s_max * T, s_min * T, n)
        sig = base / T
    else:
        sig = np.asarray(sigmas, dtype=np.float32)
    if dynamic:
        sig = _time_shift(TimeShift(cfg["time_shift_type"]), float(mu), sig)
    else:
        sig = static(sig)
    if cfg["shift_terminal"]:
        one_minus = 1 - sig
        sig = 1 - one_minus / (one_minus[-1] / (1 - float(cfg["shift_terminal"])))
    spacing = sigma_spacing(cfg)
    if spacing != SigmaSpacing.LINEAR:  # Karras, exponential or beta sigmas between the shifted ends
        sig = _respace(spacing, float(sig[0]), float(sig[-1]), n)
    sig = np.asarray(sig, dtype=np.float32).astype(np.float64)
    ts = ts_given.astype(np.float64) if ts_given is not None else sig * T
    if cfg["invert_sigmas"]:
        sig = 1 - sig
        ts = sig * T
        return ts.astype(np.float32), np.append(sig, 1.0)
    return ts.astype(np.float32), np.append(sig, 0.0)


def _plan_flow_match_euler(cfg, n, opts, *, timesteps=None, sigmas=None, mu=None):
    """Euler on the rectified-flow ODE dx/dt = u (Liu et al. 2022; Esser et al. 2024) as diffusers'
    FlowMatchEulerDiscreteScheduler: model timestep = T sigma, x_next = x + (sigma_next - sigma) u, on the sigmas of
    `flow_match_sigmas`. stochastic_sampling: x_next = (1 - s') x0 + s' z with x0 = x - sigma u, one draw per step,
    the last included."""
    ts, sig = flow_match_sigmas(cfg, n, timesteps=timesteps, sigmas=sigmas, mu=mu)
    schedule = Flow(shift=float(cfg["shift"]))
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

    plan = DiffusersPlan(
        "FlowMatchEulerDiscreteScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig, stochastic=stochastic
    )
    plan.prediction_type = "flow_prediction"
    return plan


def _plan_flow_match_heun(cfg, n, opts):
    """Heun's method (Karras et al. 2022, Alg. 1) on the rectified-flow ODE as diffusers' FlowMatchHeunDiscrete:
    the FlowMatchEuler sigmas (static shift, applied twice as there), each step an Euler predictor to sigma_next and
    a trapezoidal corrector with the velocity there, x_next = x + (sigma_next - sigma) (u + u') / 2; the last step,
    onto sigma = 0, is Euler. Model calls: 2 N - 1, at timesteps T sigma (each inner one twice)."""
    full = {
        "use_dynamic_shifting": False,
        "shift_terminal": None,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "invert_sigmas": False,
        "time_shift_type": "exponential",
        **cfg,
    }
    ts1, sig = flow_match_sigmas(full, n)
    ts = np.concatenate([ts1[:1], np.repeat(ts1[1:], 2)])
    schedule = Flow(shift=float(cfg["shift"]))

    def run(model, x, draw):
        for i in range(len(ts1)):
            u = model(x, ts1[i])
            x_euler = x + (sig[i + 1] - sig[i]) * u
            if sig[i + 1] == 0:
                return x_euler
            u_next = model(x_euler, ts1[i + 1])
            x = x + (sig[i + 1] - sig[i]) * (u + u_next) / 2
        return x

    plan = DiffusersPlan("FlowMatchHeunDiscreteScheduler", cfg, schedule, ts, 1.0, run, sigmas=sig, stochastic=False)
    plan.prediction_type = "flow_prediction"
    return plan


def _plan_minimax_h3(cfg, n, opts, *, sigmas=None):
    """MiniMax-H3's rectified-flow sampler as diffusers' MiniMaxH3Scheduler: sigmas = shift(linspace(1, 0, N)) with
    the SD3 shift s' = shift s / (1 + (shift - 1) s) (repeated values collapsed; 0 is the last), N - 1 model calls
    at timestep t = 1 - sigma (time runs from noise at 0 to data at 1), the model returning u = x0 - eps, so
    x0 = x + (1 - t) u; then the first-order step x_next = (sigma_next / sigma) x + (1 - sigma_next / sigma) x0
    (DDIM on the flow, Song et al. 2021). Custom `sigmas` (strictly decreasing, ending at 0) are used as given."""
    if sigmas is not None:  # used as given (no shift): strictly decreasing, ending at 0
        sig = np.asarray(_checks.finite_array("sigmas", sigmas), dtype=np.float32).ravel()
        if len(sig) < 2 or np.any(np.diff(sig) >= 0) or sig[-1] != 0.0:
            raise ValueError(f"sigmas={list(sigmas)!r}: expected at least two strictly decreasing values ending at 0")
        sig = sig.astype(np.float64)
    else:
        n = _checks.integer("num_inference_steps", n, minimum=2)
        shift = _checks.positive("shift", cfg["shift"])
        base = np.linspace(1.0, 0.0, n, dtype=np.float32)
        sig = (np.float32(shift) * base / (1 + (np.float32(shift) - 1) * base)).astype(np.float32)
        sig = sig[np.append(True, sig[1:] != sig[:-1])].astype(np.float64)
    ts = (1.0 - sig[:-1].astype(np.float32)).astype(np.float32)

    def run(model, x, draw):
        for i, t in enumerate(ts):
            x0 = x + (1 - float(t)) * model(x, t)
            ratio = sig[i + 1] / sig[i]
            x = ratio * x + (1 - ratio) * x0
        return x

    plan = DiffusersPlan("MiniMaxH3Scheduler", cfg, Flow(shift=1.0), ts, 1.0, run, sigmas=sig, stochastic=False)
    plan.prediction_type = "flow_prediction"
    return plan


class Resize(enum.StrEnum):
    """FlowMatchLCM's `upscale_mode`: the modes of torch.nn.functional.interpolate (align_corners=False)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    LINEAR = "linear"
    BILINEAR = "bilinear"
    TRILINEAR = "trilinear"
    BICUBIC = "bicubic"
    AREA = "area"


# the number of spatial axes each interpolating mode takes (torch refuses the others); the rest take any
_RESIZE_AXES = {Resize.LINEAR: 1, Resize.BILINEAR: 2, Resize.BICUBIC: 2, Resize.TRILINEAR: 3}


def _cubic_weights(t, a=-0.75):
    """Keys' cubic convolution weights (Keys 1981, with a = -0.75 as torch) of the taps at distances 1 + t, t,
    1 - t, 2 - t from the source point."""
    d = np.stack([1 + t, t, 1 - t, 2 - t])
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, far)


def _resize_axis(x, axis, size, mode):
    """x resampled to `size` points along `axis` as torch's interpolate does along one axis (align_corners=False:
    source point scale (o + 1/2) - 1/2 with scale = n_in / n_out, indices clamped to the edges)."""
    n_in = x.shape[axis]
    scale = n_in / size
    o = np.arange(size, dtype=np.float64)
    take = lambda idx: np.take(x, np.clip(idx, 0, n_in - 1), axis=axis)  # noqa: E731
    shape = [1] * x.ndim
    shape[axis] = size
    match mode:
        case Resize.NEAREST:
            return take(np.floor(o * scale).astype(np.int64))
        case Resize.NEAREST_EXACT:
            return take(np.floor((o + 0.5) * scale).astype(np.int64))
        case Resize.AREA:  # adaptive average pooling: the mean over [floor(o n / m), ceil((o + 1) n / m))
            start, end = np.floor(o * scale).astype(np.int64), np.ceil((o + 1) * scale).astype(np.int64)
            csum = np.cumsum(np.concatenate([np.zeros_like(take(np.array([0]))), x], axis=axis), axis=axis)
            return (np.take(csum, end, axis=axis) - np.take(csum, start, axis=axis)) / (end - start).reshape(shape)
        case Resize.BICUBIC:
            real = scale * (o + 0.5) - 0.5
            i0 = np.floor(real).astype(np.int64)
            w = _cubic_weights(real - i0)
            return sum(w[k].reshape(shape) * take(i0 - 1 + k) for k in range(4))
    real = np.maximum(scale * (o + 0.5) - 0.5, 0.0)  # linear, bilinear, trilinear: separable linear taps
    i0 = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
    lam = (real - i0).reshape(shape)
    return (1 - lam) * take(i0) + lam * take(i0 + 1)


def _resize(x, size, mode):
    """torch.nn.functional.interpolate(x, size, mode) for x of shape (B, C, *spatial), one spatial axis at a time."""
    mode = Resize(mode)
    axes = _RESIZE_AXES.get(mode)
    if axes is not None and x.ndim - 2 != axes:
        raise ValueError(f"upscale_mode={mode.value!r} resizes {axes} spatial axes; the sample has {x.ndim - 2}")
    for axis, n in enumerate(size, start=2):
        x = _resize_axis(x, axis, int(n), mode)
    return x


def _plan_flow_match_lcm(cfg, n, opts, *, timesteps=None, sigmas=None, mu=None):
    """LCM on flow matching (Luo et al. 2023's multistep consistency sampling) as diffusers' FlowMatchLCMScheduler:
    FlowMatchEuler's sigmas and inputs, and each step x0 = x - sigma u, x_next = (1 - sigma') x0 + sigma' z, one
    draw per step, the last included (times sigma' = 0): FlowMatchEuler's stochastic_sampling step.

    scale_factors (one per step but the last): x0 is resized to round(f size_0) along each spatial axis before the
    re-noising (so the sample grows from step to step and the draws take the new shape), as torch's interpolate
    with `upscale_mode` does (`_resize`: nearest, nearest-exact, linear / bilinear / trilinear, bicubic with Keys'
    a = -0.75, area; align_corners=False)."""
    ts, sig = flow_match_sigmas(cfg, n, timesteps=timesteps, sigmas=sigmas, mu=mu)
    factors = list(cfg["scale_factors"] or [])
    if factors and len(factors) != len(ts) - 1:
        raise ValueError(f"config key 'scale_factors'={factors!r}: expected one per step but the last ({len(ts) - 1})")
    if factors and cfg["upscale_mode"] not in set(Resize):
        modes = [m.value for m in Resize]
        raise ValueError(f"config key 'upscale_mode'={cfg['upscale_mode']!r}: expected one of {modes}")
    mode = Resize(cfg["upscale_mode"]) if factors else None

    def run(model, x, draw):
        size0 = x.shape[2:]
        for i, t in enumerate(ts):
            x0 = x - sig[i] * model(x, t)
            if i < len(factors):
                x0 = _resize(x0, [round(factors[i] * s) for s in size0], mode)
            x = (1 - sig[i + 1]) * x0 + sig[i + 1] * draw(x0.shape)
        return x

    plan = DiffusersPlan(
        "FlowMatchLCMScheduler", cfg, Flow(shift=float(cfg["shift"])), ts, 1.0, run, sigmas=sig, stochastic=True
    )
    plan.prediction_type = "flow_prediction"
    return plan
