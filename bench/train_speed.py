"""Trainer overhead: the time of a diffspec training step against a bare hand-written torch loop on the same network,
batch and threads, measured interleaved (ABAB rounds) with the median and the spread over rounds. Prints a table.

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_speed.py [--rounds 4] [--quick] [--threads 1] [--cases mlp,unet]

The "diffspec" column runs `diffspec.trainer.loop.train` on DDPM's linear schedule with v-prediction (timestep draw,
schedule table, loss, EMA, gradient clipping, lr schedule, JSONL log, class labels with dropout for digits); its time
per step is read from the log's clock over the steps after a warm-up interval (the final checkpoint and validation
come after the last log line). "bare" is the loop a user would write: the same network and labels, a random batch,
eps-MSE at an integer timestep, forward/backward/AdamW (torch's default AdamW). "bare, fused AdamW" is the same loop
with the fused AdamW the trainer uses: the difference to it is the trainer's own per-step cost (EMA, clipping,
the loss path). On CUDA every loop runs with bf16 autocast (and channels-last for image networks).

`--threads-sweep` instead times one bare step per network at 1 and at N threads, interleaved, the measurement
behind the trainer's default thread rule (docs/training.md).

`--parts` times the pieces of one diffspec step one by one on the moons MLP (CPU time, rounds interleaved): the
network's forward and backward, the objective without the network (timestep draw, schedule, noise, target, loss),
the schedule's alpha/sigma/lam of a batch at float times and at integer steps (the table the step reads), the
gradient clipping (the trainer's and torch's clip_grad_norm_), fused AdamW and the EMA update.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffspec.trainer.data import load_dataset
from diffspec.trainer.loop import TrainConfig, train
from diffspec.trainer.models import build_model

# name: (data, arch, network kwargs as the trainer builds them, batch, timed steps)
CASES = {
    "mlp": ("moons", "mlp", dict(dim=2, hidden=128, depth=3, freq_dim=32), 256, 200),
    "unet": (
        "digits",
        "unet",
        dict(
            in_channels=1,
            image_size=8,
            model_channels=32,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_resolutions=(4,),
            num_heads=4,
            groups=8,
            num_classes=10,
        ),
        128,
        24,
    ),
    "dit": ("digits", "dit", dict(in_channels=1, image_size=8, num_classes=10), 128, 24),
}
LABEL = {"mlp": "mlp (moons, batch 256)", "unet": "unet (digits, batch 128)", "dit": "dit (digits, batch 128)"}


def bare_seconds_per_step(case, steps, device, *, fused):
    data, arch, kwargs, batch, _ = CASES[case]
    ds = load_dataset(data)
    x_all = torch.as_tensor(ds.x, device=device)
    y_all = torch.as_tensor(ds.y, device=device) if ds.y is not None else None
    torch.manual_seed(0)
    model = build_model(arch, **kwargs).to(device)
    cuda = device.type == "cuda"
    if cuda and arch != "mlp":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **({"fused": True} if fused else {}))
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, device=device), 0)

    def step():
        idx = torch.randint(0, len(x_all), (batch,), device=device)
        x0, y = x_all[idx], (y_all[idx] if y_all is not None else None)
        n = torch.randint(0, 1000, (batch,), device=device)
        a = abar[n].sqrt().reshape((-1,) + (1,) * (x0.ndim - 1))
        s = (1 - abar[n]).sqrt().reshape(a.shape)
        eps = torch.randn_like(x0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = model(a * x0 + s * eps, n.float(), y)
        loss = (out.float() - eps).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    warm = max(steps // 4, 3)
    for _ in range(warm):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def diffspec_seconds_per_step(case, steps, device, threads):
    data, arch, kwargs, batch, _ = CASES[case]
    warm = max(steps // 4, 3)
    model_kwargs = {k: v for k, v in kwargs.items() if k not in ("dim", "in_channels", "image_size", "num_classes")}
    with tempfile.TemporaryDirectory() as out:
        # the recipe pinned to the bare loop's (discrete linear schedule, integer t, no preconditioning), so a change
        # of the trainer's defaults does not change what is compared
        cfg = TrainConfig(
            data=data,
            output_dir=out,
            arch=arch,
            model_kwargs=model_kwargs,
            train_batch_size=batch,
            schedule="linear",
            precond="none",
            prediction_type="v",
            max_train_steps=warm + steps,
            logging_steps=warm,
            progress=False,
            validation_steps=10**9,
            num_validation_samples=4,
            num_inference_steps=2,
            device=device.type,
            threads=threads,
        )
        train(cfg)
        log = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    n = log[-1]["step"] - log[0]["step"]
    return (log[-1]["time"] - log[0]["time"]) / n, (log[-1]["cpu_time"] - log[0]["cpu_time"]) / n


def spread(values, scale=1.0, fmt="{:.2f}"):
    lo, mid, hi = min(values) * scale, statistics.median(values) * scale, max(values) * scale
    return f"{fmt.format(mid)} [{fmt.format(lo)}-{fmt.format(hi)}]"


def overhead_table(args, devices):
    clock = "CPU" if args.cpu_time else "wall"
    print(f"{clock}-clock ms per step, median [min-max] over rounds; speed = bare time / diffspec time per round\n")
    print("| network | device | bare | bare, fused AdamW | diffspec | speed vs bare | speed vs bare with fused AdamW |")
    print("|---|---|---|---|---|---|---|")
    k = 1 if args.cpu_time else 0
    for case in args.cases:
        steps = 6 if args.quick else CASES[case][4]
        for device in devices:
            runs = {"bare": [], "fused": [], "ours": []}
            for r in range(args.rounds):  # ABAB: the order alternates, so drift in the machine's load cancels
                for which in ("bare", "fused", "ours") if r % 2 == 0 else ("ours", "fused", "bare"):
                    if which == "ours":
                        runs[which].append(diffspec_seconds_per_step(case, steps, device, args.threads)[k])
                    else:
                        runs[which].append(bare_seconds_per_step(case, steps, device, fused=which == "fused")[k])
            bare, fused, ours = runs["bare"], runs["fused"], runs["ours"]
            ratio = [b / o for b, o in zip(bare, ours)]
            ratio_fused = [b / o for b, o in zip(fused, ours)]
            tag = device.type + (" bf16" if device.type == "cuda" else "")
            print(
                f"| {LABEL[case]} | {tag} | {spread(bare, 1e3, '{:.1f}')} | {spread(fused, 1e3, '{:.1f}')} | "
                f"{spread(ours, 1e3, '{:.1f}')} | {spread(ratio)}x | {spread(ratio_fused)}x |",
                flush=True,
            )


def threads_sweep(args):
    n = args.sweep_threads
    print("wall-clock ms per step of the bare loop (fused AdamW), median [min-max] over rounds\n")
    print(f"| network | parameters x batch | 1 thread | {n} threads | time with {n} threads / time with 1 |")
    print("|---|---|---|---|---|")
    for case in args.cases:
        _, arch, kwargs, batch, steps = CASES[case]
        steps = 4 if args.quick else max(steps // 3, 6)
        params = sum(p.numel() for p in build_model(arch, **kwargs).parameters())
        times = {1: [], n: []}
        for r in range(args.rounds):
            for th in (1, n) if r % 2 == 0 else (n, 1):
                torch.set_num_threads(th)
                times[th].append(bare_seconds_per_step(case, steps, torch.device("cpu"), fused=True)[0])
        ratio = [b / a for a, b in zip(times[1], times[n])]
        print(
            f"| {LABEL[case]} | {params * batch / 1e6:.0f}M | {spread(times[1], 1e3, '{:.1f}')} | "
            f"{spread(times[n], 1e3, '{:.1f}')} | {spread(ratio)} |",
            flush=True,
        )


def parts_table(args):
    import copy

    from diffspec.trainer import schedules, timesteps
    from diffspec.trainer.objective import DiffusionObjective
    from diffspec.trainer.optim import EMA, clip_grad_norm

    _, arch, kwargs, batch, _ = CASES["mlp"]
    torch.manual_seed(0)
    model = build_model(arch, **kwargs)
    params = list(model.parameters())
    ema = EMA(copy.deepcopy(model).requires_grad_(False), model)
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    sch = schedules.make_schedule("linear")
    gen = torch.Generator().manual_seed(0)
    obj = DiffusionObjective(
        schedule=sch, parameterization="v", draw_t=lambda n, g: timesteps.uniform_discrete(sch, n, g, dtype=torch.int64)
    )
    x = torch.as_tensor(load_dataset("moons").x[:batch])
    n = torch.randint(0, sch.num_steps, (batch,))
    t = n.to(torch.float32)

    def forward_backward():
        model(x, t, None).sub(1).square().mean().backward()

    parts = {
        "forward + backward of the network": forward_backward,
        "objective without the network": lambda: obj(lambda x_t, t_, y: x_t, x, None, gen).mean(),
        "alpha, sigma, lam at float times": lambda: sch.alpha_sigma_lam(t),
        "alpha, sigma, lam at integer steps (table)": lambda: sch.alpha_sigma_lam(n),
        "gradient clipping (trainer)": lambda: clip_grad_norm(params, 1.0),
        "gradient clipping (torch clip_grad_norm_)": lambda: torch.nn.utils.clip_grad_norm_(params, 1.0),
        "fused AdamW step": opt.step,
        "EMA update": lambda: ema.update(0.999),
    }
    reps = 20 if args.quick else 200
    forward_backward()
    times: dict[str, list[float]] = {k: [] for k in parts}
    for r in range(args.rounds):
        for name in parts if r % 2 == 0 else reversed(list(parts)):
            c0 = time.process_time()
            for _ in range(reps):
                parts[name]()
            times[name].append((time.process_time() - c0) / reps)
    print(f"CPU-time ms per call, moons MLP at batch {batch}, median [min-max] over rounds of {reps} calls\n")
    print("| piece | ms |")
    print("|---|---|")
    for name, v in times.items():
        print(f"| {name} | {spread(v, 1e3, '{:.3f}')} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4, help="ABAB rounds (medians and spread over them)")
    p.add_argument("--quick", action="store_true", help="a few steps per round, for a smoke test")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every loop")
    p.add_argument("--cases", default="mlp,unet,dit", help=f"comma-separated, from {sorted(CASES)}")
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="compare CPU time per step (this process) instead of "
        "wall-clock time: steadier on a busy machine, blind to waiting",
    )
    p.add_argument("--threads-sweep", action="store_true", help="time 1 vs --sweep-threads threads instead")
    p.add_argument("--sweep-threads", type=int, default=2)
    p.add_argument("--parts", action="store_true", help="time the pieces of one step (moons MLP) instead")
    args = p.parse_args()
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown or args.rounds < 1 or args.threads < 1 or args.sweep_threads < 2:
        p.error(f"--cases from {sorted(CASES)}, --rounds >= 1, --threads >= 1, --sweep-threads >= 2")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds\n")
    if args.threads_sweep:
        threads_sweep(args)
        return
    if args.parts:
        parts_table(args)
        return
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    overhead_table(args, devices)


if __name__ == "__main__":
    main()
