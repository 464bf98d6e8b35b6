"""Reading trainer checkpoints for export: validation before any weight is read, and the ModelCard of a config.

A checkpoint directory (docs/architecture.md) holds `config.json`, the safetensors weights and `manifest.json`,
written last; a directory without a manifest is an interrupted save and is refused. A run folder with several
`checkpoint-STEP` directories resolves to its latest complete one.
"""

import contextlib
import dataclasses
import importlib.metadata
import json
from pathlib import Path

import torch
from diffspec.reference.modelcard import DataInfo, ModelCard
from torch import nn


def diffspec_version():
    try:
        return importlib.metadata.version("diffspec")
    except importlib.metadata.PackageNotFoundError:
        return ModelCard.__dataclass_fields__["version"].default


@contextlib.contextmanager
def inference_mode(model):
    """The network in eval mode for the duration, its training flag restored afterwards."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__}: expected a torch.nn.Module with forward(x, t, y=None)")
    bad = sorted(
        {str(p.dtype) for p in model.parameters() if p.dtype != torch.float32}
        | {str(p.device) for p in model.parameters() if p.device.type != "cpu"}
    )
    if bad:
        raise ValueError(
            f"model has parameters of {bad}: export a float32 CPU network (model.float().cpu()); "
            "use fp16=True for a float16 file"
        )
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _read_json(path, what):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} {str(path)!r} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON ({err})") from None


def resolve_checkpoint(ckpt_dir):
    """The checkpoint directory to use: `ckpt_dir` itself, or the latest complete `checkpoint-STEP` in a run folder."""
    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        raise ValueError(f"checkpoint directory {str(ckpt)!r} does not exist")
    if (ckpt / "manifest.json").exists():
        return ckpt
    from diffspec.trainer.checkpoint import find_latest

    latest = find_latest(ckpt)
    if latest is not None:
        return Path(latest)
    raise ValueError(
        f"checkpoint directory {str(ckpt)!r} has no manifest.json: not a complete checkpoint (the "
        "trainer writes manifest.json last; an interrupted save has none), nor a run folder with a "
        "complete checkpoint-STEP inside"
    )


def _check_arch(model_config, *, source):
    from diffspec.trainer.models import ARCHS

    known = sorted(ARCHS) + ["consistency", "precond"]
    arch = model_config.get("arch") if isinstance(model_config, dict) else None
    if arch not in known:
        raise ValueError(f"{source}: config.json model.arch={arch!r}: unknown arch, expected one of {known}")
    if arch in ("precond", "consistency"):  # wrappers: check the network inside
        _check_arch((model_config.get("kwargs") or {}).get("inner"), source=source)


def load_checkpoint(ckpt_dir, *, ema=True):
    """(model fp32 eval, config dict, checkpoint path, weights "ema" | "raw"), the config checked before any weight
    is read. With ema=True and no ema.safetensors the raw weights are used, and "raw" is returned."""
    from diffspec.trainer.checkpoint import listed, load_for_inference, read_config, verify_manifest

    ckpt = resolve_checkpoint(ckpt_dir)
    manifest = verify_manifest(ckpt)  # nothing is read that the manifest does not list and vouch for
    config = read_config(ckpt, manifest)
    _check_arch(config.get("model"), source=f"checkpoint {str(ckpt)!r}")
    model, config = load_for_inference(ckpt, ema=ema)
    weights = "ema" if ema and listed(ckpt, manifest, "ema.safetensors", required=False) is not None else "raw"
    return model, config, ckpt, weights


def _scalars(d):
    return {
        k: v
        for k, v in (d or {}).items()
        if isinstance(v, (str, int, float, bool))
        or v is None
        or (isinstance(v, list) and len(v) <= 16 and all(isinstance(e, (str, int, float, bool)) for e in v))
    }


def card_from_config(config, *, ckpt=None):
    """The ModelCard of a checkpoint's config.json (docs/architecture.md), with nothing that names the training
    machine (`trainer.checkpoint.portable_config`: no output folder, data paths reduced to file names)."""
    from diffspec.trainer.checkpoint import portable_config

    try:
        config = portable_config(config)
        data = config["data"]
        card = ModelCard(
            schedule=dict(config["schedule"]),
            parameterization=str(config["parameterization"]),
            data=DataInfo(
                shape=tuple(int(d) for d in data["shape"]),
                kind=data.get("kind", "image"),
                range=tuple(float(v) for v in data.get("range", (-1.0, 1.0))),
                scale=float(data.get("scale", 1.0)),
                shift=float(data.get("shift", 0.0)),
                name=str(data.get("name", "")),
            ),
            time_input=config.get("time_input", "t"),
            num_classes=config.get("num_classes"),
            null_class=config.get("null_class"),
            learned_variance=bool(config.get("learned_variance", False)),
            version=diffspec_version(),
            train_config={
                "arch": config["model"]["arch"],
                "model_kwargs": config["model"].get("kwargs", {}),
                "train": _scalars(config.get("train")),
                "trained_with": config.get("diffspec_version"),
                "checkpoint": Path(ckpt).name if ckpt else None,
                # few-step students: procedure, intended sampler, consistency scalings or reflow straightness
                "student": config.get("student"),
            },
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"checkpoint config is missing or has a bad field ({type(err).__name__}: {err})") from None
    if card.num_classes is not None and card.null_class is None:
        card = dataclasses.replace(card, null_class=card.num_classes)
    card.reference_schedule()
    return card
