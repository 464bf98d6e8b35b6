"""The self-description an exported model carries: what a sampler needs besides the network.

Stored as ONNX `metadata_props` (string keys, JSON values) by `diffspec.export` and read back by
`diffspec.runtime` through onnxruntime's `custom_metadata_map`. Plain data and JSON only: this module is the
one definition of the keys, shared by the writer and the reader.
"""

import json
import math
from dataclasses import asdict, dataclass, field, fields

from diffspec.reference.parameterizations import parse as parse_parameterization
from diffspec.reference.schedules import schedule_from_dict

FORMAT_VERSION = 1
PREFIX = "diffspec."
REQUIRED = ("format", "version", "schedule", "parameterization", "time_input", "data")
DATA_KINDS = ("image", "points")
PRECISIONS = ("fp32", "fp16")
MAX_DIMS = 4  # a sample is at most (C, D, H, W)
MAX_SAMPLE_ELEMENTS = 2**28  # one sample of more values than this (1 GiB of float32) is refused as corrupt
MAX_CLASSES = 10**7


def _fail(source, key, value, expected):
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    raise ValueError(f"{source}: metadata {PREFIX}{key}={text}: expected {expected}; re-export the model")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_data(data, source):
    if not isinstance(data, dict):
        _fail(source, "data", data, "a JSON object with shape, kind, range, scale, shift")
    shape = data.get("shape")
    if (
        not isinstance(shape, (list, tuple))
        or not 1 <= len(shape) <= MAX_DIMS
        or not all(_is_int(d) and d >= 1 for d in shape)
    ):
        _fail(source, "data.shape", shape, f"a list of 1 to {MAX_DIMS} positive integers")
    if math.prod(shape) > MAX_SAMPLE_ELEMENTS:
        _fail(source, "data.shape", shape, f"at most {MAX_SAMPLE_ELEMENTS} values per sample")
    kind = data.get("kind", "image")
    if kind not in DATA_KINDS:
        _fail(source, "data.kind", kind, f"one of {', '.join(DATA_KINDS)}")
    value_range = data.get("range", (-1.0, 1.0))
    if (
        not isinstance(value_range, (list, tuple))
        or len(value_range) != 2
        or not all(_is_real(v) for v in value_range)
        or not value_range[0] < value_range[1]
    ):
        _fail(source, "data.range", value_range, "[lo, hi] with finite lo < hi")
    scale = data.get("scale", 1.0)
    if not _is_real(scale) or scale <= 0:
        _fail(source, "data.scale", scale, "a finite number > 0 (x_model = x_raw * scale + shift)")
    shift = data.get("shift", 0.0)
    if not _is_real(shift):
        _fail(source, "data.shift", shift, "a finite number")
    if not isinstance(data.get("name", ""), str):
        _fail(source, "data.name", data.get("name"), "a string")
    unknown = sorted(set(data) - {f.name for f in fields(DataInfo)})
    if unknown:
        _fail(source, "data", unknown, f"only the keys {', '.join(f.name for f in fields(DataInfo))}")


def _check_fields(raw, source):
    """Every value that flows into the math: right type, finite, in range (the reader's side of the contract)."""
    if not isinstance(raw.get("schedule"), dict):
        _fail(source, "schedule", raw.get("schedule"), "a JSON object with the schedule's name and parameters")
    if not isinstance(raw.get("parameterization"), str):
        _fail(source, "parameterization", raw.get("parameterization"), "a name such as 'eps', 'x0' or 'v'")
    if not isinstance(raw.get("time_input"), str):
        _fail(source, "time_input", raw.get("time_input"), "'t'")
    _check_data(raw.get("data"), source)
    num_classes = raw.get("num_classes")
    if num_classes is not None and (not _is_int(num_classes) or not 1 <= num_classes <= MAX_CLASSES):
        _fail(source, "num_classes", num_classes, f"null or an integer in [1, {MAX_CLASSES}]")
    null_class = raw.get("null_class")
    if null_class is not None and (
        num_classes is None or not _is_int(null_class) or not 0 <= null_class <= num_classes
    ):
        _fail(source, "null_class", null_class, "null, or an integer in [0, num_classes] of a conditional model")
    for key in ("cfg_fused", "learned_variance"):
        if not isinstance(raw.get(key, False), bool):
            _fail(source, key, raw.get(key), "true or false")
    if raw.get("precision", "fp32") not in PRECISIONS:
        _fail(source, "precision", raw.get("precision"), f"one of {', '.join(PRECISIONS)}")
    if not isinstance(raw.get("version", ""), str):
        _fail(source, "version", raw.get("version"), "a version string")
    if not isinstance(raw.get("train_config", {}), dict):
        _fail(source, "train_config", raw.get("train_config"), "a JSON object")


@dataclass(frozen=True)
class DataInfo:
    """The data a model was trained on. x_model = x_raw * scale + shift; `range` is the raw value range."""

    shape: tuple  # one sample, e.g. (1, 8, 8) for images or (2,) for points
    kind: str = "image"  # "image" or "points"
    range: tuple = (-1.0, 1.0)
    scale: float = 1.0
    shift: float = 0.0
    name: str = ""

    def to_raw(self, x_model):
        return (x_model - self.shift) / self.scale


DIFFSPEC_VERSION = "0.4.0"  # the one place the version is written (pyproject.toml reads it)


@dataclass(frozen=True)
class ModelCard:
    schedule: dict
    parameterization: str
    data: DataInfo
    time_input: str = "t"  # the network's `t` input is the schedule's own time t (float32)
    num_classes: int | None = None
    null_class: int | None = None
    cfg_fused: bool = False
    learned_variance: bool = False
    precision: str = "fp32"
    version: str = DIFFSPEC_VERSION
    train_config: dict = field(default_factory=dict)

    def reference_schedule(self):
        """The equal reference schedule object, rebuilt from its serialised form."""
        return schedule_from_dict(self.schedule)

    def to_metadata(self):
        d = asdict(self)
        d["data"]["shape"] = list(d["data"]["shape"])
        d["data"]["range"] = list(d["data"]["range"])
        out = {PREFIX + "format": json.dumps(FORMAT_VERSION)}
        out.update({PREFIX + k: json.dumps(v) for k, v in d.items()})
        return out

    @classmethod
    def from_metadata(cls, props, *, source="the model"):
        """Parse a {key: JSON string} map; missing keys or bad values raise a ValueError that says how to fix it."""
        missing = [PREFIX + k for k in REQUIRED if PREFIX + k not in props]
        if missing:
            raise ValueError(
                f"{source} has no diffspec metadata (missing {', '.join(missing)}): export it with "
                "`diffspec-export CHECKPOINT_DIR -o model.onnx` or diffspec.export.export_model(...)"
            )
        raw = {}
        for key, value in props.items():
            if not key.startswith(PREFIX):
                continue
            try:  # JSON's NaN and Infinity are refused: nothing non-finite flows into the math
                raw[key[len(PREFIX) :]] = json.loads(value, parse_constant=_no_constant)
            except (json.JSONDecodeError, TypeError, ValueError, RecursionError) as err:
                raise ValueError(
                    f"{source}: metadata {key} is not valid JSON ({_first_line(err)}); re-export the model"
                ) from None
        if raw.pop("format") != FORMAT_VERSION:
            raise ValueError(f"{source}: diffspec metadata format is not {FORMAT_VERSION}; re-export the model")
        known = {f for f in cls.__dataclass_fields__}
        raw = {k: v for k, v in raw.items() if k in known}
        _check_fields(raw, source)
        data = dict(raw.pop("data"))
        data["shape"] = tuple(data["shape"])
        data["range"] = tuple(float(v) for v in data.get("range", (-1.0, 1.0)))
        card = cls(data=DataInfo(**data), **raw)
        try:
            card.reference_schedule()  # the schedule's own constructor validates its parameters
        except (ValueError, TypeError) as err:
            raise ValueError(f"{source}: metadata {PREFIX}schedule: {_first_line(err)}; re-export the model") from None
        try:
            parse_parameterization(card.parameterization)
        except ValueError as err:
            raise ValueError(f"{source}: metadata {PREFIX}parameterization: {err}") from None
        return card

    @classmethod
    def from_diffusers(
        cls,
        scheduler_config: dict,
        *,
        sample_size: int | tuple[int, int],
        in_channels: int,
        num_classes: int | None = None,
        null_class: int | None = None,
        learned_variance: bool = False,
        name: str = "",
        version: str | None = None,
        train_config: dict | None = None,
    ) -> "ModelCard":
        """The card of a diffusers network trained with `scheduler_config` (a scheduler_config.json dict).

        Through `diffspec.reference.interop`: the schedule (betas, rescale to zero terminal SNR, flow shift), the
        parameterization (`prediction_type`) and the time convention; any config the interop refuses raises its
        ValueError unchanged. Data: images (in_channels, sample_size, sample_size) in [-1, 1], as diffusers assumes.
        Classes: `num_classes` labels 0..num_classes-1 and `null_class` the "no label" index (None: no guidance).
        `learned_variance`: the network returns 2 in_channels, the second half improved DDPM's v (Nichol &
        Dhariwal 2021, eq. 15), which needs a discrete VP schedule; a DDPMScheduler config with
        `variance_type="learned_range"` sets it whatever the argument.

        Time: the card's time input is the schedule's own time t. For discrete (beta) schedulers that is diffusers'
        timestep itself; for FlowMatchEulerDiscreteScheduler diffusers feeds timestep = num_train_timesteps * t, so
        the network must be wrapped to multiply t (`diffspec.export.NetworkAdapter(time_scale=...)`). EDM schedulers
        precondition the network's input, time and output (c_in, c_noise, c_skip, c_out), which a card cannot
        describe: refused.
        """
        from diffspec.reference import interop

        if not isinstance(scheduler_config, dict) or "_class_name" not in scheduler_config:
            raise ValueError(
                "scheduler_config: expected a dict loaded from scheduler_config.json, with a '_class_name' key"
            )
        config = dict(scheduler_config)
        if config.get("variance_type") == "learned_range":
            learned_variance = True
        try:
            plan = interop.from_diffusers(config, 4)
        except ValueError:
            if config.get("variance_type") != "learned_range":
                raise
            # an interop without learned_range: validate the rest; the variance type is the sampler's business
            plan = interop.from_diffusers({**config, "variance_type": "fixed_small"}, 4)
        schedule = plan.schedule
        if type(schedule).__name__ == "EDM":
            raise ValueError(
                f"scheduler {plan.class_name}: diffusers' EDM schedulers precondition the network's "
                "input, time and output (c_in, c_noise, c_skip, c_out); a model trained with them is "
                "not supported: expected a beta-based or flow-matching scheduler"
            )
        if learned_variance and not (schedule.is_discrete and schedule.variance_preserving):
            raise ValueError(
                f"learned_variance=True: needs a discrete VP (beta) schedule, got {type(schedule).__name__}"
            )
        size = tuple(sample_size) if isinstance(sample_size, (list, tuple)) else (sample_size, sample_size)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f"sample_size={size!r}: expected a positive integer or a pair (height, width)")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels={in_channels!r}: expected a positive integer")
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes={num_classes!r}: expected None or a positive integer")
        if null_class is not None and (num_classes is None or null_class != num_classes):
            raise ValueError(
                f"null_class={null_class!r}: expected None or num_classes={num_classes} (the label after the real ones)"
            )
        card = cls(
            schedule=schedule.to_dict(),
            parameterization=str(parse_parameterization(plan.prediction_type)),
            data=DataInfo(shape=(in_channels, *size), kind="image", range=(-1.0, 1.0), name=str(name)),
            time_input="t",
            num_classes=num_classes,
            null_class=null_class,
            learned_variance=bool(learned_variance),
            train_config={"scheduler": plan.class_name, **(train_config or {})},
            version=DIFFSPEC_VERSION if version is None else str(version),
        )
        card.reference_schedule()
        return card


def _no_constant(name):
    raise ValueError(f"{name} is not a finite number")


def _first_line(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
