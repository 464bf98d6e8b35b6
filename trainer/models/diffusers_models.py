"""diffusers' own networks with the trainer's contract forward(x, t, y=None) (needs the `diffusers` extra).

`DiffusersUNet2D` wraps `diffusers.UNet2DModel` (Ho et al. 2020's UNet as diffusers builds it) and `DiffusersDiT`
wraps `diffusers.DiTTransformer2DModel` (Peebles & Xie 2023). The wrapped module is the attribute `net`, kept
exactly as diffusers defines it, so `diffspec.trainer.diffusers_io.save_diffusers` writes it as a folder that
diffusers loads with `from_pretrained`.

Conventions, chosen so that the saved folder means the same thing to a diffusers pipeline:
- time: the network's timestep is t * time_scale. With a discrete schedule t is already diffusers' integer
  timestep, so time_scale must stay 1 for a pipeline to feed it the same times.
- labels 0..num_classes-1 and the null class num_classes (classifier-free guidance). UNet2DModel gets
  num_class_embeds = num_classes + 1 (the last row is the null class); DiTTransformer2DModel's label table has the
  null row num_embeds_ada_norm already. DiT's own random label dropout is switched off (the trainer drops labels
  itself, with its own generator); y=None means the null class.
- learned variance: 2 in_channels outputs, the second half improved DDPM's v (Nichol & Dhariwal 2021, eq. 15),
  which diffusers' DDPMScheduler reads with variance_type="learned_range".
"""

import torch
from torch import nn


def _diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise ValueError("the diffusers-* archs need diffusers: pip install 'diffspec[diffusers]'") from err
    return diffusers


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: expected a positive integer")
    return value


class _Wrapper(nn.Module):
    def __init__(self, net, *, num_classes, time_scale, learned_variance):
        super().__init__()
        time_scale = float(time_scale)
        if not time_scale > 0:
            raise ValueError(f"time_scale={time_scale!r}: expected a positive number")
        self.net, self.num_classes, self.time_scale = net, num_classes, time_scale
        self.null_class = num_classes
        self.learned_variance = bool(learned_variance)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes is not None and y is None:
            y = torch.full((x.shape[0],), self.null_class, dtype=torch.long, device=x.device)
        timestep = t if self.time_scale == 1.0 else t * self.time_scale
        labels = None if self.num_classes is None else y
        return self.net(x, timestep, class_labels=labels, return_dict=False)[0]


class DiffusersUNet2D(_Wrapper):
    """diffusers.UNet2DModel: forward(x (B, C, H, W), t (B,), y=None) -> (B, C or 2 C, H, W).

    `block_out_channels`: channels per level (the image halves between levels); `attention`: one flag per level
    (self-attention blocks there; default: the lowest resolution only); `layers_per_block`, `norm_num_groups`,
    `attention_head_dim`, `dropout` as in diffusers.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        block_out_channels: tuple | list = (32, 64),
        layers_per_block: int = 1,
        attention: tuple | list | None = None,
        norm_num_groups: int = 8,
        attention_head_dim: int = 8,
        dropout: float = 0.0,
        num_classes: int | None = None,
        time_scale: float = 1.0,
        learned_variance: bool = False,
    ) -> None:
        diffusers = _diffusers()
        _positive_int("in_channels", in_channels)
        _positive_int("image_size", image_size)
        channels = tuple(int(c) for c in block_out_channels)
        levels = len(channels)
        if levels < 1 or image_size % (2 ** (levels - 1)):
            raise ValueError(
                f"image_size={image_size} with block_out_channels={channels}: the size must divide by "
                f"2^(levels - 1) = {2 ** max(levels - 1, 0)}"
            )
        if any(c % norm_num_groups for c in channels):
            raise ValueError(
                f"block_out_channels={channels}: every entry must divide by norm_num_groups={norm_num_groups}"
            )
        attention = tuple(bool(a) for a in (attention if attention is not None else [False] * (levels - 1) + [True]))
        if len(attention) != levels:
            raise ValueError(f"attention={list(attention)}: expected one flag per level ({levels})")
        if num_classes is not None:
            _positive_int("num_classes", num_classes)
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
        net = diffusers.UNet2DModel(
            sample_size=image_size,
            in_channels=in_channels,
            out_channels=in_channels * (2 if learned_variance else 1),
            block_out_channels=channels,
            layers_per_block=layers_per_block,
            down_block_types=down,
            up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)),
            norm_num_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
            dropout=dropout,
            num_class_embeds=None if num_classes is None else num_classes + 1,
        )
        super().__init__(net, num_classes=num_classes, time_scale=time_scale, learned_variance=learned_variance)


class DiffusersDiT(_Wrapper):
    """diffusers.DiTTransformer2DModel: forward(x (B, C, H, W), t (B,), y=None) -> (B, C or 2 C, H, W).

    Class-conditional only: its adaLN-Zero blocks need a label embedding (num_embeds_ada_norm = num_classes).
    `num_layers`, `num_attention_heads`, `attention_head_dim`, `patch_size` as in diffusers.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        patch_size: int = 2,
        num_layers: int = 4,
        num_attention_heads: int = 4,
        attention_head_dim: int = 16,
        dropout: float = 0.0,
        num_classes: int | None = None,
        time_scale: float = 1.0,
        learned_variance: bool = False,
    ) -> None:
        diffusers = _diffusers()
        _positive_int("in_channels", in_channels)
        _positive_int("image_size", image_size)
        if num_classes is None:
            raise ValueError(
                "diffusers-dit: DiTTransformer2DModel is class-conditional (its adaLN-Zero blocks embed "
                "a label): train on labelled data, or use --arch diffusers-unet2d"
            )
        _positive_int("num_classes", num_classes)
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size}, patch_size={patch_size}: the size must divide by the patch")
        net = diffusers.DiTTransformer2DModel(
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=in_channels * (2 if learned_variance else 1),
            num_layers=num_layers,
            dropout=dropout,
            sample_size=image_size,
            patch_size=patch_size,
            num_embeds_ada_norm=num_classes,
        )
        for module in net.modules():  # the trainer drops labels itself, with its own generator
            if type(module).__name__ == "LabelEmbedding":
                module.dropout_prob = 0.0
        super().__init__(net, num_classes=num_classes, time_scale=time_scale, learned_variance=learned_variance)


DIFFUSERS_ARCHS = {"diffusers-unet2d": DiffusersUNet2D, "diffusers-dit": DiffusersDiT}
