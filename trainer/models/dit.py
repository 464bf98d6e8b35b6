"""A small DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

Patchify with a strided conv, fixed 2-D sin-cos positional embedding, transformer blocks conditioned by
adaLN-Zero (shift, scale and a zero-initialised gate for the attention and MLP branches, regressed from the
time + class embedding), a final adaLN layer and unpatchify. Class labels with a null class as in the UNet.
"""

import math

import numpy as np
import torch
from diffspec.trainer.models.embedding import TimeClassEmbedding, zero_module
from torch import nn
from torch.nn import functional as F


def _sincos_2d(dim, grid):
    """Fixed 2-D sin-cos positional embedding (MAE / DiT), shape (grid*grid, dim)."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gy, gx = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    return torch.tensor(np.concatenate([one_d(dim // 2, gy), one_d(dim // 2, gx)], axis=1), dtype=torch.float32)


def _modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = zero_module(nn.Linear(dim, 6 * dim))

    def _attn(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        w = torch.softmax((q @ k.transpose(-1, -2)).float() / math.sqrt(d // self.heads), dim=-1).to(q.dtype)
        return self.proj((w @ v).transpose(1, 2).reshape(b, n, d))

    def forward(self, x, c):
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c)).chunk(6, dim=-1)
        x = x + g1[:, None] * self._attn(_modulate(self.norm1(x), sh1, sc1))
        return x + g2[:, None] * self.mlp(_modulate(self.norm2(x), sh2, sc2))


class DiT(nn.Module):
    """forward(x (B, C, H, W), t (B,), y=None) -> (B, C or 2 C, H, W)."""

    def __init__(
        self,
        *,
        in_channels=1,
        image_size=8,
        patch_size=2,
        hidden=128,
        depth=4,
        num_heads=4,
        mlp_ratio=4.0,
        num_classes=None,
        time_scale=1.0,
        learned_variance=False,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size}, patch_size={patch_size}: the size must divide by the patch")
        if hidden % num_heads or hidden % 4:
            raise ValueError(f"hidden={hidden}: expected a multiple of 4 and of num_heads={num_heads}")
        self.in_channels, self.image_size, self.patch, self.num_classes = (
            in_channels,
            image_size,
            patch_size,
            num_classes,
        )
        self.null_class = num_classes if num_classes else None
        self.learned_variance = bool(learned_variance)
        self.out_channels = in_channels * (2 if learned_variance else 1)
        self.grid = image_size // patch_size
        self.embed_x = nn.Conv2d(in_channels, hidden, patch_size, stride=patch_size)
        self.register_buffer("pos", _sincos_2d(hidden, self.grid)[None], persistent=False)
        self.embed = TimeClassEmbedding(256, hidden, num_classes=num_classes, time_scale=time_scale)
        self.blocks = nn.ModuleList(DiTBlock(hidden, num_heads, mlp_ratio) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_ada = zero_module(nn.Linear(hidden, 2 * hidden))
        self.final = zero_module(nn.Linear(hidden, patch_size * patch_size * self.out_channels))

    def forward(self, x, t, y=None):
        b = x.shape[0]
        h = self.embed_x(x.to(self.embed_x.weight.dtype)).flatten(2).transpose(1, 2) + self.pos.to(
            self.embed_x.weight.dtype
        )
        c = self.embed(t, y)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(F.silu(c)).chunk(2, dim=-1)
        h = self.final(_modulate(self.final_norm(h), shift, scale))
        g, p, oc = self.grid, self.patch, self.out_channels
        h = h.reshape(b, g, g, p, p, oc).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(b, oc, g * p, g * p)
