"""Validation pictures: the runtime's one PNG writer (`diffspec.runtime.output`, numpy + Pillow) serves the trainer.

Samples arrive in model space, [-1, 1]. Images become a grid, 2-D points a scatter plot; anything else has no
picture and is kept as .npy only.
"""

from pathlib import Path

import numpy as np

MODEL_RANGE = (-1.0, 1.0)


def has_picture(kind: str, shape: tuple) -> bool:
    """Whether samples of this kind and shape can be drawn (2-D points; images with 1 or 3 channels)."""
    return (kind == "points" and tuple(shape) == (2,)) or (kind == "image" and len(shape) == 3 and shape[0] in (1, 3))


def pixels(samples: np.ndarray, kind: str) -> np.ndarray:
    """uint8 pixels of the picture of model-space samples: (H, W) grey or (H, W, 3) RGB."""
    from diffspec.runtime.output import image_grid, scatter_image

    if kind == "points":
        return scatter_image(samples, value_range=MODEL_RANGE)
    return image_grid(samples, MODEL_RANGE)


def write_samples_png(samples: np.ndarray, path: Path, kind: str) -> Path:
    """The picture of model-space samples as a PNG, written atomically by the runtime's writer."""
    from diffspec.runtime.output import write_samples

    return Path(write_samples(path, samples, kind=kind, value_range=MODEL_RANGE))
