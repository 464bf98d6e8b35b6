"""Quality scores shared by the quality benchmarks: each one is a distance to fresh data divided by the same
distance between two data sets (the floor: what a perfect model scores), so 1.0 is as good as it gets.

- 2-D toys: sliced W2 (Rabin et al. 2011; Bonneel et al. 2015, eq. 3) on standardized coordinates (each axis
  divided by the fresh data's standard deviation), n >= 4,000 points per set, every set of fresh data drawn
  independently point by point (`fresh_sets`), as a model samples.
- digits / MNIST-5k: the Frechet distance (Heusel et al. 2017, eq. 6) in the hidden layer of the small classifier
  of `scripts/demo.py`, trained on a training split; the floor compares that split with a held-out one. Also the
  share of samples the classifier reads as the class they were asked for.
"""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diffspec.reference.metrics import frechet_distance, sliced_wasserstein
from diffspec.trainer.data import TOYS

ROOT = Path(__file__).resolve().parent.parent
POINT_DATA = ("moons", "swiss_roll", "checkerboard")
IMAGE_DATA = ("digits", "mnist5k")
MIN_POINTS = 4000


def _demo():
    """scripts/demo.py as a module (its digits split and its feature classifier)."""
    spec = importlib.util.spec_from_file_location("_diffspec_demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POOL = 64  # fresh sets are random draws from a pool of POOL * n points from the data's generator


def fresh_sets(name: str, n: int, count: int, *, seed: int = 10_000) -> list[np.ndarray]:
    """`count` disjoint sets of n points, each a uniformly random subset of one pool of POOL * count * n points
    from the toy's generator: independent draws, as a model's samples are.

    The generators' own sets are not: scikit-learn's make_moons spaces the points evenly along each moon and splits
    them exactly in half, so two of its sets of 4,000 are closer to each other than any two sets of 4,000
    independent draws from the same distribution (measured: independent draws score 1.5-3.2x that distance). A
    floor built from them is one that no model, however perfect, reaches."""
    pool = np.asarray(TOYS[name](POOL * count * n, seed), dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[order[k * n : (k + 1) * n]] for k in range(count)]


class PointScorer:
    """Standardized sliced W2 of raw-space samples against fresh data, over the data-vs-data floor.

    Fresh data are `num_refs` sets of n independent points (`fresh_sets`, seeds never used for training); the floor
    is the mean SW2 over all pairs of them, the score the mean SW2 of the samples to each. A model whose samples
    are independent draws from the data's distribution scores 1 on average; one score of such a model varies by
    about +-30% at n = 4,000 (the spread of SW2 between two sets of independent draws), so claims rest on the median
    over several sampling seeds.
    """

    def __init__(
        self, name: str, n: int = MIN_POINTS, *, num_refs: int = 6, num_projections: int = 256, seed: int = 10_000
    ) -> None:
        if name not in TOYS:
            raise ValueError(f"data {name!r}: expected one of {sorted(TOYS)}")
        if n < MIN_POINTS:
            raise ValueError(f"n={n}: expected at least {MIN_POINTS} points (below that the floor itself is noisy)")
        if num_refs < 2:
            raise ValueError(f"num_refs={num_refs}: expected at least 2 (the floor compares pairs of fresh sets)")
        self.name, self.n, self.num_projections, self.seed = name, n, num_projections, seed
        refs = fresh_sets(name, n, num_refs, seed=seed)
        self.mean, self.std = refs[0].mean(0), refs[0].std(0)
        self.refs = [self._standardize(r) for r in refs]
        pairs = [(i, j) for i in range(num_refs) for j in range(i + 1, num_refs)]
        self.floor = float(np.mean([self._sw2(self.refs[i], self.refs[j]) for i, j in pairs]))

    def _standardize(self, x):
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std

    def _sw2(self, a, b):
        rng = np.random.default_rng(self.seed)  # the same directions for every pair: differences are not noise
        return sliced_wasserstein(a, b, rng=rng, num_projections=self.num_projections, p=2)

    def __call__(self, samples_raw: np.ndarray) -> dict:
        x = self._standardize(samples_raw)
        if x.shape != (self.n, self.refs[0].shape[1]):
            raise ValueError(f"samples of shape {x.shape}: expected ({self.n}, {self.refs[0].shape[1]})")
        if not np.isfinite(x).all():
            return {"score": float("inf"), "distance": float("inf"), "floor": self.floor}
        d = float(np.mean([self._sw2(x, r) for r in self.refs]))
        return {"score": d / self.floor, "distance": d, "floor": self.floor}


@dataclass
class ImageSplit:
    x_train: np.ndarray  # raw values, (N, 1, H, W)
    y_train: np.ndarray
    x_held: np.ndarray
    y_held: np.ndarray
    raw_max: float  # 16 for digits, 255 for MNIST


def image_split(name: str, seed: int = 0, held_out: int = 500) -> ImageSplit:
    """digits: the demo's stratified split; mnist5k: the same recipe (50 per class held out) on the 5,000 digits."""
    demo = _demo()
    if name == "digits":
        return ImageSplit(*demo.split_digits(seed, held_out), raw_max=16.0)
    if name == "mnist5k":
        from diffspec.trainer.data import load_mnist5k

        ds = load_mnist5k()
        x = (ds.x.astype(np.float64) - ds.shift) / ds.scale
        rng = np.random.default_rng(seed)
        held = np.zeros(len(ds.y), dtype=bool)
        for k in range(10):
            held[rng.choice(np.flatnonzero(ds.y == k), held_out // 10, replace=False)] = True
        return ImageSplit(x[~held], ds.y[~held], x[held], ds.y[held], raw_max=255.0)
    raise ValueError(f"data {name!r}: expected one of {list(IMAGE_DATA)}")


class ImageScorer:
    """FD in the demo classifier's features (generated vs held-out) over the floor (training vs held-out digits),
    and the share of samples the classifier reads as their requested class."""

    def __init__(self, split: ImageSplit, *, seed: int = 0) -> None:
        self.split = split
        self.to_demo = 16.0 / split.raw_max  # the demo's classifier reads values in 0..16
        self.features = _demo().Features(split.x_train * self.to_demo, split.y_train, seed=seed)
        n = len(split.x_held)
        rng = np.random.default_rng(seed)
        sub = split.x_train[rng.choice(len(split.x_train), n, replace=False)]
        self.f_held = self.features(split.x_held * self.to_demo)
        self.floor = frechet_distance(self.features(sub * self.to_demo), self.f_held)
        self.held_accuracy = float(np.mean(self.features.predict(split.x_held * self.to_demo) == split.y_held))

    def __call__(self, samples_raw: np.ndarray, labels: np.ndarray) -> dict:
        x = np.clip(np.asarray(samples_raw, dtype=np.float64), 0.0, self.split.raw_max) * self.to_demo
        if not np.isfinite(x).all():
            return {"score": float("inf"), "distance": float("inf"), "floor": self.floor, "accuracy": 0.0}
        n = min(len(x), len(self.f_held))
        d = frechet_distance(self.features(x[:n]), self.f_held[:n])
        accuracy = float(np.mean(self.features.predict(x) == labels))
        return {"score": d / self.floor, "distance": d, "floor": self.floor, "accuracy": accuracy}
