"""Write a trained diffusers-* network as a diffusers folder: what `diffspec-train --save-diffusers` does.

    OUTPUT_DIR/diffusers/
        model_index.json                     DDPMPipeline (unet) or DiTPipeline (transformer, no vae)
        unet/ or transformer/                config.json + diffusion_pytorch_model.safetensors (model.save_pretrained)
        scheduler/scheduler_config.json      DDPMScheduler from the training schedule (reference.interop.to_diffusers)

`DDPMPipeline.from_pretrained(folder)` loads a UNet folder as is. A DiT folder is loaded by its parts,
`DiTTransformer2DModel.from_pretrained(folder, subfolder="transformer")` and
`DDPMScheduler.from_pretrained(folder, subfolder="scheduler")`: diffusers' DiTPipeline itself needs a VAE (it
samples latents) and fixes the null class at 1000. `diffspec-export folder -o model.onnx` reads either back.

What diffusers can express is required: a discrete VP (beta) schedule whose t is the network's timestep
(time_scale 1), and an eps, v or x0 parameterization (prediction_type epsilon, v_prediction, sample). The scheduler
does not clip x0 (clip_sample false), like diffspec's samplers; a learned variance writes
variance_type "learned_range". The model's config.json also carries `_diffspec` (null class, data name, range,
scale and shift), a key diffusers ignores (it skips keys that start with "_").
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from diffspec.trainer.models.diffusers_models import DiffusersDiT, DiffusersUNet2D
from torch import nn

PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def scheduler_config(schedule: Any, parameterization: str, *, learned_variance: bool = False) -> dict:
    """The DDPMScheduler config of a training schedule (a schedule dict, as in a checkpoint's config.json)."""
    from diffspec.reference.interop import to_diffusers
    from diffspec.reference.schedules import schedule_from_dict

    ref = schedule_from_dict(schedule) if isinstance(schedule, dict) else schedule
    if not (getattr(ref, "is_discrete", False) and getattr(ref, "variance_preserving", False)):
        raise ValueError(f"schedule {schedule!r}: a diffusers DDPMScheduler needs a discrete VP (beta) schedule")
    if parameterization not in PREDICTION_TYPES:
        raise ValueError(
            f"parameterization={parameterization!r}: diffusers' DDPMScheduler predicts one of "
            f"{sorted(PREDICTION_TYPES)}"
        )
    return to_diffusers(
        ref,
        class_name="DDPMScheduler",
        prediction_type=PREDICTION_TYPES[parameterization],
        clip_sample=False,
        timestep_spacing="leading",
        steps_offset=0,
        variance_type="learned_range" if learned_variance else "fixed_small",
    )


def check_save_diffusers(arch: str, kwargs: dict, schedule: Any, parameterization: str) -> None:
    """Before training: can `save_diffusers` write this run? A ValueError says why not."""
    from diffspec.trainer.models.diffusers_models import DIFFUSERS_ARCHS

    try:
        scheduler_config(schedule, parameterization, learned_variance=bool(kwargs.get("learned_variance", False)))
    except ValueError as err:
        raise ValueError(f"--save-diffusers: {err}") from None
    if arch not in DIFFUSERS_ARCHS:
        raise ValueError(
            f"--save-diffusers needs --arch {' or '.join(DIFFUSERS_ARCHS)} (diffusers' own classes), got {arch!r}"
        )
    time_scale = float(kwargs.get("time_scale", 1.0))
    if time_scale != 1.0:
        raise ValueError(
            f"--save-diffusers: time_scale={time_scale} but a diffusers pipeline feeds the discrete "
            "timestep itself: use a discrete schedule and leave time_scale at 1"
        )


def save_diffusers(
    model: nn.Module, path: str | Path, *, schedule: Any, parameterization: str, data: dict | None = None
) -> Path:
    """Write `model` (a DiffusersUNet2D or DiffusersDiT, e.g. the EMA copy) as a diffusers folder at `path`.

    `schedule`: the training schedule (dict or reference schedule); `parameterization`: eps, v or x0; `data`: the
    data info of the checkpoint config (recorded under `_diffspec`). The folder is written next to `path` and
    renamed into place (an existing folder there is replaced). Returns the path.
    """
    import diffusers

    if not isinstance(model, (DiffusersUNet2D, DiffusersDiT)):
        raise ValueError(
            f"model={type(model).__name__}: --save-diffusers needs a network built by --arch "
            "diffusers-unet2d or diffusers-dit"
        )
    if model.time_scale != 1.0:
        raise ValueError(
            f"time_scale={model.time_scale}: a diffusers pipeline feeds the discrete timestep itself; "
            "train with time_scale 1 (the default of the diffusers-* archs on discrete schedules)"
        )
    sched = scheduler_config(schedule, parameterization, learned_variance=model.learned_variance)
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"--save-diffusers {str(path)!r}: directory {str(path.parent)!r} does not exist")
    is_unet = isinstance(model, DiffusersUNet2D)
    component = "unet" if is_unet else "transformer"
    version = diffusers.__version__
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        model.net.save_pretrained(str(tmp / component), safe_serialization=True)
        config_path = tmp / component / "config.json"
        config = json.loads(config_path.read_text())
        config["_diffspec"] = {
            "num_classes": model.num_classes,
            "null_class": model.null_class,
            **({"data": dict(data)} if data else {}),
        }
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(
            json.dumps({**sched, "_diffusers_version": version}, indent=2) + "\n"
        )
        index: dict[str, Any] = {
            "_class_name": "DDPMPipeline" if is_unet else "DiTPipeline",
            "_diffusers_version": version,
            "scheduler": ["diffusers", "DDPMScheduler"],
            component: ["diffusers", type(model.net).__name__],
        }
        if not is_unet:
            index["vae"] = [None, None]
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def save_checkpoint_as_diffusers(ckpt_dir: str | Path, path: str | Path, *, ema: bool = True) -> Path:
    """A diffspec checkpoint of a diffusers-* arch (EMA weights by default) -> a diffusers folder at `path`."""
    from diffspec.trainer.checkpoint import load_for_inference

    model, config = load_for_inference(ckpt_dir, ema=ema)
    return save_diffusers(
        model, path, schedule=config["schedule"], parameterization=config["parameterization"], data=config.get("data")
    )
