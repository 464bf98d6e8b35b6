"""The main job, end to end: train on scikit-learn's digits, export to ONNX, sample with the torch-free runtime.

    bash scripts/demo.sh            # = scripts/setup.sh, then this script
    .venv/bin/python scripts/demo.py [--train-steps N] [--out-dir out]

1. Split the 1,797 8x8 digits into a training set and a held-out set (stratified, fixed seed) and write the
   training set as out/digits_train.npz.
2. `diffspec-train --data out/digits_train.npz ...`: a small class-conditional UNet, about five minutes on 2 cores.
3. `diffspec-export RUN_DIR -o out/digits.onnx`: one verified ONNX file with its model card.
4. `diffspec-sample out/digits.onnx --sampler dpmpp_2m --steps 20 --guidance-scale G ...`: the picture
   out/digits_grid.png (column k holds class k) and 500 samples in out/digits_samples.npz.
5. A quality figure: the Frechet distance between generated and held-out digits in the feature space of a
   small classifier trained on the training split (its hidden layer), beside the same distance for
   held-out vs training data (the floor: what a perfect model would score) and for noise (the ceiling); and
   how often that classifier reads the class each sample was asked for.

Every stage runs as its own command line, exactly as a user would type it (printed before it runs).
"""

import argparse
import os
import shlex
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, *, label, env=None):
    prefix = "".join(f"{k}={v} " for k, v in (env or {}).items())
    print(f"\n[{label}] $ {prefix}{' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"demo: the {label} step failed (exit code {result.returncode}); see its message above")
    print(f"[{label}] done in {seconds:.1f} s", flush=True)
    return seconds


def latest_checkpoint(run_dir):
    """The run's checkpoint-STEP folder with the highest STEP that has its manifest.json (written last)."""
    found = []
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if (
            name.startswith("checkpoint-")
            and name[11:].isdigit()
            and os.path.isfile(os.path.join(path, "manifest.json"))
        ):
            found.append((int(name[11:]), path))
    if not found:
        sys.exit(f"demo: no complete checkpoint in {run_dir}")
    return max(found)[1]


def split_digits(seed=0, held_out=500):
    """Stratified split of sklearn's digits: (x_train, y_train, x_held, y_held); x (N, 1, 8, 8) in 0..16."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.images[:, None].astype(np.float64), d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    per_class = held_out // 10
    for k in range(10):
        members = np.flatnonzero(y == k)
        held[rng.choice(members, per_class, replace=False)] = True
    return x[~held], y[~held], x[held], y[held]


class Features:
    """A small classifier on the training split; its hidden layer (ReLU, 64 units) is the feature space."""

    def __init__(self, x_train, y_train, seed=0):
        from sklearn.neural_network import MLPClassifier

        self.clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=seed, alpha=1e-3)
        self.clf.fit(self._flat(x_train), y_train)

    @staticmethod
    def _flat(x):
        return np.asarray(x, dtype=np.float64).reshape(len(x), -1) / 16.0

    def __call__(self, x):
        h = self._flat(x) @ self.clf.coefs_[0] + self.clf.intercepts_[0]
        return np.maximum(h, 0.0)

    def predict(self, x):
        return self.clf.predict(self._flat(x))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="out", help="where everything is written (default out/)")
    p.add_argument("--train-steps", type=int, default=1000, help="optimizer steps (default 1000, ~5 min on 2 cores)")
    p.add_argument(
        "--train-threads",
        type=int,
        default=1,
        help="torch threads for training (default 1: on a shared 2-core machine torch's spinning threads "
        "ran 5-10x slower with 2)",
    )
    p.add_argument("--guidance-scale", type=float, default=2.0, help="CFG scale for the samples (diffusers convention)")
    p.add_argument("--samples", type=int, default=500, help="samples for the quality figure (default 500)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    out = os.path.abspath(os.path.join(ROOT, args.out_dir))
    os.makedirs(out, exist_ok=True)
    py = sys.executable
    total_start = time.perf_counter()

    x_train, y_train, x_held, y_held = split_digits(args.seed)
    train_file = os.path.join(out, "digits_train.npz")
    np.savez(train_file, x=x_train, y=y_train)
    print(f"digits: {len(y_train)} for training ({train_file}), {len(y_held)} held out for the quality figure")

    run_dir = os.path.join(out, "digits_run")
    onnx_file = os.path.join(out, "digits.onnx")
    grid_file = os.path.join(out, "digits_grid.png")
    samples_file = os.path.join(out, "digits_samples.npz")
    timings = {}
    timings["train"] = run(
        [
            py,
            "-m",
            "diffspec.trainer",
            "--data",
            train_file,
            "--output-dir",
            run_dir,
            "--max-train-steps",
            str(args.train_steps),
            "--class-conditional",
            "yes",
            "--seed",
            str(args.seed),
            "--validation-steps",
            str(10 * args.train_steps),
            "--checkpointing-steps",
            str(args.train_steps),
        ],
        label="train",
        env={"OMP_NUM_THREADS": str(args.train_threads)},
    )
    timings["export"] = run([py, "-m", "diffspec.export", latest_checkpoint(run_dir), "-o", onnx_file], label="export")
    sample_args = [
        py,
        "-m",
        "diffspec.runtime",
        onnx_file,
        "--sampler",
        "dpmpp_2m",
        "--steps",
        "20",
        "--seed",
        str(args.seed),
        "--guidance-scale",
        str(args.guidance_scale),
        "--device",
        "auto",
    ]
    timings["sample grid"] = run([*sample_args, "-n", "100", "--out", grid_file], label="sample grid")
    timings["sample npz"] = run(
        [*sample_args, "-n", str(args.samples), "--out", samples_file, "--quiet"], label="sample for the quality figure"
    )

    print("\n[quality] fitting a small classifier on the training split ...", flush=True)
    features = Features(x_train, y_train, seed=args.seed)
    from diffspec.reference.metrics import frechet_distance

    with np.load(samples_file) as f:
        generated, labels = f["samples"].astype(np.float64), f["labels"]
    rng = np.random.default_rng(args.seed)
    n = min(len(generated), len(x_held))
    train_sub = x_train[rng.choice(len(x_train), n, replace=False)]
    noise = rng.uniform(0.0, 16.0, size=(n,) + x_held.shape[1:])
    f_held = features(x_held[:n])
    fd_generated = frechet_distance(features(generated[:n]), f_held)
    fd_floor = frechet_distance(features(train_sub), f_held)
    fd_noise = frechet_distance(features(noise), f_held)
    agreement = float(np.mean(features.predict(generated) == labels))
    held_accuracy = float(np.mean(features.predict(x_held) == y_held))
    total = time.perf_counter() - total_start

    print("\n## Result\n")
    print(f"picture: {grid_file}  (10 x 10; column k holds class k, guidance scale {args.guidance_scale})")
    print(f"model:   {onnx_file}")
    print(
        f"\nFrechet distance in the classifier's feature space, {n} samples each vs {n} held-out digits "
        "(lower is better):\n"
    )
    print("| set | Frechet distance |\n|---|---|")
    print(f"| training digits (the floor) | {fd_floor:.2f} |")
    print(f"| generated ({args.samples} samples, dpmpp_2m, 20 steps) | {fd_generated:.2f} |")
    print(f"| uniform noise (the ceiling) | {fd_noise:.2f} |")
    print(
        f"\nclassifier reads the requested class on {100 * agreement:.1f}% of generated digits "
        f"(its accuracy on held-out digits: {100 * held_accuracy:.1f}%)"
    )
    print("\ntimings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
