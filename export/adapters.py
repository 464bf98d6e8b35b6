"""Adapters that give a network which is not diffspec's the export contract forward(x, t, y=None) -> tensor.

diffusers' 2-D models are called as `forward(sample, timestep, class_labels=None, return_dict=True)` and return an
output object whose `.sample` is the tensor; other code returns a tuple whose first element is the tensor, or
takes its time in other units. `NetworkAdapter` wraps any such module:

    from diffspec.export import NetworkAdapter, export_model
    net = NetworkAdapter(my_module, class_labels="class_labels")   # or positional; time_scale for other units
    export_model(net, card, "model.onnx")

The adapter is traced into the graph, so it adds no node beyond a multiplication when `time_scale != 1`.
"""

import inspect
from typing import Any

import torch
from torch import nn


def _output_tensor(out: Any) -> torch.Tensor:
    """The tensor of a forward's return value: a tensor, an object with `.sample`, or a tuple/list (first item)."""
    if isinstance(out, torch.Tensor):
        return out
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError(
        f"the network returned {type(out).__name__}: expected a tensor, an object with a .sample tensor "
        "(diffusers' outputs) or a tuple whose first item is a tensor"
    )


class NetworkAdapter(nn.Module):
    """forward(x, t, y=None) -> module(x, t * time_scale, <y as `class_labels`>) as a tensor.

    `module`: any torch module taking (sample, timestep[, labels]) positionally (diffusers' UNet2DModel and
    DiTTransformer2DModel do).
    `class_labels`: how labels are passed: None (an unconditional network: y must be None), "positional" (the
    third positional argument), or a keyword name such as "class_labels" (diffusers).
    `time_scale`: the network's timestep = t * time_scale, with t the schedule's own time (the card's time input):
    1 for discrete schedules, whose t is already diffusers' integer timestep; 1000 for a flow network trained
    with diffusers' timestep = 1000 sigma.
    `return_dict=False` is passed to modules whose forward accepts it (so no output object is built while tracing).
    """

    def __init__(self, module: nn.Module, *, class_labels: str | None = None, time_scale: float = 1.0) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"module={type(module).__name__}: expected a torch.nn.Module")
        if class_labels is not None and not isinstance(class_labels, str):
            raise ValueError(f"class_labels={class_labels!r}: expected None, 'positional' or a keyword name")
        time_scale = float(time_scale)
        if not time_scale > 0:
            raise ValueError(f"time_scale={time_scale!r}: expected a positive number")
        self.module, self.class_labels, self.time_scale = module, class_labels, time_scale
        params = inspect.signature(module.forward).parameters
        self._return_dict = "return_dict" in params
        if class_labels not in (None, "positional") and class_labels not in params:
            raise ValueError(
                f"class_labels={class_labels!r}: {type(module).__name__}.forward has no such argument "
                f"(its arguments: {', '.join(params)})"
            )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if (y is None) != (self.class_labels is None):
            raise ValueError("y is required by a class-conditional adapter and refused by an unconditional one")
        timestep = t if self.time_scale == 1.0 else t * self.time_scale
        args: list[Any] = [x, timestep]
        kwargs: dict[str, Any] = {}
        if self.class_labels == "positional":
            args.append(y)
        elif self.class_labels is not None:
            kwargs[self.class_labels] = y
        if self._return_dict:
            kwargs["return_dict"] = False
        return _output_tensor(self.module(*args, **kwargs))
