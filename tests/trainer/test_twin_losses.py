"""Parameterizations, weightings, losses, the forward process, the VLB and the timestep distributions of the
trainer against the reference, over random schedules, shapes, times (endpoints mixed in), parameterizations and
weightings.

float64 tolerances are rounding level: rtol 1e-12 plus an absolute floor of 1e-12 times the magnitude of the terms
that are added (a sum of terms of size M carries an absolute rounding error ~ eps64 M, whatever the result).
float32 tolerances are derived in the test that uses them.
"""

import math

import numpy as np
import torch
from _twin import RecordedNoise, float32_times, kappa, reference_schedules, twin
from diffspec.reference import forward as RF
from diffspec.reference import losses as RL
from diffspec.reference import parameterizations as RP
from diffspec.reference import timesteps as RT
from diffspec.reference import vlb as RV
from diffspec.reference import weightings as RW
from diffspec.trainer import forward as TF
from diffspec.trainer import losses as TL
from diffspec.trainer import parameterizations as TP
from diffspec.trainer import timesteps as TT
from diffspec.trainer import vlb as TV
from diffspec.trainer import weightings as TW
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
PARAMS = [p.value for p in RP.Parameterization]
WEIGHTING_OPTIONS = {
    "uniform": {},
    "x0": {},
    "snr": {},
    "v": {},
    "flow": {},
    "min_snr": {"gamma": st.sampled_from([5.0]) | st.floats(0.5, 20.0)},
    "p2": {
        "k": st.sampled_from([1.0]) | st.floats(0.1, 5.0),
        "gamma": st.sampled_from([1.0, 0.5]) | st.floats(0.0, 2.0),
    },
    "edm": {"sigma_data": st.sampled_from([0.5]) | st.floats(0.1, 2.0)},
    "sigmoid": {"bias": st.sampled_from([-3.0]) | st.floats(-6.0, 6.0)},
}


def close(got, want, *, magnitude=0.0, rtol=1e-12):
    """assert_allclose with rtol and an absolute floor rtol * magnitude (the size of the summed terms)."""
    got = got.detach().double().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.max(magnitude, initial=0.0)) + 1e-300)


@st.composite
def batches(draw, *, max_dims=2):
    """(x0, eps, output) float64 arrays of a random shape (B, ...)."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=1 + max_dims)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [rng.standard_normal(shape) for _ in range(3)]


@st.composite
def noisy_times(draw, ref, n):
    """n times where 0 < sigma and 0 < alpha (both finite lam), endpoints of the noisy range mixed in."""
    lo, hi = float(ref.t_eps), float(ref.t_max)
    t = np.array(draw(st.lists(st.sampled_from([lo, hi]) | st.floats(lo, hi), min_size=n, max_size=n)))
    lam = ref.lam(t)
    assume(np.all(np.isfinite(lam)) and np.all(np.abs(lam) < 15))
    return t


# ---------------------------------------------------------------- parameterizations


@settings(deadline=None)
@given(
    data=batches(),
    param=st.sampled_from(PARAMS + ["epsilon", "v_prediction", "sample"]),
    a=st.floats(1e-3, 1.0),
    s=st.floats(1e-3, 2.0),
    per_sample=st.booleans(),
)
def test_parameterizations_match_reference(data, param, a, s, per_sample):
    x0, eps, out = data
    B = x0.shape[0]
    alpha = np.full(B, a) * np.linspace(1.0, 0.5, B) if per_sample else a
    sigma = np.full(B, s) * np.linspace(0.5, 1.0, B) if per_sample else s
    ta, ts = (torch.as_tensor(v, dtype=torch.float64) for v in (alpha, sigma))
    x = RP.broadcast_to_batch(alpha, x0) * x0 + RP.broadcast_to_batch(sigma, x0) * eps
    tx, tx0, teps, tout = (torch.from_numpy(v) for v in (x, x0, eps, out))
    for got, want in zip(TP.coefficients(param, ta, ts), RP.coefficients(param, alpha, sigma)):
        close(got, want)
    for got, want in zip(TP.eps_coefficients(param, ta, ts), RP.eps_coefficients(param, alpha, sigma)):
        close(got, want)
    c_skip, c_out = RP.coefficients(param, alpha, sigma)
    mag = np.abs(RP.broadcast_to_batch(c_skip, x) * x) + np.abs(RP.broadcast_to_batch(c_out, x) * out)
    close(TP.x0_from_output(param, tout, tx, ta, ts), RP.x0_from_output(param, out, x, alpha, sigma), magnitude=mag)
    d_skip, d_out = RP.eps_coefficients(param, alpha, sigma)
    mag = np.abs(RP.broadcast_to_batch(d_skip, x) * x) + np.abs(RP.broadcast_to_batch(d_out, x) * out)
    close(TP.eps_from_output(param, tout, tx, ta, ts), RP.eps_from_output(param, out, x, alpha, sigma), magnitude=mag)
    target = RP.training_target(param, x0, eps, alpha, sigma)
    close(
        TP.training_target(param, tx0, teps, ta, ts), target, magnitude=np.abs(x0) + np.abs(eps) / min(np.min(sigma), 1)
    )
    mag = (np.abs(x0) + np.abs(RP.broadcast_to_batch(c_skip, x) * x)) / np.abs(RP.broadcast_to_batch(c_out, x))
    close(TP.output_from_x0(param, tx0, tx, ta, ts), RP.output_from_x0(param, x0, x, alpha, sigma), magnitude=mag)
    mag = (np.abs(x) + np.abs(RP.broadcast_to_batch(alpha, x) * x0)) / RP.broadcast_to_batch(sigma, x)
    close(TP.eps_from_x0(tx0, tx, ta, ts), RP.eps_from_x0(x0, x, alpha, sigma), magnitude=mag)


# ---------------------------------------------------------------- weightings


@settings(deadline=None)
@given(
    name=st.sampled_from(sorted(RW.WEIGHTINGS)),
    data=st.data(),
    lam=st.lists(st.sampled_from([-20.0, 0.0, 20.0]) | st.floats(-20.0, 20.0), min_size=1, max_size=6),
)
def test_weightings_match_reference(name, data, lam):
    opts = data.draw(st.fixed_dictionaries(WEIGHTING_OPTIONS[name]), label="options")
    lam = np.asarray(lam)
    want = RW.WEIGHTINGS[name](lam, **opts)
    # Every weight is exp of (a multiple of) lam, up to a constant: its relative rounding is eps times the size of
    # the exponent, |2 lam| + |log k| at most (p2 multiplies by gamma).
    cond = 1 + 2 * np.abs(lam) * max(1.0, opts.get("gamma", 1.0)) + abs(math.log(opts.get("k", 1.0)))
    got = TW.WEIGHTINGS[name](torch.from_numpy(lam), **opts)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=4 * EPS64 * float(cond.max()) + 1e-13)
    # float32: the exponent argument is rounded (relative eps32) and exp turns that into relative eps32 |argument|;
    # the remaining few operations add a few eps32. Values outside float32's range are not compared.
    got32 = TW.WEIGHTINGS[name](torch.from_numpy(lam.astype(np.float32)), **opts).double().numpy()
    want32 = RW.WEIGHTINGS[name](lam.astype(np.float32).astype(np.float64), **opts)
    in_range = (want32 < 1e37) & (want32 > 1e-37)
    np.testing.assert_allclose(got32[in_range], want32[in_range], rtol=8 * EPS32 * float(cond.max()))


def test_weighting_registry_matches():
    assert sorted(TW.WEIGHTINGS) == sorted(RW.WEIGHTINGS)


# ---------------------------------------------------------------- diffusion and flow-matching losses


class _TwinCoefficients:
    """A reference schedule whose alpha, sigma and lam are the torch twin's float64 values.

    The two schedules agree only to their own rounding, amplified by their formulas: on a rescaled zero-SNR
    discrete schedule the rescale recovers each beta through a cancellation of relative error eps64 / beta, so lam
    differs by up to ~1e-12, and a weighting w(lam) multiplies that by its d log w / d lam (2 for e^{-2 lam}).
    That agreement is test_twin_schedules.py's subject, with that derived tolerance. Fed identical coefficients,
    the two loss implementations are compared on their own arithmetic alone."""

    def __init__(self, ref):
        self._ref, self._twin = ref, twin(ref)

    def __getattr__(self, name):
        return getattr(self._ref, name)

    def _of(self, name, t):
        return getattr(self._twin, name)(torch.as_tensor(t, dtype=torch.float64)).numpy()

    def alpha(self, t):
        return self._of("alpha", t)

    def sigma(self, t):
        return self._of("sigma", t)

    def lam(self, t):
        return self._of("lam", t)


@settings(deadline=None)
@given(
    ref=reference_schedules(),
    data=st.data(),
    param=st.sampled_from(PARAMS),
    weighting=st.sampled_from([None] + sorted(RW.WEIGHTINGS)),
)
def test_diffusion_loss_matches_reference(ref, data, param, weighting):
    x0, eps, out = data.draw(batches(), label="arrays")
    t = data.draw(noisy_times(ref, x0.shape[0]), label="t")
    opts = data.draw(st.fixed_dictionaries(WEIGHTING_OPTIONS[weighting]), label="options") if weighting else None
    same = _TwinCoefficients(ref)
    want = RL.diffusion_loss(out, x0, eps, t, same, parameterization=param, weighting=weighting, weighting_options=opts)
    got = TL.diffusion_loss(
        torch.from_numpy(out),
        torch.from_numpy(x0),
        torch.from_numpy(eps),
        torch.from_numpy(t),
        same._twin,
        parameterization=param,
        weighting=weighting,
        weighting_options=opts,
    )
    assert got.shape == (x0.shape[0],) and got.dtype == torch.float64
    # The reference forms eps_hat = d_skip x_t + d_out F and subtracts eps; the trainer uses the exact rewrite
    # eps_hat - eps = -k (F - target) (no x_t). The reference's own rounding in eps_hat - eps is ~ eps64 E with
    # E = |d_skip x_t| + |d_out F| + |eps|, so the loss w mean((diff)^2) may differ by w mean(2 |diff| E + E^2) eps64.
    alpha, sigma, lam = same.alpha(t), same.sigma(t), same.lam(t)
    x = RP.broadcast_to_batch(alpha, x0) * x0 + RP.broadcast_to_batch(sigma, x0) * eps
    d_skip, d_out = RP.eps_coefficients(param, alpha, sigma)
    E = (
        8
        * EPS64
        * (
            np.abs(RP.broadcast_to_batch(d_skip, x) * x)
            + np.abs(RP.broadcast_to_batch(d_out, x) * out)
            + np.abs(eps)
            + np.abs(x0)
            + np.abs(out)
        )
    )
    diff = np.abs(RP.eps_from_output(param, out, x, alpha, sigma) - eps)
    w = np.ones_like(t) if weighting is None else RW.WEIGHTINGS[weighting](lam, **(opts or {}))
    if weighting is None:  # plain MSE of F - target: rounding relative to the target's terms
        target = RP.training_target(param, x0, eps, alpha, sigma)
        E = 8 * EPS64 * (np.abs(target) + np.abs(out) + np.abs(x0) + np.abs(eps) / np.min(sigma))
        diff = np.abs(out - target)
    axes = tuple(range(1, x0.ndim))
    slack = w * np.mean(2 * diff * E + E**2, axis=axes)
    # Beyond that, the weight itself: both sides evaluate w at the same lam, each to 4 eps64 times its
    # conditioning (test_weightings_match_reference), and the product w k^2 mse adds a few eps64.
    cond = 1.0 if weighting is None else 1 + 2 * np.abs(lam) * max(1.0, (opts or {}).get("gamma", 1.0))
    cond = cond + abs(math.log((opts or {}).get("k", 1.0)))
    rtol = 4 * EPS64 * cond + 8 * EPS64
    assert np.all(np.abs(got.numpy() - want) <= rtol * np.abs(want) + slack + 1e-300), (got.numpy(), want, slack)


@settings(deadline=None)
@given(data=batches())
def test_flow_matching_loss_matches_reference(data):
    x0, eps, out = data
    got = TL.flow_matching_loss(*(torch.from_numpy(v) for v in (out, x0, eps)))
    close(got, RL.flow_matching_loss(out, x0, eps), magnitude=(np.abs(out) + np.abs(x0) + np.abs(eps)).max() ** 2)


# ---------------------------------------------------------------- the training step's coefficients


@settings(deadline=None)
@given(ref=reference_schedules(), data=st.data())
def test_step_coefficients_match_reference(ref, data):
    """alpha_sigma_lam, what the training step evaluates once per batch: at float times the same numbers as alpha,
    sigma and lam called apart (bit for bit); at the integer steps of a discrete schedule a float32 table read, each
    value the float64 one rounded once, so within half an ulp of float32 (eps32 / 2 relative) of the reference
    plus the float64 agreement of the two schedules (test_twin_schedules.py's tolerance)."""
    sch = twin(ref)
    t = torch.tensor(data.draw(st.lists(st.floats(float(ref.t_min), float(ref.t_max)), min_size=1, max_size=8)))
    for dtype in (torch.float64, torch.float32):
        together = sch.alpha_sigma_lam(t.to(dtype))
        apart = (sch.alpha(t.to(dtype)), sch.sigma(t.to(dtype)), sch.lam(t.to(dtype)))
        assert all(torch.equal(a, b) for a, b in zip(together, apart))
    if not ref.is_discrete:
        return
    n = torch.tensor(data.draw(st.lists(st.integers(-1, ref.num_steps - 1), min_size=1, max_size=8)))
    n = torch.cat([n, torch.tensor([-1, 0, ref.num_steps - 1])])
    rtol64 = 1e-12
    if ref.rescale_zero_snr:
        rtol64 = max(rtol64, 4 * EPS64 / float(np.min(ref.betas())))
    want = (ref.alpha(n.numpy()), ref.sigma(n.numpy()), ref.lam(n.numpy()))
    for name, got, w in zip(("alpha", "sigma", "lam"), sch.alpha_sigma_lam(n), want):
        assert got.dtype == torch.float32 and got.shape == n.shape
        atol = rtol64 if name == "lam" else 0.0
        np.testing.assert_allclose(got.double().numpy(), w, rtol=EPS32 / 2 + rtol64, atol=atol, strict=True)


# ---------------------------------------------------------------- forward process, VLB, hybrid loss

DISCRETE = ("linear", "scaled_linear", "cosine", "sigmoid", "betas")


@settings(deadline=None)
@given(ref=reference_schedules(names=DISCRETE), data=st.data())
def test_ddpm_table_and_posteriors_match_reference(ref, data):
    want_table, got_table = RF.ddpm_table(ref), TF.ddpm_table(twin(ref))
    for key, want in want_table.items():
        np.testing.assert_allclose(got_table[key].numpy(), want, rtol=1e-10, atol=0, err_msg=key)
    x0, eps, v = data.draw(batches(), label="arrays")
    B = x0.shape[0]
    n = np.array(data.draw(st.lists(st.integers(0, ref.num_steps - 1), min_size=B, max_size=B), label="n"))
    x = RF.q_sample(x0, eps, n.astype(np.float64), ref)
    close(
        TF.q_sample(torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(n.astype(np.float64)), twin(ref)),
        x,
        magnitude=np.abs(x0) + np.abs(eps),
    )
    tn = torch.from_numpy(n)
    for got, want in zip(
        TF.ddpm_posterior(torch.from_numpy(x0), torch.from_numpy(x), tn, twin(ref)), RF.ddpm_posterior(x0, x, n, ref)
    ):
        close(got, np.broadcast_to(want, got.shape), magnitude=np.abs(x0) + np.abs(x), rtol=1e-10)
    v = np.tanh(v)
    close(
        TF.learned_range_log_variance(torch.from_numpy(v), tn, twin(ref)),
        RF.learned_range_log_variance(v, n, ref),
        magnitude=30.0,
        rtol=1e-10,
    )
    nz = n[n > 0]
    if nz.size:
        s = (nz - 1).astype(np.float64)
        got = TF.posterior(
            torch.from_numpy(x0[n > 0]),
            torch.from_numpy(x[n > 0]),
            torch.from_numpy(s),
            torch.from_numpy(nz.astype(np.float64)),
            twin(ref),
        )
        want = RF.posterior(x0[n > 0], x[n > 0], s, nz.astype(np.float64), ref)
        for g, w_ in zip(got, want):
            close(g, np.broadcast_to(w_, g.shape), magnitude=np.abs(x0).max() + np.abs(x).max() + 1, rtol=1e-10)


@settings(deadline=None, max_examples=examples(10))
@given(
    ref=reference_schedules(names=("betas",)),
    seed=st.integers(0, 2**32 - 1),
    variance=st.sampled_from(["fixed_small", "fixed_large"]),
    B=st.integers(1, 3),
)
def test_vlb_bits_per_dim_matches_reference_through_identical_noise(ref, seed, variance, B):
    rng = np.random.default_rng(seed)
    x0 = np.clip(np.round(rng.uniform(-1, 1, (B, 3)) * 127.5) / 127.5, -1, 1)

    def ref_denoise(x, t):
        return np.tanh(0.5 * x)  # any fixed model; the same one for both

    def torch_denoise(x, t):
        assert t.shape == (x.shape[0],)
        return torch.tanh(0.5 * x)

    want = RV.vlb_bits_per_dim(ref_denoise, x0, ref, noise=RecordedNoise(seed), variance=variance)
    got = TV.vlb_bits_per_dim(
        torch_denoise, torch.from_numpy(x0), twin(ref), noise=RecordedNoise(seed), variance=variance
    )
    # Sums of T terms of size up to ~30 bits: absolute rounding ~ T * 30 * eps64 per term.
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12 * ref.num_steps * 30)


@settings(deadline=None)
@given(
    ref=reference_schedules(names=DISCRETE),
    data=st.data(),
    param=st.sampled_from(PARAMS),
    lambda_vlb=st.sampled_from([0.001, 0.0, 1.0]),
)
def test_hybrid_loss_matches_reference(ref, data, param, lambda_vlb):
    x0, eps, out = data.draw(batches(), label="arrays")
    assume(not getattr(ref, "rescale_zero_snr", False) or param not in ("eps", "score"))
    x0 = np.clip(np.round(np.tanh(x0) * 127.5) / 127.5, -1, 1)
    var = np.tanh(out[::-1].copy() if out.shape[0] > 1 else out)
    B = x0.shape[0]
    n = np.array(data.draw(st.lists(st.integers(0, ref.num_steps - 1), min_size=B, max_size=B), label="n"))
    assume(np.all(np.isfinite(ref.lam(n.astype(float)))) and np.all(ref.alpha(n.astype(float)) > 1e-3))
    with np.errstate(all="ignore"):
        want = RL.hybrid_loss(out, var, x0, eps, n, ref, parameterization=param, lambda_vlb=lambda_vlb)
    assume(np.all(np.isfinite(want)))
    got = TL.hybrid_loss(
        *(torch.from_numpy(v) for v in (out, var, x0, eps)),
        torch.from_numpy(n),
        twin(ref),
        parameterization=param,
        lambda_vlb=lambda_vlb,
    )
    # KL terms divide by posterior variances as small as beta_tilde_1 ~ 1e-6 and mean differences carry the
    # rounding of x0_hat (~eps64 |x| / alpha): relative 1e-8 covers eps64 / beta_tilde_1 conditioning.
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------- consistency models, distillation, noise transforms


@settings(deadline=None)
@given(
    data=batches(),
    sigma=st.floats(0.002, 80.0),
    ratio=st.floats(1.01, 3.0),
    c=st.none() | st.floats(1e-4, 1.0),
    N=st.integers(2, 200),
    k=st.integers(0, 1000),
)
def test_consistency_pieces_match_reference(data, sigma, ratio, c, N, k):
    x0, z, pred = data
    tx0, tz, tpred = (torch.from_numpy(v) for v in (x0, z, pred))
    sigma_next = sigma * ratio
    for got, want in zip(
        TL.consistency_training_inputs(tx0, tz, sigma, sigma_next),
        RL.consistency_training_inputs(x0, z, sigma, sigma_next),
    ):
        close(got, want, magnitude=np.abs(x0) + sigma_next * np.abs(z))
    x_next = x0 + sigma_next * z
    close(
        TL.consistency_distillation_inputs(torch.from_numpy(x_next), tx0, sigma, sigma_next),
        RL.consistency_distillation_inputs(x_next, x0, sigma, sigma_next),
        magnitude=np.abs(x_next) + np.abs(x0),
        rtol=1e-11,
    )
    close(
        TL.consistency_loss(tpred, tx0, metric="l2"),
        RL.consistency_loss(pred, x0, metric="l2"),
        magnitude=np.sum((np.abs(pred) + np.abs(x0)) ** 2),
    )
    close(
        TL.consistency_loss(tpred, tx0, metric="pseudo_huber", c=c),
        RL.consistency_loss(pred, x0, metric="pseudo_huber", c=c),
        magnitude=np.sum((np.abs(pred) + np.abs(x0)) ** 2),
    )
    s = np.array([sigma, sigma_next])
    for got, want in zip(TL.consistency_scalings(torch.from_numpy(s)), RL.consistency_scalings(s)):
        close(got, want)
    close(TL.ict_weight(sigma, sigma_next), RL.ict_weight(sigma, sigma_next), rtol=1e-12 * ratio / (ratio - 1))
    sigmas = RL.ict_sigmas(N)
    close(TL.ict_sigmas(N), sigmas, rtol=1e-13 * 7)
    close(TL.ict_index_probabilities(sigmas), RL.ict_index_probabilities(sigmas), rtol=1e-11)
    assert TL.ict_num_steps(k, 1000) == RL.ict_num_steps(k, 1000)
    assert TL.ict_default_c(x0[0].size) == RL.ict_default_c(x0[0].size)


@settings(deadline=None)
@given(ref=reference_schedules(), data=st.data())
def test_progressive_distillation_target_matches_reference(ref, data):
    x, _, _ = data.draw(batches(), label="arrays")
    t = data.draw(noisy_times(ref, x.shape[0]), label="t")
    frac = np.array(data.draw(st.lists(st.floats(0.0, 0.9), min_size=len(t), max_size=len(t)), label="frac"))
    t_next = ref.t_min + frac * (t - ref.t_min)
    assume(np.all(t - t_next > 1e-6 * (ref.t_max - ref.t_min)) and np.all(ref.alpha(t) > 1e-3))

    def ref_teacher(z, u):
        return np.tanh(0.7 * z) + 0.01 * np.asarray(u).reshape(-1, *([1] * (z.ndim - 1)))

    def torch_teacher(z, u):
        return torch.tanh(0.7 * z) + 0.01 * u.reshape(-1, *([1] * (z.ndim - 1)))

    want = RL.progressive_distillation_target(ref_teacher, x, t, t_next, ref)
    got = TL.progressive_distillation_target(
        torch_teacher, torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(t_next), twin(ref)
    )
    # The target divides by alpha_next - (sigma_next / sigma) alpha: its conditioning is the size of the summed
    # terms over that denominator.
    a_t, s_t, a_n, s_n = ref.alpha(t), ref.sigma(t), ref.alpha(t_next), ref.sigma(t_next)
    denom = np.abs(a_n - s_n / s_t * a_t)
    mag = (np.abs(x).max() + 2) * (1 + s_n / s_t + a_n + a_t) / denom
    close(got, want, magnitude=RP.broadcast_to_batch(mag, x), rtol=1e-11)


@settings(deadline=None)
@given(data=batches(max_dims=3), strength=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_noise_transforms_match_reference_through_identical_noise(data, strength, seed):
    eps = data[0]
    close(
        TL.offset_noise(torch.from_numpy(eps), strength, RecordedNoise(seed)),
        RL.offset_noise(eps, strength, RecordedNoise(seed)),
        magnitude=np.abs(eps) + 5,
    )
    close(
        TL.input_perturbation(torch.from_numpy(eps), strength, RecordedNoise(seed)),
        RL.input_perturbation(eps, strength, RecordedNoise(seed)),
        magnitude=np.abs(eps) + 5,
    )


# ---------------------------------------------------------------- timestep distributions

TIMESTEP_OPTIONS = {
    "uniform_discrete": {},
    "uniform": {},
    "logit_normal": {
        "mean": st.sampled_from([0.0]) | st.floats(-1.0, 1.0),
        "std": st.sampled_from([1.0]) | st.floats(0.5, 2.0),
    },
    "edm_lognormal": {
        "p_mean": st.sampled_from([-1.2]) | st.floats(-2.0, 1.0),
        "p_std": st.sampled_from([1.2]) | st.floats(0.5, 2.0),
    },
}


def _ks_statistic(a, b):
    grid = np.sort(np.concatenate([a, b]))
    return np.max(
        np.abs(
            np.searchsorted(np.sort(a), grid, side="right") / len(a)
            - np.searchsorted(np.sort(b), grid, side="right") / len(b)
        )
    )


@settings(deadline=None, max_examples=examples(15))
@given(
    ref=reference_schedules(),
    name=st.sampled_from(sorted(TIMESTEP_OPTIONS)),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_timestep_distributions_match_reference(ref, name, data, seed):
    opts = data.draw(st.fixed_dictionaries(TIMESTEP_OPTIONS[name]), label="options")
    n = 4000
    try:
        want = RT.TIMESTEPS[name](ref, n, np.random.default_rng(seed), **opts)
    except ValueError:
        try:
            TT.TIMESTEPS[name](twin(ref), n, torch.Generator().manual_seed(seed), **opts)
        except ValueError:
            return
        raise AssertionError("the reference refused, the trainer did not")  # noqa: B904
    got = TT.TIMESTEPS[name](twin(ref), n, torch.Generator().manual_seed(seed), dtype=torch.float64, **opts)
    assert got.shape == (n,) and got.dtype == torch.float64
    got = got.numpy()
    assert got.min() >= ref.t_min and got.max() <= ref.t_max
    # Two independent samples of one distribution: the two-sample KS statistic exceeds
    # c(a) sqrt(2 / n) with probability a; c = sqrt(-log(a / 2) / 2) = 3.8 for a = 1e-12.
    assert _ks_statistic(got, want) <= math.sqrt(-math.log(1e-12 / 2) / 2) * math.sqrt(2 / n)
    assert TT.TIMESTEPS[name](twin(ref), 3, torch.Generator().manual_seed(seed), **opts).dtype == torch.float32


@settings(deadline=None, max_examples=examples(15))
@given(ref=reference_schedules(), seed=st.integers(0, 2**32 - 1), per_bin=st.integers(1, 5))
def test_importance_sampling_matches_reference(ref, seed, per_bin):
    num_bins = ref.num_steps if ref.is_discrete else 20
    assume(num_bins <= 200)
    rh, th = RT.LossHistory(num_bins, history_per_bin=per_bin), TT.LossHistory(num_bins, history_per_bin=per_bin)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        bins = rng.integers(0, num_bins, size=num_bins * per_bin)
        losses = rng.gamma(2.0, size=bins.shape) * (1 + bins / num_bins)
        rh.update(bins, losses)
        th.update(torch.from_numpy(bins), torch.from_numpy(losses))
    close(th.probabilities(), rh.probabilities())
    k = np.arange(num_bins)
    close(th.weights(torch.from_numpy(k)), rh.weights(k))
    n = 4000
    want = RT.importance(ref, n, np.random.default_rng(seed), history=rh)
    got = TT.importance(twin(ref), n, torch.Generator().manual_seed(seed), history=th, dtype=torch.float64).numpy()
    assert _ks_statistic(got, want) <= math.sqrt(-math.log(1e-12 / 2) / 2) * math.sqrt(2 / n)
    np.testing.assert_array_equal(
        TT.bin_of(twin(ref), torch.from_numpy(want), num_bins).numpy(), RT.bin_of(ref, want, num_bins)
    )


def test_timestep_registry_matches():
    assert sorted(TT.TIMESTEPS) == sorted(RT.TIMESTEPS)


@settings(deadline=None)
@given(
    ref=reference_schedules(),
    data=st.data(),
    param=st.sampled_from(PARAMS),
    weighting=st.sampled_from([None, "uniform", "min_snr", "v", "sigmoid", "edm"]),
)
def test_diffusion_loss_float32_within_derived_tolerance(ref, data, param, weighting):
    """The training-precision loss against the float64 reference at the same (float32-rounded) inputs.

    Error budget, per element: alpha and sigma carry a relative error r = 16 eps32 kappa(t) (the schedule bound of
    test_twin_schedules); the target and F - target are a few operations on terms of size
    M = |F| + |x0| + |eps| (1 + 1/sigma for the score target), so |delta(F - target)| <= E = (8 eps32 + r) M.
    The weighted loss is w k^2 mean(diff^2) with w(lam), k(alpha, sigma): its error is at most
    w k^2 mean(2 |diff| E + E^2) + loss (2 + 2 |lam|) r (w and k are exp/ratios of lam-sized quantities).
    """
    x0, eps, out = (a.astype(np.float32).astype(np.float64) for a in data.draw(batches(), label="arrays"))
    t = data.draw(noisy_times(ref, x0.shape[0]), label="t")
    t32, t = float32_times(ref, t)
    assume(np.all(np.isfinite(ref.lam(t))))
    want = RL.diffusion_loss(out, x0, eps, t, ref, parameterization=param, weighting=weighting)
    got = TL.diffusion_loss(
        *(torch.from_numpy(a.astype(np.float32)) for a in (out, x0, eps)),
        torch.from_numpy(t32),
        twin(ref),
        parameterization=param,
        weighting=weighting,
    )
    assert got.dtype == torch.float32
    alpha, sigma, lam = ref.alpha(t), ref.sigma(t), ref.lam(t)
    r = RP.broadcast_to_batch(16 * EPS32 * kappa(ref, t), x0)
    sig = RP.broadcast_to_batch(sigma, x0)
    M = np.abs(out) + np.abs(x0) + np.abs(eps) * (1 + 1 / sig)
    E = (8 * EPS32 + r) * M
    target = RP.training_target(param, x0, eps, alpha, sigma)
    diff = np.abs(out - target)
    w = np.ones_like(t) if weighting is None else RW.WEIGHTINGS[weighting](lam)
    k2 = (
        np.ones_like(t)
        if weighting is None
        else TL.eps_scale(param, torch.from_numpy(alpha), torch.from_numpy(sigma)).numpy() ** 2
    )
    axes = tuple(range(1, x0.ndim))
    bound = w * k2 * np.mean(2 * diff * E + E**2, axis=axes) + np.abs(want) * (
        2 + 2 * np.abs(lam)
    ) * 16 * EPS32 * kappa(ref, t)
    err = np.abs(got.double().numpy() - want)
    assert np.all(err <= bound), (err, bound)
