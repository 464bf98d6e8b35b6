"""Time and class conditioning shared by the networks.

The time input `t` is the schedule's own time (float, shape (B,)); each network multiplies it by its
`time_scale` (e.g. 1000 / t_max) before the sinusoidal embedding, so every schedule lands in the frequency
range the embedding was designed for (DDPM's integer steps 0..999). `t` and its embedding stay in float32
even when the weights are bf16/fp16 (fp16 rounds t to 0.5 near 1000); the embedding is cast to the weights'
dtype only when it enters the first Linear.
"""

import math

import torch
from torch import nn


def timestep_embedding(t, dim, *, max_period=10000.0):
    """Sinusoidal embedding of float32 times t (B,) -> (B, dim) float32 (Vaswani et al. 2017; DDPM's form)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeClassEmbedding(nn.Module):
    """t (B,) [and y (B,) int64] -> conditioning vector (B, emb_dim).

    Class labels use an embedding table of num_classes + 1 rows: row `num_classes` is the null class ("no
    label"), used for condition dropout in training and the unconditional branch of classifier-free guidance.
    y=None means the null class for every sample.
    """

    def __init__(self, freq_dim, emb_dim, *, num_classes=None, time_scale=1.0):
        super().__init__()
        self.freq_dim, self.time_scale, self.num_classes = int(freq_dim), float(time_scale), num_classes
        self.mlp = nn.Sequential(nn.Linear(freq_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

    def forward(self, t, y=None):
        emb = timestep_embedding(t.to(torch.float32) * self.time_scale, self.freq_dim)
        e = self.mlp(emb.to(self.mlp[0].weight.dtype))
        if self.label is not None:
            if y is None:
                y = torch.full(t.shape, self.num_classes, dtype=torch.long, device=t.device)
            e = e + self.label(y)
        return e


def zero_module(module):
    """Zero a layer's parameters (ADM's zero-initialised output projections)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module
