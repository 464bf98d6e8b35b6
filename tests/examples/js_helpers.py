"""Helpers for the JavaScript examples: a tiny digits-shaped pipeline graph exported at test time.

The examples' packages come from `bash scripts/setup-examples.sh` (npm install --ignore-scripts, Debian's
chromium); a missing install fails with that instruction instead of skipping.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from diffspec.export.pipeline import export_pipeline, pipeline_draws, read_pipeline_card  # noqa: E402
from diffspec.reference.modelcard import PREFIX  # noqa: E402
from diffspec.reference.schedules import make_schedule  # noqa: E402
from diffspec.runtime import sampling  # noqa: E402
from diffspec.runtime.model import Model  # noqa: E402
from rt_helpers import image_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SETUP = "run `bash scripts/setup-examples.sh` first (npm install --ignore-scripts in examples/node and examples/web)"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(f"{what} is missing ({path}): {SETUP}")
    return path


def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.fail("node is not on PATH: the examples need Node.js 20 or later")
    return exe


class Digits:
    """A conditional 1x8x8 model in 0..16 (a smooth stand-in network), its pipeline graph and Python's answer."""

    def __init__(self, d: Path, *, sampler="ddpm", steps=8, guidance=2.0, n=6, seed=3):
        net, _ = image_model(d / "net.onnx", num_classes=10)
        model = onnx.load(net)
        for p in model.metadata_props:
            if p.key == PREFIX + "schedule":
                p.value = json.dumps(make_schedule("linear").to_dict())
        onnx.save(model, net)
        self.network = Path(net)
        self.path = export_pipeline(net, d / "digits-sampler.onnx", sampler=sampler, steps=steps, guidance=guidance)
        self.meta = read_pipeline_card(self.path)
        self.n, self.seed = n, seed
        self.model = Model.load(net, device="cpu")
        self.x_T, self.noise = pipeline_draws(self.meta, self.model.data_shape, seed, range(n))
        self.draws = d / "draws.bin"
        self.draws.write_bytes(np.concatenate([self.x_T.ravel(), self.noise.ravel()]).astype("<f4").tobytes())
        self.labels = np.arange(n) % 10  # what both examples and the runtime use by default
        self.expected = sampling.sample(
            self.model, sampler=sampler, steps=steps, indices=list(range(n)), seed=seed, guidance_scale=guidance
        )


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    return Digits(tmp_path_factory.mktemp("digits"))
