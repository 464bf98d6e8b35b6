"""The reference is numpy-only: it imports and samples with torch, diffusers, onnx and onnxruntime blocked."""

import subprocess
import sys

_PROGRAM = """
import sys
for blocked in ("torch", "diffusers", "onnx", "onnxruntime", "scipy", "PIL"):
    sys.modules[blocked] = None  # any import of them now raises ImportError
import pkgutil, importlib
import numpy as np
import diffspec.reference as R
for info in pkgutil.walk_packages(R.__path__, "diffspec.reference."):
    importlib.import_module(info.name)
from diffspec.reference.samplers import SAMPLERS
schedule = R.make_schedule("linear")
grid = R.make_grid("karras", schedule, 10)
x = SAMPLERS["dpmpp_2m"](R.standard_mixture_2d().denoiser(schedule), np.ones((4, 2)), grid, schedule)
print("ok", x.shape)
"""


def test_reference_imports_and_samples_without_torch_or_onnx():
    done = subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "(4,", "2)"]
