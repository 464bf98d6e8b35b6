"""ADM-style UNet (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", the improved-diffusion/guided-diffusion
architecture at small scale).

ResBlocks with GroupNorm + SiLU and a timestep scale-shift (h = GN(h) * (1 + scale) + shift), multi-head
self-attention at chosen feature-map resolutions, strided-conv downsampling and nearest + conv upsampling,
skip connections from every encoder block, class labels through an embedding with a null class
(`num_classes`) for classifier-free guidance, and optionally a learned variance (2 C output channels: the
parameterization's output then the variance interpolation v of Nichol & Dhariwal 2021, eq. 15).
No data-dependent Python control flow: the graph exports to ONNX with a dynamic batch.
"""

import math

import torch
from diffspec.trainer.models.embedding import TimeClassEmbedding, zero_module
from torch import nn
from torch.nn import functional as F


def _norm(ch, groups):
    g = math.gcd(ch, groups)
    return nn.GroupNorm(g, ch)


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, emb_dim, *, groups=32, dropout=0.0):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = _norm(out_ch, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(e))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions (explicit matmul + softmax: exports everywhere)."""

    def __init__(self, ch, *, heads=4, groups=32):
        super().__init__()
        if ch % heads:
            raise ValueError(f"attention with {ch} channels and heads={heads}: channels must divide by heads")
        self.heads = heads
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = zero_module(nn.Conv1d(ch, ch, 1))

    def forward(self, x):
        b, c, hh, ww = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, hh * ww))
        q, k, v = qkv.reshape(b * self.heads, 3 * (c // self.heads), hh * ww).chunk(3, dim=1)
        scale = 1.0 / math.sqrt(math.sqrt(c // self.heads))
        w = torch.softmax(torch.matmul((q * scale).transpose(1, 2), k * scale).float(), dim=-1).to(q.dtype)
        a = torch.matmul(v, w.transpose(1, 2)).reshape(b, c, hh * ww)
        return x + self.proj(a).reshape(b, c, hh, ww)


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """forward(x (B, C, H, W), t (B,), y=None (B,) int64) -> (B, C or 2 C, H, W).

    `attention_resolutions` are feature-map sizes (e.g. (16, 8) for a 32x32 input with channel_mult (1, 2, 2)).
    """

    def __init__(
        self,
        *,
        in_channels=1,
        image_size=8,
        model_channels=64,
        channel_mult=(1, 2),
        num_res_blocks=2,
        attention_resolutions=(4,),
        num_heads=4,
        groups=32,
        dropout=0.0,
        num_classes=None,
        time_scale=1.0,
        learned_variance=False,
    ):
        super().__init__()
        levels = len(channel_mult)
        if image_size % (2 ** (levels - 1)):
            raise ValueError(
                f"image_size={image_size} with channel_mult={tuple(channel_mult)}: the size must divide "
                f"by 2^{levels - 1} (one halving per extra level)"
            )
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.null_class = num_classes if num_classes else None
        self.learned_variance = bool(learned_variance)
        emb_dim = 4 * model_channels
        self.embed = TimeClassEmbedding(model_channels, emb_dim, num_classes=num_classes, time_scale=time_scale)
        self.inp = nn.Conv2d(in_channels, model_channels, 3, padding=1)

        # Encoder: every module's output is pushed as a skip.
        self.down = nn.ModuleList()
        skips, ch, res = [model_channels], model_channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, model_channels * mult, emb_dim, groups=groups, dropout=dropout)]
                ch = model_channels * mult
                if res in attention_resolutions:
                    layers.append(AttentionBlock(ch, heads=num_heads, groups=groups))
                self.down.append(nn.ModuleList(layers))
                skips.append(ch)
            if level < levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, emb_dim, groups=groups, dropout=dropout),
                AttentionBlock(ch, heads=num_heads, groups=groups),
                ResBlock(ch, ch, emb_dim, groups=groups, dropout=dropout),
            ]
        )
        # Decoder: num_res_blocks + 1 blocks per level, each consuming one skip.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), model_channels * mult, emb_dim, groups=groups, dropout=dropout)]
                ch = model_channels * mult
                if res in attention_resolutions:
                    layers.append(AttentionBlock(ch, heads=num_heads, groups=groups))
                if level > 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    res *= 2
                self.up.append(nn.ModuleList(layers))
        out_ch = in_channels * (2 if learned_variance else 1)
        self.out = nn.Sequential(_norm(ch, groups), nn.SiLU(), zero_module(nn.Conv2d(ch, out_ch, 3, padding=1)))

    @staticmethod
    def _run_blocks(layers, h, e):
        for layer in layers:
            h = layer(h, e) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x, t, y=None):
        e = self.embed(t, y)
        h = self.inp(x.to(self.inp.weight.dtype))
        hs = [h]
        for layers in self.down:
            h = self._run_blocks(layers, h, e)
            hs.append(h)
        h = self._run_blocks(self.mid, h, e)
        for layers in self.up:
            h = self._run_blocks(layers, torch.cat([h, hs.pop()], dim=1), e)
        return self.out(h)
