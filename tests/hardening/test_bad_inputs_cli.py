"""Bad input to `diffspec-sample`, run in-process: a non-zero exit, one line naming the argument, no traceback.

Also the failures a user cannot cause by a flag (a full disk, Ctrl-C, an out-of-memory, onnxruntime failing), made
to happen with monkeypatch, and the output rules: file modes, temporaries, the summary line, progress bars.
"""

import errno
import json
import os
import stat

import numpy as np
import pytest
from diffspec.runtime import cli, output, sampling
from hardening_helpers import (
    _metadata_with,
    assert_clean_failure,
    external_model,
    image_model,
    points_graph,
    points_model,
    run_cli,
    save,
)
from PIL import Image


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Models and input files, built once for the module."""
    d = tmp_path_factory.mktemp("cli")
    (d / "empty.onnx").write_bytes(b"")
    (d / "junk.onnx").write_bytes(b"\x08\x07" + os.urandom(200))
    (d / "folder.onnx").mkdir()
    np.save(d / "nan.npy", np.full((1, 4, 4), np.nan))
    np.save(d / "strings.npy", np.array(["a", "b"]))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(d / "two.npz", a=np.zeros((1, 4, 4)), b=np.zeros((1, 4, 4)))
    np.save(d / "init.npy", np.full((1, 4, 4), 0.5))
    (d / "garbage.npy").write_bytes(b"\x93NUMPY garbage that is not an array")
    (d / "garbage.npz").write_bytes(b"PK\x03\x04 not a zip")
    (d / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(np.full((4, 4), 128, dtype=np.uint8)).save(d / "init.png")
    (d / "secret").mkdir()
    (d / "secret" / "w.bin").write_bytes(np.zeros((2, 2), dtype=np.float32).tobytes())
    (d / "ext").mkdir()
    return {
        "dir": d,
        "points": points_model(d / "points.onnx"),
        "image": image_model(d / "image.onnx"),
        "image_uncond": image_model(d / "image_uncond.onnx", num_classes=0),
        "nometa": save(points_graph(), d / "nometa.onnx", metadata={}),
        "scale0": save(points_graph(), d / "scale0.onnx", metadata=_metadata_with(data__scale=0.0)),
        "traversal": external_model(d / "ext" / "m.onnx", "../secret/w.bin"),
    }


def _out(files, name="out.npy"):
    return str(files["dir"] / name)


# (id, model key or None for no model, extra argv ({d} = the files folder), words the message must contain)
RUNTIME = [
    ("seed-negative", "points", ["--seed", "-1"], "--seed"),
    ("seed-text", "points", ["--seed", "abc"], "--seed"),
    ("seed-too-big", "points", ["--seed", str(2**63)], "--seed"),
    ("steps-zero", "points", ["--steps", "0"], "--steps"),
    ("num-inference-steps-zero", "points", ["--num-inference-steps", "0"], "--num-inference-steps"),
    ("steps-float", "points", ["--steps", "2.5"], "--steps"),
    ("n-zero", "points", ["-n", "0"], "-n 0"),
    ("n-huge", "points", ["-n", str(10**12)], "-n=1000000000000"),
    ("index-huge", "points", ["--index", f"0-{10**12}"], "--index"),
    ("index-negative", "points", ["--index", "-3"], "--index"),
    ("index-text", "points", ["--index", "a-b"], "--index"),
    ("batch-size-zero", "points", ["--batch-size", "0"], "--batch-size"),
    ("strength-nan", "image", ["--init-image", "{d}/init.npy", "--strength", "nan"], "--strength"),
    ("strength-big", "image", ["--init-image", "{d}/init.npy", "--strength", "2"], "--strength"),
    ("strength-without-init", "image", ["--strength", "0.5"], "needs init"),
    ("guidance-nan", "points", ["--guidance-scale", "nan"], "--guidance-scale"),
    ("guidance-inf", "points", ["--guidance-scale", "inf"], "--guidance-scale"),
    ("guidance-negative", "points", ["--guidance-scale", "-2"], "guidance_scale=-2.0"),
    ("rescale-big", "points", ["--guidance-rescale", "5"], "--guidance-rescale"),
    ("guidance-unconditional", "image_uncond", ["--guidance-scale", "2"], "class-conditional"),
    ("eta-nan", "points", ["--sampler", "ddim", "--eta", "nan"], "--eta"),
    ("eta-range", "points", ["--sampler", "ddim", "--eta", "3"], "eta=3.0"),
    ("rho-inf", "points", ["--grid", "karras", "--rho", "inf"], "--rho"),
    ("order-text", "points", ["--sampler", "unipc", "--order", "two"], "--order"),
    ("threads-negative", "points", ["--threads", "-1"], "--threads"),
    ("sampler-unknown", "points", ["--sampler", "nope"], "nope"),
    ("grid-unknown", "points", ["--grid", "nope"], "nope"),
    ("option-of-other-sampler", "points", ["--sampler", "dpmpp_2m", "--eta", "0.3"], "has no option 'eta'"),
    ("learned-variance", "points", ["--sampler", "ddpm", "--variance", "learned_range"], "learned"),
    ("class-label-text", "points", ["--class-label", "abc"], "--class-label"),
    ("class-label-range", "points", ["--class-label", "9"], "class label 9"),
    ("class-label-unconditional", "image_uncond", ["--class-label", "1"], "unconditional"),
    ("device-unknown", "points", ["--device", "tpu"], "--device"),
    ("flag-unknown", "points", ["--bogus"], "--bogus"),
    ("out-suffix", "points", ["--out", "{d}/x.txt"], "x.txt"),
    ("out-folder-missing", "points", ["--out", "{d}/missing/x.png"], "does not exist"),
    ("out-is-folder", "points", ["--out", "{d}"], "is a directory"),
    ("init-missing", "image", ["--init-image", "{d}/none.png", "--strength", "0.5"], "none.png"),
    ("init-garbage-npy", "image", ["--init-image", "{d}/garbage.npy", "--strength", "0.5"], "garbage.npy"),
    ("init-garbage-npz", "image", ["--init-image", "{d}/garbage.npz", "--strength", "0.5"], "garbage.npz"),
    ("init-two-arrays", "image", ["--init-image", "{d}/two.npz", "--strength", "0.5"], "2 arrays"),
    ("init-pickle", "image", ["--init-image", "{d}/objects.npy", "--strength", "0.5"], "objects.npy"),
    ("init-strings", "image", ["--init-image", "{d}/strings.npy", "--strength", "0.5"], "strings.npy"),
    ("init-nan", "image", ["--init-image", "{d}/nan.npy", "--strength", "0.5"], "nan.npy"),
    ("init-garbage-png", "image", ["--init-image", "{d}/garbage.png", "--strength", "0.5"], "garbage.png"),
    ("init-png-for-points", "points", ["--init-image", "{d}/init.png", "--strength", "0.5"], "image model"),
    ("mask-garbage-png", "image", ["--init-image", "{d}/init.png", "--mask", "{d}/garbage.png"], "garbage.png"),
    ("mask-without-init", "image", ["--mask", "{d}/init.png"], "needs init"),
    ("mask-both-polarities", "image", ["--mask", "{d}/init.png", "--repaint-mask", "{d}/init.png"], "--mask"),
    ("model-missing", None, ["{d}/none.onnx"], "none.onnx"),
    ("model-folder", None, ["{d}/folder.onnx"], "is a directory"),
    ("model-empty", None, ["{d}/empty.onnx"], "is empty"),
    ("model-junk", None, ["{d}/junk.onnx"], "junk.onnx"),
    ("model-no-metadata", "nometa", [], "no diffspec metadata"),
    ("model-scale-zero", "scale0", [], "data.scale=0.0"),
    ("model-traversal", "traversal", [], "'../secret/w.bin'"),
    ("model-argument-missing", None, [], "model"),
]


@pytest.mark.parametrize("key, extra, words", [r[1:] for r in RUNTIME], ids=[r[0] for r in RUNTIME])
def test_sample_cli_rejects(files, key, extra, words):
    extra = [e.replace("{d}", str(files["dir"])) for e in extra]
    argv = ([files[key]] if key else []) + ["-n", "2", "--steps", "3", "--no-progress", *extra]
    if "--out" not in extra:
        argv += ["--out", _out(files)]
    code, out, err = run_cli(cli.main, argv)
    assert_clean_failure(code, err, words)
    lines = err.strip().splitlines()  # one line (argparse puts its usage above it)
    assert lines[-1].startswith("diffspec-sample: error:") and (len(lines) == 1 or lines[0].startswith("usage:"))
    assert out == ""  # nothing claims a run started
    assert not os.path.exists(_out(files))


def test_info_of_a_bad_model_is_refused_too(files):
    code, out, err = run_cli(cli.main, [files["scale0"], "--info"])
    assert_clean_failure(code, err, "data.scale=0.0")


# ---------------------------------------------------------------------------- failures caused from outside
def _raise(exc):
    def raiser(*args, **kwargs):
        raise exc

    return raiser


INJECTED = [  # (id, what to patch, the exception, exit code, words)
    ("disk-full-npy", (np, "save"), OSError(errno.ENOSPC, "No space left on device"), 1, "no space left on device"),
    (
        "disk-full-png",
        (Image.Image, "save"),
        OSError(errno.ENOSPC, "No space left on device"),
        1,
        "no space left on device",
    ),
    ("permission", (np, "save"), PermissionError(errno.EACCES, "Permission denied"), 1, "cannot write"),
    ("out-of-memory", (cli, "sample"), MemoryError(), 1, "out of memory"),
    ("ctrl-c", (cli, "sample"), KeyboardInterrupt(), 130, "interrupted"),
    ("floating-point", (cli, "sample"), FloatingPointError("2 of 2 samples contain NaN"), 1, "contain NaN"),
    ("unexpected", (cli, "sample"), ZeroDivisionError("division by zero"), 1, "ZeroDivisionError"),
    ("pil", (Image, "fromarray"), Image.DecompressionBombError("image too large"), 1, "image too large"),
]


@pytest.mark.parametrize("target, exc, status, words", [r[1:] for r in INJECTED], ids=[r[0] for r in INJECTED])
def test_sample_cli_reports_failures_from_outside_in_one_line(files, monkeypatch, tmp_path, target, exc, status, words):
    monkeypatch.setattr(*target, _raise(exc))
    suffix = ".png" if target[0] in (Image, Image.Image) else ".npy"
    out = tmp_path / f"samples{suffix}"
    model = files["image"]
    code, _, err = run_cli(cli.main, [model, "-n", "2", "--steps", "2", "--no-progress", "--out", out])
    assert code == status
    assert_clean_failure(code, err, words)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".diffspec-")]
    if "device" in words or "cannot write" in words:
        assert str(out) in err  # the path, never the temporary


def test_onnxruntime_failure_while_sampling_is_one_line(files, monkeypatch, tmp_path):
    from diffspec.runtime import model as runtime_model

    monkeypatch.setattr(runtime_model._PlainRunner, "__call__", _raise(RuntimeError("[ONNXRuntimeError] : 6")))
    code, _, err = run_cli(cli.main, [files["points"], "-n", "2", "--steps", "2", "--out", tmp_path / "s.npy"])
    assert_clean_failure(code, err, "onnxruntime failed", "ONNXRuntimeError")


# ------------------------------------------------------------------------------------------ output rules
@pytest.mark.parametrize("suffix", [".png", ".npz", ".npy"])
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_usual_mode(files, tmp_path, suffix, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / f"s{suffix}"
        code, _, err = run_cli(cli.main, [files["image"], "-n", "2", "--steps", "2", "--out", out])
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~umask


def test_temporaries_of_a_killed_run_are_pruned(files, tmp_path):
    dead = tmp_path / ".diffspec-999999999-abc.png"  # no such process
    alive = tmp_path / f".diffspec-{os.getpid()}-abc.png"  # this process: maybe still writing, kept
    for p in (dead, alive):
        p.write_bytes(b"partial")
        os.utime(p, (1, 1))
    code, _, err = run_cli(cli.main, [files["image"], "-n", "1", "--steps", "2", "--out", tmp_path / "s.png"])
    assert code == 0, err
    assert not dead.exists() and alive.exists()


# ---------------------------------------------------------------------------------- the newcomer's items
def test_info_is_indented_json(files):
    code, out, err = run_cli(cli.main, [files["image"], "--info"])
    assert code == 0, err
    record = json.loads(out)
    assert "\n  " in out and record["card"]["data"]["shape"] == [1, 4, 4] and record["card"]["num_classes"] == 3


def test_list_samplers_shows_each_option_with_its_real_default():
    code, out, _ = run_cli(cli.main, ["--list-samplers"])
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    for name, fn in cli.SAMPLERS.items():
        for option, default in cli.keyword_options(fn).items():
            if option not in cli.NOT_FLAGS:
                assert f"--{option.replace('_', '-')} {default!r}" in rows[name], (name, option)
    assert "--order (default 2, up to 3)" in rows["unipc"]


@pytest.mark.parametrize("n, columns", [(2, 2), (3, 3), (7, 3), (23, 3)])
def test_grid_column_k_is_class_k_for_any_n(files, tmp_path, n, columns):
    out = tmp_path / "g.png"
    code, _, err = run_cli(cli.main, [files["image"], "-n", n, "--steps", "2", "--out", out])
    assert code == 0, err
    tile = 48 + 1  # 4-pixel images are upscaled 12x; one pixel of padding
    rows = -(-n // columns)
    assert Image.open(out).size == (columns * tile + 1, rows * tile + 1)


def test_num_inference_steps_is_an_alias_of_steps(files, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert run_cli(cli.main, [files["points"], "-n", "3", "--steps", "3", "--out", a])[0] == 0
    assert run_cli(cli.main, [files["points"], "-n", "3", "--num-inference-steps", "3", "--out", b])[0] == 0
    np.testing.assert_array_equal(np.load(a), np.load(b))


def test_no_progress_bar_when_stderr_is_not_a_terminal(files, tmp_path):
    code, _, err = run_cli(cli.main, [files["image"], "-n", "2", "--steps", "4", "--out", tmp_path / "s.npy"])
    assert code == 0 and err == ""


def test_mask_polarity_is_one_everywhere(files, tmp_path):
    """--mask white = keep, like sample(mask=1); --repaint-mask is diffusers' opposite; both give the same run."""
    keep_left = np.zeros((4, 4), dtype=np.uint8)
    keep_left[:, :2] = 255
    Image.fromarray(keep_left).save(tmp_path / "keep.png")
    Image.fromarray(255 - keep_left).save(tmp_path / "repaint.png")
    init = files["dir"] / "init.npy"
    runs = {}
    for flag, mask in (("--mask", "keep.png"), ("--repaint-mask", "repaint.png")):
        out = tmp_path / f"{flag}.npy"
        argv = [files["image"], "-n", "2", "--steps", "3", "--init-image", init, flag, tmp_path / mask, "--out", out]
        code, _, err = run_cli(cli.main, argv)
        assert code == 0, err
        runs[flag] = np.load(out)
    np.testing.assert_array_equal(runs["--mask"], runs["--repaint-mask"])
    np.testing.assert_allclose(runs["--mask"][:, 0, :, :2], 0.5, atol=1e-6)  # kept
    assert np.abs(runs["--mask"][:, 0, :, 2:] - 0.5).max() > 1e-3  # generated
    from diffspec.runtime import Model, sample

    model = Model.load(files["image"], device="cpu")
    api = sample(model, n=2, steps=3, init=np.load(init), mask=keep_left[None] / 255.0)
    np.testing.assert_allclose(api, runs["--mask"], atol=1e-6)


def test_size_is_checked_before_allocation(files):
    with pytest.raises(ValueError, match="GiB"):
        sampling.check_sample_size(10**12, (3, 64, 64))
    assert output.prune_temporaries(str(files["dir"] / "missing-folder")) == []
