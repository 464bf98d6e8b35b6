"""examples/node: the pipeline graph under onnxruntime-node gives Python's samples for the same draws."""

import subprocess

import numpy as np
from diffspec.runtime.output import to_uint8
from js_helpers import EXAMPLES, node, require
from PIL import Image

SCRIPT = EXAMPLES / "node" / "sample.js"


def _run(*args, cwd):
    require(EXAMPLES / "node" / "node_modules" / "onnxruntime-node", "onnxruntime-node")
    return subprocess.run([node(), str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_node_samples_equal_python(digits, tmp_path):
    out = tmp_path / "sample.bin"
    png = tmp_path / "digits.png"
    r = _run(digits.path, "--n", digits.n, "--draws", digits.draws, "--raw-out", out, "--out", png, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = np.fromfile(out, dtype="<f4").reshape(digits.expected.shape)
    err = np.max(np.abs(got - digits.expected)) / np.max(np.abs(digits.expected))
    assert err <= 1e-5
    # the PNG: tile 0 (4x upscaled, after a 1 px border) is sample 0's pixels
    tile = np.asarray(Image.open(png))[1:33:4, 1:33:4]
    np.testing.assert_array_equal(tile, to_uint8(got[0, 0], (0.0, 16.0)))
    assert "ddpm, 8 steps" in r.stdout


def test_node_card_and_bad_input(digits, tmp_path):
    r = _run(digits.path, "--card", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '"sampler": "ddpm"' in r.stdout and '"num_classes": 10' in r.stdout
    short = tmp_path / "short.bin"
    short.write_bytes(digits.draws.read_bytes()[:-4])
    for args, message in [
        (["--n", digits.n, "--draws", short], "this pipeline needs (1 + S) * n * D"),
        (["--n", digits.n + 1, "--draws", digits.draws], "x_T ["),
        (["--label", "11"], "--label 11"),
        (["--guidance-scale", "3"], "guidance is fixed"),
    ]:
        r = _run(digits.path, *args, cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and "at " not in r.stderr
    r = _run(digits.network, cwd=tmp_path)
    assert r.returncode == 2 and "not a diffspec pipeline graph" in r.stderr
