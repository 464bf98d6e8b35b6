"""Checkpoint manifests, machine paths in stored configs, and bad input to `diffspec-export`, run in-process."""

import errno
import json
import os
import shutil

import numpy as np
import onnx
import pytest
from diffspec.export import cli as export_cli
from diffspec.export import files as export_files
from diffspec.trainer import checkpoint as ckpt
from hardening_helpers import _metadata_with, assert_clean_failure, points_graph, points_model, run_cli, save


def _config(data="moons"):
    return {
        "diffspec_version": "0.1.0",
        "model": {"arch": "mlp", "kwargs": {"dim": 2, "hidden": 8, "depth": 1, "freq_dim": 8}},
        "schedule": {"name": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02, "rescale_zero_snr": False},
        "parameterization": "v",
        "time_input": "t",
        "data": {"name": data, "shape": [2], "kind": "points", "range": [-2.0, 2.0], "scale": 0.5, "shift": 0.0},
        "num_classes": None,
        "null_class": None,
        "learned_variance": False,
        "train": {
            "data": data,
            "output_dir": "/home/someone/runs/moons",
            "resume_from_checkpoint": "/home/x/c",
            "learning_rate": 1e-3,
        },
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real checkpoint of a tiny MLP, written by the trainer's save_checkpoint."""
    from diffspec.trainer.models import build_model

    config = _config(data="/home/someone/data/points.npz")
    model = build_model("mlp", **config["model"]["kwargs"])
    out = tmp_path_factory.mktemp("run")
    path = ckpt.save_checkpoint(out, 5, model=model, ema=model, config=config)
    return path


@pytest.fixture
def copy(saved, tmp_path):
    """A fresh copy of the checkpoint to tamper with."""
    dst = tmp_path / "checkpoint-5"
    shutil.copytree(saved, dst)
    return dst


def _edit_manifest(path, edit):
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest["files"])
    (path / "manifest.json").write_text(json.dumps(manifest))


def _entry(path, name):
    return {"size": (path / name).stat().st_size, "sha256": ckpt._sha256(path / name)}


def _add_listed(name):
    def edit(files, name=name):
        files[name] = {"size": 1, "sha256": "0" * 64}

    return edit


MANIFESTS = [  # (id, tamper(checkpoint path), words)
    ("dotdot", lambda p: _edit_manifest(p, _add_listed("../../x")), "'../../x'"),
    ("absolute", lambda p: _edit_manifest(p, _add_listed("/etc/passwd")), "'/etc/passwd'"),
    ("subfolder", lambda p: _edit_manifest(p, _add_listed("sub/x")), "'sub/x'"),
    ("empty-name", lambda p: _edit_manifest(p, _add_listed("")), "''"),
    ("backslash", lambda p: _edit_manifest(p, _add_listed("..\\x")), "'..\\\\x'"),
    ("files-not-a-dict", lambda p: (p / "manifest.json").write_text('{"files": []}'), "corrupt"),
    ("size-not-int", lambda p: _edit_manifest(p, lambda f: f["config.json"].update(size="12")), "corrupt"),
    ("not-json", lambda p: (p / "manifest.json").write_text("{"), "corrupt"),
    ("missing", lambda p: (p / "manifest.json").unlink(), "no manifest.json"),
    ("config-unlisted", lambda p: _edit_manifest(p, lambda f: f.pop("config.json")), "config.json"),
    ("truncated", lambda p: (p / "model.safetensors").write_bytes(b"x"), "truncated"),
    (
        "changed",
        lambda p: (p / "config.json").write_text((p / "config.json").read_text().replace("0.5", "0.6")),
        "sha256",
    ),
]


def _symlinked_entry(p):
    target = p.parent / "elsewhere.json"
    target.write_text("{}")
    (p / "config.json").unlink()
    os.symlink(target, p / "config.json")
    _edit_manifest(p, lambda f: f.update({"config.json": _entry(p, "config.json")}))


MANIFESTS.append(("symlink", _symlinked_entry, "symlink"))


@pytest.mark.parametrize("tamper, words", [m[1:] for m in MANIFESTS], ids=[m[0] for m in MANIFESTS])
def test_manifest_rules(copy, tamper, words):
    tamper(copy)
    with pytest.raises(ValueError) as info:
        ckpt.verify_manifest(copy)
    assert words in str(info.value)
    assert not ckpt.is_complete(copy)


def test_a_file_the_manifest_does_not_list_is_never_read(copy):
    _edit_manifest(copy, lambda f: f.pop("ema.safetensors"))
    with pytest.raises(ValueError, match="ema.safetensors is not listed in manifest.json"):
        ckpt.load_for_inference(copy, ema=True)
    (copy / "ema.safetensors").unlink()  # gone and unlisted: the raw weights, as for a run without EMA
    model, _ = ckpt.load_for_inference(copy, ema=True)
    assert model is not None


def test_stored_configs_name_nothing_of_the_training_machine(saved):
    text = (saved / "config.json").read_text()
    assert "/home/" not in text and "output_dir" not in text and "resume_from_checkpoint" not in text
    config = json.loads(text)
    assert config["data"]["name"] == "points.npz" and config["train"]["data"] == "points.npz"
    # the run being resumed still matches, though it names the data by its full path
    ckpt.check_compatible(config, _config(data="/elsewhere/points.npz"), source="test")
    from diffspec.export.checkpoints import card_from_config

    card = card_from_config(_config(data="/home/someone/data/points.npz"))
    assert "/home/" not in json.dumps(card.to_metadata())


# ------------------------------------------------------------------------------------------ diffspec-export
EXPORT = [  # (id, argv builder given (tmp_path, good checkpoint), words, status)
    ("checkpoint-missing", lambda d, c: [d / "none", "-o", d / "m.onnx"], "does not exist"),
    ("output-folder-missing", lambda d, c: [c, "-o", d / "none" / "m.onnx"], "does not exist"),
    ("output-suffix", lambda d, c: [c, "-o", d / "m.txt"], ".onnx"),
    ("output-is-folder", lambda d, c: [c, "-o", d], "is a directory"),
    ("verify-missing-file", lambda d, c: [c, "-o", d / "none.onnx", "--verify-only"], "no such file to verify"),
    ("opset", lambda d, c: [c, "-o", d / "m.onnx", "--opset", "7"], "opset=7"),
    ("opset-text", lambda d, c: [c, "-o", d / "m.onnx", "--opset", "x"], "--opset"),
    ("no-output", lambda d, c: [c], "--output"),
]


@pytest.mark.parametrize("argv, words", [e[1:] for e in EXPORT], ids=[e[0] for e in EXPORT])
def test_export_cli_rejects(saved, tmp_path, argv, words):
    code, out, err = run_cli(export_cli.main, argv(tmp_path, saved))
    assert_clean_failure(code, err, words)
    assert not list(tmp_path.glob("*.onnx")) or words == "no such file to verify"


@pytest.mark.parametrize("tamper, words", [m[1:] for m in MANIFESTS[:4]], ids=[m[0] for m in MANIFESTS[:4]])
def test_export_cli_refuses_a_tampered_manifest(copy, tmp_path, tamper, words):
    tamper(copy)
    code, _, err = run_cli(export_cli.main, [copy, "-o", tmp_path / "m.onnx"])
    assert_clean_failure(code, err, words)


def test_verify_only_refuses_bad_metadata_before_reading_the_checkpoint(tmp_path):
    path = save(points_graph(), tmp_path / "bad.onnx", metadata=_metadata_with(data__scale=0.0))
    code, _, err = run_cli(export_cli.main, [tmp_path / "no-checkpoint", "-o", path, "--verify-only"])
    assert_clean_failure(code, err, "data.scale=0.0")


@pytest.mark.parametrize(
    "exc, status, words",
    [
        (KeyboardInterrupt(), 130, "interrupted"),
        (MemoryError(), 1, "out of memory"),
        (OSError(errno.ENOSPC, "no space left on device while writing 'm.onnx'"), 1, "no space left on device"),
        (RuntimeError("torch.onnx: unsupported operator\n  at line 3"), 1, "unsupported operator"),
        (AttributeError("'NoneType' object has no attribute 'graph'"), 1, "AttributeError"),
    ],
    ids=["ctrl-c", "memory", "disk-full", "torch", "unexpected"],
)
def test_export_cli_reports_any_failure_in_one_line(saved, tmp_path, monkeypatch, exc, status, words):
    from diffspec.export import exporter

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(exporter, "export_checkpoint", fail)
    code, _, err = run_cli(export_cli.main, [saved, "-o", tmp_path / "m.onnx"])
    assert code == status
    assert_clean_failure(code, err, words)
    assert len(err.strip().splitlines()) == 1


def test_write_errors_name_the_output_never_the_temporary(tmp_path, monkeypatch):
    model = onnx.load(points_model(tmp_path / "src.onnx"))
    target = tmp_path / "out.onnx"

    def check(tmp):
        raise ValueError(f"{tmp}: parity failed")

    with pytest.raises(ValueError) as info:
        export_files.write_atomically(model, target, check=check)
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_files.onnx, "save_model", full)
    with pytest.raises(OSError, match="no space left on device while writing") as info:
        export_files.write_atomically(model, target)
    assert str(target) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["src.onnx"]  # no temporary folder left, nothing at the target


def test_export_bars_are_silent_and_the_runtime_check_agrees_with_the_exporters(tmp_path):
    """The export side's onnx-based check and the runtime's own protobuf walk refuse the same locations."""
    from diffspec.runtime.external_data import ExternalDataError, check_external_data
    from hardening_helpers import external_model

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(np.zeros(4, dtype=np.float32).tobytes())
    for location, ok in (("w.bin", True), ("../w.bin", False), ("/etc/passwd", False), ("none.bin", False)):
        path = external_model(tmp_path / "m" / "x.onnx", location)
        header = onnx.load(path, load_external_data=False)
        outcomes = []
        for check, argument in ((export_files.check_external_data, header), (check_external_data, path)):
            try:
                check(argument, tmp_path / "m") if check is export_files.check_external_data else check(argument)
                outcomes.append(True)
            except (ValueError, ExternalDataError):
                outcomes.append(False)
        assert outcomes == [ok, ok], location


def test_temporary_folders_of_a_killed_export_are_pruned(tmp_path):
    model = onnx.load(points_model(tmp_path / "src.onnx"))
    dead = tmp_path / ".diffspec-export-999999999-abc.tmp"  # no such process
    alive = tmp_path / f".diffspec-export-{os.getpid()}-abc.tmp"  # this process: maybe still writing, kept
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "m.onnx").write_bytes(b"partial")
        os.utime(folder, (1, 1))
    export_files.write_atomically(model, tmp_path / "out.onnx")
    assert not dead.exists() and alive.exists() and (tmp_path / "out.onnx").is_file()


def _rewrite(name, content):
    def tamper(p):
        (p / name).write_bytes(content)
        ckpt.write_manifest(p)  # a manifest that vouches for the bad file: the loader must still say what is wrong

    return tamper


@pytest.mark.parametrize(
    "tamper, words",
    [
        (_rewrite("config.json", b"{not json"), "config.json is not valid JSON"),
        (_rewrite("config.json", b"[1, 2]"), "config.json is not a JSON object"),
        (_rewrite("ema.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!"), "ema.safetensors"),
    ],
    ids=["config-not-json", "config-not-object", "weights-not-safetensors"],
)
def test_export_cli_names_a_bad_file_inside_a_valid_checkpoint(copy, tmp_path, tamper, words):
    tamper(copy)
    code, _, err = run_cli(export_cli.main, [copy, "-o", tmp_path / "m.onnx"])
    assert_clean_failure(code, err, words)
    assert len(err.strip().splitlines()) == 1
