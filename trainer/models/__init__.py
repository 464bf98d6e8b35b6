"""The networks: every one has forward(x, t, y=None) -> a tensor shaped like x (2x the channels with a learned
variance), t float (B,) in the schedule's own time, y int64 (B,) with null class = num_classes.

`build_model(arch, **kwargs)` builds one from the JSON-able kwargs stored in a checkpoint's config.json
("model": {"arch", "kwargs"}). arch "precond" wraps another network in EDM preconditioning:
kwargs {"inner": {"arch", "kwargs"}, "schedule": <schedule dict>, "sigma_data": 0.5}.
"""

import inspect

import torch
from diffspec.trainer.models.diffusers_models import DIFFUSERS_ARCHS
from diffspec.trainer.models.dit import DiT
from diffspec.trainer.models.mlp import MLP
from diffspec.trainer.models.precond import EDMPrecond
from diffspec.trainer.models.unet import UNet

ARCHS: dict[str, type[torch.nn.Module]] = {
    "mlp": MLP,
    "unet": UNet,
    "dit": DiT,
    **DIFFUSERS_ARCHS,
}  # + diffusers-unet2d, diffusers-dit


def _build_precond(*, inner, schedule, sigma_data=0.5):
    from diffspec.trainer.schedules import schedule_from_dict

    if not isinstance(inner, dict) or "arch" not in inner:
        raise ValueError(f"precond inner={inner!r}: expected {{'arch': ..., 'kwargs': {{...}}}}")
    return EDMPrecond(
        build_model(inner["arch"], **inner.get("kwargs", {})), schedule_from_dict(schedule), sigma_data=sigma_data
    )


def _build_consistency(*, inner, schedule, parameterization, sigma_min, sigma_data=0.5):
    from diffspec.trainer.models.consistency import ConsistencyModel
    from diffspec.trainer.schedules import schedule_from_dict

    if not isinstance(inner, dict) or "arch" not in inner:
        raise ValueError(f"consistency inner={inner!r}: expected {{'arch': ..., 'kwargs': {{...}}}}")
    return ConsistencyModel(
        build_model(inner["arch"], **inner.get("kwargs", {})),
        schedule_from_dict(schedule),
        parameterization=parameterization,
        sigma_min=sigma_min,
        sigma_data=sigma_data,
    )


def build_model(arch: str, **kwargs) -> torch.nn.Module:
    """ARCHS[arch](**kwargs); an unknown arch or keyword raises a ValueError listing the known ones."""
    if arch == "precond":
        return _build_precond(**kwargs)
    if arch == "consistency":
        return _build_consistency(**kwargs)
    if arch not in ARCHS:
        raise ValueError(f"unknown model arch {arch!r}: expected one of {sorted(ARCHS) + ['consistency', 'precond']}")
    cls = ARCHS[arch]
    known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"model arch {arch!r} has no option {unknown[0]!r}: expected some of {known}")
    if "channel_mult" in kwargs:
        kwargs["channel_mult"] = tuple(kwargs["channel_mult"])
    if "attention_resolutions" in kwargs:
        kwargs["attention_resolutions"] = tuple(kwargs["attention_resolutions"])
    return cls(**kwargs)


__all__ = ["ARCHS", "DiT", "EDMPrecond", "MLP", "UNet", "build_model"]
