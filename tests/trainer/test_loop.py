"""The training loop end to end on tiny configs: quality on a 2-D toy, exact resume, DDP over gloo, bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffspec.trainer import checkpoint as ckpt
from diffspec.trainer.cli import build_parser, config_from_args, main
from diffspec.trainer.loop import TrainConfig, sample, train
from safetensors.torch import load_file

torch.set_num_threads(1)
TINY = dict(
    arch="mlp",
    model_kwargs={"hidden": 32, "depth": 1, "freq_dim": 16},
    train_batch_size=32,
    learning_rate=1e-3,
    lr_warmup_steps=2,
    n_points=512,
    progress=False,
    validation_steps=10**6,
    num_validation_samples=64,
    num_inference_steps=5,
    logging_steps=2,
)


def swd(a, b, n_proj=128, seed=0):
    """Sliced Wasserstein-2 distance between two equal-size point clouds."""
    d = np.random.default_rng(seed).standard_normal((a.shape[1], n_proj))
    d /= np.linalg.norm(d, axis=0)
    return float(np.sqrt(np.mean((np.sort(a @ d, 0) - np.sort(b @ d, 0)) ** 2)))


def _tensors(path, name):
    return load_file(str(Path(path) / name))


def test_short_run_samples_match_the_mixture(tmp_path):
    """A ~1500-step CPU run on the oracle mixture: EMA samples within 3x of the data-vs-data SWD floor."""
    from diffspec.trainer import schedules
    from diffspec.trainer.data import load_dataset

    cfg = TrainConfig(
        data="mixture",
        output_dir=str(tmp_path),
        max_train_steps=1500,
        progress=False,
        validation_steps=10**6,
        num_validation_samples=256,
        n_points=4000,
    )
    result = train(cfg)
    model, config = ckpt.load_for_inference(result["checkpoint"])
    schedule = schedules.schedule_from_dict(config["schedule"])
    n = 2000
    data = load_dataset("mixture", seed=11).x[:n]
    floor = swd(load_dataset("mixture", seed=12).x[:n], data)
    x = sample(model, schedule, config["parameterization"], (2,), n=n, sampler="ddpm", steps=50, seed=3).numpy()
    dist = swd(x, data)
    print(f"SWD samples {dist:.4f} vs floor {floor:.4f} ({dist / floor:.2f}x) in {result['seconds']:.1f} s")
    assert np.isfinite(x).all() and dist < 3 * floor
    assert (tmp_path / "samples" / "step-0001500.png").is_file()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 1500 and {"loss", "lr", "steps_per_s"} <= set(log[-1])


def test_resume_is_bit_exact(tmp_path):
    kw = dict(TINY, data="moons", max_train_steps=8, checkpointing_steps=4, cond_drop_prob=0.0)
    train(TrainConfig(output_dir=str(tmp_path / "straight"), **kw))
    # The split run: the same run, its checkpoint-8 removed (as if killed after step 4), resumed from step 4.
    train(TrainConfig(output_dir=str(tmp_path / "split"), **kw))
    shutil.rmtree(tmp_path / "split" / "checkpoint-8")
    res = train(TrainConfig(output_dir=str(tmp_path / "split"), resume_from_checkpoint="latest", **kw))
    assert res["start_step"] == 4
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = _tensors(tmp_path / "straight" / "checkpoint-8", name)
        b = _tensors(tmp_path / "split" / "checkpoint-8", name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"


def test_resume_rejects_incompatible_config(tmp_path):
    kw = dict(TINY, data="moons", max_train_steps=2)
    train(TrainConfig(output_dir=str(tmp_path), **kw))
    other = dict(kw, model_kwargs={"hidden": 48, "depth": 1, "freq_dim": 16}, max_train_steps=4)
    with pytest.raises(ValueError, match="cannot resume.*'model'"):
        train(TrainConfig(output_dir=str(tmp_path), resume_from_checkpoint="latest", **other))
    (tmp_path / "checkpoint-2" / "manifest.json").write_text("garbage")
    with pytest.raises(ValueError, match="no checkpoint.*verifies"):
        train(TrainConfig(output_dir=str(tmp_path), resume_from_checkpoint="latest", **kw))


def test_digits_unet_cfg_and_grid(tmp_path):
    """Class-conditional UNet with condition dropout, gradient accumulation, v-prediction and min-SNR."""
    cfg = TrainConfig(
        data="digits",
        output_dir=str(tmp_path),
        max_train_steps=2,
        train_batch_size=8,
        gradient_accumulation_steps=2,
        prediction_type="v_prediction",
        snr_gamma=5.0,
        model_kwargs={"model_channels": 8, "groups": 4, "num_heads": 2},
        progress=False,
        num_validation_samples=4,
        num_inference_steps=3,
        validation_guidance_scale=2.0,
    )
    result = train(cfg)
    config = result["config"]
    assert config["num_classes"] == 10 and config["null_class"] == 10 and config["parameterization"] == "v"
    assert config["data"]["scale"] == 0.125 and config["data"]["shift"] == -1.0
    assert (tmp_path / "samples" / "step-0000002.png").is_file()
    model, _ = ckpt.load_for_inference(result["checkpoint"])
    assert model(torch.zeros(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 5, 10])).shape == (3, 1, 8, 8)


def test_cli_flags_and_bad_input(tmp_path, capsys):
    args = build_parser().parse_args(
        [
            "--data",
            "moons",
            "--output_dir",
            str(tmp_path),
            "--max-train-steps",
            "3",
            "--snr_gamma",
            "5",
            "--schedule-kwargs",
            '{"T": 500}',
        ]
    )
    cfg = config_from_args(args)
    assert cfg.output_dir == str(tmp_path) and cfg.snr_gamma == 5.0 and cfg.schedule_kwargs == {"T": 500}
    assert main(["--data", "mons", "--output-dir", str(tmp_path)]) == 2
    assert "unknown dataset 'mons'" in capsys.readouterr().err
    assert main(["--data", "moons", "--output-dir", str(tmp_path), "--train-batch-size", "0"]) == 2
    assert "--train-batch-size=0: expected an integer >= 1" in capsys.readouterr().err
    assert main(["--data", "moons", "--output-dir", str(tmp_path), "--schedule", "linaer"]) == 2
    assert "unknown --schedule 'linaer'" in capsys.readouterr().err
    bad = np.zeros((10, 2))
    bad[0, 0] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    assert main(["--data", str(tmp_path / "bad.npy"), "--output-dir", str(tmp_path)]) == 2
    assert "NaN or inf" in capsys.readouterr().err


def test_two_process_gloo_run_writes_one_checkpoint(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "diffspec.trainer",
        "--data",
        "moons",
        "--output-dir",
        str(out),
        "--max-train-steps",
        "4",
        "--train-batch-size",
        "16",
        "--model-kwargs",
        '{"hidden": 16, "depth": 1, "freq_dim": 8}',
        "--no-progress",
        "--num-validation-samples",
        "16",
        "--num-inference-steps",
        "3",
        "--device",
        "cpu",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [4]
    config = json.loads((out / "checkpoint-4" / "config.json").read_text())
    assert config["train"]["world_size"] == 2
    assert ckpt.find_latest(out) == out / "checkpoint-4"


def test_learned_variance_run_checkpoint_and_sampling(tmp_path):
    """--learned-variance: tiny UNet on digits, hybrid loss, config says so, 2C outputs, ddpm learned_range."""
    from diffspec.trainer import schedules

    out = tmp_path / "lv"
    assert (
        main(
            [
                "--data",
                "digits",
                "--output-dir",
                str(out),
                "--learned-variance",
                "--lambda-vlb",
                "0.01",
                "--max-train-steps",
                "3",
                "--train-batch-size",
                "8",
                "--logging-steps",
                "1",
                "--no-progress",
                "--model-kwargs",
                '{"model_channels": 8, "groups": 4, "num_heads": 2}',
                "--num-validation-samples",
                "4",
                "--num-inference-steps",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    config = json.loads((out / "checkpoint-3" / "config.json").read_text())
    assert config["learned_variance"] is True and config["model"]["kwargs"]["learned_variance"] is True
    assert config["train"]["lambda_vlb"] == 0.01 and config["train"]["validation_sampler"] == "ddpm"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    assert (out / "samples" / "step-0000003.png").is_file()
    model, cfg = ckpt.load_for_inference(out / "checkpoint-3")
    assert cfg["learned_variance"] is True
    assert model(torch.zeros(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 5, 10])).shape == (3, 2, 8, 8)

    # learned_range sampling takes the variance half from the mean's model call: one call per step.
    calls = []

    def counted(x, t, y=None):
        calls.append(1)
        return model(x, t, y)

    schedule = schedules.schedule_from_dict(cfg["schedule"])
    y = torch.tensor([1, 2])
    x = sample(
        counted,
        schedule,
        cfg["parameterization"],
        (1, 8, 8),
        n=2,
        sampler="ddpm",
        steps=4,
        y=y,
        variance="learned_range",
    )
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all() and len(calls) == 4
    with pytest.raises(ValueError, match="ddpm option"):
        sample(
            model,
            schedule,
            cfg["parameterization"],
            (1, 8, 8),
            n=2,
            sampler="dpmpp_2m",
            steps=3,
            y=y,
            variance="learned_range",
        )


def test_learned_variance_bad_input(tmp_path, capsys):
    base = ["--data", "moons", "--output-dir", str(tmp_path), "--learned-variance", "--max-train-steps", "1"]
    assert main([*base, "--schedule", "vp"]) == 2
    assert "--learned-variance needs a discrete VP schedule" in capsys.readouterr().err
    assert main([*base, "--timestep-sampling", "uniform"]) == 2
    assert "needs integer timesteps" in capsys.readouterr().err
    assert main([*base, "--snr-gamma", "5"]) == 2
    assert "hybrid loss" in capsys.readouterr().err
    assert main([*base, "--lambda-vlb", "-1"]) == 2
    assert "--lambda-vlb=-1.0" in capsys.readouterr().err
    assert not list(tmp_path.glob("checkpoint-*"))
