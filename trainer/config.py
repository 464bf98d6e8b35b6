"""The training configuration: one dataclass, its per-data-set defaults, and the checks that run before any work.

Strings live only at the edge: `TrainConfig` accepts "cosine" or `LRScheduler.COSINE` alike, and
`resolve_config` turns every string option into its enum (an unknown value raises a ValueError naming the flag,
the value and the choices). Every number that flows into the math is checked here: finite, in range, the right
type; a message names the command-line flag, the value and what was expected.
"""

import copy
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class LRScheduler(StrEnum):
    CONSTANT = "constant"
    COSINE = "cosine"


class MixedPrecision(StrEnum):
    AUTO = "auto"  # bf16 autocast on CUDA, none on CPU
    NO = "no"
    BF16 = "bf16"


class Precond(StrEnum):
    NONE = "none"
    EDM = "edm"  # Karras et al. (2022), Table 1: the network then predicts x0


class ReportTo(StrEnum):
    NONE = "none"
    TENSORBOARD = "tensorboard"
    WANDB = "wandb"


@dataclass
class TrainConfig:
    data: str = "moons"
    output_dir: str = "runs/out"
    max_train_steps: int | None = None
    train_batch_size: int | None = None
    learning_rate: float | None = None
    lr_scheduler: LRScheduler | str = LRScheduler.COSINE
    lr_warmup_steps: int | None = None
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0  # 0 disables clipping
    gradient_accumulation_steps: int = 1
    mixed_precision: MixedPrecision | str = MixedPrecision.AUTO
    use_ema: bool = True
    ema_max_decay: float | None = None
    arch: str | None = None  # mlp | unet | dit | diffusers-unet2d | diffusers-dit (default per data set)
    model_kwargs: dict = field(default_factory=dict)  # overrides of the per-data-set defaults
    precond: Precond | str | None = None  # default: edm with the edm schedule and no --prediction-type, else none
    schedule: str | None = None
    schedule_kwargs: dict = field(default_factory=dict)
    prediction_type: str | None = None  # default v: well conditioned at both ends (docs/training.md)
    weighting: str | None = None
    snr_gamma: float | None = None
    timestep_sampling: str | None = None  # default: uniform_discrete (discrete), edm_lognormal (edm), uniform
    noise_offset: float = 0.0
    learned_variance: bool = False  # iDDPM: 2C outputs, hybrid loss; discrete VP schedules only
    lambda_vlb: float = 0.001  # weight of L_vlb in the hybrid loss (Nichol & Dhariwal 2021)
    class_conditional: bool | None = None  # default: when the data has labels
    cond_drop_prob: float = 0.1
    seed: int = 0
    checkpointing_steps: int | None = None
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None  # "latest" or a folder
    validation_steps: int | None = None
    validation_sampler: str | None = None  # default dpmpp_2m; ddpm with variance="learned_range" with learned_variance
    num_inference_steps: int = 20
    num_validation_samples: int | None = None
    validation_guidance_scale: float = 1.0  # diffusers convention: 1 = off
    logging_steps: int = 50
    torch_compile: bool = False
    device: str | None = None  # default: cuda when available
    progress: bool = True
    n_points: int = 20000
    save_diffusers: bool = False  # at the end, the EMA model as a diffusers folder OUTPUT_DIR/diffusers
    threads: int | None = None  # torch intra-op threads; None: the rule in `default_threads`
    report_to: ReportTo | str = ReportTo.NONE
    resolution: int | None = None  # image folders: resize the shorter side, then crop to resolution^2
    center_crop: bool = False  # image folders with --resolution: crop at the centre (else at a random place)
    random_flip: bool = False  # images: flip left-right with probability 1/2
    dataloader_num_workers: int | None = None  # image folders: decoding processes (None: min(4, CPUs - 1))


# Per-data-set defaults, measured on 2 CPU cores (docs/training.md).
POINT_DEFAULTS: dict[str, Any] = dict(
    arch="mlp",
    model_kwargs=dict(hidden=128, depth=3, freq_dim=32),
    train_batch_size=256,
    learning_rate=2e-3,
    max_train_steps=4000,
    lr_warmup_steps=100,
    ema_max_decay=0.995,
    schedule="edm",  # with EDM's preconditioning, lognormal sigma and weighting: the best measured (docs/quality.md)
    validation_steps=1000,
    num_validation_samples=2000,
)
IMAGE_DEFAULTS: dict[int | str, dict[str, Any]] = {
    8: dict(
        arch="unet",
        model_kwargs=dict(
            model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), num_heads=4, groups=8
        ),
        train_batch_size=128,
        learning_rate=2e-3,
        max_train_steps=1500,
        lr_warmup_steps=100,
        ema_max_decay=0.999,
        schedule="linear",
        validation_steps=500,
        num_validation_samples=100,
    ),
    "default": dict(
        arch="unet",
        model_kwargs=dict(
            model_channels=32,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            attention_resolutions=(7,),
            num_heads=4,
            groups=8,
        ),
        train_batch_size=64,
        learning_rate=1e-3,
        max_train_steps=5000,
        lr_warmup_steps=200,
        ema_max_decay=0.999,
        schedule="linear",
        validation_steps=1000,
        num_validation_samples=64,
    ),
}
DEFAULTED = (
    "arch",
    "train_batch_size",
    "learning_rate",
    "max_train_steps",
    "lr_warmup_steps",
    "ema_max_decay",
    "schedule",
    "validation_steps",
    "num_validation_samples",
)


def defaults_for(kind: str, shape: tuple) -> dict:
    """The per-data-set defaults for data of this kind ("points" or "image") and sample shape."""
    if kind == "points":
        return copy.deepcopy(POINT_DEFAULTS)
    size = shape[-1]
    d = copy.deepcopy(IMAGE_DEFAULTS.get(size, IMAGE_DEFAULTS["default"]))
    if size not in IMAGE_DEFAULTS:
        levels = 3 if size % 4 == 0 else (2 if size % 2 == 0 else 1)
        d["model_kwargs"]["channel_mult"] = (1, 2, 2)[:levels]
        d["model_kwargs"]["attention_resolutions"] = (size // 2 ** (levels - 1),)
    return d


# ----------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------


def flag(name: str) -> str:
    """The command-line spelling of a config field."""
    return "--" + name.replace("_", "-")


def as_enum(enum_type: type[StrEnum], name: str, value) -> StrEnum:
    """value as a member of enum_type, or a ValueError naming the flag, the value and the choices."""
    try:
        return enum_type(value)
    except ValueError:
        hint = " (fp16 needs loss scaling; use bf16)" if value == "fp16" and enum_type is MixedPrecision else ""
        raise ValueError(f"{flag(name)}={value!r}: expected one of {[m.value for m in enum_type]}{hint}") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_int(cfg, name: str, minimum: int, *, optional: bool = False, maximum: int | None = None) -> None:
    v = getattr(cfg, name)
    if v is None and optional:
        return
    if not _is_int(v) or v < minimum or (maximum is not None and v > maximum):
        bound = f"in {minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{flag(name)}={v!r}: expected an integer {bound}")


def check_number(
    cfg,
    name: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    v = getattr(cfg, name)
    if v is None and optional:
        return
    ok = _is_number(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        where = (
            f"a finite number >= {low:g}"
            if high == math.inf and not low_open
            else (f"a finite number > {low:g}" if high == math.inf else f"a number in {lo}, {hi}")
        )
        raise ValueError(f"{flag(name)}={v!r}: expected {where}")


def check_bool(cfg, name: str, *, optional: bool = False) -> None:
    v = getattr(cfg, name)
    if not (isinstance(v, bool) or (optional and v is None)):
        raise ValueError(f"{flag(name)}={v!r}: expected True or False")


def _check_json_numbers(name: str, value, path: str = "") -> None:
    """Every number inside a JSON option is finite (a NaN width or scale is never meant)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_json_numbers(name, v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json_numbers(name, v, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag(name)}: {path}={value!r}: expected a finite number")


def check_config(cfg: TrainConfig) -> None:
    """Raise a ValueError naming the first option whose value cannot be right (after defaults are filled in)."""
    for name in (
        "max_train_steps",
        "train_batch_size",
        "gradient_accumulation_steps",
        "num_inference_steps",
        "logging_steps",
        "num_validation_samples",
        "n_points",
    ):
        check_int(cfg, name, 1)
    for name in ("checkpointing_steps", "checkpoints_total_limit", "validation_steps"):
        check_int(cfg, name, 1, optional=True)
    check_int(cfg, "lr_warmup_steps", 0)
    check_int(cfg, "threads", 1, optional=True, maximum=1024)
    check_int(cfg, "resolution", 1, optional=True, maximum=16384)
    check_int(cfg, "dataloader_num_workers", 0, optional=True, maximum=256)
    check_int(cfg, "seed", 0, maximum=2**31 - 1)
    check_number(cfg, "learning_rate", low=0.0, low_open=True)
    check_number(cfg, "adam_epsilon", low=0.0, low_open=True)
    check_number(cfg, "adam_beta1", low=0.0, high=1.0, high_open=True)
    check_number(cfg, "adam_beta2", low=0.0, high=1.0, high_open=True)
    check_number(cfg, "adam_weight_decay", low=0.0)
    check_number(cfg, "max_grad_norm", low=0.0)
    check_number(cfg, "ema_max_decay", low=0.0, high=1.0, high_open=True)
    check_number(cfg, "cond_drop_prob", low=0.0, high=1.0, high_open=True)
    check_number(cfg, "noise_offset", low=0.0)
    check_number(cfg, "lambda_vlb", low=0.0)
    check_number(cfg, "snr_gamma", low=0.0, low_open=True, optional=True)
    check_number(cfg, "validation_guidance_scale", low=-math.inf)
    for name in (
        "use_ema",
        "learned_variance",
        "torch_compile",
        "progress",
        "center_crop",
        "random_flip",
        "save_diffusers",
    ):
        check_bool(cfg, name)
    check_bool(cfg, "class_conditional", optional=True)
    for name in ("model_kwargs", "schedule_kwargs"):
        value = getattr(cfg, name)
        if not isinstance(value, dict):
            raise ValueError(f"{flag(name)}={value!r}: expected a JSON object")
        _check_json_numbers(name, value)
    if cfg.learned_variance:
        if cfg.precond != Precond.NONE:
            raise ValueError(f"--learned-variance does not combine with --precond {str(cfg.precond)!r}")
        if cfg.weighting is not None or cfg.snr_gamma is not None:
            raise ValueError(
                "--learned-variance trains with iDDPM's hybrid loss (unweighted eps-MSE + lambda_vlb "
                "L_vlb); drop --weighting / --snr-gamma"
            )


def check_before_data(cfg: TrainConfig) -> None:
    """The checks of options that are used to load the data (run before it is loaded)."""
    check_int(cfg, "seed", 0, maximum=2**31 - 1)
    check_int(cfg, "n_points", 1)
    check_int(cfg, "resolution", 1, optional=True, maximum=16384)
    check_bool(cfg, "center_crop")


def resolve_config(cfg: TrainConfig, *, kind: str, shape: tuple, has_labels: bool, name: str = "data") -> TrainConfig:
    """A checked copy of cfg with the per-data-set defaults filled in and every string option an enum."""
    cfg = copy.deepcopy(cfg)
    d = defaults_for(kind, shape)
    if cfg.schedule is None and (
        cfg.learned_variance or cfg.prediction_type is not None or cfg.precond == "none" or "T" in cfg.schedule_kwargs
    ):
        cfg.schedule = "linear"  # the options that leave the EDM recipe fall back to DDPM's schedule
    for key in DEFAULTED:
        if getattr(cfg, key) is None:
            setattr(cfg, key, d[key])
    if cfg.arch == d["arch"] and isinstance(cfg.model_kwargs, dict):
        cfg.model_kwargs = {**d["model_kwargs"], **cfg.model_kwargs}
    if cfg.class_conditional is None:
        cfg.class_conditional = has_labels
    if cfg.validation_sampler is None:
        cfg.validation_sampler = "ddpm" if cfg.learned_variance else "dpmpp_2m"
    if cfg.class_conditional is True and not has_labels:
        raise ValueError(f"--class-conditional: data {name!r} has no labels")
    cfg.lr_scheduler = as_enum(LRScheduler, "lr_scheduler", cfg.lr_scheduler)
    cfg.mixed_precision = as_enum(MixedPrecision, "mixed_precision", cfg.mixed_precision)
    if cfg.precond is None:  # the EDM recipe comes whole (Karras et al. 2022, Table 1): preconditioning, weighting
        cfg.precond = "edm" if cfg.schedule == "edm" and cfg.prediction_type is None else "none"
        if cfg.precond == "edm" and cfg.weighting is None and cfg.snr_gamma is None:
            cfg.weighting = "edm"
    cfg.precond = as_enum(Precond, "precond", cfg.precond)
    cfg.report_to = as_enum(ReportTo, "report_to", cfg.report_to)
    if cfg.random_flip is True and kind != "image":
        raise ValueError(f"--random-flip flips images; data {name!r} is {kind}")
    check_config(cfg)
    return cfg


# Below this many floating-point operations in one forward pass of a batch, one intra-op thread (measured with
# bench/train_speed.py --threads-sweep; docs/training.md "Threads"): on a busy 2-core machine two threads made a
# step of the moons MLP (0.1 GFLOP) 22x and of the digits UNet (4 GFLOP) 8x slower than one; on an idle machine
# the MLP ran about as fast with either. Larger networks keep torch's default.
SMALL_STEP_FLOPS = 1e10


def default_threads(forward_flops: float, device_type: str, available: int) -> int:
    """torch intra-op threads when --threads is not given: 1 on CUDA (the host only feeds the device) or for a small
    step (a forward pass of one batch below SMALL_STEP_FLOPS), else `available` (torch's default at start-up: one
    per physical core, or OMP_NUM_THREADS)."""
    if device_type == "cuda" or forward_flops < SMALL_STEP_FLOPS:
        return 1
    return max(1, available)
