"""k-diffusion's `sampling` module, loaded from its file without the package `__init__`.

The package `__init__` imports its training stack (torchvision, accelerate, ...), and `k_diffusion.utils` imports
torchvision, which does not import beside this torch build. `sampling` needs only `utils.append_dims`, so it is
loaded under a private package name whose `utils` holds that one function.
"""

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

_PACKAGE = "_k_diffusion_sampling_only"


def _append_dims(x, target_dims):
    """k-diffusion's `utils.append_dims`: trailing singleton axes up to `target_dims`."""
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def load_sampling():
    """The module `k_diffusion.sampling` of the installed k-diffusion."""
    name = f"{_PACKAGE}.sampling"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed: pip install --no-deps k-diffusion==0.1.1.post1")
    path = Path(spec.submodule_search_locations[0]) / "sampling.py"
    package = types.ModuleType(_PACKAGE)
    package.__path__ = []
    utils = types.ModuleType(f"{_PACKAGE}.utils")
    utils.append_dims = _append_dims
    package.utils = utils
    sys.modules[_PACKAGE], sys.modules[utils.__name__] = package, utils
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def sampler_names():
    """The names of every `sample_*` function in k_diffusion.sampling, without the prefix."""
    sampling = load_sampling()
    return sorted(n.removeprefix("sample_") for n in dir(sampling) if n.startswith("sample_"))


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
