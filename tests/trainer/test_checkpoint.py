"""Checkpoints: round trip, manifest verification, pruning, an interrupted save, incompatible configs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from diffspec.trainer import checkpoint as ckpt
from diffspec.trainer.models import build_model

torch.set_num_threads(1)
MODEL = {"arch": "mlp", "kwargs": {"dim": 2, "hidden": 16, "depth": 1, "freq_dim": 8}}
CONFIG = {
    "diffspec_version": "0.1.0",
    "model": MODEL,
    "schedule": {"name": "linear", "T": 1000},
    "parameterization": "eps",
    "time_input": "t",
    "data": {"name": "moons", "shape": [2], "kind": "points", "range": [-1, 1], "scale": 1.0, "shift": 0.0},
    "num_classes": None,
    "null_class": None,
    "learned_variance": False,
    "train": {},
}


def _trained(seed=0):
    torch.manual_seed(seed)
    model = build_model(MODEL["arch"], **MODEL["kwargs"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        model(torch.randn(8, 2), torch.rand(8) * 999).square().mean().backward()
        opt.step()
        opt.zero_grad()
    ema = build_model(MODEL["arch"], **MODEL["kwargs"])
    return model, ema, opt


def _save(tmp_path, step, **kw):
    model, ema, opt = _trained(step)
    gen = torch.Generator().manual_seed(step)
    path = ckpt.save_checkpoint(
        tmp_path,
        step,
        model=model,
        ema=ema,
        optimizer=opt,
        config=CONFIG,
        state={"ema_updates": step},
        generators={"train": gen},
        **kw,
    )
    return path, model, ema, opt, gen


def test_round_trip(tmp_path):
    path, model, ema, opt, gen = _save(tmp_path, 10)
    assert path.name == "checkpoint-10"
    names = set(json.loads((path / "manifest.json").read_text())["files"])
    assert {"model.safetensors", "ema.safetensors", "optimizer.safetensors", "config.json", "state.json"} <= names
    assert not list(tmp_path.glob(".tmp-*"))
    assert ckpt.find_latest(tmp_path) == path
    expected_draw = torch.rand(3, generator=gen)

    m2, e2, o2 = _trained(99)
    g2 = torch.Generator()
    state = ckpt.load_training_state(path, model=m2, ema=e2, optimizer=o2, generators={"train": g2}, config=CONFIG)
    assert state["step"] == 10 and state["ema_updates"] == 10
    for a, b in zip(model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    for k, v in opt.state_dict()["state"].items():
        for name, tensor in v.items():
            assert torch.equal(tensor, o2.state_dict()["state"][k][name])
    assert o2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    assert torch.equal(torch.rand(3, generator=g2), expected_draw)

    inf, config = ckpt.load_for_inference(path)
    assert config == CONFIG and not inf.training
    for a, b in zip(inf.state_dict().values(), ema.state_dict().values()):
        assert torch.equal(a, b)
    inf_raw, _ = ckpt.load_for_inference(tmp_path, ema=False)  # an output folder: its latest checkpoint
    for a, b in zip(inf_raw.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_newest_complete_checkpoint_wins_and_corruption_is_named(tmp_path):
    p5 = _save(tmp_path, 5)[0]
    p20 = _save(tmp_path, 20)[0]
    p100 = _save(tmp_path, 100)[0]
    assert ckpt.find_latest(tmp_path) == p100  # by step number, not by name order
    with open(p100 / "model.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    assert ckpt.find_latest(tmp_path) == p20
    with pytest.raises(ValueError, match="model.safetensors does not match its sha256"):
        ckpt.load_for_inference(p100)
    (p20 / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json is corrupt"):
        ckpt.verify_manifest(p20)
    assert ckpt.find_latest(tmp_path) == p5
    (p5 / "manifest.json").unlink()
    with pytest.raises(ValueError, match="no manifest.json: it is incomplete"):
        ckpt.load_for_inference(p5)
    assert ckpt.find_latest(tmp_path) is None


def test_pruning_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, total_limit=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4]


def test_complete_checkpoint_is_never_overwritten(tmp_path):
    path = _save(tmp_path, 7)[0]
    before = (path / "model.safetensors").read_bytes()
    model, ema, opt = _trained(123)
    ckpt.save_checkpoint(tmp_path, 7, model=model, ema=ema, optimizer=opt, config=CONFIG)
    assert (path / "model.safetensors").read_bytes() == before


def test_incompatible_config_is_named(tmp_path):
    path = _save(tmp_path, 3)[0]
    other = json.loads(json.dumps(CONFIG))
    other["model"]["kwargs"]["hidden"] = 32
    model, ema, opt = _trained(0)
    with pytest.raises(ValueError, match="cannot resume.*'model'.*hidden"):
        ckpt.load_training_state(path, model=model, config=other)


def test_sigkill_mid_save_leaves_previous_checkpoint_usable(tmp_path):
    first = _save(tmp_path, 1)[0]
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_checkpoint import _save
        import pathlib
        _save(pathlib.Path({str(tmp_path)!r}), 2)
    """)
    env = dict(os.environ, DIFFSPEC_TEST_SAVE_SLEEP="30", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    tmp = tmp_path / ".tmp-checkpoint-2"
    deadline = time.time() + 60
    while not (tmp / "model.safetensors").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert (tmp / "model.safetensors").exists(), "the save never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.find_latest(tmp_path) == first
    model, config = ckpt.load_for_inference(tmp_path)
    assert config == CONFIG
    again = _save(tmp_path, 2)[0]  # the next save of that step cleans the leftover and completes
    assert ckpt.find_latest(tmp_path) == again and not tmp.exists()
