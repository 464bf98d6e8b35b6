"""Sampling from a loaded `Model` with the reference samplers: noise keyed by sample, guidance, batching.

The sampler state stays float64 (the reference samplers); only the network runs in float32 (or fp16). Sample i
draws all of its noise (x_T first, then whatever its sampler draws, in the sampler's documented order) from its
own generator `np.random.default_rng([seed, i])`, so a run is reproducible for a given seed, and sample i comes
out the same whether it is generated alone, in a batch of 8 or in a batch of 64 (up to the network's float32
rounding, which may depend on the batch size).
"""

import inspect
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from diffspec.reference import _checks, guidance
from diffspec.reference import grids as ref_grids
from diffspec.reference.distillation import student_sampling
from diffspec.reference.samplers import SAMPLER_INFO, SAMPLERS, get_sampler

if TYPE_CHECKING:
    from diffspec.runtime.model import Model

DEFAULT_STEPS = 20


# ---------------------------------------------------------------------------------------------------- noise
def check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed!r}: expected an integer in [0, 2**63)")
    return int(seed)


class SampleNoise:
    """Noise keyed by sample index: a draw of shape (B, ...) stacks one draw per sample, sample i from
    `np.random.default_rng([seed, i])`. Use it as the `noise` of any reference sampler (the noise contract)."""

    def __init__(self, seed, indices):
        seed = check_seed(seed)
        self.indices = [int(i) for i in indices]
        self.generators = [np.random.default_rng([seed, i]) for i in self.indices]

    def __call__(self, shape):
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != len(self.generators):
            raise ValueError(
                f"noise of shape {shape} asked for a batch of {len(self.generators)} samples: per-sample noise "
                "needs the batch as the first axis"
            )
        return np.stack([g.standard_normal(shape[1:]) for g in self.generators])


# ---------------------------------------------------------------------------------------------------- grids
def default_grid(schedule):
    """The grid used when none is named: SD3's shifted grid for flow, uniform in t for vp_cosine (lam = -inf at its
    t = 1), else exponential (uniform in lam, half the log-SNR, then a step onto the clean end), the best measured
    with dpmpp_2m at 20 steps (bench/quality.py, docs/quality.md)."""
    name = schedule.to_dict()["name"]
    return {"flow": "shifted", "vp_cosine": "uniform"}.get(name, "exponential")


def keyword_options(fn, skip=("noise",)):
    """{name: default} of a function's keyword-only parameters (a sampler's or a grid's options)."""
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in skip
    }


def sampling_recipe(card, sampler=None, steps=None, grid=None, grid_options=None):
    """(sampler, steps, grid, grid_options) with those not named filled in: a few-step student's card names the
    sampler, steps and grid it was trained for (`reference.distillation.student_sampling`); any other model gets
    dpmpp_2m at DEFAULT_STEPS on `default_grid`. The card's grid options apply to the card's grid only, updated by
    the named ones."""
    schedule = card.reference_schedule()
    try:
        recipe = student_sampling((card.train_config or {}).get("student"), schedule)
    except ValueError as err:
        raise ValueError(f"the model's metadata: {err}") from None
    if recipe is None:
        recipe = ("dpmpp_2m", DEFAULT_STEPS, default_grid(schedule), {})
    options = dict(grid_options or {})
    if grid is None:
        grid, options = recipe[2], {**recipe[3], **options}
    return (recipe[0] if sampler is None else sampler, recipe[1] if steps is None else steps, grid, options)


def describe_recipe(sampler, steps, grid, grid_options) -> str:
    """'consistency, 2 steps, grid karras, t_end=0.002': how a run or a pipeline graph samples, for messages."""
    options = "".join(f", {k}={v}" for k, v in (grid_options or {}).items())
    return f"{sampler}, {steps} steps, grid {grid}{options}"


def make_sampling_grid(schedule, steps, *, grid=None, grid_options=None):
    """The time grid (noise -> data) `GRIDS[grid](schedule, steps, **grid_options)`, options checked by name."""
    name = default_grid(schedule) if grid is None else grid
    fn = ref_grids.GRIDS.get(name)
    if fn is None:
        raise ValueError(f"unknown grid {name!r}: expected one of {', '.join(sorted(ref_grids.GRIDS))}")
    options = dict(grid_options or {})
    allowed = keyword_options(fn)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(allowed) or "none"
        raise ValueError(f"grid {name!r} has no option {unknown[0]!r} (its options: {known})")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps={steps!r}: expected an integer >= 1")
    return fn(schedule, int(steps), **options)


# -------------------------------------------------------------------------------------------------- samplers
def check_sampler(name, steps, options):
    """The sampler function for `name`, after checking its options and its minimal grid length."""
    fn = get_sampler(name)
    allowed = keyword_options(fn)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none"
        raise ValueError(f"sampler {name!r} has no option {unknown[0]!r} (its options: {known})")
    info = SAMPLER_INFO.get(name)
    if info is not None and steps + 1 < info.min_grid:
        raise ValueError(f"sampler {name!r} needs at least {info.min_grid - 1} steps, got steps={steps}")
    return fn


# -------------------------------------------------------------------------------------------------- guidance
class _PairedNetwork:
    """The conditional and unconditional denoisers of one batch, evaluated together in ONE network call of 2B rows
    (labels y, then the null class) and cached for the last (x, t), so `reference.guidance.cfg_diffusers` and
    `guidance_rescale`, which call them one after the other with the same x, cost one network call per step."""

    def __init__(self, model, y, variance_sink=None):
        self.model, self.y, self.variance_sink = model, np.asarray(y), variance_sink
        self._key, self._x0, self._v = None, None, None

    def _both(self, x, t):
        if self._key is None or self._key[0] is not x or self._key[1] != t:
            batch = x.shape[0]
            xx = np.concatenate([x, x])
            labels = np.concatenate([self.y, np.full(batch, self.model.null_class)])
            if self.variance_sink is None:
                out, v = self.model.network(xx, t, labels), None
            else:
                out, v = self.model.network(xx, t, labels, return_variance=True)
            x0 = self.model.x0_from_output(out, xx, t)
            # learned variance: the conditional branch's half, as iDDPM/diffusers pipelines do
            self._key, self._x0, self._v = (x, t), (x0[:batch], x0[batch:]), None if v is None else v[:batch]
        if self.variance_sink is not None:
            self.variance_sink(self._v)
        return self._x0

    def cond(self, x, t):
        return self._both(x, t)[0]

    def uncond(self, x, t):
        return self._both(x, t)[1]


def make_denoiser(model, y=None, *, guidance_scale=1.0, guidance_rescale=0.0, variance_sink=None):
    """denoise(x, t) -> x0_hat (float64) for one batch, with labels y and classifier-free guidance closed over.

    Guidance is `diffspec.reference.guidance.cfg_diffusers` (x0 = u + scale (c - u), off at scale = 1; Ho &
    Salimans 2022 with w = scale - 1), the unconditional branch using the null class, both branches in one
    network call of 2B rows; `guidance_rescale` (Lin et al. 2023) works in the model's own output space, as
    diffusers' `rescale_noise_cfg` does. A graph with fused guidance gets the scale through its
    `guidance_scale` input instead.
    `variance_sink`: a callable given, at every network call, the variance half of that same call (learned
    variance models; with guidance, the conditional branch's), see `LearnedVariance`.
    """
    # the same checks as reference.guidance.cfg_diffusers and guidance_rescale, for plain and fused-CFG graphs alike
    scale = _checks.in_range("guidance_scale", guidance_scale, 0.0, np.inf)
    phi = _checks.in_range("guidance_rescale", guidance_rescale, 0.0, 1.0)
    guided = scale != 1.0 or phi != 0.0
    if guided and not model.conditional:
        raise ValueError(
            f"guidance_scale={guidance_scale}, guidance_rescale={guidance_rescale}: classifier-free guidance needs "
            "a class-conditional model (with a null class); this one is unconditional"
        )
    if guided and model.cfg_fused and phi:
        raise ValueError("guidance_rescale is not available for a graph with fused guidance")
    if variance_sink is not None and (not guided or model.cfg_fused):
        kw = dict(guidance_scale=scale) if guided else {}

        def with_variance(x, t):
            x = np.asarray(x, dtype=np.float64)
            out, v = model.network(x, t, y, return_variance=True, **kw)
            variance_sink(v)
            return model.x0_from_output(out, x, t)

        return with_variance
    if not guided:
        return lambda x, t: model.denoise(x, t, y)
    if model.cfg_fused:
        return lambda x, t: model.x0_from_output(model.network(x, t, y, guidance_scale=scale), np.asarray(x), t)
    pair = _PairedNetwork(model, y, variance_sink)
    denoise = guidance.cfg_diffusers(pair.cond, pair.uncond, scale)
    if phi:
        space = "eps" if model.parameterization.value == "score" else model.parameterization.value
        denoise = guidance.guidance_rescale(denoise, pair.cond, model.schedule, phi=phi, space=space)
    return denoise


# ------------------------------------------------------------------------------------------ learned variance
class LearnedVariance:
    """The ddpm sampler's `variance_v` for a learned-variance model, from the SAME network call as the denoiser.

    `wrap(denoise)` is the sampler's denoiser; the network-level denoiser (from `make_denoiser(...,
    variance_sink=lv.capture)`) hands the variance half of each call to `capture`, and the outer wrapper keys it
    by the (x, t) the sampler asked for. `variance_v(x, t)` returns it for that (x, t) and never calls the network:
    the ddpm sampler asks for v right after denoise(x, t) with the same x (Nichol & Dhariwal 2021, eq. 15).
    """

    def __init__(self):
        self._last, self._key, self._v = None, None, None

    def capture(self, v):
        self._last = v

    def wrap(self, denoise):
        def wrapped(x, t):
            self._last = None
            x0 = denoise(x, t)
            self._key, self._v = (x, t), self._last
            return x0

        return wrapped

    def variance_v(self, x, t):
        key = self._key
        if (
            key is None
            or self._v is None
            or key[1] != t
            or not (key[0] is x or (np.shape(key[0]) == np.shape(x) and np.array_equal(key[0], x)))
        ):
            raise RuntimeError(
                f"variance_v({t}) was asked for an (x, t) the network was not just called at: the learned variance "
                "comes from the denoiser's own network call (one call per step)"
            )
        return np.asarray(self._v, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------- labels
def labels_for(model, indices, class_label=None):
    """Class labels per sample index: None cycles through the classes (sample i gets i mod num_classes), an int
    gives every sample that class, a sequence is cycled the same way; "null" gives the null class (unconditional)."""
    indices = np.asarray(indices, dtype=np.int64)
    if not model.conditional:
        if class_label is not None:
            raise ValueError(f"class_label={class_label!r}, but this model is unconditional (no num_classes)")
        return None
    if class_label is None:
        choices = np.arange(model.num_classes)
    elif isinstance(class_label, str) and class_label == "null":
        choices = np.array([model.null_class])
    else:
        choices = np.atleast_1d(np.asarray(class_label))
        if choices.ndim != 1 or choices.size == 0 or not np.issubdtype(choices.dtype, np.integer):
            raise ValueError(f"class_label={class_label!r}: expected an integer, a list of integers or 'null'")
    bad = choices[(choices < 0) | (choices >= model.num_classes)] if class_label != "null" else choices[:0]
    if bad.size:
        raise ValueError(
            f"class label {int(bad[0])} is out of range: this model has classes 0..{model.num_classes - 1} "
            f"(or 'null' for its null class {model.null_class})"
        )
    return choices[indices % len(choices)].astype(np.int64)


# ---------------------------------------------------------------------------------------------------- inputs
def _memory_bytes() -> int | None:
    """The machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_sample_size(n: int, data_shape: tuple, *, what: str = "n") -> int:
    """Refuse, before anything is allocated, a sample count whose float64 output cannot fit in this machine's memory
    (the output array and a working copy per batch are float64 of shape (n, *data_shape))."""
    needed = int(n) * math.prod(int(d) for d in data_shape) * 8
    memory = _memory_bytes()
    limit = memory if memory else 2**40
    if needed > limit:
        raise ValueError(
            f"{what}={n}: {n} samples of shape {tuple(data_shape)} need {needed / 2**30:.3g} GiB as float64, more "
            f"than this machine's {limit / 2**30:.3g} GiB of memory: ask for fewer samples (or split the run with "
            "--index, which keeps each sample's noise)"
        )
    return int(n)


def _per_sample(name, value, model, n):
    """An init/mask array in model data shape, broadcast to one row per sample (n, ...)."""
    arr = np.asarray(value, dtype=np.float64)
    shape = model.data_shape
    if arr.shape == (n,) + shape:
        return arr
    try:
        return np.broadcast_to(arr, shape)[None].repeat(n, axis=0)
    except ValueError:
        raise ValueError(f"{name} of shape {arr.shape}: expected the data shape {shape} or ({n}, *{shape})") from None


def _indices(n, indices, data_shape):
    if indices is None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n={n!r}: expected the number of samples, an integer >= 1")
        check_sample_size(n, data_shape)
        return np.arange(int(n))
    idx = np.atleast_1d(np.asarray(indices))
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or np.any(idx < 0):
        raise ValueError(f"indices={indices!r}: expected a non-empty list of sample indices >= 0")
    return idx.astype(np.int64)


# ---------------------------------------------------------------------------------------------------- sample
def sample(
    model: "Model",
    *,
    sampler: str | None = None,
    steps: int | None = None,
    n: int | None = None,
    seed: int = 0,
    indices: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 64,
    grid: str | None = None,
    grid_options: Mapping | None = None,
    class_label: int | str | Sequence[int] | None = None,
    guidance_scale: float = 1.0,
    guidance_rescale: float = 0.0,
    init: np.ndarray | None = None,
    mask: np.ndarray | float | None = None,
    strength: float | None = None,
    raw: bool = True,
    progress: bool = False,
    return_labels: bool = False,
    **options,
) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """Draw samples from an exported model; returns an array (n, *data_shape), float64.

    sampler, **options: a name in `diffspec.reference.samplers.SAMPLERS` and its keyword options (eta, order...).
      ddpm with variance="learned_range" needs a learned-variance model: its `variance_v` is the variance half of
      the denoiser's own network call (the conditional branch's with guidance), see `LearnedVariance`.
    steps, grid, grid_options: the time grid (`diffspec.reference.grids.GRIDS`, default: `default_grid`).
      Not named: a few-step student's card supplies sampler, steps and grid (`sampling_recipe`); otherwise
      dpmpp_2m at DEFAULT_STEPS steps.
    n or indices: how many samples (indices 0..n-1) or exactly which; sample i uses noise seeded by (seed, i).
    batch_size: samples per network batch (guidance doubles the network batch).
    class_label, guidance_scale, guidance_rescale: conditioning (see `labels_for`, `make_denoiser`).
    init: data in its original value range, shape data_shape or (n, *data_shape), for
      - inpainting with `mask` (the reference's convention: 1 = keep init, 0 = generate; it broadcasts to the
        data shape): `reference.guidance.inpaint`, the known region re-imposed at every call, noised to t;
      - SDEdit with `strength` in [0, 1]: `reference.guidance.sdedit`, the last floor(steps * strength) steps of
        the grid from init noised to that time (diffusers' img2img cut). Both may be combined.
    raw: return values in the data's original range (undoing the training scaling), clipped to it for images;
    False returns the model-space samples. return_labels: also return the labels (None if unconditional).

    Noise: sample i draws, from np.random.default_rng([seed, i]), first x_T's eps (or SDEdit's z), then the
    draws of inpainting and of the sampler in their documented order.
    """
    sampler, steps, grid, grid_options = sampling_recipe(model.card, sampler, steps, grid, grid_options)
    idx = _indices(n, indices, model.data_shape)
    n = len(idx)
    check_sample_size(n, model.data_shape, what="indices" if indices is not None else "n")
    seed = check_seed(seed)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps={steps!r}: expected an integer >= 1")
    fn = check_sampler(sampler, int(steps), options)
    if "variance_v" in options:
        raise ValueError(
            "variance_v is not an option of sample(): with variance='learned_range' the runtime takes v "
            "from the model's own variance output"
        )
    learned = options.get("variance") == "learned_range"
    if learned and not model.card.learned_variance:
        raise ValueError(
            "variance='learned_range' needs a model exported with learned variance (2C outputs, "
            "learned_variance in its metadata); this one has none: use variance='fixed_small' or "
            "'fixed_large'"
        )
    labels = labels_for(model, idx, class_label)
    denoise_kw = dict(guidance_scale=guidance_scale, guidance_rescale=guidance_rescale)
    make_denoiser(model, labels, **denoise_kw)  # validates guidance before any work
    if mask is not None and init is None:
        raise ValueError("mask (inpainting) needs init: the data whose masked (mask = 1) region is kept")
    if init is not None and mask is None and strength is None:
        raise ValueError("init needs mask (inpainting) or strength (SDEdit, e.g. 0.6)")
    if strength is not None and (
        isinstance(strength, bool) or not isinstance(strength, (int, float, np.number)) or not 0 <= strength <= 1
    ):
        raise ValueError(f"strength={strength!r}: expected a number in [0, 1] (SDEdit's fraction of the grid)")
    if strength is not None and init is None:
        raise ValueError(f"strength={strength} (SDEdit) needs init: the data to start from")
    known = None if init is None else model.from_raw(_per_sample("init", init, model, n))
    keep = None  # the mask per sample
    if mask is not None:
        keep = _per_sample("mask", mask, model, n)
        if np.any((keep < 0) | (keep > 1)):
            raise ValueError("mask values must lie in [0, 1] (1 = keep init, 0 = generate)")
    grid_ = make_sampling_grid(model.schedule, int(steps), grid=grid, grid_options=grid_options)
    schedule = model.schedule
    sigma0 = float(schedule.sigma(grid_[0]))

    info = SAMPLER_INFO.get(sampler)
    batches = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    calls = None if info is None else info.calls_per_step
    per_batch = None if calls is None else calls * (len(grid_) - 1)
    if strength is not None and calls is not None:
        per_batch = calls * int(np.floor((len(grid_) - 1) * strength))
    bar = _progress(progress, None if per_batch is None else per_batch * len(batches), sampler)
    out = np.empty((n,) + model.data_shape, dtype=np.float64)
    try:
        for b in batches:
            noise = SampleNoise(seed, idx[b])
            shape = (len(idx[b]),) + model.data_shape
            lv = LearnedVariance() if learned else None
            denoise = make_denoiser(
                model,
                None if labels is None else labels[b],
                **denoise_kw,
                variance_sink=None if lv is None else lv.capture,
            )
            if keep is not None:
                assert known is not None  # a mask needs init (checked above)
                denoise = guidance.inpaint(denoise, schedule, known=known[b], mask=keep[b], noise=noise)
            denoise = _counted(denoise, bar)
            run_options = dict(options)
            if lv is not None:
                denoise = lv.wrap(denoise)
                run_options["variance_v"] = lv.variance_v
            if strength is not None:
                assert known is not None  # strength needs init (checked above)
                x = guidance.sdedit(
                    fn, denoise, known[b], grid_, schedule, strength=strength, noise=noise, **run_options
                )
            else:
                x = fn(denoise, sigma0 * noise(shape), grid_, schedule, noise=noise, **run_options)
            out[b] = np.asarray(x, dtype=np.float64)
    finally:
        if bar is not None:
            bar.close()
    if not np.all(np.isfinite(out)):
        bad = int(np.sum(~np.all(np.isfinite(out.reshape(n, -1)), axis=1)))
        raise FloatingPointError(
            f"{bad} of {n} samples contain NaN or inf after {sampler} with {steps} steps on this model: try more "
            "steps, another sampler or grid, or check the model's metadata (schedule, parameterization)"
        )
    if raw:
        out = model.to_raw(out)
        if model.card.data.kind == "image":
            lo, hi = model.card.data.range
            out = np.clip(out, lo, hi)
    return (out, labels) if return_labels else out


def _counted(denoise, bar):
    if bar is None:
        return denoise

    def counted(x, t):
        result = denoise(x, t)
        bar.update(1)
        return result

    return counted


def _progress(enabled, total, sampler):
    """A tqdm bar on stderr, only when asked for and stderr is a terminal (no bar floods a log file)."""
    isatty = getattr(sys.stderr, "isatty", None)
    if not enabled or isatty is None or not isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional for the API
        return None
    return tqdm(total=total, desc=f"{sampler}", unit="eval", dynamic_ncols=True, leave=False)


def available_samplers():
    return sorted(SAMPLERS)


def num_batches(n, batch_size):
    return math.ceil(n / batch_size)
