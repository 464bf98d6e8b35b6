"""Every torch sampler against its reference twin, driven step by step through identical noise.

Both samplers get the same model (the exact Gaussian-mixture denoiser E[x0 | x_t], evaluated in float64 by the
reference oracle), the same grid (built by the reference), the same x_T and the same noise stream (two copies of
one seeded numpy generator, fed through the `noise` callable). They must call the model at the same times, draw
the same shapes in the same order, and return the same sample in float64 to ~1e-10 relative to the sample's scale
(each is a few dozen float64 operations per step on O(1)-conditioned coefficients: rounding, accumulated, stays
far below that; a wrong formula or a wrong branch is O(1) off). They must also refuse the same inputs.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from _twin import RecordedNoise, mixtures, reference_oracle, reference_schedules, torch_oracle, twin
from diffspec.reference import grids as RG
from diffspec.reference import schedules as R
from diffspec.reference.samplers import INVERSIONS as REF_INVERSIONS
from diffspec.reference.samplers import SAMPLERS as REF_SAMPLERS
from diffspec.trainer.samplers import INVERSIONS, SAMPLERS

_bool = st.booleans()
_eta = st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.5)
OPTIONS = {
    "ddpm": st.fixed_dictionaries({"variance": st.sampled_from(["fixed_small", "fixed_large", "learned_range"])}),
    "ddim": st.fixed_dictionaries({"eta": st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)}),
    "euler_ancestral": st.fixed_dictionaries({"eta": _eta}),
    "dpm2_ancestral": st.fixed_dictionaries({"eta": _eta}),
    "heun": st.fixed_dictionaries({
        "s_churn": st.sampled_from([0.0]) | st.floats(0.0, 40.0), "s_tmin": st.floats(0.0, 1.0),
        "s_tmax": st.sampled_from([math.inf]) | st.floats(1.0, 100.0), "s_noise": st.floats(0.5, 1.5)}),
    "lms": st.fixed_dictionaries({"order": st.integers(1, 4)}),
    "ipndm": st.fixed_dictionaries({"order": st.integers(1, 4)}),
    "dpm_solver_adaptive": st.fixed_dictionaries({"order": st.sampled_from([2, 3]), "rtol": st.floats(0.05, 0.2)}),
    "dpmpp_2s_ancestral": st.fixed_dictionaries({"eta": _eta, "lower_order_final": _bool}),
    "dpmpp_2m": st.fixed_dictionaries({"lower_order_final": _bool}),
    "dpmpp_3m": st.fixed_dictionaries({"lower_order_final": _bool}),
    "dpmpp_2m_sde": st.fixed_dictionaries({
        "eta": _eta, "solver_type": st.sampled_from(["midpoint", "heun"]), "lower_order_final": _bool}),
    "dpmpp_3m_sde": st.fixed_dictionaries({"eta": _eta, "lower_order_final": _bool}),
    "dpmpp_sde": st.fixed_dictionaries({"order": st.sampled_from([1, 2]), "lower_order_final": _bool}),
    "unipc": st.fixed_dictionaries({
        "order": st.integers(1, 3), "variant": st.sampled_from(["bh1", "bh2"]), "use_corrector": _bool,
        "lower_order_final": _bool}),
    "deis": st.fixed_dictionaries({"order": st.integers(1, 3), "fit_in": st.sampled_from(["t", "lam"])}),
    "pc": st.fixed_dictionaries({
        "predictor": st.sampled_from(["reverse_diffusion", "euler_maruyama"]), "snr": st.floats(0.05, 0.3),
        "corrector_steps": st.integers(0, 2)}),
    "pf_ode_rk45": st.fixed_dictionaries({"rtol": st.floats(1e-4, 1e-2), "atol": st.floats(1e-4, 1e-2)}),
    "tcd": st.fixed_dictionaries({"gamma": st.sampled_from([0.0, 0.3, 1.0]) | st.floats(0.0, 1.0)}),
}
# Adaptive step-size control feeds rounding back into the step sizes: the accepted times drift apart by about
# (number of steps) x (rounding of the error estimate) ~ 1e-12 relative over a hundred steps, and the samples by
# that drift times |dx/dt|. Their tolerance is 1e-8 relative (still 1e6 below any formula error, which moves
# a sample by O(rtol) or more).
ADAPTIVE = ("dpm_solver_adaptive", "pf_ode_rk45")
GRIDS_WITH_T_START = ("uniform", "karras", "exponential", "uniform_lam", "time_quadratic", "shifted")


def test_every_reference_sampler_has_a_twin():
    assert sorted(SAMPLERS) == sorted(REF_SAMPLERS)


@st.composite
def sampling_problems(draw):
    ref = draw(reference_schedules())
    grid_name = draw(st.sampled_from(sorted(RG.GRIDS)))
    steps = draw(st.integers(1, 12))
    options = {}
    if grid_name in GRIDS_WITH_T_START and draw(st.booleans()):
        # Start below t_max sometimes, so samplers that need alpha > 0 at grid[0] run on flow / zero-SNR too.
        options["t_start"] = ref.t_min + draw(st.floats(0.3, 0.999)) * (ref.t_max - ref.t_min)
    try:
        grid = RG.GRIDS[grid_name](ref, steps, **options)
    except ValueError:
        assume(False)
    return ref, grid


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@settings(deadline=None, max_examples=20)
@given(problem=sampling_problems(), mixture=mixtures(), batch=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       data=st.data())
def test_sampler_matches_reference_step_by_step(name, problem, mixture, batch, seed, data):
    ref, grid = problem
    options = data.draw(OPTIONS.get(name, st.just({})), label="options")
    ref_options, torch_options = dict(options), dict(options)
    if options.get("variance") == "learned_range":
        ref_options["variance_v"] = lambda x, t: np.tanh(0.3 * x + 1e-3 * t)
        torch_options["variance_v"] = lambda x, t: torch.tanh(0.3 * x + 1e-3 * t[:, None])
    rng = np.random.default_rng(seed)
    x_T = mixture.sample_xt(batch, ref.alpha(grid[0]), ref.sigma(grid[0]), rng)

    ref_calls, torch_calls = [], []
    ref_denoise = reference_oracle(mixture, ref)

    def ref_recorded(x, t):
        ref_calls.append(t)
        return ref_denoise(x, t)

    ref_noise, torch_noise = RecordedNoise(seed + 1), RecordedNoise(seed + 1)
    try:
        # Reference warnings (0 * inf at alpha = 0, say) are the reference's tests' business; NaN results are skipped
        # below, and the twin must reproduce every finite result.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            want = REF_SAMPLERS[name](ref_recorded, x_T, grid, ref, noise=ref_noise, **ref_options)
    except ValueError:
        with pytest.raises(ValueError):
            SAMPLERS[name](torch_oracle(mixture, ref), torch.from_numpy(x_T), grid, twin(ref), noise=torch_noise,
                           **torch_options)
        return
    assume(np.all(np.isfinite(want)))
    got = SAMPLERS[name](torch_oracle(mixture, ref, torch_calls), torch.from_numpy(x_T), grid, twin(ref),
                         noise=torch_noise, **torch_options)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64 and got.shape == x_T.shape
    assert torch_noise.shapes == ref_noise.shapes
    rtol = 1e-8 if name in ADAPTIVE else 1e-10
    if name in ("dpm_solver_2", "dpm_solver_3", "dpm_solver_fast"):
        # One singlestep step can span the whole grid (e.g. t = 847 -> 0 with T = 848): its intermediate times come
        # from t_of_lam and its eps-form update multiplies rounding by sigma-ratios of ~1e2 at once; a derandomized
        # example of that shape measured 6e-10 relative, so these get one decade more.
        rtol = 1e-9
    if name not in ADAPTIVE:  # an adaptive run may take one extra, zero-length step where t_of_lam(lam + h) lands
        # one ulp above the end time in one twin and on it in the other: same sample, different call list.
        np.testing.assert_allclose(torch_calls, ref_calls, rtol=rtol / 100, atol=rtol / 100 * max(1.0, abs(ref.t_max)))
    scale = max(1.0, float(np.max(np.abs(want))), float(np.max(np.abs(x_T))))
    np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=rtol * scale, strict=True)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_keeps_float32_and_feeds_the_network_float32_times(name):
    """Training-time sampling: x_T float32 stays float32, and the network sees x and t in float32 with t of shape (B,)
    (never a Python float, which an exported graph would freeze into a constant)."""
    from diffspec.reference.oracles import standard_mixture_2d

    ref = R.make_schedule("flow" if name.startswith("flow") else "linear", **({} if name.startswith("flow") else {"T": 100}))
    grid = RG.uniform(ref, 4, t_start=0.9) if name.startswith("flow") else RG.uniform(ref, 4)
    mixture = standard_mixture_2d()
    seen = []

    def denoise(x, t):
        seen.append((x.dtype, t.dtype, tuple(t.shape)))
        return torch_oracle(mixture, ref)(x, t)

    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    out = SAMPLERS[name](denoise, x_T, grid, twin(ref), noise=torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32 and out.shape == x_T.shape and bool(torch.isfinite(out).all())
    assert seen and all(s == (torch.float32, torch.float32, (3,)) for s in seen), seen[:3]


@pytest.mark.parametrize("name", sorted(REF_INVERSIONS))
@settings(deadline=None, max_examples=20)
@given(ref=reference_schedules(), mixture=mixtures(), steps=st.integers(1, 12), lo=st.floats(0.0, 0.5),
       hi=st.floats(0.5, 0.99), seed=st.integers(0, 2**32 - 1))
def test_inversion_matches_reference(name, ref, mixture, steps, lo, hi, seed):
    span = ref.t_max - ref.t_min
    t0 = max(ref.t_eps, ref.t_min + lo * span)
    t0 = t0 if ref.sigma(t0) > 0 else ref.t_min + 1e-3 * span
    grid = np.linspace(t0, ref.t_min + hi * span, steps + 1)
    assume(np.all(np.diff(grid) > 0))
    x0 = mixture.sample(2, np.random.default_rng(seed))[0]
    try:
        want = REF_INVERSIONS[name](reference_oracle(mixture, ref), x0, grid, ref)
    except ValueError:
        with pytest.raises(ValueError):
            INVERSIONS[name](torch_oracle(mixture, ref), torch.from_numpy(x0), grid, twin(ref))
        return
    got = INVERSIONS[name](torch_oracle(mixture, ref), torch.from_numpy(x0), grid, twin(ref))
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10 * scale, strict=True)


def test_every_reference_inversion_has_a_twin():
    assert sorted(INVERSIONS) == sorted(REF_INVERSIONS)
