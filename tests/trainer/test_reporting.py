"""What a run reports: tensorboard event files read back with tensorboard's own reader, epochs in the JSONL log,
no progress bar when stderr is not a terminal, and --threads really setting torch's intra-op threads."""

import hashlib
import json
import os
import sys

import numpy as np
import pytest
import torch
from diffspec.trainer.cli import main
from diffspec.trainer.config import SMALL_STEP_FLOPS, default_threads
from PIL import Image

TINY = [
    "--model-kwargs",
    '{"hidden": 16, "depth": 1, "freq_dim": 8}',
    "--train-batch-size",
    "32",
    "--num-validation-samples",
    "16",
    "--num-inference-steps",
    "2",
    "--device",
    "cpu",
]


def test_tensorboard_events_hold_loss_lr_and_the_sample_grid(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert (
        main(
            [
                "--data",
                "moons",
                "--output-dir",
                str(tmp_path),
                *TINY,
                "--threads",
                "1",
                "--max-train-steps",
                "6",
                "--logging-steps",
                "2",
                "--validation-steps",
                "3",
                "--report-to",
                "tensorboard",
            ]
        )
        == 0
    )
    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/epoch"} <= set(tags["scalars"]) and "samples" in tags["images"]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in log] == [2, 4, 6]
    np.testing.assert_allclose([e.value for e in loss], [r["loss"] for r in log], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in events.Scalars("train/lr")], [r["lr"] for r in log], rtol=1e-6)
    assert [e.step for e in events.Images("samples")] == [3, 6]
    # epochs: 32 samples a step over 20,000 moons points
    np.testing.assert_allclose([r["epoch"] for r in log], [s * 32 / 20000 for s in (2, 4, 6)])
    err = capsys.readouterr().err
    assert "\r" not in err and "train:" not in err  # stderr is not a terminal here: no bar, even without --no-progress


def test_threads_flag_sets_torch_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        for n in (2, 1):
            assert (
                main(
                    [
                        "--data",
                        "moons",
                        "--output-dir",
                        str(tmp_path / str(n)),
                        *TINY,
                        "--threads",
                        str(n),
                        "--max-train-steps",
                        "1",
                        "--no-progress",
                    ]
                )
                == 0
            )
            assert torch.get_num_threads() == n
            config = json.loads((tmp_path / str(n) / "checkpoint-1" / "config.json").read_text())
            assert config["train"]["threads"] == n
    finally:
        torch.set_num_threads(before)


def test_default_threads_rule(tmp_path):
    assert default_threads(SMALL_STEP_FLOPS - 1, "cpu", 8) == 1
    assert default_threads(SMALL_STEP_FLOPS, "cpu", 8) == 8
    assert default_threads(10 * SMALL_STEP_FLOPS, "cuda", 8) == 1
    assert default_threads(10 * SMALL_STEP_FLOPS, "cpu", 1) == 1
    # the moons MLP (hidden 128, depth 3) at batch 256 is a small step: one thread without --threads
    before = torch.get_num_threads()
    try:
        assert (
            main(
                [
                    "--data",
                    "moons",
                    "--output-dir",
                    str(tmp_path),
                    "--max-train-steps",
                    "1",
                    "--no-progress",
                    "--num-validation-samples",
                    "16",
                    "--num-inference-steps",
                    "2",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        assert json.loads((tmp_path / "checkpoint-1" / "config.json").read_text())["train"]["threads"] == 1
    finally:
        torch.set_num_threads(before)


WANDB_RUN = [
    *TINY,
    "--threads",
    "1",
    "--max-train-steps",
    "4",
    "--logging-steps",
    "2",
    "--validation-steps",
    "4",
    "--report-to",
    "wandb",
    "--no-progress",
]


def _wandb_records(path):
    """The protobuf records of an offline run file: a 7-byte header (":W&B", magic, version), then LevelDB's log
    format (32 KiB blocks of chunks with a 7-byte header: CRC, little-endian length, type 1 full / 2 first /
    3 middle / 4 last; a block tail under 7 bytes is padding)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def test_wandb_runs_offline_under_the_output_folder(tmp_path, monkeypatch, capsys):
    """A real wandb run in offline mode: the run file under OUTPUT_DIR/logs/wandb holds the loss and learning rate at
    each logging step and the sample picture; wandb's cache and config land under OUTPUT_DIR/logs too, and nothing
    is written to HOME or the working directory."""
    pytest.importorskip("wandb")
    from diffspec.trainer.trackers import WANDB_FOLDERS

    home, cwd, out = tmp_path / "home", tmp_path / "cwd", tmp_path / "run"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for var in (*WANDB_FOLDERS, "WANDB_DIR", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(cwd)
    assert main(["--data", "moons", "--output-dir", str(out), *WANDB_RUN]) == 0
    assert not any(home.iterdir()) and not any(cwd.iterdir())
    assert all(var not in os.environ for var in WANDB_FOLDERS)  # the process's environment is left as it was
    (run_file,) = (out / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    assert list((out / "logs" / "wandb-home" / "cache").rglob("*.log"))  # wandb's service log, inside the run
    history = []  # one dict per logged step; nested keys ("samples", "width") become nested dicts
    for record in _wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            row: dict = {}
            for item in record.history.item:
                *parents, leaf = [item.key] if item.key else list(item.nested_key)
                node = row
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = json.loads(item.value_json)
            history.append(row)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [h["_step"] for h in history] == [rec["step"] for rec in log] == [2, 4]
    assert [h["train/loss"] for h in history] == [rec["loss"] for rec in log]
    assert [h["train/lr"] for h in history] == [rec["lr"] for rec in log]
    picture = history[-1]["samples"]  # the validation picture of step 4, as the trainer drew it
    media = run_file.parent / "files" / picture["path"]
    assert picture["_type"] == "image-file" and hashlib.sha256(media.read_bytes()).hexdigest() == picture["sha256"]
    with Image.open(media) as got, Image.open(out / "samples" / "step-0000004.png") as want:
        assert (picture["width"], picture["height"]) == got.size == want.size
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want.convert("RGB")))


def test_wandb_missing_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)
    code = main(["--data", "moons", "--output-dir", str(tmp_path), *WANDB_RUN])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "--report-to wandb" in lines[0] and "pip install wandb" in lines[0]
    assert not list(tmp_path.glob("checkpoint-*"))
