"""`diffspec-sample` end to end in subprocesses: outputs, torch blocked, and every bad input giving a clear message."""

import os

import numpy as np
import pytest
from PIL import Image
from rt_helpers import run_cli


def test_torch_blocked_import_and_sampling_run(models, tmp_path):
    """The runtime imports and samples with `torch` (and the `onnx` package) made unimportable."""
    out = tmp_path / "grid.png"
    r = run_cli(
        models["image_cond"],
        "--sampler",
        "ddpm",
        "--steps",
        "8",
        "-n",
        "12",
        "--seed",
        "0",
        "--guidance-scale",
        "2",
        "--out",
        out,
        "--quiet",
        block_torch=True,
    )
    assert r.returncode == 0, r.stderr
    assert out.exists() and "CPUExecutionProvider" in r.stdout
    probe = run_cli("--list-samplers", block_torch=True)
    assert probe.returncode == 0 and "dpmpp_2m" in probe.stdout


def test_png_and_npz_outputs_in_the_original_range(models, tmp_path):
    png, npz, npy = tmp_path / "g.png", tmp_path / "s.npz", tmp_path / "s.npy"
    args = [models["image_cond"], "--sampler", "dpmpp_2m", "--steps", "6", "-n", "10", "--seed", "1", "--quiet"]
    for out in (png, npz, npy):
        r = run_cli(*args, "--out", out)
        assert r.returncode == 0, r.stderr
    img = Image.open(png)
    assert img.mode == "L" and img.size[0] >= 4 * 8
    data = np.load(npz)
    assert data["samples"].shape == (10, 1, 8, 8) and data["samples"].dtype == np.float32
    np.testing.assert_array_equal(data["labels"], np.arange(10) % 10)
    np.testing.assert_array_equal(data["indices"], np.arange(10))
    assert data["samples"].min() >= 0.0 and data["samples"].max() <= 16.0 and data["samples"].max() > 2.0
    np.testing.assert_array_equal(np.load(npy), data["samples"])  # same seed, same samples
    # one sample regenerated alone with --index
    one = tmp_path / "one.npz"
    r = run_cli(*args, "--index", "7", "--out", one)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(one)["samples"][0], data["samples"][7], rtol=0, atol=1e-4)
    assert np.load(one)["labels"].tolist() == [7]


def test_points_scatter_and_options(models, tmp_path):
    out = tmp_path / "points.png"
    r = run_cli(
        models["points"],
        "--sampler",
        "dpmpp_2m_sde",
        "--eta",
        "0.5",
        "--steps",
        "6",
        "-n",
        "200",
        "--grid",
        "karras",
        "--rho",
        "5",
        "--batch-size",
        "64",
        "--class-label",
        "1",
        "--out",
        out,
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert Image.open(out).mode == "RGB"
    npz = tmp_path / "points.npz"
    r = run_cli(models["points"], "--steps", "4", "-n", "5", "--class-label", "0,2", "--out", npz, "--quiet")
    assert r.returncode == 0, r.stderr
    assert np.load(npz)["labels"].tolist() == [0, 2, 0, 2, 0]


def test_cuda_request_without_cuda(models, tmp_path):
    r = run_cli(models["points"], "--device", "cuda", "-n", "2", "--steps", "2", "--out", tmp_path / "a.npy")
    assert r.returncode != 0 and "CUDAExecutionProvider" in r.stderr and "--allow-cpu-fallback" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli(
        models["points"],
        "--device",
        "cuda",
        "--allow-cpu-fallback",
        "-n",
        "2",
        "--steps",
        "2",
        "--out",
        tmp_path / "a.npy",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert "running on CPUExecutionProvider" in r.stderr and "CPUExecutionProvider" in r.stdout


BAD = [
    ("not_onnx", [], "not a readable ONNX model"),
    ("truncated", [], "not a readable ONNX model"),
    ("no_metadata", [], "no diffspec metadata (missing diffspec.format"),
    ("missing", [], "does not exist"),
    ("points", ["--sampler", "nope"], "unknown sampler 'nope': expected one of"),
    ("points", ["--steps", "5000"], "steps=5000"),
    ("points", ["--sampler", "flow_euler"], "needs the 'flow' schedule"),
    ("points", ["--sampler", "dpmpp_2m", "--eta", "0.3"], "sampler 'dpmpp_2m' has no option 'eta'"),
    ("points", ["--class-label", "3"], "class label 3 is out of range: this model has classes 0..2"),
    ("points_uncond", ["--guidance-scale", "3"], "needs a class-conditional model"),
    ("points_uncond", ["--class-label", "1"], "this model is unconditional"),
    ("points", ["-n", "0"], "-n 0: expected the number of samples, at least 1"),
    ("points", ["--out", "/nonexistent-dir/x.png"], "does not exist"),
    ("points", ["--out", "{model}/x.png"], "does not exist"),
    ("points", ["--out", "samples.txt"], "expected a name ending in .png, .npy, .npz"),
    ("image", ["--out", "{tmp}"], "is a directory"),
    ("points", ["--grid", "leading", "--rho", "3"], "grid 'leading' has no option 'rho'"),
    ("image", ["--mask", "{tmp}/nomask.png", "--init-image", "{tmp}/noinit.png"], "does not exist"),
    ("image", ["--strength", "0.5"], "needs init"),
]


@pytest.mark.parametrize("key, extra, message", BAD, ids=[f"{k}-{' '.join(e)[:30]}" for k, e, _ in BAD])
def test_bad_input_gives_a_clear_message(models, tmp_path, key, extra, message):
    model = models.get(key, str(tmp_path / "missing.onnx"))
    extra = [e.replace("{tmp}", str(tmp_path)).replace("{model}", model) for e in extra]
    args = [model, "--steps", "3", "-n", "2", "--quiet", *extra]
    if "--out" not in extra:
        args += ["--out", str(tmp_path / "out.npy")]
    r = run_cli(*args)
    assert r.returncode not in (0,), r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    assert message in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "out.npy")


def test_inpainting_and_sdedit_from_png(models, tmp_path):
    """--init-image and --mask as PNG files: the white (keep) region of --mask, and the black region of
    --repaint-mask (diffusers' polarity), come back as the init image."""
    init = np.zeros((8, 8), dtype=np.uint8)
    init[:, ::2] = 255
    Image.fromarray(init).save(tmp_path / "init.png")
    keep_top = np.zeros((8, 8), dtype=np.uint8)
    keep_top[:4] = 255  # keep the top half, generate the bottom half
    Image.fromarray(keep_top).save(tmp_path / "mask.png")
    Image.fromarray(255 - keep_top).save(tmp_path / "repaint.png")
    for flag, mask in (("--mask", "mask.png"), ("--repaint-mask", "repaint.png")):
        out = tmp_path / "inpainted.npz"
        r = run_cli(
            models["image"],
            "--steps",
            "6",
            "-n",
            "3",
            "--init-image",
            tmp_path / "init.png",
            flag,
            tmp_path / mask,
            "--out",
            out,
            "--quiet",
        )
        assert r.returncode == 0, r.stderr
        x = np.load(out)["samples"][:, 0]
        np.testing.assert_allclose(x[:, :4], np.broadcast_to(init[:4] / 255.0 * 16.0, (3, 4, 8)), atol=1e-4)
        assert np.abs(x[:, 4:] - init[4:] / 255.0 * 16.0).max() > 1.0
    out = tmp_path / "edit.npy"
    r = run_cli(
        models["image"],
        "--steps",
        "10",
        "-n",
        "2",
        "--init-image",
        tmp_path / "init.png",
        "--strength",
        "0.3",
        "--sampler",
        "ddim",
        "--out",
        out,
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert np.abs(np.load(out)[:, 0] - init / 255.0 * 16.0).mean() < 4.0
