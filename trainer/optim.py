"""Optimization: AdamW, the learning-rate schedule and the EMA of the weights, each a pure function of the step.

Pure functions of the step are what make resume exact: a resumed run recomputes the same learning rate and EMA
decay from the step it restarts at, with no schedule state to save.
"""

import math
from typing import Any

import torch
from diffspec.trainer.config import LRScheduler, TrainConfig


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019) over the model's parameters with the config's betas, decay and epsilon.

    The fused implementation (one kernel over all parameters) where torch has it for these parameters (CPU and
    CUDA, floating point): the same update as the per-tensor loop up to rounding, and on a small network most of
    an optimizer step's time was the loop over parameters (bench/train_speed.py)."""
    params = [p for p in model.parameters()]
    kwargs: dict[str, Any] = dict(
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.adam_weight_decay,
        eps=cfg.adam_epsilon,
    )
    fusable = params and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if fusable:
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # a torch without the fused kernel for this device
            pass
    return torch.optim.AdamW(params, **kwargs)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warm-up, then constant or cosine to 0.

    Cosine: lr = base * (1 + cos(pi * p)) / 2 with p the fraction of the post-warm-up steps done
    (Loshchilov & Hutter 2017, SGDR, eq. 5 with one cycle and eta_min = 0).
    """
    base, warm, total = cfg.learning_rate, cfg.lr_warmup_steps, cfg.max_train_steps
    if base is None or warm is None or total is None:
        raise ValueError("lr_at: learning_rate, lr_warmup_steps and max_train_steps unset (resolve the config first)")
    if warm and step < warm:
        return base * (step + 1) / warm
    if cfg.lr_scheduler == LRScheduler.CONSTANT:
        return base
    progress = (step - warm) / max(1, total - warm)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients of `params` in place so that their global L2 norm is at most `max_norm`; returns the norm
    before clipping (a tensor: no host sync). Pascanu et al. (2013), Algorithm 1:

        g <- g * min(1, max_norm / (||g|| + 1e-6))

    The same operations as `torch.nn.utils.clip_grad_norm_` (a foreach norm per tensor, the norm of those norms,
    one foreach multiply), so the same numbers, without its regrouping of the tensors by device and dtype on every
    call, which cost a small network a third of the clipping's time (bench/train_speed.py): the trainer's
    parameters live on one device. Parameters without a gradient are skipped."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def ema_decay_at(num_updates: int, max_decay: float) -> float:
    """EMA warm-up (the diffusers EMAModel form): min(max_decay, (1 + n) / (10 + n))."""
    return min(max_decay, (1.0 + num_updates) / (10.0 + num_updates))


class EMA:
    """An exponential moving average of a model's weights: ema <- decay * ema + (1 - decay) * model.

    The parameter lists are gathered once (not on every update); buffers (e.g. normalisation statistics) are
    copied. Polyak & Juditsky (1992); the warm-up of the decay is `ema_decay_at`.
    """

    def __init__(self, ema: torch.nn.Module, model: torch.nn.Module):
        self.module = ema
        self._dst: list[torch.Tensor] = list(ema.parameters())
        self._src = [p.detach() for p in model.parameters()]
        self._same_dtype = all(p.dtype == q.dtype for p, q in zip(self._src, self._dst))
        self._buffers = list(zip(ema.buffers(), model.buffers()))

    @torch.no_grad()
    def update(self, decay: float) -> None:
        src = self._src if self._same_dtype else [p.to(q.dtype) for p, q in zip(self._src, self._dst)]
        torch._foreach_lerp_(self._dst, src, 1.0 - decay)
        for b, s in self._buffers:
            b.copy_(s)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """One EMA step on two modules of the same structure (see `EMA`, which caches the parameter lists)."""
    EMA(ema, model).update(decay)
