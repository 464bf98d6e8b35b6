"""What a run reports: tensorboard event files read back with tensorboard's own reader, epochs in the JSONL log,
no progress bar when stderr is not a terminal, and --threads really setting torch's intra-op threads."""

import json

import numpy as np
import torch
from diffspec.trainer.cli import main
from diffspec.trainer.config import SMALL_STEP_FLOPS, default_threads

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


def test_wandb_runs_offline_under_the_output_folder(tmp_path, monkeypatch):
    """wandb is not a dependency: a stand-in module records how the trainer drives it (offline, under logs/)."""
    import types

    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, values, step):
            calls["log"].append((step, dict(values)))

        def finish(self):
            calls["finish"] += 1

    def init(**kwargs):
        calls["init"].append(kwargs)
        return Run()

    fake = types.SimpleNamespace(init=init, Image=lambda pixels: ("image", pixels.shape))
    monkeypatch.setitem(__import__("sys").modules, "wandb", fake)
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
                "4",
                "--logging-steps",
                "2",
                "--validation-steps",
                "4",
                "--report-to",
                "wandb",
                "--no-progress",
            ]
        )
        == 0
    )
    (init_kwargs,) = calls["init"]
    assert init_kwargs["mode"] == "offline" and init_kwargs["dir"] == str(tmp_path / "logs")
    assert [step for step, values in calls["log"] if "train/loss" in values] == [2, 4]
    assert any(values.get("samples", ("",))[0] == "image" for _, values in calls["log"]) and calls["finish"] == 1
