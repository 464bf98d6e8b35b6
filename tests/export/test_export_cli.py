"""Export from trainer checkpoints: the CLI, EMA vs raw weights, and clear errors for bad checkpoints."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from diffspec.export import export_checkpoint, verify
from diffspec.export.cli import main
from diffspec.export.verify import export_info
from diffspec.reference.modelcard import ModelCard
from diffspec.reference.schedules import make_schedule
from export_helpers import KWARGS, build


def config_for(arch):
    return {
        "diffspec_version": "0.1.0",
        "model": {"arch": arch, "kwargs": KWARGS[arch]},
        "schedule": make_schedule("cosine", T=1000).to_dict(),
        "parameterization": "v",
        "time_input": "t",
        "data": {
            "name": "digits",
            "shape": [1, 8, 8],
            "kind": "image",
            "range": [0, 16],
            "scale": 0.125,
            "shift": -1.0,
        },
        "num_classes": 10,
        "null_class": 10,
        "learned_variance": False,
        "train": {"learning_rate": 1e-3, "train_batch_size": 64, "max_train_steps": 10, "nested": {"no": 1}},
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from diffspec.trainer.checkpoint import save_checkpoint

    out = tmp_path_factory.mktemp("run")
    model, ema = build("dit"), build("dit")
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    ckpt = save_checkpoint(out, 10, model=model, ema=ema, config=config_for("dit"))
    (out / "config.json").write_text(json.dumps(config_for("dit")))  # the trainer keeps one in the run folder too
    return out, ckpt, model, ema


def test_cli_exports_ema_and_metadata(run_dir, tmp_path, capsys):
    out, ckpt, model, ema = run_dir
    path = tmp_path / "model.onnx"
    assert main([str(ckpt), "-o", str(path), "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    assert "onnx.checker" in printed and "relL2" in printed and "ok" in printed
    assert f"verify {path}" in printed and ".diffspec-" not in printed  # the log names no temporary file
    m = onnx.load(str(path))
    props = {p.key: p.value for p in m.metadata_props}
    card = ModelCard.from_metadata(props)
    assert card.reference_schedule() == make_schedule("cosine", T=1000)
    assert card.parameterization == "v" and card.num_classes == 10 and card.null_class == 10
    assert card.data.shape == (1, 8, 8) and card.data.scale == 0.125 and card.data.shift == -1.0
    assert card.train_config["arch"] == "dit" and card.train_config["train"]["learning_rate"] == 1e-3
    assert "nested" not in card.train_config["train"]
    assert export_info(m)["weights"] == "ema"
    verify(path, ema, seed=1, log=lambda s: None)  # EMA weights, not the raw ones
    verify(path, ckpt, seed=2, log=lambda s: None)  # from the checkpoint directory
    with pytest.raises(Exception, match="disagree"):
        verify(path, model, seed=1, log=lambda s: None)


def test_no_ema_and_run_folder(run_dir, tmp_path):
    out, _, model, _ = run_dir
    path = tmp_path / "raw.onnx"
    report = export_checkpoint(out, path, ema=False, seed=0, log=lambda s: None)  # run folder -> latest checkpoint
    assert export_info(onnx.load(str(path)))["weights"] == "raw"
    assert report.rel_l2 < 1e-5
    verify(path, model, seed=3, log=lambda s: None)


def test_module_entry_point_fp16_cfg(run_dir, tmp_path):
    _, ckpt, _, _ = run_dir
    path = tmp_path / "m16.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "diffspec.export", str(ckpt), "-o", str(path), "--fp16", "--cfg-fused", "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    card = ModelCard.from_metadata({p.key: p.value for p in onnx.load(str(path)).metadata_props})
    assert card.precision == "fp16" and card.cfg_fused


def _bad_checkpoint(tmp_path, *, manifest=True, arch="unet"):
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    config = config_for("dit")
    config["model"]["arch"] = arch
    (ckpt / "config.json").write_text(json.dumps(config))
    if manifest:  # a manifest that verifies: every file the loader reads is listed
        from diffspec.trainer.checkpoint import write_manifest

        (ckpt / "model.safetensors").write_bytes(b"never read: the arch is checked first")
        write_manifest(ckpt)
    return ckpt


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_manifest", "no manifest.json"),
        ("unknown_arch", "unknown arch"),
        ("missing_dir", "does not exist"),
        ("missing_output_dir", "does not exist"),
        ("bad_opset", "opset=7"),
    ],
)
def test_cli_bad_inputs(run_dir, tmp_path, capsys, case, message):
    _, good, _, _ = run_dir
    out = tmp_path / "m.onnx"
    args = {
        "no_manifest": lambda: [str(_bad_checkpoint(tmp_path, manifest=False)), "-o", str(out)],
        "unknown_arch": lambda: [str(_bad_checkpoint(tmp_path, arch="resnet")), "-o", str(out)],
        "missing_dir": lambda: [str(tmp_path / "nope"), "-o", str(out)],
        "missing_output_dir": lambda: [str(good), "-o", str(tmp_path / "nope" / "m.onnx")],
        "bad_opset": lambda: [str(good), "-o", str(out), "--opset", "7"],
    }[case]()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("diffspec-export: error:")
    assert not out.exists()


def test_cli_without_traceback_in_a_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "diffspec.export", str(tmp_path), "-o", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr and "Traceback" not in proc.stderr


def test_export_checkpoint_unknown_arch_raises_valueerror(tmp_path):
    with pytest.raises(ValueError, match="model.arch='resnet': unknown arch"):
        export_checkpoint(_bad_checkpoint(tmp_path, arch="resnet"), tmp_path / "m.onnx", log=lambda s: None)


def test_learned_variance_cfg(tmp_path):
    """With 2C output channels only the first C are guided; the verifier's torch side does the same."""
    from diffspec.export import export_model
    from export_helpers import card_for

    model = build("dit", learned_variance=True)
    card = card_for("dit", learned_variance=True)
    report = export_model(model, card, tmp_path / "lv.onnx", cfg_fused=True, seed=0, log=lambda s: None)
    assert report.rel_l2 < 1e-5
    f = {"x": np.zeros((1, 1, 8, 8), np.float32)}
    assert report.runs[0].shape == (1, 8, 8) and f["x"].shape[1] == 1
