"""The torch twins of the k-diffusion variants (`variant="k-diffusion"`) against the reference, step by step.

Same model (the exact Gaussian-mixture denoiser in float64), same grid, same x_T and the same noise stream for both;
the result must agree to ~1e-10 of the sample's scale (1e-8 for the adaptive controller, whose accepted times
feed rounding back into the step sizes), on random schedules of every family and random grids.
"""

import numpy as np
import pytest
import torch
from _twin import RecordedNoise, mixtures, reference_oracle, reference_schedules, torch_oracle, twin
from diffspec.reference import grids as RG
from diffspec.reference.samplers import SAMPLERS as REF_SAMPLERS
from diffspec.trainer.samplers import SAMPLERS
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

_eta = st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.5)
_s_noise = st.sampled_from([1.0, 0.0]) | st.floats(0.0, 1.5)
VARIANTS = {
    "dpmpp_3m": st.fixed_dictionaries({"lower_order_final": st.booleans()}),
    "dpmpp_3m_sde": st.fixed_dictionaries({"eta": _eta, "lower_order_final": st.booleans(), "s_noise": _s_noise}),
    "dpmpp_sde": st.fixed_dictionaries(
        {"eta": _eta, "r": st.floats(0.2, 0.8), "lower_order_final": st.booleans(), "s_noise": _s_noise}
    ),
    "dpm_solver_adaptive": st.fixed_dictionaries(
        {
            "order": st.sampled_from([2, 3]),
            "rtol": st.floats(0.02, 0.2),
            "pcoeff": st.floats(0.0, 0.3),
            "icoeff": st.floats(0.5, 1.0),
            "dcoeff": st.floats(0.0, 0.1),
            "eta": st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.2),
            "s_noise": _s_noise,
        }
    ),
    "euler_ancestral": st.fixed_dictionaries({"eta": _eta | st.floats(1.0, 3.0), "s_noise": _s_noise}),
    "dpm2_ancestral": st.fixed_dictionaries({"eta": _eta | st.floats(1.0, 3.0), "s_noise": _s_noise}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
@settings(deadline=None, max_examples=examples(15))
@given(
    ref=reference_schedules(),
    steps=st.integers(2, 10),
    frac=st.floats(0.3, 0.95),
    mixture=mixtures(),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_k_diffusion_variant_matches_reference(name, ref, steps, frac, mixture, seed, data):
    options = {"variant": "k-diffusion", **data.draw(VARIANTS[name], label="options")}
    t_start = ref.t_min + frac * (ref.t_max - ref.t_min)  # alpha > 0 at the start: the sigma_ve forms need it
    grid_name = data.draw(st.sampled_from(["uniform", "karras", "uniform_lam"]), label="grid")  # noisy ends too
    try:
        grid = RG.GRIDS[grid_name](ref, steps, t_start=t_start)
    except ValueError:
        assume(False)
    x_T = mixture.sample_xt(3, ref.alpha(grid[0]), ref.sigma(grid[0]), np.random.default_rng(seed))
    ref_noise, torch_noise = RecordedNoise(seed + 1), RecordedNoise(seed + 1)
    with np.errstate(all="ignore"):
        try:
            want = REF_SAMPLERS[name](reference_oracle(mixture, ref), x_T, grid, ref, noise=ref_noise, **options)
        except ValueError:
            with pytest.raises(ValueError):
                SAMPLERS[name](
                    torch_oracle(mixture, ref), torch.from_numpy(x_T), grid, twin(ref), noise=torch_noise, **options
                )
            return
    assume(np.all(np.isfinite(want)))
    got = SAMPLERS[name](
        torch_oracle(mixture, ref), torch.from_numpy(x_T), grid, twin(ref), noise=torch_noise, **options
    )
    assert torch_noise.shapes == ref_noise.shapes
    rtol = 1e-8 if name == "dpm_solver_adaptive" else 1e-10
    scale = max(1.0, float(np.abs(want).max()), float(np.abs(x_T).max()))
    atol = rtol * scale
    if name == "dpm_solver_adaptive":
        atol += 4 * _controller_spread(
            REF_SAMPLERS[name], reference_oracle(mixture, ref), x_T, want, grid, ref, seed, options
        )
    np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol, strict=True)


def _controller_spread(sampler, denoise, x_T, want, grid, ref, seed, options):
    """How far the reference's own answer (want, from x_T) moves when x_T moves by 1e-14 relative (a few ulps, the size of the twins'
    schedule rounding). The adaptive controller reads its error from y_lo - y_hi, a difference that cancels, so its
    step sizes (and the answer) carry that rounding amplified by |y| / |y_lo - y_hi|: on some schedules 1e-15 in x_T
    moved every accepted time by ~1e-7 relative with the same steps accepted. The twin may differ from the
    reference by what the reference differs from itself there (x4), and elsewhere by 1e-8."""
    moved = [
        sampler(denoise, x_T * (1 + d), grid, ref, noise=RecordedNoise(seed + 1), **options) for d in (1e-14, -1e-14)
    ]
    return max(float(np.abs(m - want).max()) for m in moved)


@pytest.mark.parametrize(
    "name, options",
    [
        ("dpmpp_sde", {"eta": 0.5}),
        ("dpmpp_sde", {"r": 0.3}),
        ("dpmpp_sde", {"s_noise": 0.5}),
        ("dpm_solver_adaptive", {"h_init": 0.1}),
        ("dpm_solver_adaptive", {"eta": 0.5}),
        ("euler_ancestral", {"variant": "k_diffusion"}),
        ("dpmpp_3m", {"variant": "k_diffusion"}),
    ],
)
def test_both_refuse_options_of_the_other_variant(name, options):
    from diffspec.reference import make_grid, make_schedule
    from diffspec.trainer import schedules as S

    sch = make_schedule("edm")
    grid = make_grid("karras", sch, 4)
    x = np.ones((2, 2))
    with pytest.raises(ValueError, match=next(iter(options))):
        REF_SAMPLERS[name](lambda x, t: x * 0, x, grid, sch, noise=np.random.default_rng(0), **options)
    with pytest.raises(ValueError, match=next(iter(options))):
        SAMPLERS[name](
            lambda x, t: x * 0,
            torch.from_numpy(x),
            grid,
            S.schedule_from_dict(sch.to_dict()),
            noise=np.random.default_rng(0),
            **options,
        )
