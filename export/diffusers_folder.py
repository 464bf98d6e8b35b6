"""Export a network that diffusers trained (a local diffusers folder) to the same self-describing ONNX file.

    diffspec-export PIPELINE_DIR -o model.onnx     # model_index.json with unet/ or transformer/, and scheduler/
    diffspec-export MODEL_DIR -o model.onnx --scheduler-config scheduler_config.json   # a model's config.json

The card comes from the folder, never from guesses: the schedule, parameterization and time convention from the
scheduler config through `diffspec.reference.interop` (`ModelCard.from_diffusers`); the data shape from the model
config's `sample_size` and `in_channels`; classes from `num_class_embeds` (UNet2DModel: every index is a class; a
null class only with `null_class=`) or `num_embeds_ada_norm` (DiTTransformer2DModel, whose label table always has
the null class num_embeds_ada_norm); learned variance from `out_channels = 2 in_channels` with a `learned_range`
DDPMScheduler; value range [-1, 1], as diffusers' pipelines assume.

Refused, with the reason: text-conditioned models (their forward needs text embeddings, which the card cannot
describe), latent pipelines (a `vae` component: the decoder is not exported), model classes other than
`SUPPORTED_MODELS`, pickle weights (`.bin`) unless `allow_pickle=True`, and every scheduler config the interop
refuses (its message unchanged). Nothing outside the folder (and the scheduler config file) is read, nothing is
downloaded: diffusers loads with `local_files_only=True`.
"""

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffspec.reference.modelcard import ModelCard

if TYPE_CHECKING:  # torch is imported only to load weights: classifying a folder needs none
    from diffspec.export.adapters import NetworkAdapter

# model class -> (the config key holding the number of class labels, the forward's label argument)
SUPPORTED_MODELS = {
    "UNet2DModel": ("num_class_embeds", "class_labels"),
    "DiTTransformer2DModel": ("num_embeds_ada_norm", "class_labels"),
}
# model classes whose forward needs text (or image) embeddings through cross-attention
TEXT_CONDITIONED = frozenset(
    {
        "UNet2DConditionModel",
        "UNet3DConditionModel",
        "UNetSpatioTemporalConditionModel",
        "SD3Transformer2DModel",
        "FluxTransformer2DModel",
        "PixArtTransformer2DModel",
        "HunyuanDiT2DModel",
        "SanaTransformer2DModel",
        "Transformer2DModel",
        "LuminaNextDiT2DModel",
        "AuraFlowTransformer2DModel",
        "CogView3PlusTransformer2DModel",
        "StableCascadeUNet",
        "UVit2DModel",
        "PriorTransformer",
    }
)
MODEL_COMPONENTS = ("unet", "transformer")
TEXT_COMPONENTS = ("text_encoder", "text_encoder_2", "tokenizer", "image_encoder")
SAFETENSORS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
PICKLE = ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json")
# the files looked for when classifying a folder
LOOKED_FOR = (
    "manifest.json (a diffspec checkpoint)",
    "checkpoint-STEP/manifest.json (a diffspec run folder)",
    "model_index.json (a diffusers pipeline)",
    "config.json with '_class_name' (a diffusers model)",
)
# extra key diffspec writes into a model's config.json (diffusers ignores keys starting with "_")
DIFFSPEC_KEY = "_diffspec"


@dataclasses.dataclass(frozen=True)
class DiffusersSource:
    """What a diffusers folder holds, read before any weight: the model's folder, class and config, and the
    scheduler config with where it came from."""

    model_dir: Path
    model_class: str
    model_config: dict
    scheduler_config: dict
    scheduler_source: str


def _read_json(path, what):
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} {str(path)!r} not found") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not a readable JSON file ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} {str(path)!r}: expected a JSON object")
    return value


def _is_diffusers_config(path):
    try:
        return "_class_name" in json.loads(Path(path).read_text())
    except (OSError, ValueError, TypeError):
        return False


def folder_kind(path: str | Path) -> str:
    """ "diffspec", "diffusers-pipeline" or "diffusers-model"; anything else raises, naming the files looked for."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(
            f"{str(path)!r} is not a folder: expected a diffspec checkpoint or run folder, or a "
            "diffusers pipeline or model folder"
        )
    if (path / "manifest.json").exists() or any(path.glob("checkpoint-*/manifest.json")):
        return "diffspec"
    if (path / "model_index.json").exists():
        return "diffusers-pipeline"
    if _is_diffusers_config(path / "config.json"):
        return "diffusers-model"
    if (path / "config.json").exists() or any(path.glob("checkpoint-*")):
        return "diffspec"  # an incomplete diffspec checkpoint or run: its own loader says what is missing
    raise ValueError(
        f"{str(path)!r} has no manifest.json: neither a diffspec checkpoint nor a diffusers folder; looked for "
        + ", ".join(LOOKED_FOR)
    )


def _inside(root, sub):
    real_root, real_sub = Path(root).resolve(), Path(sub).resolve()
    if real_root != real_sub and real_root not in real_sub.parents:
        raise ValueError(f"{str(sub)!r} lies outside the folder {str(root)!r}: refusing to read it")
    return Path(sub)


def _text_refusal(what):
    return ValueError(
        f"{what} is text-conditioned: its forward needs encoder_hidden_states (text embeddings through "
        "cross-attention), which a diffspec model card cannot describe; supported are unconditional "
        f"and class-conditional 2-D models: {', '.join(SUPPORTED_MODELS)}"
    )


def read_scheduler_config(path: str | Path) -> tuple[dict, str]:
    """A scheduler config from a scheduler_config.json file or a folder that holds one."""
    path = Path(path)
    if path.is_dir():
        path = path / "scheduler_config.json"
    return _read_json(path, "scheduler config"), str(path)


def read_diffusers_folder(path: str | Path, *, scheduler_config: str | Path | dict | None = None) -> DiffusersSource:
    """The `DiffusersSource` of a pipeline or model folder (configs only; no weight is read).

    `scheduler_config`: a scheduler_config.json path (or its folder), or a dict; required for a model folder,
    and for a pipeline folder it replaces the pipeline's own scheduler.
    """
    root = Path(path)
    kind = folder_kind(root)
    if kind == "diffspec":
        raise ValueError(f"{str(root)!r} is a diffspec checkpoint, not a diffusers folder: use export_checkpoint")
    if kind == "diffusers-pipeline":
        index = _read_json(root / "model_index.json", "pipeline index")
        present = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[-1:] != [None]}
        pipeline = index.get("_class_name", "a pipeline")
        if present & set(TEXT_COMPONENTS):
            raise _text_refusal(f"{pipeline} (components {sorted(present & set(TEXT_COMPONENTS))})")
        if "vae" in present:
            raise ValueError(
                f"{pipeline} is a latent diffusion pipeline (component 'vae'): its decoder is not "
                "exported; export the denoiser's folder with --scheduler-config to get a model of the "
                "latents"
            )
        names = [c for c in MODEL_COMPONENTS if c in present]
        if not names:
            raise ValueError(
                f"pipeline index {str(root / 'model_index.json')!r} has no {' or '.join(MODEL_COMPONENTS)}"
                f" component (it has {sorted(present) or 'none'})"
            )
        model_dir = _inside(root, root / names[0])
        if scheduler_config is None:
            if "scheduler" not in present:
                raise ValueError(f"pipeline {str(root)!r} has no scheduler component: pass --scheduler-config FILE")
            scheduler_config = _inside(root, root / "scheduler")
    else:
        model_dir = root
    config = _read_json(model_dir / "config.json", "model config")
    cls = config.get("_class_name")
    if cls in TEXT_CONDITIONED or "cross_attention_dim" in config and cls not in SUPPORTED_MODELS:
        raise _text_refusal(cls)
    if cls not in SUPPORTED_MODELS:
        raise ValueError(
            f"diffusers model class {cls!r} ({str(model_dir / 'config.json')!r}) is not supported: "
            f"expected one of {', '.join(SUPPORTED_MODELS)}"
        )
    if scheduler_config is None:
        raise ValueError(
            f"{str(root)!r} is a diffusers model folder: its schedule is in a scheduler config, "
            "pass --scheduler-config FILE (a scheduler_config.json)"
        )
    if isinstance(scheduler_config, dict):
        sched, source = dict(scheduler_config), "the given scheduler config"
    else:
        sched, source = read_scheduler_config(scheduler_config)
    return DiffusersSource(model_dir, cls, config, sched, source)


def _model_shape(source):
    cfg = source.model_config
    size, channels = cfg.get("sample_size"), cfg.get("in_channels")
    where = f"{source.model_class} config ({str(source.model_dir / 'config.json')!r})"
    if size is None or channels is None:
        raise ValueError(f"{where}: needs sample_size and in_channels for the data shape (got {size!r}, {channels!r})")
    if source.model_class == "UNet2DModel":
        if cfg.get("class_embed_type") is not None:
            raise ValueError(
                f"{where}: class_embed_type={cfg['class_embed_type']!r} is not supported (its labels are "
                "not integer class indices): expected None with num_class_embeds"
            )
        if cfg.get("time_embedding_type", "positional") == "fourier":
            raise ValueError(
                f"{where}: time_embedding_type='fourier' (score-SDE VE networks, which divide their "
                "output by the noise level) is not supported: expected 'positional'"
            )
    out = cfg.get("out_channels") or channels
    return size, channels, out


def card_for(source: DiffusersSource, *, null_class: int | None = None, name: str = "") -> tuple[ModelCard, dict]:
    """(ModelCard, NetworkAdapter options) of a `DiffusersSource` (see the module docstring for where each field
    comes from). `null_class`: for UNet2DModel, the label index trained as "no label" (it must be the last,
    num_class_embeds - 1); DiTTransformer2DModel's null class is always num_embeds_ada_norm."""
    size, channels, out = _model_shape(source)
    cfg, (labels_key, labels_arg) = source.model_config, SUPPORTED_MODELS[source.model_class]
    num, null = cfg.get(labels_key), None
    if source.model_class == "DiTTransformer2DModel":
        null = num
    recorded = cfg.get(DIFFSPEC_KEY)
    extra: dict = recorded if isinstance(recorded, dict) else {}
    if null_class is None and extra.get("null_class") is not None and num is not None:
        null_class = int(extra["null_class"])
    if null_class is not None and source.model_class == "UNet2DModel":
        if num is None or null_class != num - 1:
            raise ValueError(
                f"null_class={null_class!r}: expected num_class_embeds - 1 = "
                f"{None if num is None else num - 1} (the last label, after the real classes)"
            )
        num, null = num - 1, null_class
    elif null_class is not None and null_class != null:
        raise ValueError(f"null_class={null_class!r}: {source.model_class}'s null class is {null!r}")
    sched = source.scheduler_config
    learned = sched.get("variance_type") == "learned_range"
    if out == 2 * channels and not learned:
        raise ValueError(
            f"{source.model_class} has out_channels={out} = 2 in_channels (a learned variance), but "
            f"{source.scheduler_source} has variance_type={sched.get('variance_type')!r}: expected a "
            "DDPMScheduler with variance_type='learned_range'"
        )
    if out != channels and not (learned and out == 2 * channels):
        raise ValueError(
            f"{source.model_class} has out_channels={out}, in_channels={channels}: expected equal, or "
            "twice in_channels with a learned_range DDPMScheduler"
        )
    if learned and out != 2 * channels:
        raise ValueError(
            f"{source.scheduler_source} has variance_type='learned_range', but {source.model_class} "
            f"returns {out} channels: expected 2 in_channels = {2 * channels}"
        )
    card = ModelCard.from_diffusers(
        sched,
        sample_size=size,
        in_channels=channels,
        num_classes=num,
        null_class=null,
        learned_variance=learned,
        name=name,
        version=_version(),
        train_config={"diffusers_class": source.model_class, "diffusers_version": cfg.get("_diffusers_version")},
    )
    card = dataclasses.replace(card, data=_data_info(card.data, extra.get("data"), name))
    time_scale = float(sched.get("num_train_timesteps", 1000)) if card.schedule["name"] == "flow" else 1.0
    return card, {"class_labels": labels_arg if num is not None else None, "time_scale": time_scale}


def _data_info(data, recorded, name):
    """The card's data, with the value range, scaling and name diffspec's trainer recorded under `_diffspec`."""
    if not isinstance(recorded, dict):
        return data
    try:
        return dataclasses.replace(
            data,
            range=tuple(float(v) for v in recorded.get("range", data.range)),
            scale=float(recorded.get("scale", data.scale)),
            shift=float(recorded.get("shift", data.shift)),
            name=name or str(recorded.get("name", "")),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.json {DIFFSPEC_KEY}.data={recorded!r} is malformed ({err})") from None


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("diffspec")
    except importlib.metadata.PackageNotFoundError:
        return str(ModelCard.__dataclass_fields__["version"].default)


def _weights(model_dir, allow_pickle):
    """True for safetensors, False for pickle (only with allow_pickle); refuses otherwise."""
    if any((model_dir / f).exists() for f in SAFETENSORS):
        return True
    pickles = [f for f in PICKLE if (model_dir / f).exists()]
    if pickles and not allow_pickle:
        raise ValueError(
            f"{str(model_dir)!r} stores its weights as pickle ({pickles[0]}): loading a pickle can run "
            "arbitrary code. Convert them to safetensors (model.save_pretrained(folder, "
            "safe_serialization=True) in a trusted environment), or pass --allow-pickle "
            "(allow_pickle=True) if you trust the file"
        )
    if not pickles:
        raise ValueError(f"{str(model_dir)!r} has no weights: looked for {', '.join(SAFETENSORS + PICKLE)}")
    return False


def load_model(source: DiffusersSource, *, allow_pickle: bool = False) -> Any:
    """The diffusers module of a `DiffusersSource`, float32, eval, on CPU, from local files only."""
    import diffusers
    import torch

    safe = _weights(source.model_dir, allow_pickle)
    cls = getattr(diffusers, source.model_class)
    try:
        module = cls.from_pretrained(
            str(source.model_dir),
            use_safetensors=safe,
            local_files_only=True,
            torch_dtype=torch.float32,
            low_cpu_mem_usage=False,
        )
    except (OSError, RuntimeError) as err:
        raise ValueError(
            f"{str(source.model_dir)!r}: diffusers could not load {source.model_class} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    return module.float().eval()


def load_diffusers(
    path: str | Path,
    *,
    scheduler_config: str | Path | dict | None = None,
    allow_pickle: bool = False,
    null_class: int | None = None,
    name: str = "",
) -> tuple["NetworkAdapter", ModelCard, DiffusersSource]:
    """(NetworkAdapter around the diffusers module, ModelCard, DiffusersSource) for a pipeline or model folder.

    The adapter has the export contract forward(x, t, y=None); see `read_diffusers_folder` and `card_for`.
    """
    source = read_diffusers_folder(path, scheduler_config=scheduler_config)
    card, adapter_options = card_for(source, null_class=null_class, name=name)
    module = load_model(source, allow_pickle=allow_pickle)
    from diffspec.export.adapters import NetworkAdapter

    return NetworkAdapter(module, **adapter_options), card, source


def sampling_hint(scheduler_config: dict, card: ModelCard) -> str:
    """A one-line `diffspec-sample` suggestion that follows the scheduler's own grid, where one exists."""
    name = scheduler_config.get("_class_name")
    spacing = scheduler_config.get("timestep_spacing", "leading")
    if name not in ("DDIMScheduler", "DDPMScheduler") or not card.schedule.get("T"):
        return (
            f"{name}: diffspec.reference.interop.from_diffusers(config, N) reproduces its loop; the runtime's "
            "samplers take any grid (--grid)"
        )
    grid = {
        "leading": f"--grid leading --offset {int(scheduler_config.get('steps_offset', 0))}",
        "trailing": "--grid trailing",
        "linspace": "--grid uniform",
    }[spacing]
    sampler = "ddim" if name == "DDIMScheduler" else "ddpm"
    if sampler == "ddpm" and card.learned_variance:
        sampler += " --variance learned_range"
    elif sampler == "ddpm" and scheduler_config.get("variance_type") == "fixed_large":
        sampler += " --variance fixed_large"
    notes = []
    if scheduler_config.get("clip_sample", True):
        notes.append("this scheduler clips x0 to [-1, 1] (clip_sample), diffspec's samplers do not")
    if name == "DDIMScheduler" and not scheduler_config.get("set_alpha_to_one", True):
        notes.append("set_alpha_to_one=False ends at alphabar[0], the runtime's grid at the clean end")
    return f"{name}'s own grid: diffspec-sample MODEL --sampler {sampler} {grid} --steps N" + (
        " (" + "; ".join(notes) + ")" if notes else ""
    )


def export_diffusers(
    path: str | Path,
    output: str | Path,
    *,
    scheduler_config: str | Path | dict | None = None,
    allow_pickle: bool = False,
    null_class: int | None = None,
    name: str = "",
    log: Callable[[str], None] = print,
    **options: Any,
) -> Any:
    """Export a diffusers pipeline or model folder to `output`, verified; options as in `export_model`."""
    from diffspec.export.exporter import export_model

    output = Path(output)
    if not output.parent.is_dir():
        raise ValueError(f"output path {str(output)!r}: directory {str(output.parent)!r} does not exist")
    net, card, source = load_diffusers(
        path, scheduler_config=scheduler_config, allow_pickle=allow_pickle, null_class=null_class, name=name
    )
    log(
        f"diffusers {source.model_class} from {str(source.model_dir)!r}, scheduler "
        f"{source.scheduler_config.get('_class_name')} from {source.scheduler_source}: schedule {card.schedule}, "
        f"parameterization {card.parameterization}, data {list(card.data.shape)}, classes {card.num_classes} "
        f"(null {card.null_class}), learned variance {card.learned_variance}"
    )
    log(sampling_hint(source.scheduler_config, card))
    return export_model(net, card, output, weights="diffusers", log=log, **options)
