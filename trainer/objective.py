"""Training objectives: the one piece of the loop that knows what is being learned.

An objective is any callable `objective(model, x0, y, gen) -> loss` with loss of shape (B,), one number per
sample: it draws everything random it needs (times, noise, label dropout) from the explicit `torch.Generator`
`gen`, in a fixed order, so a resumed run repeats it bit for bit. The loop averages, scales for gradient
accumulation, back-propagates and steps; it never looks inside. Distillation plugs in here with its own
objective (a teacher closed over) and the loop unchanged.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from diffspec.trainer import timesteps as T
from diffspec.trainer.losses import diffusion_loss, hybrid_loss
from diffspec.trainer.parameterizations import broadcast_to_batch


class Objective(Protocol):
    def __call__(
        self, model: Callable, x0: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator
    ) -> torch.Tensor: ...


@dataclass
class DiffusionObjective:
    """The denoising loss w(lam) ||F(x_t, t) - target||^2 per sample (Kingma & Gao 2023, eq. 2), with x_t = alpha_t x0 +
    sigma_t eps (Ho et al. 2020, eq. 4); with a learned variance, iDDPM's hybrid loss (Nichol & Dhariwal 2021, eq. 16).

    `draw_t` returns float times, or integer steps of a discrete schedule (`uniform_discrete` with an integer
    dtype), whose alpha, sigma and lam the schedule reads from a table; the network gets t as float32 either way.
    Draw order from `gen` per call: t (`draw_t`), eps, the noise-offset term (when noise_offset > 0; Guttenberg
    2023), the label-dropout mask (class-conditional models; Ho & Salimans 2022). With importance sampling of t
    (`history`), each loss is recorded in its time bin and reweighted by 1 / (K p_k) so the mean stays unbiased.
    """

    schedule: object
    parameterization: str
    draw_t: Callable[[int, torch.Generator], torch.Tensor]
    weighting: str | None = None
    weighting_options: dict | None = None
    noise_offset: float = 0.0
    class_conditional: bool = False
    cond_drop_prob: float = 0.0
    null_class: int | None = None
    learned_variance: bool = False
    lambda_vlb: float = 0.001
    history: T.LossHistory | None = None
    autocast: Callable = contextlib.nullcontext  # a context-manager factory around the network call (bf16)
    channels_last: bool = False

    def __call__(self, model, x0, y, gen):
        B, device = x0.shape[0], x0.device
        drawn = self.draw_t(B, gen).to(device=device)
        t = drawn.to(torch.float32)
        schedule = _OneTime(self.schedule, t, t if drawn.is_floating_point() else drawn)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        if self.noise_offset > 0:
            off_shape = (B, x0.shape[1]) + (1,) * (x0.ndim - 2) if x0.ndim > 2 else (B, 1)
            eps = eps + self.noise_offset * torch.randn(off_shape, generator=gen, device=device)
        if y is not None:
            if self.class_conditional:
                drop = torch.rand((B,), generator=gen, device=device) < self.cond_drop_prob
                y = torch.where(drop, torch.full_like(y, self.null_class), y)
            else:
                y = None
        x_t = broadcast_to_batch(schedule.alpha(t), x0) * x0 + broadcast_to_batch(schedule.sigma(t), x0) * eps
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            out = model(x_t, t, y)
        if self.learned_variance:  # iDDPM: the first C channels are the parameterization's output, the rest v
            mean_out, var_out = out.float().chunk(2, dim=1)
            loss = hybrid_loss(
                mean_out,
                var_out,
                x0,
                eps,
                t.round().long(),
                self.schedule,
                parameterization=self.parameterization,
                lambda_vlb=self.lambda_vlb,
            )
        else:
            loss = diffusion_loss(
                out.float(),
                x0,
                eps,
                t,
                schedule,
                parameterization=self.parameterization,
                weighting=self.weighting,
                weighting_options=self.weighting_options,
            )
        if self.history is not None:
            bins = T.bin_of(self.schedule, t, self.history.num_bins)
            self.history.update(bins, loss.detach())
            loss = loss * self.history.weights(bins).to(loss)
        return loss


class _OneTime:
    """A schedule that knows alpha, sigma and lam of the step's time tensor: x_t needs alpha and sigma, and the loss
    asks for them (and lam) again. All three come from one `alpha_sigma_lam` call on the times as drawn (integer
    steps of a discrete schedule are a table lookup there); other times and every other attribute go to the
    schedule itself."""

    def __init__(self, schedule, t, drawn):
        self._schedule, self._t, self._drawn, self._values = schedule, t, drawn, None

    def __getattr__(self, name):
        return getattr(self._schedule, name)

    def _of(self, index, name, t):
        if t is not self._t:
            return getattr(self._schedule, name)(t)
        if self._values is None:
            self._values = self._schedule.alpha_sigma_lam(self._drawn)
        return self._values[index]

    def alpha(self, t):
        return self._of(0, "alpha", t)

    def sigma(self, t):
        return self._of(1, "sigma", t)

    def lam(self, t):
        return self._of(2, "lam", t)
