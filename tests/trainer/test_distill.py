"""Few-step students: the trainer's distillation math against the reference (float64, rounding level), and short
CPU runs of every procedure on moons whose student beats the same network untrained at the same number of steps."""

import numpy as np
import pytest
import torch
from _twin import reference_schedules, torch_oracle, twin
from diffspec.reference import distillation as RD
from diffspec.reference.oracles import standard_mixture_2d
from diffspec.trainer import distill as TD
from hypothesis import given, settings
from hypothesis import strategies as st

RTOL = 1e-12


def _close(actual, desired, *, scale=1.0):
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=1e-12 * scale)


def _noisy_times(ref, u, n):
    """n times in the schedule's noisy range [t_eps, t_max], spread by u in [0, 1]."""
    lo, hi = float(ref.t_eps), float(ref.t_max)
    lo = lo + 1e-3 * (hi - lo) if ref.sigma(lo) == 0 else lo
    return lo + (hi - lo) * np.linspace(u, 1.0, n) ** 2


@given(ref=reference_schedules(), u=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), sigma_data=st.floats(0.2, 1.0))
def test_consistency_function_twin(ref, u, seed, sigma_data):
    sch = twin(ref)
    t = _noisy_times(ref, u, 6)
    t = t[np.isfinite(ref.sigma_ve(t)) & (ref.alpha(t) > 0)]
    if len(t) == 0:
        return
    sigma_min = float(np.min(ref.sigma_ve(t)))
    rng = np.random.default_rng(seed)
    x, x0_hat = rng.standard_normal((len(t), 3)), rng.standard_normal((len(t), 3))
    want = RD.consistency_function(x0_hat, x, t, ref, sigma_min=sigma_min, sigma_data=sigma_data)
    got = TD.consistency_function(
        torch.from_numpy(x0_hat),
        torch.from_numpy(x),
        torch.from_numpy(t),
        sch,
        sigma_min=sigma_min,
        sigma_data=sigma_data,
    )
    _close(got, want, scale=float(np.max(np.abs(x / ref.alpha(t)[:, None]))) + 1.0)


@given(ref=reference_schedules(), n=st.integers(1, 60), grid=st.sampled_from(["karras", "uniform", "exponential"]))
def test_distillation_times_twin(ref, n, grid):
    try:
        want = RD.distillation_times(ref, n, grid=grid)
    except ValueError as err:
        with pytest.raises(ValueError, match=str(err).split(":")[0][:10]):
            TD.distillation_times(twin(ref), n, grid=grid)
        return
    _close(TD.distillation_times(twin(ref), n, grid=grid), want, scale=float(ref.t_max))


@settings(max_examples=20)
@given(
    name=st.sampled_from(["linear", "vp", "edm", "flow"]),
    u=st.floats(0.1, 0.9),
    h=st.floats(0.01, 0.5),
    sampler=st.sampled_from(["ddim", "heun", "dpmpp_2m", "euler", "flow_euler", "flow_heun"]),
    seed=st.integers(0, 2**16),
)
def test_teacher_step_twin(name, u, h, sampler, seed):
    from diffspec.reference.schedules import make_schedule

    ref = make_schedule(name)
    if sampler.startswith("flow") != (name == "flow"):
        return
    t = float(_noisy_times(ref, u, 1)[0])
    t_next = t - h * (t - float(ref.t_eps))
    mix = standard_mixture_2d()
    x = mix.sample_xt(16, ref.alpha(t), ref.sigma(t), np.random.default_rng(seed))
    want = RD.teacher_step(mix.denoiser(ref), x, t, t_next, ref, sampler=sampler)
    got = TD.teacher_step(torch_oracle(mix, ref), torch.from_numpy(x), t, t_next, twin(ref), sampler=sampler)
    _close(got, want, scale=1e3 * (1.0 + float(np.max(np.abs(x)))))


@given(ref=reference_schedules(), u=st.floats(0.0, 1.0), v=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_consistency_training_pair_twin(ref, u, v, seed):
    t = _noisy_times(ref, u, 4)
    t_next = t - v * (t - float(ref.t_eps))
    if not np.all(t_next < t):
        return
    rng = np.random.default_rng(seed)
    x0, z = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    want = RD.consistency_training_pair(x0, z, t, t_next, ref)
    got = TD.consistency_training_pair(
        torch.from_numpy(x0), torch.from_numpy(z), torch.from_numpy(t), torch.from_numpy(t_next), twin(ref)
    )
    for g, w in zip(got, want, strict=True):
        _close(g, w, scale=10.0 + float(np.max(np.abs(w))))


@given(name=st.sampled_from(["edm", "linear", "vp", "ve"]), k=st.integers(0, 500))
def test_ict_times_twin(name, k):
    from diffspec.reference.schedules import make_schedule

    ref = make_schedule(name)
    want_t, want_s = RD.ict_times(ref, k, 500)
    got_t, got_s = TD.ict_times(twin(ref), k, 500)
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-12)
    np.testing.assert_allclose(got_t.numpy(), want_t, rtol=1e-9, atol=1e-9 * float(ref.t_max))


@given(ref=reference_schedules(), steps=st.sampled_from([1, 2, 4, 8, 64]), seed=st.integers(0, 2**16))
def test_progressive_grid_weight_and_loss_twin(ref, steps, seed):
    sch = twin(ref)
    grid = RD.progressive_grid(ref, steps)
    _close(TD.progressive_grid(sch, steps), grid, scale=float(abs(ref.t_max)) + 1.0)
    t = grid[:-1]
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((len(t), 3)), rng.standard_normal((len(t), 3))
    want = RD.progressive_distillation_loss(a, b, t, ref)
    got = TD.progressive_distillation_loss(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(t), sch)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)


@pytest.mark.parametrize(("teacher", "student"), [(64, 4), (8, 1), (2, 1), (64, 3), (64, 64), (48, 3), (6, 3)])
def test_progressive_rounds_twin(teacher, student):
    try:
        want = RD.progressive_rounds(teacher, student)
    except ValueError:
        with pytest.raises(ValueError, match="student-steps"):
            TD.progressive_rounds(teacher, student)
        return
    assert TD.progressive_rounds(teacher, student) == want


@settings(max_examples=10)
@given(steps=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_reflow_pairs_and_straightness_twin(steps, seed):
    from diffspec.reference.schedules import make_schedule

    ref = make_schedule("flow")
    mix = standard_mixture_2d()
    z = np.random.default_rng(seed).standard_normal((32, 2))
    want = RD.reflow_pairs(mix.denoiser(ref), z, ref, steps=steps)
    got = TD.reflow_pairs(torch_oracle(mix, ref), torch.from_numpy(z), twin(ref), steps=steps)
    _close(got, want, scale=100.0)
    want_x, want_s = RD.straightness(mix.denoiser(ref), z, ref, steps=steps)
    got_x, got_s = TD.straightness(torch_oracle(mix, ref), torch.from_numpy(z), twin(ref), steps=steps)
    _close(got_x, want_x, scale=100.0)
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-10, atol=1e-12)
