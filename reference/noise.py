"""The one door through which randomness enters a sampler (the noise contract, docs/architecture.md)."""

import numpy as np


def as_noise_source(noise, *, sampler):
    """A callable shape -> standard-normal float64 array.

    A numpy Generator is used through its `standard_normal`; a callable is used as is, which is how tests feed
    the reference, the torch trainer and the runtime the same draws. `None` raises: a stochastic sampler never
    falls back on hidden global randomness.
    """
    if noise is None:
        raise ValueError(
            f"noise=None: {sampler} is stochastic; pass noise=np.random.default_rng(seed) "
            "or a callable that returns a standard-normal array of a given shape"
        )
    if isinstance(noise, np.random.Generator):
        gen = noise
        return lambda shape: gen.standard_normal(shape)
    if not callable(noise):
        raise ValueError(f"noise={noise!r}: expected a numpy.random.Generator or a callable shape -> array")

    def draw(shape):
        out = np.asarray(noise(tuple(shape)), dtype=np.float64)
        if out.shape != tuple(shape):
            raise ValueError(f"noise callable returned shape {out.shape}: expected {tuple(shape)}")
        return out

    return draw


class CountingNoise:
    """A seeded noise source that records every draw's shape: for tests of the draw-count contract."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.shapes = []

    def __call__(self, shape):
        self.shapes.append(tuple(shape))
        return self.rng.standard_normal(shape)
