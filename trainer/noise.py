"""The one door through which randomness enters a torch sampler (the noise contract, docs/architecture.md).

The torch twin of `diffspec.reference.noise`: a `torch.Generator`, or a callable shape -> standard-normal array
(a tensor, or anything `torch.as_tensor` takes, such as the numpy draws the reference consumed), so the
reference, the trainer and the runtime can be driven draw for draw.
"""

import torch


def as_noise_source(noise, *, sampler, like):
    """A callable shape -> standard-normal tensor with the dtype and device of `like`.

    A torch.Generator draws on its own device (then moves to like's); a callable is used as is and its output
    cast. None raises: a stochastic sampler never falls back on the global generator.
    """
    if noise is None:
        raise ValueError(
            f"noise=None: {sampler} is stochastic; pass noise=torch.Generator().manual_seed(seed) "
            "or a callable that returns a standard-normal array of a given shape"
        )
    dtype, device = like.dtype, like.device
    if isinstance(noise, torch.Generator):
        gen = noise

        def draw_generator(shape):
            return torch.randn(tuple(shape), generator=gen, dtype=dtype, device=gen.device).to(device)

        return draw_generator
    if not callable(noise):
        raise ValueError(f"noise={noise!r}: expected a torch.Generator or a callable shape -> array")

    def draw(shape):
        out = torch.as_tensor(noise(tuple(shape)), dtype=dtype, device=device)
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"noise callable returned shape {tuple(out.shape)}: expected {tuple(shape)}")
        return out

    return draw
