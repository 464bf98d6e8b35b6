"""diffspec-train on bad input: every case exits non-zero with one line on stderr that names the flag (or file) and
the value, and no traceback. In-process `main(argv)` calls; nothing is trained past the first checks."""

import json
import sys

import numpy as np
import pytest
import torch
from diffspec.trainer import checkpoint as ckpt
from diffspec.trainer import loop
from diffspec.trainer.cli import main
from PIL import Image

torch.set_num_threads(1)
TINY = [
    "--model-kwargs",
    '{"hidden": 16, "depth": 1, "freq_dim": 8}',
    "--train-batch-size",
    "8",
    "--no-progress",
    "--num-validation-samples",
    "8",
    "--num-inference-steps",
    "2",
    "--device",
    "cpu",
    "--threads",
    "1",
]

# (flags after --data moons, words the one-line message must contain)
FLAG_CASES = [
    (["--ema-max-decay", "nan"], ["--ema-max-decay=nan"]),
    (["--ema-max-decay", "1"], ["--ema-max-decay=1.0", "[0, 1)"]),
    (["--max-grad-norm", "nan"], ["--max-grad-norm=nan"]),
    (["--max-grad-norm", "-1"], ["--max-grad-norm=-1.0"]),
    (["--threads", "0"], ["--threads=0", "integer in 1.."]),
    (["--threads", "-2"], ["--threads=-2"]),
    (["--threads", "two"], ["--threads", "'two'"]),
    (["--report-to", "mlflow"], ["--report-to='mlflow'", "tensorboard"]),
    (["--learning-rate", "nan"], ["--learning-rate=nan"]),
    (["--learning-rate", "inf"], ["--learning-rate=inf"]),
    (["--learning-rate", "0"], ["--learning-rate=0.0"]),
    (["--adam-beta1", "1"], ["--adam-beta1=1.0"]),
    (["--adam-beta2", "nan"], ["--adam-beta2=nan"]),
    (["--adam-epsilon", "0"], ["--adam-epsilon=0.0"]),
    (["--adam-weight-decay", "nan"], ["--adam-weight-decay=nan"]),
    (["--cond-drop-prob", "nan"], ["--cond-drop-prob=nan"]),
    (["--cond-drop-prob", "1"], ["--cond-drop-prob=1.0"]),
    (["--noise-offset", "inf"], ["--noise-offset=inf"]),
    (["--lambda-vlb", "nan"], ["--lambda-vlb=nan"]),
    (["--snr-gamma", "nan"], ["--snr-gamma=nan"]),
    (["--snr-gamma", "0"], ["--snr-gamma=0.0"]),
    (["--validation-guidance-scale", "nan"], ["--validation-guidance-scale=nan"]),
    (["--train-batch-size", "0"], ["--train-batch-size=0"]),
    (["--max-train-steps", "-1"], ["--max-train-steps=-1"]),
    (["--gradient-accumulation-steps", "0"], ["--gradient-accumulation-steps=0"]),
    (["--lr-warmup-steps", "-1"], ["--lr-warmup-steps=-1"]),
    (["--logging-steps", "0"], ["--logging-steps=0"]),
    (["--num-inference-steps", "0"], ["--num-inference-steps=0"]),
    (["--num-validation-samples", "0"], ["--num-validation-samples=0"]),
    (["--num-validation-samples", "10000000000"], ["--num-validation-samples=10000000000", "at most 65536"]),
    (["--num-inference-steps", "1000000000"], ["--num-inference-steps=1000000000", "at most 10000"]),
    (["--checkpointing-steps", "0"], ["--checkpointing-steps=0"]),
    (["--checkpoints-total-limit", "0"], ["--checkpoints-total-limit=0"]),
    (["--validation-steps", "0"], ["--validation-steps=0"]),
    (["--seed", "-1"], ["--seed=-1"]),
    (["--dataloader-num-workers", "-1"], ["--dataloader-num-workers=-1"]),
    (["--lr-scheduler", "linear"], ["--lr-scheduler='linear'", "cosine"]),
    (["--mixed-precision", "fp16"], ["--mixed-precision='fp16'", "bf16"]),
    (["--precond", "karras"], ["--precond='karras'"]),
    (["--model-kwargs", '{"hidden": -3}'], ["--model-kwargs", "hidden"]),
    (["--model-kwargs", '{"hidden": NaN}'], ["--model-kwargs", "hidden=nan"]),
    (["--model-kwargs", '{"bogus": 1}'], ["--model-kwargs", "bogus"]),
    (["--model-kwargs", "[1]"], ["--model-kwargs", "JSON object"]),
    (["--model-kwargs", "{hidden"], ["--model-kwargs", "not JSON"]),
    (["--schedule", "linaer"], ["--schedule 'linaer'"]),
    (["--weighting", "snr2"], ["--weighting 'snr2'"]),
    (["--timestep-sampling", "gauss"], ["--timestep-sampling 'gauss'"]),
    (["--validation-sampler", "dpmpp_9m"], ["--validation-sampler 'dpmpp_9m'"]),
    (["--device", "tpu"], ["--device='tpu'"]),
    (["--device", "cuda:7"], ["--device='cuda:7'"]),
    (["--resolution", "16"], ["--resolution", "folder of images"]),
    (["--resolution", "0"], ["--resolution=0"]),
    (["--random-flip"], ["--random-flip", "points"]),
    (["--class-conditional", "yes"], ["--class-conditional", "no labels"]),
    (["--arch", "resnet"], ["--arch", "'resnet'"]),
]


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def _assert_one_line(code, err, words):
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize(("flags", "words"), FLAG_CASES, ids=[" ".join(f) for f, _ in FLAG_CASES])
def test_bad_flag(flags, words, tmp_path, capsys):
    try:
        code = main(["--data", "moons", "--output-dir", str(tmp_path / "out"), *TINY, *flags])
    except SystemExit as exit_:  # argparse: a value of the wrong type
        code = exit_.code
    _assert_one_line(code, capsys.readouterr().err, words)
    assert not list(tmp_path.glob("out/checkpoint-*"))


def _mixed_folder(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "a.png")
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(d / "b.png")
    return d


def test_bad_data(tmp_path, capsys):
    np.savez(tmp_path / "fy.npz", x=np.ones((16, 2)), y=np.linspace(0, 3, 16))
    _assert_one_line(
        *_run(["--data", str(tmp_path / "fy.npz"), "--output-dir", str(tmp_path / "o"), *TINY], capsys),
        ["fy.npz", "float64", "integers"],
    )
    mixed = _mixed_folder(tmp_path)
    _assert_one_line(
        *_run(["--data", str(mixed), "--output-dir", str(tmp_path / "o"), *TINY], capsys),
        ["different sizes", "--resolution"],
    )
    _assert_one_line(
        *_run(
            ["--train-data-dir", str(mixed), "--resolution", "0", "--output-dir", str(tmp_path / "o"), *TINY], capsys
        ),
        ["--resolution=0"],
    )
    # 128 x 128 grey images: 16384 values a sample, so a validation batch of 2**24 values holds 1024 of them
    big = ["--resolution", "128", "--num-validation-samples", "1025"]
    _assert_one_line(
        *_run(["--train-data-dir", str(mixed), "--output-dir", str(tmp_path / "o"), *TINY, *big], capsys),
        ["--num-validation-samples=1025", "at most 1024", "(1, 128, 128)"],
    )
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    _assert_one_line(
        *_run(["--data", str(tmp_path / "garbage.npy"), "--output-dir", str(tmp_path / "o"), *TINY], capsys),
        ["garbage.npy"],
    )


def test_tensorboard_missing_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    _assert_one_line(
        *_run(["--data", "moons", "--output-dir", str(tmp_path), "--report-to", "tensorboard", *TINY], capsys),
        ["--report-to tensorboard", "pip install tensorboard"],
    )
    assert not list(tmp_path.glob("checkpoint-*"))


def test_resume_below_the_checkpoint_step_is_an_error(tmp_path, capsys):
    base = ["--data", "moons", "--output-dir", str(tmp_path), *TINY, "--validation-steps", "1000"]
    assert main([*base, "--max-train-steps", "4"]) == 0
    capsys.readouterr()
    _assert_one_line(
        *_run([*base, "--max-train-steps", "2", "--resume-from-checkpoint", "latest"], capsys),
        ["--max-train-steps=2", "step 4", "checkpoint-4"],
    )
    # a longer run resumes, and says the cosine's length changed (not bit-exact with a run that never stopped)
    assert main([*base, "--max-train-steps", "6", "--resume-from-checkpoint", "latest"]) == 0
    err = capsys.readouterr().err
    assert "learning-rate schedule differs" in err and "--max-train-steps 4 -> 6" in err
    assert "--threads" not in err
    assert (
        main(
            [
                *base[:-4],
                "--threads",
                "2",
                "--validation-steps",
                "1000",
                "--max-train-steps",
                "7",
                "--resume-from-checkpoint",
                "latest",
            ]
        )
        == 0
    )
    assert "--threads 2 differs from the checkpoint's run (1)" in capsys.readouterr().err
    torch.set_num_threads(1)


def test_corrupt_checkpoint_config_is_one_line(tmp_path, capsys):
    base = ["--data", "moons", "--output-dir", str(tmp_path), *TINY, "--validation-steps", "1000"]
    assert main([*base, "--max-train-steps", "2"]) == 0
    capsys.readouterr()
    (tmp_path / "checkpoint-2" / "config.json").write_text("{not json")
    ckpt.write_manifest(tmp_path / "checkpoint-2")  # a manifest that agrees: the JSON itself is what is wrong
    _assert_one_line(
        *_run([*base, "--max-train-steps", "4", "--resume-from-checkpoint", str(tmp_path / "checkpoint-2")], capsys),
        ["checkpoint-2", "config.json"],
    )


def test_ctrl_c_names_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "validate", interrupted)  # Ctrl-C during the validation after checkpoint-2
    code, err = _run(
        [
            "--data",
            "moons",
            "--output-dir",
            str(tmp_path),
            *TINY,
            "--max-train-steps",
            "4",
            "--checkpointing-steps",
            "2",
            "--validation-steps",
            "2",
        ],
        capsys,
    )
    _assert_one_line(code, err, ["interrupted", "checkpoint-2", "--resume-from-checkpoint latest"])
    assert code == 130


def test_machine_errors_are_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    _assert_one_line(
        *_run(
            ["--data", "moons", "--output-dir", str(tmp_path / "file" / "out"), *TINY, "--max-train-steps", "1"], capsys
        ),
        ["file"],
    )

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(loop, "make_optimizer", no_memory)
    _assert_one_line(
        *_run(["--data", "moons", "--output-dir", str(tmp_path / "m"), *TINY], capsys),
        ["out of memory", "--train-batch-size"],
    )


def test_leftovers_of_interrupted_saves_are_removed(tmp_path, capsys):
    (tmp_path / ".tmp-checkpoint-3").mkdir(parents=True)
    (tmp_path / ".tmp-checkpoint-3" / "model.safetensors").write_bytes(b"half")
    (tmp_path / "checkpoint-2.incomplete-1700000000").mkdir()
    assert main(["--data", "moons", "--output-dir", str(tmp_path), *TINY, "--max-train-steps", "1"]) == 0
    err = capsys.readouterr().err
    assert "removed .tmp-checkpoint-3" in err and "removed checkpoint-2.incomplete-1700000000" in err
    assert sorted(p.name for p in tmp_path.iterdir() if "checkpoint" in p.name) == ["checkpoint-1"]
    assert json.loads((tmp_path / "checkpoint-1" / "state.json").read_text())["step"] == 1
