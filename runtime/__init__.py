"""diffspec.runtime: sample from an exported `.onnx` file with numpy + onnxruntime, on CUDA or CPU; no torch.

    from diffspec.runtime import Model, sample
    model = Model.load("model.onnx", device="auto")      # provider actually used: model.provider
    x = sample(model, sampler="dpmpp_2m", steps=20, n=64, seed=0)   # (64, *data_shape), original value range
    x0_hat = model.denoise(x_t, t, y)                     # float64 in and out, float32 network

The schedule, parameterization, data scaling and classes come from the file's metadata
(`diffspec.reference.modelcard.ModelCard`); the samplers are the reference's (`diffspec.reference.samplers`).
Command line: `diffspec-sample model.onnx --sampler dpmpp_2m --steps 20 -n 64 --seed 0 --out grid.png`.
"""

from diffspec.runtime.model import Model, ModelFileError, ProviderError
from diffspec.runtime.output import write_samples
from diffspec.runtime.sampling import (
    LearnedVariance,
    SampleNoise,
    labels_for,
    make_denoiser,
    make_sampling_grid,
    sample,
)

__all__ = [
    "LearnedVariance",
    "Model",
    "ModelFileError",
    "ProviderError",
    "SampleNoise",
    "labels_for",
    "make_denoiser",
    "make_sampling_grid",
    "sample",
    "write_samples",
]
