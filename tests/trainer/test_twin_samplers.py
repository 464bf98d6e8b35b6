"""Every torch sampler against its reference twin, driven step by step through identical noise.

Both samplers get the same model (the exact Gaussian-mixture denoiser E[x0 | x_t], evaluated in float64 by the
reference oracle), the same grid (built by the reference), the same x_T and the same noise stream (two copies of
one seeded numpy generator, fed through the `noise` callable). They must call the model at the same times, draw
the same shapes in the same order, and return the same sample in float64 to ~1e-10 relative to the sample's scale
(each is a few dozen float64 operations per step on O(1)-conditioned coefficients: rounding, accumulated, stays
far below that; a wrong formula or a wrong branch is O(1) off), plus a derived floor for the samplers whose stages at a
lower noise level carry rounding at |x_T| / alpha[0] into the sample (`stage_floor`). They must also refuse the same
inputs.
"""

import inspect
import math
import warnings

import numpy as np
import pytest
import torch
from _twin import RecordedNoise, mixtures, reference_oracle, reference_schedules, torch_oracle, twin
from diffspec.reference import grids as RG
from diffspec.reference import schedules as R
from diffspec.reference.samplers import INVERSIONS as REF_INVERSIONS
from diffspec.reference.samplers import SAMPLER_INFO as REF_INFO
from diffspec.reference.samplers import SAMPLERS as REF_SAMPLERS
from diffspec.trainer.samplers import INVERSIONS, SAMPLERS
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples


def option_strategy(option):
    """Values of one contract option (`SamplerInfo.options`): its choices, or numbers in its interval (an open upper
    end explored up to 1.5 x default + 0.5, or its largest probe value; positive tolerances from their default to
    four times it), the default mixed in."""
    if option.callable or option.default is None:
        return st.just(option.default)
    if option.choices:
        return st.sampled_from(option.choices)
    if option.default == math.inf:
        return st.just(math.inf) | st.floats(max(option.low or 0.0, 1.0), 100.0)
    lo = option.low if option.low is not None else option.default - 1
    hi = option.high
    if hi is None:
        hi = max([option.default * 1.5 + 0.5, *option.probe])
    if option.low_open:  # a positive tolerance: default to 4 x default (tiny ones only cost time)
        lo, hi = max(lo, option.default), 4 * option.default
    if option.integer:
        return st.integers(int(lo), int(min(hi, lo + 4)))
    return st.sampled_from([option.default]) | st.floats(lo, hi)


def options_strategy(name):
    """Options of sampler `name` drawn from its contract."""
    return st.fixed_dictionaries({k: option_strategy(o) for k, o in REF_INFO[name].options.items()})


# Adams-Bashforth weights of PLMS / PNDM (Liu et al. 2022, eq. 12), newest first, by the number of eps in history.
AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
SCHEDULE_RTOL = 1e-12  # float64 agreement of the twin schedules' alpha and sigma (asserted in test_twin_schedules)


def stage_floor(name, ref, grid, x_T, scale):
    """A derived bound on how far the twins of samplers with a stage at a lower noise level drift apart (0 for others).

    PLMS, PNDM, Heun and DPM2 run in y = x / alpha over s = sigma_ve = sigma / alpha. Some of their steps (PLMS's
    first, pseudo improved Euler; PNDM's first three, pseudo Runge-Kutta; every Heun and DPM2 step not onto s = 0)
    evaluate eps_hat = (y' - x0_hat) / s' at a lower level s' (s_next for PLMS and Heun, sqrt(s s_next) for DPM2, the
    midpoint or s_next for PNDM) of a predictor y' = y + (s' - s) eps_hat(y), and multiply it by dt = s_next - s,
    which spans the current level s. With stage weights w (1/2 for PLMS and Heun, 1 for DPM2, 2/6, 2/6, 1/6 for RK4)
    and |dt| |eps_hat| <= about |y - x0_hat| <= Y = |x_T| / alpha[0] + scale, two things the twins do not share move
    y_next:
    - their schedules: s' differs by r <= 2 SCHEDULE_RTOL relative (sigma / alpha), moving y_next by at most
      sum_w |dt| |eps_hat'| r <= 2 SCHEDULE_RTOL Y (DPM2's sqrt halves r): 16 SCHEDULE_RTOL Y per stage step;
    - rounding at magnitude Y (a few ulps in y', independent in the twins once any input differs), which the division
      by s' carries into y_next times A = w |dt| / s' (|dt| / (2 s_next) for PLMS and Heun, |dt| / sqrt(s s_next)
      for DPM2, |dt| / (6 s_next) for PNDM's last stage, at most 1 at a midpoint): 8 eps Y (1 + A) per stage step.
    Y dwarfs the sample when alpha[0] << 1: on a 3-step exponential grid of LinearBetas(T=1497, beta_end=0.047),
    Y = 3e7, the twins' alpha at t = 873 differ by 1.6e-15 relative and their PLMS samples (|x| = 41) by 1.3e-8.
    Heun and DPM2 steps map an error in y onto at most itself (s_next / s for J = 0, below). The Adams steps after
    PLMS's and PNDM's warm-up map errors d_j in y onto d (1 + b_0 rho_0 (1 - J)) + sum_{j >= 1} b_j rho_j (1 - J) d_j
    with rho_j = |dt| / s_{i-j} <= 1 and J = Cov[x0 | x] / s^2 (the exact denoiser's Jacobian in y, in [0, 1] for
    Gaussian data): each amplifies the largest error by at most G_i = max(1, |1 - b_0 rho_0|) + sum_{j >= 1} |b_j| rho_j
    (sum |b_j| - 1 = 136/24 for AB4 when every rho is 1); G is their product over the grid. In x at the end:
    alpha[-1] G Y (16 SCHEDULE_RTOL + 8 eps (1 + max A)) per stage step. (Churn only raises s to s_hat <= 1.42 s.)
    """
    if name in EPS_FORM:
        return eps_form_floor(ref, grid, x_T, scale)
    if name not in ("plms", "pndm", "heun", "dpm2"):
        return 0.0
    alpha = ref.alpha(grid)
    s = ref.sigma(grid) / alpha
    n = len(grid) - 1
    stage_steps = {"plms": min(1, n), "pndm": min(3, n)}.get(name, n)
    churn = np.sqrt(2) if name in ("heun", "dpm2") else 1.0  # EDM's churn: s_hat = s (1 + gamma), gamma <= 0.42

    def amplification(i):
        if s[i + 1] == 0:
            return 1.0
        dt = churn * s[i] - s[i + 1]
        stage = {"plms": (1 / 2, s[i + 1]), "heun": (1 / 2, s[i + 1]), "pndm": (1 / 6, s[i + 1])}
        w, s_stage = stage.get(name, (1.0, np.sqrt(s[i] * s[i + 1])))
        return max(1.0, w * dt / s_stage)

    A = max([amplification(i) for i in range(stage_steps)], default=1.0)
    G = 1.0
    for i in range(stage_steps if name in ("plms", "pndm") else n, n):
        b = AB[min(i + 1, 4)]
        rho = [abs(s[i + 1] - s[i]) / s[i - j] for j in range(len(b))]
        G *= max(1.0, abs(1 - b[0] * rho[0])) + sum(abs(bj) * r for bj, r in zip(b[1:], rho[1:]))
    Y = float(np.max(np.abs(x_T))) / alpha[0] + scale
    eps = float(np.finfo(np.float64).eps)
    return alpha[-1] * G * Y * stage_steps * (16 * SCHEDULE_RTOL + 8 * eps * (1 + A))


# Singlestep DPM-Solver in its noise-prediction form (Lu et al. 2022, Algorithms 1-2).
EPS_FORM = ("dpm_solver_1", "dpm_solver_2", "dpm_solver_3", "dpm_solver_fast")


def eps_form_floor(ref, grid, x_T, scale):
    """A derived bound on how far the twins of DPM-Solver's noise-prediction form drift apart through their schedules.

    Each update, x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_hat - ..., and each intermediate stage u_i =
    (alpha_i / alpha_s) x_s - ..., multiplies x_s by a ratio of the twins' alphas, which differ by r <= 2 SCHEDULE_RTOL
    relative (stage times come from t_of_lam, equally close). That moves the result by r alpha_t |x_s / alpha_s| <=
    r alpha_t Y, Y = |x_T| / alpha[0] + scale as in `stage_floor`: an error of r Y in y = x / alpha, which later
    steps carry to the end without amplification (a step's Jacobian in y lies between s_t / s_s and 1 for Gaussian
    data, as for DDIM). One such ratio per model call: alpha[-1] Y 2 SCHEDULE_RTOL (len(grid) - 1) x 3 (the stages
    of an order-3 step). Y dwarfs the sample when alpha[0] << 1: a 3-interval grid of SigmoidBetas(beta_end=0.05)
    from alpha = 7.8e-6 gives Y = 1.3e5 and twins 1.7e-7 apart at |x| = 7.4.
    """
    alpha = ref.alpha(grid)
    Y = float(np.max(np.abs(x_T))) / alpha[0] + scale
    return float(alpha[-1] * Y * 2 * SCHEDULE_RTOL * (len(grid) - 1) * 3)


GRIDS_WITH_T_START = ("uniform", "karras", "exponential", "uniform_lam", "time_quadratic", "shifted")


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
@settings(deadline=None, max_examples=examples(20))
@given(
    problem=sampling_problems(),
    mixture=mixtures(),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_sampler_matches_reference_step_by_step(name, problem, mixture, batch, seed, data):
    ref, grid = problem
    options = data.draw(options_strategy(name), label="options")
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
    except ValueError as err:
        # A run that diverged (the reference's denoiser check caught a NaN or inf state) is a NaN result: skipped,
        # as below; the twin does not check its denoiser's outputs (that would sync the device every step).
        assume("returned NaN or inf" not in str(err))
        with pytest.raises(ValueError):
            SAMPLERS[name](
                torch_oracle(mixture, ref), torch.from_numpy(x_T), grid, twin(ref), noise=torch_noise, **torch_options
            )
        return
    assume(np.all(np.isfinite(want)))
    got = SAMPLERS[name](
        torch_oracle(mixture, ref, torch_calls),
        torch.from_numpy(x_T),
        grid,
        twin(ref),
        noise=torch_noise,
        **torch_options,
    )
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64 and got.shape == x_T.shape
    assert torch_noise.shapes == ref_noise.shapes
    # Adaptive step-size control feeds rounding back into the step sizes: the accepted times drift apart by about
    # (number of steps) x (rounding of the error estimate) ~ 1e-12 relative over a hundred steps, and the samples by
    # that drift times |dx/dt|. Their tolerance is 1e-8 relative (still 1e6 below any formula error, which moves
    # a sample by O(rtol) or more). dpm_solver_fast picks its steps from the grid alone (no error control).
    adaptive = REF_INFO[name].adaptive and name != "dpm_solver_fast"
    rtol = 1e-8 if adaptive else 1e-10
    if (REF_INFO[name].calls_per_step or 0) > 1 or name == "dpm_solver_fast":
        # Several model calls per step (singlestep DPM-Solver, Heun-type). One singlestep step can span the whole
        # grid (e.g. t = 847 -> 0 with T = 848): its intermediate times come from t_of_lam and its eps-form update
        # multiplies rounding by sigma-ratios of ~1e2 at once; derandomized examples of that shape measured up to
        # 3.4e-9 relative (dpm_solver_fast), so these get 1e-8, still 1e6 below a formula error.
        rtol = 1e-8
    if not adaptive:  # an adaptive run may take one extra, zero-length step where t_of_lam(lam + h) lands
        # one ulp above the end time in one twin and on it in the other: same sample, different call list.
        np.testing.assert_allclose(torch_calls, ref_calls, rtol=rtol / 100, atol=rtol / 100 * max(1.0, abs(ref.t_max)))
    scale = max(1.0, float(np.max(np.abs(want))), float(np.max(np.abs(x_T))))
    same_path = len(torch_calls) == len(ref_calls) and np.allclose(
        torch_calls, ref_calls, rtol=1e-9, atol=1e-9 * max(1.0, abs(ref.t_max))
    )
    if adaptive and not same_path:
        # The twins accepted different steps: an error ratio within rounding of the acceptance threshold. Two runs
        # of one error-controlled solver on different accepted paths agree to the solver's own tolerance.
        defaults = inspect.signature(REF_SAMPLERS[name]).parameters
        rtol = max(rtol, float(ref_options.get("rtol", defaults["rtol"].default)))
    atol = rtol * scale + stage_floor(name, ref, grid, x_T, scale)
    np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol, strict=True)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_keeps_float32_and_feeds_the_network_float32_times(name):
    """Training-time sampling: x_T float32 stays float32, and the network sees x and t in float32 with t of shape (B,)
    (never a Python float, which an exported graph would freeze into a constant)."""
    from diffspec.reference.oracles import standard_mixture_2d

    ref = R.make_schedule(
        "flow" if name.startswith("flow") else "linear", **({} if name.startswith("flow") else {"T": 100})
    )
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
@settings(deadline=None, max_examples=examples(20))
@given(
    ref=reference_schedules(),
    mixture=mixtures(),
    steps=st.integers(1, 12),
    # the start at least 1e-3 of the way in: inverting from sigma ~ 1e-183 amplifies by 1 / sigma by construction
    lo=st.floats(1e-3, 0.5),
    hi=st.floats(0.5, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
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


# Schedules whose inverse rounded one ulp outside [t_min, t_max] at an end (1.0000000000000002, 88.00000000000003,
# -2.2e-16) before the inverses held such results at the end: a sampler then fed a time the schedule refuses.
ROUNDING_OUTSIDE = [
    ("vp", {"beta_min": 0.04, "beta_max": 8.1}),
    ("subvp", {"beta_min": 0.88, "beta_max": 20.0}),
    ("vp_cosine", {"s": 0.0172}),
    ("ve", {"sigma_min": 0.006, "sigma_max": 69.1}),
    ("edm", {"sigma_max": 88.0}),
]


@pytest.mark.parametrize("name, params", ROUNDING_OUTSIDE)
def test_torch_inverse_at_a_domain_end_stays_inside_like_the_reference(name, params):
    ref = R.make_schedule(name, **params)
    sched = twin(ref)
    for end in (ref.t_min, ref.t_max):
        lam = float(ref.lam(end))
        if not math.isfinite(lam):
            continue
        lam64 = torch.tensor([lam, lam], dtype=torch.float64)
        for got, want in (
            (sched.t_of_lam(lam64), ref.t_of_lam(lam)),
            (sched.t_of_sigma_ve(torch.exp(-lam64)), ref.t_of_sigma_ve(np.exp(-lam))),
        ):
            assert bool(((got >= ref.t_min) & (got <= ref.t_max)).all()), (name, end, got.tolist())
            np.testing.assert_allclose(got.numpy(), np.full(2, float(want)), rtol=1e-12, atol=1e-12)


def test_torch_shifted_flow_grid_starts_inside_the_domain():
    """The trainer's shifted grid from t = 1 started at 1.0000000000000002 for shift = 0.3014132435025377 (about one
    shift in 140), which its own grid check then refused."""
    from diffspec.trainer import grids as TG

    for shift in [0.3014132435025377, *np.random.default_rng(3).uniform(0.3, 5.0, 200)]:
        ref = R.make_schedule("flow", shift=float(shift))
        grid = TG.make_grid("shifted", twin(ref), 3)
        assert float(grid[0]) == 1.0 and float(grid[-1]) == 0.0, (shift, float(grid[0]))
        np.testing.assert_allclose(grid.numpy(), RG.shifted(ref, 3), rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", ["euler", "heun", "dpm2"])
def test_torch_churn_capped_at_the_top_stays_inside_the_domain(name):
    """EDM's churn capped at sigma_ve(t_max) asks for t_of_sigma_ve(sigma_ve(t_max)) = 88.00000000000003 on
    EDM(sigma_max=88) unless the inverse holds it; both twins call the model inside the domain, at the same times."""
    from diffspec.reference.oracles import standard_mixture_2d

    ref = R.make_schedule("edm", sigma_max=88.0)
    grid = RG.karras(ref, 4)
    x_T = 88.0 * np.random.default_rng(0).standard_normal((3, 2))
    mixture, calls = standard_mixture_2d(), []
    got = SAMPLERS[name](
        torch_oracle(mixture, ref, calls), torch.from_numpy(x_T), grid, twin(ref), noise=RecordedNoise(1), s_churn=40.0
    )
    want = REF_SAMPLERS[name](reference_oracle(mixture, ref), x_T, grid, ref, noise=RecordedNoise(1), s_churn=40.0)
    assert max(calls) == ref.t_max
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("name", ["euler", "heun", "dpm2"])
def test_churn_at_t_max_draws_nothing_in_either_twin(name):
    """The churn is capped at sigma_ve(t_max), so a step from t_max is never churned. The cap exp(-lam(t_max)) and
    the grid's sigma / alpha at t_max differed by an ulp in the torch twin on this schedule, which then drew noise
    (and churned) where the reference did not."""
    from diffspec.reference.oracles import standard_mixture_2d

    ref = R.make_schedule("sigmoid", T=450, beta_start=0.00019670170098637802, beta_end=0.008)
    grid = np.array([ref.t_max, ref.t_min])
    mixture = standard_mixture_2d()
    x_T = mixture.sample_xt(1, ref.alpha(grid[0]), ref.sigma(grid[0]), np.random.default_rng(0))
    ref_noise, torch_noise = RecordedNoise(1), RecordedNoise(1)
    want = REF_SAMPLERS[name](reference_oracle(mixture, ref), x_T, grid, ref, noise=ref_noise, s_churn=1.0)
    got = SAMPLERS[name](
        torch_oracle(mixture, ref), torch.from_numpy(x_T), grid, twin(ref), noise=torch_noise, s_churn=1.0
    )
    assert ref_noise.shapes == [] and torch_noise.shapes == []
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_order_3_from_a_zero_snr_start_agrees(variant):
    """A zero-terminal-SNR grid starts at lam = -inf, so UniP-3's history holds a point with r_k = inf. Both twins
    take the limit r_k -> inf (that point's column and the last row drop out); torch's solver returned NaN on the
    infinite system where numpy's returned the limit."""
    from diffspec.reference.oracles import standard_mixture_2d

    ref = R.LinearBetas(T=1000, beta_start=0.0005542954331915175, beta_end=0.03125, rescale_zero_snr=True)
    grid = np.array([999.0, 444.0, 111.0, 0.0, -1.0])
    mixture = standard_mixture_2d()
    x_T = mixture.sample_xt(4, ref.alpha(grid[0]), ref.sigma(grid[0]), np.random.default_rng(0))
    opts = dict(order=3, variant=variant, use_corrector=True, lower_order_final=False)
    want = REF_SAMPLERS["unipc"](reference_oracle(mixture, ref), x_T, grid, ref, **opts)
    got = SAMPLERS["unipc"](torch_oracle(mixture, ref), torch.from_numpy(x_T), grid, twin(ref), **opts)
    assert np.all(np.isfinite(want))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10 * max(1.0, float(np.abs(want).max())))
