"""Sample quality over the design space, at fixed budgets: the approach of Karras et al. (2022, "Elucidating the
Design Space of Diffusion-Based Generative Models", arXiv:2206.00364, Table 1 and Sections 3-5) applied to this
project. Each axis is one named choice:

- training recipe: schedule x parameterization / preconditioning x loss weighting x distribution of t, and the
  network and optimizer (width, depth, learning rate, EMA, batch) where the schedule alone is not enough;
- sampling: sampler x time grid at a fixed number of network evaluations (NFE).

Every recipe trains for a fixed number of steps (default: the trainer's default for the data) with the trainer's
own `train`, then its EMA network samples with each (sampler, grid). Scores (`bench/_scores.py`) are a distance
divided by the data-vs-data floor: 2-D toys by standardized sliced W2 with n = 4,000 against fresh data; digits
and MNIST-5k by the Frechet distance in the demo classifier's features, plus the share of samples the classifier
reads as their class. 1.0 is what a perfect model scores on average; one score of such a model varies by about
+-30% (2-D toys, n = 4,000), so `--eval-seeds K` samples each trained model with K seeds and the table gives the
median and range. `--sampler-floor` scores the samplings alone, with the exact denoiser of a dense Gaussian mixture
in place of a network. Prints one markdown table per data set and, last, one JSON line.

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/quality.py --quick          # moons, a few recipes
    OMP_NUM_THREADS=1 nice .venv/bin/python bench/quality.py                  # every data set and recipe
    OMP_NUM_THREADS=1 nice .venv/bin/python bench/quality.py --data moons --recipes defaults,edm --seeds 0,1
    OMP_NUM_THREADS=1 nice .venv/bin/python bench/quality.py --data moons --sampler-floor --samplings 0,2 --eval-seeds 3
    .venv/bin/python bench/quality.py --students                             # also bench/quality_students.py

Run several invocations side by side (one per data set, say) on a machine with more cores; each is one thread.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _scores import IMAGE_DATA, MIN_POINTS, POINT_DATA, ImageScorer, PointScorer, image_split  # noqa: E402
from diffspec.trainer import checkpoint as ckpt  # noqa: E402
from diffspec.trainer.config import TrainConfig  # noqa: E402
from diffspec.trainer.grids import GRIDS  # noqa: E402
from diffspec.trainer.loop import train  # noqa: E402
from diffspec.trainer.parameterizations import x0_from_output  # noqa: E402
from diffspec.trainer.samplers import get_sampler  # noqa: E402
from diffspec.trainer.schedules import schedule_from_dict  # noqa: E402

# ---------------------------------------------------------------------------------------------------- recipes
# Overrides of the trainer's configuration; {} is whatever the trainer does by default today.
# The 2-D default until 2026-12 (and the image default): DDPM's linear betas, v-prediction, uniform integer t.
OLD = dict(schedule="linear", prediction_type="v", timestep_sampling="uniform_discrete")
EDM = dict(schedule="edm", precond="edm", timestep_sampling="edm_lognormal", weighting="edm")
RECIPES = {
    "defaults": {},
    "linear-v": OLD,
    "linear-eps-minsnr5": dict(schedule="linear", prediction_type="eps", snr_gamma=5.0),
    "cosine-v": dict(schedule="cosine", prediction_type="v"),
    "flow-lognorm": dict(schedule="flow", prediction_type="flow", timestep_sampling="logit_normal"),
    "edm": EDM,
    "edm-lr1e-3": {**EDM, "learning_rate": 1e-3},
    "edm-256x4": {**EDM, "model_kwargs": dict(hidden=256, depth=4)},
    "edm-ema0.999": {**EDM, "ema_max_decay": 0.999},
    "edm-batch512": {**EDM, "train_batch_size": 512},
    "edm-batch1024": {**EDM, "train_batch_size": 1024},
    "edm-512x3": {**EDM, "model_kwargs": dict(hidden=512, depth=3)},
    "edm-256x6": {**EDM, "model_kwargs": dict(hidden=256, depth=6)},
    "edm-256x4-batch1024": {**EDM, "model_kwargs": dict(hidden=256, depth=4), "train_batch_size": 1024},
    "edm-constant-lr": {**EDM, "lr_scheduler": "constant"},
}
IMAGE_RECIPES = ("defaults", "cosine-v", "edm")  # the image default is the linear-v recipe

# (sampler, grid, steps): grid None is the runtime's default grid for the schedule. NFE = calls/step x steps.
SAMPLINGS = [
    ("dpmpp_2m", None, 20),
    ("dpmpp_2m", "uniform", 20),
    ("dpmpp_2m", "karras", 20),
    ("dpmpp_2m", "uniform_lam", 20),
    ("dpmpp_2m", "trailing", 20),
    ("euler", None, 20),
    ("heun", None, 10),
    ("ddpm", None, 100),
    ("dpmpp_2m", "exponential", 20),
    ("dpmpp_3m", None, 20),
    ("dpmpp_2m", None, 40),
]
CALLS_PER_STEP = {"heun": 2}
QUICK = dict(data=("moons",), recipes=("defaults", "linear-v"), samplings=SAMPLINGS[:4])


def default_grid_name(schedule):
    """The grid `diffspec-sample` uses when none is named (the runtime's table), for a trainer schedule."""
    from diffspec.runtime.sampling import default_grid

    return default_grid(schedule)


def parse_grid(spec):
    """'karras' -> ('karras', {}); 'karras:rho=3,t_start=20' -> ('karras', {'rho': 3.0, 't_start': 20.0})."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        options[key] = float(value)
    return name, options


def grid_applies(spec, schedule, steps):
    """False where the grid cannot serve the schedule (a discrete spacing on a continuous schedule, a spacing in
    noise level from a time where alpha = 0, ...): that cell of the table stays empty."""
    name, options = parse_grid(spec)
    try:
        GRIDS[name](schedule, steps, **options)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------- train + sample
def train_recipe(data, recipe, *, seed, steps, workdir, image_file=None):
    """Train one recipe (or reuse a kept run's final checkpoint); returns (EMA model, its config dict, seconds)."""
    latest = ckpt.find_latest(workdir)
    if latest is not None:
        model, config = ckpt.load_for_inference(latest)
        if steps is None or config["train"]["max_train_steps"] == steps:
            return model, config, float("nan")
    overrides = dict(RECIPES[recipe])
    if image_file is not None:
        overrides.setdefault("class_conditional", True)
    cfg = TrainConfig(
        data=image_file or data,
        output_dir=str(workdir),
        seed=seed,
        progress=False,
        max_train_steps=steps,
        validation_steps=10**9,
        **overrides,
    )
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    model, config = ckpt.load_for_inference(result["checkpoint"])
    return model, config, seconds


@torch.no_grad()
def sample(model, config, sampler, grid_name, steps, *, n, seed, labels=None, guidance_scale=1.0, batch=4000):
    """n samples in raw data units from the EMA network with one of the trainer's samplers on a named grid."""
    schedule = schedule_from_dict(config["schedule"])
    param = config["parameterization"]
    name, options = parse_grid(grid_name or default_grid_name(schedule))
    grid = GRIDS[name](schedule, steps, **options)  # a ValueError where the grid cannot serve this schedule
    fn = get_sampler(sampler)
    shape = tuple(config["data"]["shape"])
    null = config.get("null_class")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        y = None if labels is None else torch.as_tensor(labels[start : start + b])

        def denoise(x, t, y=y):
            t = t.to(torch.float32).expand(x.shape[0]) if t.ndim == 0 else t.to(torch.float32)
            if y is not None and guidance_scale != 1.0:
                both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null)])).float()
                cond, uncond = both.chunk(2)
                f = uncond + guidance_scale * (cond - uncond)
            else:
                f = model(x, t, y).float()
            return x0_from_output(param, f, x, schedule.alpha(t), schedule.sigma(t))

        x_T = torch.randn((b, *shape), generator=gen) * float(schedule.sigma(grid[0]))
        out.append(fn(denoise, x_T, grid, schedule, noise=gen).double().numpy())
    x = np.concatenate(out)
    return (x - config["data"]["shift"]) / config["data"]["scale"]


# ---------------------------------------------------------------------------------------------------- the sampler's floor
def sampler_floor(data, samplings, *, n, eval_seeds, log, components=1000, bandwidth=0.01):
    """What each sampling scores with an exact denoiser: the sampler's own error, apart from any network.

    The data are replaced by a dense Gaussian mixture in model space: one component of standard deviation
    `bandwidth` at each of `components` training points, for which E[x0 | x_t] is exact (`reference.oracles`). Its
    draws are scored beside the samplers' (row "exact draws"); a sampling that scores like them adds no error of its
    own. Runs the reference (float64 numpy) samplers on the trainer's default schedule for the data."""
    from diffspec.reference import schedules as ref_schedules
    from diffspec.reference.grids import make_grid
    from diffspec.reference.oracles import GaussianMixture
    from diffspec.reference.samplers import get_sampler as ref_sampler
    from diffspec.trainer.config import POINT_DEFAULTS
    from diffspec.trainer.data import load_dataset

    ds = load_dataset(data, n_points=components, seed=0)
    points = ds.x.astype(np.float64)
    mixture = GaussianMixture.create(np.ones(len(points)), points, np.full(len(points), bandwidth))
    schedule = ref_schedules.make_schedule(POINT_DEFAULTS["schedule"])

    def denoise(x, t):  # E[x0 | x_t], in row blocks (the oracle holds a (B, K, D) array)
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        return np.concatenate([mixture.x0_mean(x[i : i + 250], alpha, sigma) for i in range(0, len(x), 250)])

    scorer = PointScorer(data, n)
    rows = []
    for e in range(eval_seeds):
        rng = np.random.default_rng(1 + 100 * e)
        cases = [("exact draws", None, 0)] + [(f, g or default_grid_name(schedule), k) for f, g, k in samplings]
        for sampler, grid, k in cases:
            if sampler == "exact draws":
                x = mixture.sample(n, rng)[0]
            else:
                name, options = parse_grid(grid)
                try:
                    g = make_grid(name, schedule, k, **options)
                except ValueError:  # the grid cannot serve this schedule
                    continue
                x_T = rng.standard_normal((n, points.shape[1])) * float(schedule.sigma(g[0]))
                x = ref_sampler(sampler)(denoise, x_T, g, schedule, noise=rng)
            s = scorer((x - ds.shift) / ds.scale)
            row = dict(
                data=data,
                recipe=f"exact denoiser ({components} x N(point, {bandwidth:g}^2))",
                seed=0,
                sample_seed=1 + 100 * e,
                train_steps=0,
                train_seconds=0.0,
                sampler=sampler,
                grid=grid or "-",
                grid_used=grid or "-",
                steps=k,
                nfe=k * CALLS_PER_STEP.get(sampler, 1),
                score=round(s["score"], 3),
                distance=s["distance"],
                floor=s["floor"],
            )
            rows.append(row)
            log(row)
    return rows


# ---------------------------------------------------------------------------------------------------- one data set
def _workdir(keep, data, recipe, seed):
    """A temporary folder, or KEEP/DATA-RECIPE-SEED (kept, for more samplings later) with --keep."""
    if keep is None:
        return tempfile.TemporaryDirectory(prefix="quality-")
    path = Path(keep) / f"{data}-{recipe}-{seed}"
    path.mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(str(path))


def run_data(data, recipes, samplings, *, seeds, steps, n, log, keep=None, eval_seeds=1, guidance_scale=1.0):
    """Train every (recipe, seed) on one data set and score each sampling with `eval_seeds` sampling seeds.

    2-D toys: n points scored by `PointScorer`; images: n class-conditional samples (labels 0..9 in turn, CFG at
    guidance_scale) scored by `ImageScorer`. One row per (recipe, training seed, sampling, sampling seed)."""
    images = data in IMAGE_DATA
    if images:
        split = image_split(data)
        scorer = ImageScorer(split)
        labels = np.arange(n) % 10
    else:
        scorer = PointScorer(data, n)
    rows = []
    for recipe in recipes:
        for seed in seeds:
            with _workdir(keep, data, recipe, seed) as tmp:
                if images:
                    train_file = os.path.join(tmp, f"{data}_train.npz")
                    np.savez(train_file, x=split.x_train, y=split.y_train)
                    trained = train_recipe(
                        data, recipe, seed=seed, steps=steps, workdir=os.path.join(tmp, "run"), image_file=train_file
                    )
                else:
                    trained = train_recipe(data, recipe, seed=seed, steps=steps, workdir=tmp)
            model, config, seconds = trained
            schedule = schedule_from_dict(config["schedule"])
            for sampler, grid, k in samplings:
                if not grid_applies(grid or default_grid_name(schedule), schedule, k):
                    continue
                for e in range(eval_seeds):
                    sample_seed = seed + 1 + 100 * e  # e = 0: the seed of the tables measured before --eval-seeds
                    if images:
                        x = sample(
                            model,
                            config,
                            sampler,
                            grid,
                            k,
                            n=n,
                            seed=sample_seed,
                            labels=labels,
                            guidance_scale=guidance_scale,
                            batch=250,
                        )
                        s = scorer(x, labels)
                    else:
                        s = scorer(sample(model, config, sampler, grid, k, n=n, seed=sample_seed))
                    row = dict(
                        data=data,
                        recipe=recipe,
                        seed=seed,
                        sample_seed=sample_seed,
                        train_steps=config["train"]["max_train_steps"],
                        train_seconds=round(seconds, 1),
                        sampler=sampler,
                        grid=grid or "default",
                        grid_used=grid or default_grid_name(schedule),
                        steps=k,
                        nfe=k * CALLS_PER_STEP.get(sampler, 1),
                        score=round(s["score"], 3),
                        distance=s["distance"],
                        floor=s["floor"],
                    )
                    if images:
                        row.update(accuracy=round(s["accuracy"], 3), guidance_scale=guidance_scale)
                    rows.append(row)
                    log(row)
    return rows


def table(rows):
    """One markdown table per data set: a row per recipe (median over training and sampling seeds, min-max), a column
    per sampling."""
    lines = []
    for data in dict.fromkeys(r["data"] for r in rows):
        rs = [r for r in rows if r["data"] == data]
        cols = list(dict.fromkeys((r["sampler"], r["grid"], r["steps"]) for r in rs))
        floor = rs[0]["floor"]
        kind = "FD" if data in IMAGE_DATA else "standardized SW2"
        if "guidance_scale" in rs[0]:
            kind += f", guidance scale {rs[0]['guidance_scale']:g}"
        lines.append(
            f"\n{data}: {kind} / floor ({floor:.4g}), median over seeds (min-max); "
            f"{rs[0]['train_steps']} training steps\n"
        )
        lines.append("| recipe | " + " | ".join(f"{s} {g} {k}" for s, g, k in cols) + " | train s |")
        lines.append("|---|" + "---|" * (len(cols) + 1))
        for recipe in dict.fromkeys(r["recipe"] for r in rs):
            cells = []
            for col in cols:
                v = [r for r in rs if r["recipe"] == recipe and (r["sampler"], r["grid"], r["steps"]) == col]
                if not v:
                    cells.append("-")
                    continue
                s = sorted(r["score"] for r in v)
                cell = f"{np.median(s):.2f}" + (f" ({s[0]:.2f}-{s[-1]:.2f})" if len(s) > 1 else "")
                if "accuracy" in v[0]:
                    cell += f", acc {np.median([r['accuracy'] for r in v]):.2f}"
                cells.append(cell)
            secs = np.median([r["train_seconds"] for r in rs if r["recipe"] == recipe])
            lines.append(f"| {recipe} | " + " | ".join(cells) + f" | {secs:.0f} |")
    return "\n".join(lines)


def _names(text, known, what):
    names = [s for s in text.split(",") if s]
    bad = [s for s in names if s not in known]
    if bad or not names:
        raise SystemExit(f"quality: --{what} {text!r}: expected a comma-separated list from {', '.join(known)}")
    return names


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="moons, the default and the old recipe, four samplings (under 10 min, 1 core)",
    )
    p.add_argument("--data", default=None, help=f"comma-separated, from {', '.join(POINT_DATA + IMAGE_DATA)}")
    p.add_argument("--recipes", default=None, help=f"comma-separated, from {', '.join(RECIPES)}")
    p.add_argument(
        "--samplings", default=None, help="comma-separated indices into the sampling list (default: all; --quick: 0-3)"
    )
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    p.add_argument(
        "--eval-seeds", type=int, default=1, help="sampling seeds per trained model (the score's own noise; default 1)"
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the trainer's per data set)")
    p.add_argument("--n", type=int, default=MIN_POINTS, help=f"samples per 2-D score (default {MIN_POINTS})")
    p.add_argument("--n-images", type=int, default=500, help="samples per image score (default 500)")
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=1.0,
        help="CFG for the image data, diffusers convention (default 1 = off, as diffspec-sample; the demo uses 2)",
    )
    p.add_argument("--keep", default=None, help="keep each run's checkpoints under this folder (default: temporary)")
    p.add_argument(
        "--sampler-floor",
        action="store_true",
        help="2-D data: score the samplings with the exact denoiser of a dense mixture instead of training",
    )
    p.add_argument(
        "--students", action="store_true", help="then run bench/quality_students.py (the few-step students' table)"
    )
    args = p.parse_args(argv)

    if args.n < MIN_POINTS:
        raise SystemExit(f"quality: --n {args.n}: expected at least {MIN_POINTS}")
    if args.eval_seeds < 1:
        raise SystemExit(f"quality: --eval-seeds {args.eval_seeds}: expected an integer >= 1")
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"quality: --steps {args.steps}: expected an integer >= 1")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"quality: --seeds {args.seeds!r}: expected comma-separated integers") from None
    data = _names(args.data, POINT_DATA + IMAGE_DATA, "data") if args.data else None
    recipes = _names(args.recipes, list(RECIPES), "recipes") if args.recipes else None
    samplings = SAMPLINGS
    if args.samplings:
        try:
            samplings = [SAMPLINGS[int(i)] for i in args.samplings.split(",")]
        except (ValueError, IndexError):
            known = f"0..{len(SAMPLINGS) - 1}"
            raise SystemExit(f"quality: --samplings {args.samplings!r}: expected indices {known}") from None
    if args.quick:
        data = data or list(QUICK["data"])
        recipes = recipes or list(QUICK["recipes"])
        samplings = samplings if args.samplings else QUICK["samplings"]
    data = data or list(POINT_DATA + IMAGE_DATA)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    def log(row):
        print(
            f"  {row['data']} {row['recipe']} seed {row['seed']} sampling seed {row['sample_seed']}: {row['sampler']} {row['grid_used']} "
            f"{row['steps']} -> {row['score']:.3f}" + (f" acc {row['accuracy']:.2f}" if "accuracy" in row else ""),
            file=sys.stderr,
            flush=True,
        )

    started = time.perf_counter()
    rows = []
    for name in data:
        if args.sampler_floor:
            if name not in POINT_DATA:
                raise SystemExit(f"quality: --sampler-floor scores 2-D data; --data {name!r} is images")
            rows += sampler_floor(name, samplings, n=args.n, eval_seeds=args.eval_seeds, log=log)
            continue
        rows += run_data(
            name,
            recipes or list(RECIPES if name in POINT_DATA else IMAGE_RECIPES),
            samplings,
            seeds=seeds,
            steps=args.steps,
            n=args.n if name in POINT_DATA else args.n_images,
            log=log,
            keep=args.keep,
            eval_seeds=args.eval_seeds,
            guidance_scale=args.guidance_scale,
        )
    seconds = time.perf_counter() - started
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread"
    print(f"# quality: {when}; {machine}; load average at the end {os.getloadavg()[0]:.1f}; {seconds:.0f} s")
    print(table(rows))
    if args.students:
        students = Path(__file__).resolve().parent / "quality_students.py"
        subprocess.run([sys.executable, str(students)] + (["--quick"] if args.quick else []), check=True)
    print(
        json.dumps({"bench": "quality", "date": when, "machine": machine, "seconds": round(seconds, 1), "rows": rows})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
