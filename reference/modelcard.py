"""The self-description an exported model carries: what a sampler needs besides the network.

Stored as ONNX `metadata_props` (string keys, JSON values) by `diffspec.export` and read back by
`diffspec.runtime` through onnxruntime's `custom_metadata_map`. Plain data and JSON only: this module is the
one definition of the keys, shared by the writer and the reader.
"""

import json
from dataclasses import asdict, dataclass, field

from diffspec.reference.parameterizations import parse as parse_parameterization
from diffspec.reference.schedules import schedule_from_dict

FORMAT_VERSION = 1
PREFIX = "diffspec."
REQUIRED = ("format", "version", "schedule", "parameterization", "time_input", "data")


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
    version: str = "0.1.0"
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
        try:
            raw = {k[len(PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(PREFIX)}
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: diffspec metadata is not valid JSON ({err})") from None
        if raw.pop("format") != FORMAT_VERSION:
            raise ValueError(f"{source}: diffspec metadata format is not {FORMAT_VERSION}; re-export the model")
        known = {f for f in cls.__dataclass_fields__}
        raw = {k: v for k, v in raw.items() if k in known}
        data = dict(raw.pop("data"))
        data["shape"] = tuple(data["shape"])
        data["range"] = tuple(data["range"])
        card = cls(data=DataInfo(**data), **raw)
        card.reference_schedule()  # validates the schedule
        parse_parameterization(card.parameterization)
        return card
