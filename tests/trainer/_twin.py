"""Shared Hypothesis strategies for the reference-vs-trainer twin tests: random schedules of every family, the
matching torch schedule built from the reference's serialised dict, and the Gaussian-mixture oracle for both."""

import numpy as np
import torch
from diffspec.reference import schedules as R
from diffspec.reference.oracles import GaussianMixture, standard_mixture_2d
from diffspec.trainer import schedules as S
from hypothesis import strategies as st

DISCRETE = ("linear", "scaled_linear", "cosine", "sigmoid", "betas")


@st.composite
def reference_schedules(draw, names=tuple(R.SCHEDULES)):
    """A reference schedule of a random family with random parameters (published defaults mixed in)."""
    name = draw(st.sampled_from(names))
    T = draw(st.sampled_from([1000]) | st.integers(10, 2000))
    rescale = draw(st.booleans()) if name in DISCRETE else False
    match name:
        case "linear" | "sigmoid":
            params = dict(T=T, beta_start=draw(st.floats(1e-5, 1e-3)), beta_end=draw(st.floats(5e-3, 0.05)))
        case "scaled_linear":
            params = dict(T=T, beta_start=draw(st.floats(1e-4, 2e-3)), beta_end=draw(st.floats(5e-3, 0.03)))
        case "cosine":
            params = dict(T=T, s=draw(st.floats(1e-3, 0.05)))
        case "betas":
            n = draw(st.integers(2, 60))
            values = draw(st.lists(st.floats(1e-4, 0.3), min_size=n, max_size=n))
            params = dict(values=tuple(values))
        case "vp" | "subvp":
            params = dict(beta_min=draw(st.floats(0.01, 1.0)), beta_max=draw(st.floats(5.0, 30.0)))
        case "vp_cosine":
            params = dict(s=draw(st.floats(1e-3, 0.05)))
        case "ve":
            params = dict(sigma_min=draw(st.floats(1e-3, 0.1)), sigma_max=draw(st.floats(10.0, 100.0)))
        case "edm":
            params = dict(
                sigma_min=draw(st.floats(1e-3, 0.05)),
                sigma_max=draw(st.floats(10.0, 100.0)),
                sigma_data=draw(st.floats(0.2, 1.0)),
            )
        case "flow":
            params = dict(shift=draw(st.sampled_from([1.0, 3.0]) | st.floats(0.3, 5.0)))
    if name in DISCRETE:
        params["rescale_zero_snr"] = rescale
    return R.make_schedule(name, **params)


def twin(ref_schedule):
    """The trainer's schedule for a reference schedule, through the serialised dict only."""
    return S.schedule_from_dict(ref_schedule.to_dict())


@st.composite
def mixtures(draw):
    """The standard 2-D mixture, or a random small mixture in 1-3 dimensions."""
    if draw(st.booleans()):
        return standard_mixture_2d()
    K, D = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    means = draw(st.lists(st.floats(-2, 2), min_size=K * D, max_size=K * D))
    stds = draw(st.lists(st.floats(0.05, 1.0), min_size=K, max_size=K))
    weights = draw(st.lists(st.floats(0.2, 1.0), min_size=K, max_size=K))
    return GaussianMixture.create(weights, np.reshape(means, (K, D)), stds)


def reference_oracle(mixture, ref_schedule):
    """denoise(x, t: Python float) -> E[x0 | x_t] for the reference samplers."""
    return mixture.denoiser(ref_schedule)


def torch_oracle(mixture, ref_schedule, calls=None):
    """denoise(x, t: tensor (B,)) -> E[x0 | x_t] for the torch samplers: the same model, evaluated in float64."""

    def denoise(x, t):
        assert isinstance(t, torch.Tensor) and t.shape == (x.shape[0],), t
        if calls is not None:
            calls.append(float(t[0]))
        tn = t.detach().cpu().numpy().astype(np.float64)
        out = mixture.x0_mean(x.detach().cpu().numpy(), ref_schedule.alpha(tn), ref_schedule.sigma(tn))
        return torch.from_numpy(out).to(x.dtype)

    return denoise


class RecordedNoise:
    """A seeded numpy noise stream; the reference and the trainer each get their own copy, so both see the same
    draws in the same order. Records the shapes drawn."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.shapes = []

    def __call__(self, shape):
        self.shapes.append(tuple(shape))
        return self.rng.standard_normal(shape)


def kappa(ref, t):
    """Conditioning of a schedule's float32 evaluation at t (see test_twin_schedules): 1 + |lam| + |log alpha| +
    |log sigma| + (1 + |t|) (|dlam/dt| + |dlog alpha/dt| + |dlog sigma/dt|), derivatives by float64 central
    differences of the reference."""
    lo, hi = ref.t_min, ref.t_max
    h = 1e-6 * (hi - lo)
    a, b = np.clip(t - h, lo, hi), np.clip(t + h, lo, hi)

    def deriv(f):
        with np.errstate(all="ignore"):
            return np.abs((f(b) - f(a)) / (b - a))

    with np.errstate(all="ignore"):
        log_a, log_s = np.log(ref.alpha(t)), np.log(ref.sigma(t))
        d = deriv(ref.lam) + deriv(lambda u: np.log(ref.alpha(u))) + deriv(lambda u: np.log(ref.sigma(u)))
        return 1 + np.abs(ref.lam(t)) + np.abs(log_a) + np.abs(log_s) + (1 + np.abs(t)) * d


def float32_times(ref, t):
    """t rounded to float32, nudged back inside the schedule's domain; and the same values in float64."""
    t32 = np.asarray(t).astype(np.float32)
    t64 = t32.astype(np.float64)  # compare in float64 (a Python float against float32 compares in float32)
    t32 = np.where(t64 > ref.t_max, np.nextafter(t32, np.float32(-np.inf)), t32)
    t32 = np.where(t64 < ref.t_min, np.nextafter(t32, np.float32(np.inf)), t32)
    return t32, t32.astype(np.float64)
