"""Speed of the torch-free runtime against the trainer's torch sampler, same network, same sampler.

    .venv/bin/python bench/runtime_speed.py [--quick]

The network (the trainer's MLP on 2-D points, and the small UNet of the digits demo, 1x8x8) and the sampler
(20-step DPM-Solver++(2M), uniform grid on the linear schedule) are fixed; at batch 1, 8 and 64 it measures:

  (a) the runtime on onnxruntime's CPU provider: `diffspec.runtime.sample` on the exported .onnx, plain
      session.run and with IOBinding (`io_binding=True`);
  (b) the trainer's torch sampler `diffspec.trainer.samplers.SAMPLERS["dpmpp_2m"]` in eager mode (float32,
      inference_mode);
  (c) the same with the network under torch.compile (compile time excluded and reported; skipped with --quick).

Each runtime is timed in its own process (FACTS.md: torch and onnxruntime in one process slow each other 3-6x).
Per configuration: one warm-up run, then runs until `--min-time` seconds and at least 3 runs; the median gives
samples/s. "outside" is the share of a run's wall time spent outside the network calls (sampler arithmetic,
conversions, copies). The last line printed is one JSON object of ratios, e.g. speedup_unet_b8 = runtime
samples/s / torch eager samples/s (and speedup_compile_* against torch.compile where measured).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

STEPS = 20
SAMPLER = "dpmpp_2m"
NETS = {
    "mlp": dict(arch="mlp", kwargs=dict(dim=2, hidden=256, depth=4), shape=(2,), kind="points"),
    "unet": dict(arch="unet", kwargs=dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=1,
                                          attention_resolutions=[4], num_heads=4, groups=8, in_channels=1),
                 shape=(1, 8, 8), kind="image"),
}
SCHEDULE = {"name": "linear"}


# ---------------------------------------------------------------------------------------------- parent side
def _card(net):
    from diffspec.reference.modelcard import DataInfo, ModelCard
    from diffspec.reference.schedules import make_schedule

    spec = NETS[net]
    return ModelCard(schedule=make_schedule("linear").to_dict(), parameterization="eps",
                     data=DataInfo(shape=tuple(spec["shape"]), kind=spec["kind"]))


def _build(net):
    import torch

    from diffspec.trainer.models import build_model

    spec = NETS[net]
    kwargs = dict(spec["kwargs"])
    torch.manual_seed(0)
    try:
        model = build_model(spec["arch"], **kwargs)
    except (TypeError, ValueError):  # a UNet without an in_channels option
        kwargs.pop("in_channels", None)
        model = build_model(spec["arch"], **kwargs)
    with torch.no_grad():  # zero-initialised output layers would make the samplers' work trivial
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.02)
    return model.eval()


def prepare(folder, nets):
    """Build each network with fixed weights; save them for the torch workers and export the ONNX file."""
    import torch

    for net in nets:
        model = _build(net)
        torch.save(model.state_dict(), os.path.join(folder, f"{net}.pt"))
        path = os.path.join(folder, f"{net}.onnx")
        try:
            from diffspec.export import exporter

            exporter.export_model(model, _card(net), path, log=lambda *a, **k: None)
        except ImportError:
            _export_plain(model, _card(net), path)


def _export_plain(model, card, path):  # pragma: no cover - only before diffspec.export exists
    import onnx
    import torch

    x = torch.randn(2, *card.data.shape)
    torch.onnx.export(model, (x, torch.rand(2) * 999), path, dynamo=False, opset_version=18,
                      input_names=["x", "t"], output_names=["out"],
                      dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "out": {0: "B"}})
    m = onnx.load(path)
    onnx.helper.set_model_props(m, card.to_metadata())
    onnx.save(m, path)


def run_worker(kind, net, folder, batches, min_time, timeout, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--net", net, "--folder", folder,
           "--batches", ",".join(map(str, batches)), "--min-time", str(min_time), "--threads", str(threads)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)[:300]}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------- worker side
def _time_runs(fn, min_time):
    fn()  # warm-up (and, for torch.compile, compilation)
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times), len(times)


def worker_runtime(net, folder, batches, min_time, io_binding, threads):
    sys.modules["torch"] = None  # the runtime must not need it; also keeps torch's threads out of this process
    import numpy as np

    from diffspec.runtime import Model, sample

    model = Model.load(os.path.join(folder, f"{net}.onnx"), device="cpu", io_binding=io_binding, threads=threads)
    network = model.network
    spent = [0.0]

    def timed_network(*args, **kwargs):
        t0 = time.perf_counter()
        out = network(*args, **kwargs)
        spent[0] += time.perf_counter() - t0
        return out

    model.network = timed_network
    out = {}
    for b in batches:
        def once():
            return sample(model, sampler=SAMPLER, steps=STEPS, n=b, batch_size=b, seed=0, raw=False)

        median, runs = _time_runs(once, min_time)
        spent[0] = 0.0
        t0 = time.perf_counter()
        once()
        total = time.perf_counter() - t0
        out[b] = {"samples_per_s": b / median, "runs": runs, "outside": max(0.0, 1 - spent[0] / total)}
        assert np.isfinite(out[b]["samples_per_s"])
    out["provider"] = model.provider
    return out


def worker_torch(net, folder, batches, min_time, compile_, threads):
    import torch

    from diffspec.reference.grids import make_grid
    from diffspec.reference.schedules import make_schedule
    from diffspec.trainer.parameterizations import x0_from_output
    from diffspec.trainer.samplers import SAMPLERS
    from diffspec.trainer.schedules import schedule_from_dict

    torch.set_num_threads(threads or os.cpu_count() or 1)
    model = _build(net)
    model.load_state_dict(torch.load(os.path.join(folder, f"{net}.pt")))
    model.eval()
    fn = model
    compile_seconds = {}
    if compile_:
        fn = torch.compile(model, dynamic=False)
    schedule = schedule_from_dict(SCHEDULE)
    grid = make_grid("uniform", make_schedule("linear"), STEPS)
    shape = tuple(NETS[net]["shape"])
    spent = [0.0]

    def denoise(x, t):
        t0 = time.perf_counter()
        out = fn(x, t)
        spent[0] += time.perf_counter() - t0
        return x0_from_output("eps", out, x, schedule.alpha(t).to(x.dtype), schedule.sigma(t).to(x.dtype))

    out = {}
    for b in batches:
        gen = torch.Generator().manual_seed(0)

        def once():
            with torch.inference_mode():
                x_T = torch.randn((b, *shape), generator=gen)
                return SAMPLERS[SAMPLER](denoise, x_T, grid, schedule, noise=gen)

        if compile_:
            t0 = time.perf_counter()
            once()
            compile_seconds[b] = time.perf_counter() - t0
        median, runs = _time_runs(once, min_time)
        spent[0] = 0.0
        t0 = time.perf_counter()
        once()
        total = time.perf_counter() - t0
        out[b] = {"samples_per_s": b / median, "runs": runs, "outside": max(0.0, 1 - spent[0] / total)}
        if compile_:
            out[b]["compile_s"] = compile_seconds[b]
    return out


# ---------------------------------------------------------------------------------------------------- main
def _fmt(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short timings, no torch.compile (under five minutes)")
    p.add_argument("--nets", default="mlp,unet")
    p.add_argument("--batches", default="1,8,64")
    p.add_argument("--min-time", type=float, default=None, help="seconds of timed runs per configuration")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads for both runtimes (default 0: all cores); 1 is steadier on a busy machine")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--net", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    min_time = args.min_time if args.min_time is not None else (1.0 if args.quick else 3.0)

    if args.worker:
        if args.worker in ("ort", "ort_iobinding"):
            result = worker_runtime(args.net, args.folder, batches, min_time, args.worker == "ort_iobinding",
                                    args.threads)
        else:
            result = worker_torch(args.net, args.folder, batches, min_time, args.worker == "compile", args.threads)
        print(json.dumps(result))
        return 0

    nets = args.nets.split(",")
    kinds = ["ort", "ort_iobinding", "eager"] + ([] if args.quick else ["compile"])
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="diffspec-bench-") as folder:
        print(f"exporting {', '.join(nets)} ...", file=sys.stderr, flush=True)
        prepare(folder, nets)
        for net in nets:
            for kind in kinds:
                print(f"timing {net} / {kind} ...", file=sys.stderr, flush=True)
                timeout = 1200 if kind == "compile" else 600
                results[(net, kind)] = run_worker(kind, net, folder, batches, min_time, timeout, args.threads)
    if args.quick:
        print("note: torch.compile skipped under --quick (it compiles for 40-55 s per shape on this CPU)",
              file=sys.stderr)

    import torch

    import onnxruntime

    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores ({cpu}), load average {load} at the end, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"threads {args.threads or os.cpu_count()}; {SAMPLER}, {STEPS} steps; "
          "samples/s (higher is better)\n")
    head = ("| net | batch | runtime ORT-CPU | runtime + IOBinding | torch eager | torch.compile | "
            "runtime / eager | runtime / compile | outside network: runtime / eager |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    ratios = {}
    for net in nets:
        for b in batches:
            def sps(kind):
                r = results.get((net, kind), {})
                return r.get(str(b), r.get(b, {})).get("samples_per_s") if "error" not in r else None

            def outside(kind):
                r = results.get((net, kind), {})
                v = r.get(str(b), {}).get("outside") if "error" not in r else None
                return "n/a" if v is None else f"{100 * v:.0f}%"

            ort_, iob, eager, comp = sps("ort"), sps("ort_iobinding"), sps("eager"), sps("compile")
            best = max([v for v in (ort_, iob) if v is not None], default=None)
            r_eager = best / eager if best and eager else None
            r_comp = best / comp if best and comp else None
            if r_eager:
                ratios[f"speedup_{net}_b{b}"] = round(r_eager, 3)
            if r_comp:
                ratios[f"speedup_compile_{net}_b{b}"] = round(r_comp, 3)
            if ort_ and iob:
                ratios[f"iobinding_gain_{net}_b{b}"] = round(iob / ort_, 3)
            comp_text = _fmt(comp) if comp else ("skipped (--quick)" if args.quick else "failed")
            print(f"| {net} | {b} | {_fmt(ort_)} | {_fmt(iob)} | {_fmt(eager)} | {comp_text} | "
                  f"{_fmt(r_eager, 2)}x | {_fmt(r_comp, 2) + 'x' if r_comp else 'n/a'} | "
                  f"{outside('ort')} / {outside('eager')} |")
    for (net, kind), r in results.items():
        if "error" in r:
            print(f"\n{net} / {kind} failed: {r['error']}")
        elif kind == "compile":
            cs = ", ".join(f"b{b}: {r[str(b)]['compile_s']:.0f} s" for b in batches if str(b) in r)
            print(f"\ntorch.compile warm-up (compilation) for {net}: {cs}")
    print(f"\n(runtime / eager uses the faster of the two runtime columns; total {time.perf_counter() - started:.0f} s)")
    print(json.dumps(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
