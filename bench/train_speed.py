"""Trainer overhead: steps/s of diffspec's training step against a bare hand-written torch loop on the same
network and batch (AdamW, eps-MSE on x_t = alpha x0 + sigma eps). Prints a markdown table.

    OMP_NUM_THREADS=2 .venv/bin/python bench/train_speed.py [--steps 200] [--quick]

The "diffspec" column runs `diffspec.trainer.loop.train` (timestep draw, schedule, weighted loss, EMA, clipping,
lr schedule, JSONL log); its rate is read from the steps/s it logs, after a warm-up. The bare loop does the
forward/backward/AdamW only. On CUDA both run with bf16 autocast (and channels-last for the UNet).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from diffspec.trainer.data import load_dataset
from diffspec.trainer.loop import TrainConfig, train
from diffspec.trainer.models import build_model

CASES = {
    "mlp (moons, batch 256)": ("moons", "mlp", dict(hidden=128, depth=3, freq_dim=32), 256),
    "unet (digits, batch 128)": ("digits", "unet", dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                                        attention_resolutions=(4,), num_heads=4, groups=8), 128),
}


def bare_rate(data, arch, kwargs, batch, steps, device):
    ds = load_dataset(data)
    x_all = torch.as_tensor(ds.x, device=device)
    kw = dict(kwargs, **({"dim": 2} if arch == "mlp" else {"in_channels": 1, "image_size": 8}))
    torch.manual_seed(0)
    model = build_model(arch, **kw).to(device)
    cuda = device.type == "cuda"
    if cuda and arch != "mlp":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, device=device), 0)

    def step(i):
        idx = torch.randint(0, len(x_all), (batch,), device=device)
        x0 = x_all[idx]
        n = torch.randint(0, 1000, (batch,), device=device)
        a = abar[n].sqrt().reshape((-1,) + (1,) * (x0.ndim - 1))
        s = (1 - abar[n]).sqrt().reshape(a.shape)
        eps = torch.randn_like(x0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = model(a * x0 + s * eps, n.float())
        loss = (out.float() - eps).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(30):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def trainer_rate(data, arch, kwargs, batch, steps, device):
    with tempfile.TemporaryDirectory() as out:
        log_every = max(steps // 4, 1)
        cfg = TrainConfig(data=data, output_dir=out, arch=arch, model_kwargs=dict(kwargs), train_batch_size=batch,
                          max_train_steps=log_every + steps, logging_steps=log_every, progress=False,
                          validation_steps=10**9, num_validation_samples=4, num_inference_steps=2,
                          device=device.type)
        train(cfg)
        log = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    # The first interval includes warm-up; the last includes the final checkpoint and validation.
    rates = [r["steps_per_s"] for r in log[1:-1]] or [log[-1]["steps_per_s"]]
    return sorted(rates)[len(rates) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="20 steps, for a smoke test")
    args = p.parse_args()
    steps = 20 if args.quick else args.steps
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| network | device | bare torch steps/s | diffspec steps/s | overhead (bare / diffspec) |")
    print("|---|---|---|---|---|")
    for name, (data, arch, kwargs, batch) in CASES.items():
        for device in devices:
            # Best of two runs each: the machine is shared, and the first run pays one-time warm-up.
            bare = max(bare_rate(data, arch, kwargs, batch, steps, device) for _ in range(2))
            ours = max(trainer_rate(data, arch, kwargs, batch, steps, device) for _ in range(2))
            tag = device.type + (" bf16" if device.type == "cuda" else "")
            print(f"| {name} | {tag} | {bare:.1f} | {ours:.1f} | {bare / ours:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
