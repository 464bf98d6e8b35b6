"""Tiny real networks (trainer.models.build_model) and their model cards, exported once per test module."""

import os

import torch
from diffspec.reference.modelcard import DataInfo, ModelCard
from diffspec.reference.schedules import make_schedule

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

NUM_CLASSES = 10
KWARGS = {
    "mlp": {"dim": 2, "hidden": 32, "depth": 2, "freq_dim": 16},
    "unet": {
        "in_channels": 1,
        "image_size": 8,
        "model_channels": 16,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "attention_resolutions": [4],
        "num_heads": 2,
        "groups": 8,
        "num_classes": NUM_CLASSES,
    },
    "dit": {
        "in_channels": 1,
        "image_size": 8,
        "patch_size": 2,
        "hidden": 32,
        "depth": 2,
        "num_heads": 2,
        "num_classes": NUM_CLASSES,
    },
}
SHAPES = {"mlp": (2,), "unet": (1, 8, 8), "dit": (1, 8, 8)}


def randomize(model, seed=0, scale=0.1):
    """Perturb every parameter: the trainer zero-initialises output layers, which would make parity trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def build(arch, **overrides):
    from diffspec.trainer.models import build_model

    return randomize(build_model(arch, **{**KWARGS[arch], **overrides}))


def card_for(arch, *, schedule=None, parameterization="eps", learned_variance=False):
    schedule = schedule or make_schedule("linear", T=1000).to_dict()
    classes = KWARGS[arch].get("num_classes")
    kind = "points" if arch == "mlp" else "image"
    return ModelCard(
        schedule=schedule,
        parameterization=parameterization,
        data=DataInfo(shape=SHAPES[arch], kind=kind, range=(0.0, 16.0), scale=0.125, shift=-1.0, name="test"),
        num_classes=classes,
        null_class=classes,
        learned_variance=learned_variance,
        train_config={"arch": arch, "model_kwargs": KWARGS[arch]},
    )
