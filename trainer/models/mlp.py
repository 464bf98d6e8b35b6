"""MLP denoiser for low-dimensional data (points of shape (B, D)).

Residual blocks h <- h + W2 silu(LN(W1 silu(h)) * (1 + scale) + shift), with (scale, shift) from the time
(and class) embedding: the same scale-shift conditioning as the UNet, at a size that trains on 2-D toys in
a minute or two on a CPU.
"""

from diffspec.trainer.models.embedding import TimeClassEmbedding, zero_module
from torch import nn
from torch.nn import functional as F


class _Block(nn.Module):
    def __init__(self, hidden, emb_dim, dropout):
        super().__init__()
        self.lin1 = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.emb = nn.Linear(emb_dim, 2 * hidden)
        self.drop = nn.Dropout(dropout)
        self.lin2 = nn.Linear(hidden, hidden)

    def forward(self, h, e):
        scale, shift = self.emb(F.silu(e)).chunk(2, dim=-1)
        r = self.norm(self.lin1(F.silu(h))) * (1 + scale) + shift
        return h + self.lin2(self.drop(F.silu(r)))


class MLP(nn.Module):
    """forward(x (B, D), t (B,), y=None (B,) int64) -> (B, out_dim); out_dim = 2 D with learned variance."""

    def __init__(
        self,
        *,
        dim=2,
        hidden=256,
        depth=4,
        emb_dim=None,
        freq_dim=64,
        num_classes=None,
        time_scale=1.0,
        dropout=0.0,
        learned_variance=False,
    ):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 0:
            raise ValueError(f"MLP(dim={dim}, hidden={hidden}, depth={depth}): expected dim, hidden >= 1, depth >= 0")
        emb_dim = emb_dim or hidden
        self.dim, self.num_classes = dim, num_classes
        self.null_class = num_classes if num_classes else None
        self.learned_variance = bool(learned_variance)
        self.embed = TimeClassEmbedding(freq_dim, emb_dim, num_classes=num_classes, time_scale=time_scale)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, emb_dim, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = zero_module(nn.Linear(hidden, dim * (2 if learned_variance else 1)))

    def forward(self, x, t, y=None):
        e = self.embed(t, y)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(F.silu(self.out_norm(h)))
