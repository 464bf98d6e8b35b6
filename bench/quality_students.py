"""Few-step students against their teachers: sample quality at 1, 2 and 4 network evaluations, and training time.

    python bench/quality_students.py [--quick] [--data moons,digits] [--workdir runs/bench_students] [--seed 0]

For each data set it trains two teachers with `diffspec-train` (DDPM's linear schedule with v-prediction, and a
flow-matching one for reflow), then every student with `diffspec-train --distill ...` / `--objective consistency`,
each in its own process, and scores samples drawn with the trainer's samplers:

- moons: standardized sliced W2 to fresh data over the data-vs-data floor, n = 4,000 (1.0 = as good as data);
- digits: the Frechet distance in the hidden layer of the demo's small classifier (scripts/demo.py), generated vs
  held-out digits, over the floor (training vs held-out digits). Teachers and students train on the training split
  only (written to WORKDIR/digits/digits_train.npz).

Rows: the teacher at 20 and 50 steps (dpmpp_2m) and at 1, 2, 4 DDIM steps (what the teacher does without a
student), the teacher's ODE as consistency distillation discretizes it (20 Karras steps, with the trainer's
default Heun and with DDIM: the map a CD student learns), consistency distillation (CD) and consistency training
(CT) with the `consistency` sampler, progressive distillation (PD from 16 teacher steps, trainer defaults: the
first round's teacher ODE solved with 4 dpmpp_2m steps per student step; one student per round) with DDIM, the
flow teacher and its reflow student with `flow_euler`.
The teacher's 20- and 50-step rows use the runtime's default grid; its DDIM rows and the flow teacher's rows the
students' grids (trailing, uniform in t). Students sample on the grid their card names (consistency models: their
discretization's grid down to their boundary; PD: its training grid; reflow: uniform in t). Each row is scored
with --eval-seeds sampling seeds (default 5) and reports the median and the range: one seed's score moves by up
to +-20% near the floor. The table ends with the ratios the targets are stated in: CD at 2 and 1 NFE and PD at 4
NFE over the teacher's 20-NFE score. Training seconds come from the student's card (`train_seconds`, all rounds
of PD) or the teacher's log. Run it with `nice` and one thread on a shared machine; --quick is a smoke run
(minutes). Runs already in --workdir are reused, not retrained.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RECIPES = {  # full / quick optimizer steps
    "moons": {
        "teacher": (4000, 800),
        "cd": (2000, 300),
        "ct": (4000, 600),
        "pd": (400, 150),  # per round
        "reflow": (2000, 300),
        "pd_teacher_steps": (16, 8),
        "num_pairs": (20000, 4000),
    },
    "digits": {  # sized for about an hour on one idle core
        "teacher": (1000, 300),
        "cd": (2000, 100),
        "ct": (600, 200),
        "pd": (100, 50),  # per round
        "reflow": (300, 100),
        "pd_teacher_steps": (16, 8),
        "num_pairs": (1000, 500),
    },
}


def _run(args, log):
    """Run `python -m diffspec.trainer ARGS` in its own process."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(
        [sys.executable, "-m", "diffspec.trainer", *args, "--no-progress"], env=env, capture_output=True, text=True
    )
    log.write(" ".join(args) + "\n" + proc.stdout + proc.stderr + "\n")
    log.flush()
    if proc.returncode != 0:
        raise SystemExit(f"quality_students: training failed: {' '.join(args)}\n{proc.stderr.strip()[-800:]}")


def _train_seconds(run):
    """Training time of a run: the student card's `train_seconds`, else the last `time` of the teacher's log."""
    student = json.loads((_checkpoints(run)[-1] / "config.json").read_text()).get("student")
    if student and "train_seconds" in student:
        return float(student["train_seconds"])
    times = [json.loads(line).get("time") for line in (Path(run) / "log.jsonl").read_text().splitlines() if line]
    times = [t for t in times if t is not None]
    return float(times[-1]) if times else float("nan")


def _checkpoints(run):
    from diffspec.trainer.checkpoint import list_checkpoints

    return [p for _, p in list_checkpoints(run)]


class Scorer:
    def __init__(self, data, n):
        from _scores import ImageScorer, PointScorer, image_split

        self.data, self.n = data, n
        if data == "moons":
            self.impl = PointScorer(data, n)
        else:
            self.impl = ImageScorer(image_split(data))

    def __call__(self, x_model, config):
        d = config["data"]
        raw = (x_model - d["shift"]) / d["scale"]
        if self.data == "moons":
            return self.impl(raw)["score"]
        return self.impl(raw, np.zeros(len(raw), dtype=np.int64))["score"]


def _score(scorer, ckpt, sampler, steps, *, grid=None, n, seed):
    from diffspec.trainer.checkpoint import load_for_inference
    from diffspec.trainer.distill_loop import sample_model

    model, config = load_for_inference(ckpt)
    chunks = [
        sample_model(model, config, n=min(2000, n - i), sampler=sampler, steps=steps, seed=seed + i, grid=grid)
        for i in range(0, n, 2000)
    ]
    return scorer(np.concatenate(chunks), config)


def run(data, *, quick, workdir, seed, log, eval_seeds=5):
    q = 1 if quick else 0
    r = {k: v[q] for k, v in RECIPES[data].items()}
    work = Path(workdir) / data
    work.mkdir(parents=True, exist_ok=True)
    common = ["--data", data, "--seed", str(seed), "--threads", "1"]
    if data != "moons":  # train on the scorer's training split; its held-out digits are the reference set
        from _scores import image_split

        split = image_split(data)
        train_file = work / f"{data}_train.npz"
        np.savez(train_file, x=split.x_train, y=split.y_train)
        common = ["--data", str(train_file), "--seed", str(seed), "--threads", "1", "--class-conditional", "no"]
        common += ["--train-batch-size", "128"]
    rows, times = [], {}

    def train(name, extra, steps):
        out = work / name
        if not _checkpoints(out):
            _run([*common, "--output-dir", str(out), "--max-train-steps", str(steps), *extra], log)
        times[name] = _train_seconds(out)
        return out

    vis = ["--validation-steps", "1000000"]
    teacher = train("teacher", [*vis, "--schedule", "linear", "--prediction-type", "v"], r["teacher"])
    flow = train("teacher_flow", [*vis, "--schedule", "flow", "--prediction-type", "flow"], r["teacher"])
    t_ckpt, f_ckpt = _checkpoints(teacher)[-1], _checkpoints(flow)[-1]
    cd = train("cd", ["--distill", "consistency", "--teacher", str(teacher)], r["cd"])
    ct = train("ct", ["--objective", "consistency"], r["ct"])
    pd_args = ["--distill", "progressive", "--teacher", str(teacher), "--teacher-steps", str(r["pd_teacher_steps"])]
    pd_args += ["--student-steps", "1"]
    pd = train("pd", pd_args, r["pd"])
    rf = train(
        "reflow", ["--distill", "reflow", "--teacher", str(flow), "--num-pairs", str(r["num_pairs"])], r["reflow"]
    )

    n = 4000 if data == "moons" else 500
    scorer = Scorer(data, n)

    def row(model, procedure, ckpt, sampler, nfe, seconds, grid=None, steps=None):
        # one score per sampling seed (far apart: a chunk of 2,000 samples uses seed + i); the median is reported
        scores = [
            _score(scorer, ckpt, sampler, steps or nfe, grid=grid, n=n, seed=seed + 1 + 10007 * k)
            for k in range(eval_seeds)
        ]
        score = float(np.median(scores))
        rows.append(
            {
                "data": data,
                "model": model,
                "procedure": procedure,
                "sampler": sampler,
                "nfe": nfe,
                "score": score,
                "scores": scores,
                "train_s": seconds,
            }
        )
        spread = f"[{min(scores):.2f}-{max(scores):.2f}]"
        print(f"  {data:6s} {model:14s} {sampler:12s} NFE {nfe:3d}  score {score:8.2f} {spread}", flush=True)

    for nfe in (20, 50):
        row("teacher", "diffusion", t_ckpt, "dpmpp_2m", nfe, times["teacher"])
    for nfe in (1, 2, 4):  # on the students' grid
        row("teacher", "diffusion", t_ckpt, "ddim", nfe, times["teacher"], grid="trailing")
    from diffspec.trainer.distill_loop import CD_STEPS

    for sampler, calls in (("heun", 2 * CD_STEPS - 1), ("ddim", CD_STEPS)):  # Heun: 2 calls a step, 1 onto 0
        row("teacher, CD's grid", "diffusion", t_ckpt, sampler, calls, times["teacher"], grid="karras", steps=CD_STEPS)
    for nfe in (1, 2, 4):
        row("cd student", "consistency distillation", _checkpoints(cd)[-1], "consistency", nfe, times["cd"])
    for nfe in (1, 2, 4):
        row("ct student", "consistency training", _checkpoints(ct)[-1], "consistency", nfe, times["ct"])
    for ckpt in _checkpoints(pd):
        steps = json.loads((ckpt / "config.json").read_text())["student"]["student_steps"]
        if steps <= 4:
            row("pd student", "progressive distillation", ckpt, "ddim", steps, times["pd"])
    for nfe in (1, 2, 4, 20):
        row("flow teacher", "flow matching", f_ckpt, "flow_euler", nfe, times["teacher_flow"], grid="uniform")
    for nfe in (1, 2, 4):
        row("reflow student", "reflow", _checkpoints(rf)[-1], "flow_euler", nfe, times["reflow"])
    straight = json.loads((_checkpoints(rf)[-1] / "config.json").read_text())["student"]
    return rows, straight


def _ratio(name, row, ref, target):
    """The ratio of medians, and its range over the seeds (the row's seed k over the teacher's seed k)."""
    each = np.asarray(row["scores"]) / np.asarray(ref["scores"])
    spread = f"[{each.min():.2f}-{each.max():.2f}]"
    return f"{name} / teacher@20 = {row['score'] / ref['score']:.2f} {spread} (target <= {target})"


def table(rows, straight):
    lines = [
        "| data | model | procedure | sampler | NFE | score (x floor), median | range over sampling seeds | training s |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = "" if not np.isfinite(r["train_s"]) else f"{r['train_s']:.0f}"
        spread = f"{min(r['scores']):.2f}-{max(r['scores']):.2f}"
        lines.append(
            f"| {r['data']} | {r['model']} | {r['procedure']} | {r['sampler']} | {r['nfe']} | {r['score']:.2f} | "
            f"{spread} | {t} |"
        )
    out = "\n".join(lines)
    for data, s in straight.items():
        out += (
            f"\n\n{data}: straightness (Liu et al. 2022, eq. 6) of the flow teacher "
            f"{s['straightness_teacher']:.4f}, of its reflow student {s['straightness_student']:.4f}"
        )
    for data in sorted({r["data"] for r in rows}):
        by = {(r["model"], r["nfe"]): r for r in rows if r["data"] == data}
        ref = by[("teacher", 20)]

        ratios = [_ratio("CD@2", by[("cd student", 2)], ref, 1.5), _ratio("CD@1", by[("cd student", 1)], ref, 2.5)]
        if ("pd student", 4) in by:
            ratios.append(_ratio("PD@4", by[("pd student", 4)], ref, 1.5))
        out += f"\n{data}: " + "; ".join(ratios)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: few steps, minutes")
    p.add_argument("--data", default="moons", help="comma-separated: moons, digits")
    p.add_argument("--workdir", default="runs/bench_students", help="teachers and students are kept here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seeds", type=int, default=5, help="sampling seeds per row; the median is reported")
    args = p.parse_args(argv)
    if args.eval_seeds < 1:
        print(f"quality_students: --eval-seeds {args.eval_seeds}: expected an integer >= 1", file=sys.stderr)
        return 2
    datas = [d for d in args.data.split(",") if d]
    unknown = [d for d in datas if d not in RECIPES]
    if unknown:
        print(f"quality_students: --data {unknown[0]!r}: expected some of {sorted(RECIPES)}", file=sys.stderr)
        return 2
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    rows, straight = [], {}
    with open(Path(args.workdir) / "train.log", "a") as log:
        for data in datas:
            print(f"[{data}] training teachers and students ({'quick' if args.quick else 'full'}) ...", flush=True)
            r, s = run(
                data, quick=args.quick, workdir=args.workdir, seed=args.seed, log=log, eval_seeds=args.eval_seeds
            )
            rows += r
            straight[data] = s
    print()
    print(table(rows, straight))
    return 0


if __name__ == "__main__":
    sys.exit(main())
