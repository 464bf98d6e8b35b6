"""Speed of the pipeline graph, the torch-free runtime's Python loop and the trainer's torch sampler.

    .venv/bin/python bench/runtime_speed.py [--quick] [--threads 1] [--rounds 7] [--compile]

Same network, same sampler (20-step DPM-Solver++(2M), uniform grid on the linear schedule), batch 1, 8 and 64,
for the trainer's MLP on 2-D points and the small UNet of the digits demo (1x8x8). Configurations:

  graph        the pipeline graph (`diffspec.export.pipeline`, unrolled form): one session.run per batch on
               onnxruntime's CPU provider, the whole sampler inside the file;
  graph_loop   the same sampler as an ONNX Loop around one copy of the network (the form not chosen);
  runtime      `diffspec.runtime.sample`: the reference sampler in Python, the network on onnxruntime (plain
               session.run);
  runtime_iob  the same with IOBinding (`io_binding=True`), to re-decide the runtime's CPU default;
  eager        the trainer's torch sampler in eager mode (float32, inference_mode);
  compile      (with --compile) the same with the network under torch.compile (compile time excluded).

Each configuration runs in its own long-lived process (torch and onnxruntime in one process slow each other
3-6x on this CPU), all of them started before timing. Timing is interleaved: in every round each configuration
runs a short burst at each batch size, in alternating order (A B C, then C B A, ...), so that a change in the
machine's load hits every configuration alike. Reported: the median over rounds of samples/s and the spread
(lowest-highest round). "sampler share" = 1 - calls x (one network call alone, timed in the same process at
the same batch) / wall time of a whole sampling run: the time the sampler adds around the network.
The IOBinding decision uses the paired per-round ratio runtime_iob / runtime. The last line is a JSON summary.
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
    "unet": dict(
        arch="unet",
        kwargs=dict(
            model_channels=32,
            channel_mult=[1, 2],
            num_res_blocks=1,
            attention_resolutions=[4],
            num_heads=4,
            groups=8,
            in_channels=1,
        ),
        shape=(1, 8, 8),
        kind="image",
    ),
}
SCHEDULE = {"name": "linear"}


# ---------------------------------------------------------------------------------------------- parent side
def _card(net):
    from diffspec.reference.modelcard import DataInfo, ModelCard
    from diffspec.reference.schedules import make_schedule

    spec = NETS[net]
    return ModelCard(
        schedule=make_schedule("linear").to_dict(),
        parameterization="eps",
        data=DataInfo(shape=tuple(spec["shape"]), kind=spec["kind"]),
    )


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
        from diffspec.export.pipeline import export_pipeline

        for form in ("unrolled", "loop"):
            export_pipeline(
                path,
                os.path.join(folder, f"{net}-{form}.onnx"),
                sampler=SAMPLER,
                steps=STEPS,
                grid="uniform",
                form=form,
                image_output=False,
            )


def _export_plain(model, card, path):  # pragma: no cover - only before diffspec.export exists
    import onnx
    import torch

    x = torch.randn(2, *card.data.shape)
    torch.onnx.export(
        model,
        (x, torch.rand(2) * 999),
        path,
        dynamo=False,
        opset_version=18,
        input_names=["x", "t"],
        output_names=["out"],
        dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "out": {0: "B"}},
    )
    m = onnx.load(path)
    onnx.helper.set_model_props(m, card.to_metadata())
    onnx.save(m, path)


# ---------------------------------------------------------------------------------------------- worker side
KINDS = ("graph", "graph_loop", "runtime", "runtime_iob", "eager")


class _Worker:
    """A configuration in its own process: `run(batch, budget)` -> {"sps", "runs", "share"} for one burst."""

    def __init__(self, kind, net, folder, threads):
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            kind,
            "--net",
            net,
            "--folder",
            folder,
            "--threads",
            str(threads),
        ]
        self.kind = kind
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self.error = None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.error = line.strip() or self.proc.stderr.read().strip().splitlines()[-1:] or ["no output"]
            self.error = str(self.error)[:300]

    def run(self, batch, budget):
        if self.error:
            return None
        self.proc.stdin.write(f"{batch} {budget}\n")
        line = self.proc.stdout.readline()
        if not line.startswith("{"):
            self.error = (line.strip() or " | ".join(self.proc.stderr.read().strip().splitlines()[-2:]))[:300]
            return None
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _burst(run_once, network_once, calls, budget):
    """Median seconds of run_once over a burst of at least 2 runs / `budget` seconds, and the sampler share
    1 - (time of `calls` network calls alone, back to back) / (time of one run), both medians over the burst."""
    run_once()
    network_once()
    runs, nets = [], []
    start = time.perf_counter()
    while len(runs) < 2 or (time.perf_counter() - start < budget and len(runs) < 500):
        t0 = time.perf_counter()
        run_once()
        t1 = time.perf_counter()
        for _ in range(calls):  # the same number of network calls, alone, back to back
            network_once()
        runs.append(t1 - t0)
        nets.append(time.perf_counter() - t1)
    run, net = statistics.median(runs), statistics.median(nets)
    return run, len(runs), 1.0 - net / run


def _ort_session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def worker(kind, net, folder, threads):
    """Serve bursts: read "BATCH BUDGET" lines from stdin, answer one JSON line each."""
    import numpy as np

    shape = tuple(NETS[net]["shape"])
    if kind == "eager" or kind == "compile":
        setup = _torch_setup(kind, net, folder, threads)
    else:
        sys.modules["torch"] = None  # neither the runtime nor the graph may need it; keeps torch's threads out
        setup = None
        network = _ort_session(os.path.join(folder, f"{net}.onnx"), threads)
    print("ready", flush=True)
    for line in sys.stdin:
        b, budget = int(line.split()[0]), float(line.split()[1])
        rng = np.random.default_rng(0)
        x = rng.standard_normal((b, *shape)).astype(np.float32)
        t = np.full(b, 500.0, dtype=np.float32)
        if setup is not None:
            run_once, network_once = setup(b)
        elif kind.startswith("graph"):
            form = "loop" if kind == "graph_loop" else "unrolled"
            sess = _ort_session(os.path.join(folder, f"{net}-{form}.onnx"), threads)

            def run_once(sess=sess, x=x):
                return sess.run(["sample"], {"x_T": x})

            def network_once(x=x, t=t):
                return network.run(["out"], {"x": x, "t": t})
        else:
            from diffspec.runtime import Model, sample

            model = Model.load(
                os.path.join(folder, f"{net}.onnx"), device="cpu", io_binding=kind == "runtime_iob", threads=threads
            )

            def run_once(model=model, b=b):
                return sample(model, sampler=SAMPLER, steps=STEPS, grid="uniform", n=b, batch_size=b, seed=0, raw=False)

            def network_once(x=x, t=t):
                return network.run(["out"], {"x": x, "t": t})

        seconds, runs, share = _burst(run_once, network_once, STEPS, budget)
        print(json.dumps({"sps": b / seconds, "runs": runs, "share": share}), flush=True)
    return 0


def _torch_setup(kind, net, folder, threads):
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
    fn = torch.compile(model, dynamic=False) if kind == "compile" else model
    schedule = schedule_from_dict(SCHEDULE)
    grid = make_grid("uniform", make_schedule("linear"), STEPS)
    shape = tuple(NETS[net]["shape"])

    def denoise(x, t):
        out = fn(x, t)
        return x0_from_output("eps", out, x, schedule.alpha(t).to(x.dtype), schedule.sigma(t).to(x.dtype))

    def setup(b):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((b, *shape), generator=gen)
        t = torch.full((b,), 500.0)

        def run_once():
            with torch.inference_mode():
                x_T = torch.randn((b, *shape), generator=gen)
                return SAMPLERS[SAMPLER](denoise, x_T, grid, schedule, noise=gen)

        def network_once():
            with torch.inference_mode():
                return fn(x, t)

        return run_once, network_once

    return setup


# ---------------------------------------------------------------------------------------------------- main
def _fmt(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _cell(values, digits=1):
    if not values:
        return "failed"
    return f"{_fmt(statistics.median(values), digits)} ({_fmt(min(values), digits)}-{_fmt(max(values), digits)})"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 rounds of 0.3 s bursts (a few minutes)")
    p.add_argument("--nets", default="mlp,unet")
    p.add_argument("--batches", default="1,8,64")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, 3 with --quick)")
    p.add_argument("--budget", type=float, default=None, help="seconds per burst (default 1.0, 0.3 with --quick)")
    p.add_argument("--compile", action="store_true", help="also torch.compile (40-55 s of compilation per shape)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads for every configuration (default 0: all cores); 1 is steadier on a busy machine",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--net", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.net, args.folder, args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    rounds = args.rounds or (3 if args.quick else 7)
    budget = args.budget or (0.3 if args.quick else 1.0)
    nets = args.nets.split(",")
    kinds = list(KINDS) + (["compile"] if args.compile else [])
    started = time.perf_counter()
    results = {}  # (net, kind, batch) -> list of per-round dicts
    errors = {}
    with tempfile.TemporaryDirectory(prefix="diffspec-bench-") as folder:
        print(f"exporting {', '.join(nets)} and their pipeline graphs ...", file=sys.stderr, flush=True)
        prepare(folder, nets)
        for net in nets:
            workers = [_Worker(kind, net, folder, args.threads) for kind in kinds]
            try:
                for r in range(rounds):
                    print(f"{net}: round {r + 1}/{rounds} ...", file=sys.stderr, flush=True)
                    order = workers if r % 2 == 0 else workers[::-1]
                    for b in batches:
                        for w in order:
                            out = w.run(b, budget)
                            if out is not None:
                                results.setdefault((net, w.kind, b), []).append(out)
            finally:
                for w in workers:
                    w.close()
                    if w.error:
                        errors[(net, w.kind)] = w.error

    import onnxruntime
    import torch

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    cpu = platform.processor() or platform.machine()
    print(
        f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores ({cpu}), load average {load} at the end, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"threads {args.threads or os.cpu_count()}; "
        f"{SAMPLER}, {STEPS} steps; {rounds} interleaved rounds of {budget:g} s bursts; samples/s, median "
        "(lowest-highest round), higher is better\n"
    )
    head = "| net | batch | " + " | ".join(kinds) + " | graph / runtime | graph / eager |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    summary = {}

    def sps(net, kind, b):
        return [r["sps"] for r in results.get((net, kind, b), [])]

    def paired(net, a, c, b):
        return [x / y for x, y in zip(sps(net, a, b), sps(net, c, b))]

    for net in nets:
        for b in batches:
            cells = [_cell(sps(net, k, b)) for k in kinds]
            g_rt, g_eager = paired(net, "graph", "runtime", b), paired(net, "graph", "eager", b)
            print(f"| {net} | {b} | " + " | ".join(cells) + f" | {_cell(g_rt, 2)} | {_cell(g_eager, 2)} |")
            for key, vals in (
                ("graph_vs_runtime", g_rt),
                ("graph_vs_eager", g_eager),
                ("loop_vs_unrolled", paired(net, "graph_loop", "graph", b)),
                ("iobinding_gain", paired(net, "runtime_iob", "runtime", b)),
            ):
                if vals:
                    summary[f"{key}_{net}_b{b}"] = round(statistics.median(vals), 3)
    print("\nsampler share of wall time (1 - 20 x network alone / run), median (lowest-highest round):\n")
    head = "| net | batch | " + " | ".join(kinds) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for net in nets:
        for b in batches:
            cells = []
            for k in kinds:
                shares = [100 * r["share"] for r in results.get((net, k, b), [])]
                cells.append(_cell(shares, 0) + " %" if shares else "failed")
                if shares:
                    summary[f"share_{k}_{net}_b{b}"] = round(statistics.median(shares) / 100, 3)
            print(f"| {net} | {b} | " + " | ".join(cells) + " |")
    print("\npaired per-round ratios, median (lowest-highest): Loop / unrolled graph and IOBinding / plain runtime\n")
    print("| net | batch | graph_loop / graph | runtime_iob / runtime |")
    print("|---|---|---|---|")
    for net in nets:
        for b in batches:
            print(
                f"| {net} | {b} | {_cell(paired(net, 'graph_loop', 'graph', b), 2)} | "
                f"{_cell(paired(net, 'runtime_iob', 'runtime', b), 2)} |"
            )
    for (net, kind), err in errors.items():
        print(f"\n{net} / {kind} failed: {err}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
