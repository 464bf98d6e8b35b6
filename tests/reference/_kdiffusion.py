"""Helpers for comparing the reference with k-diffusion 0.1.1.post1 itself.

k-diffusion's `sampling` module is loaded by `diffspec.conformance.kdiffusion.load_sampling` (without the package
`__init__` and its training stack); this file only adds the model adapter and the replayed noise the comparison
tests share.
"""

import numpy as np
import torch
from diffspec.conformance.kdiffusion import load_sampling, sampler_functions

__all__ = ["ReplayedNoise", "edm_model", "load_sampling", "sampler_names"]


def sampler_names():
    """The names of every `sample_*` function in k_diffusion.sampling, without the prefix."""
    return sorted(name.removeprefix("sample_") for name in sampler_functions())


def edm_model(mixture, calls=None):
    """k-diffusion's model(x, sigma) -> denoised for data `mixture` in EDM's world (alpha = 1, sigma = t), float64."""

    def model(x, sigma):
        sigma = sigma.detach().double().cpu().numpy()
        if calls is not None:
            calls.append(float(sigma.reshape(-1)[0]))
        out = mixture.x0_mean(x.detach().double().cpu().numpy(), 1.0, sigma)
        return torch.from_numpy(np.asarray(out, dtype=np.float64))

    return model


class ReplayedNoise:
    """The same standard-normal draws for diffspec (`noise(shape)`) and, through a map, for k-diffusion.

    `draws` records every array handed to diffspec; k-diffusion's `noise_sampler(sigma, sigma_next)` is then built
    from those arrays by the caller, following the sampler's documented draw order.
    """

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.draws = []

    def __call__(self, shape):
        z = self.rng.standard_normal(shape)
        self.draws.append(z)
        return z
