"""Every sampler of k-diffusion 0.1.1.post1 (`k_diffusion.sampling`) against the reference of the name it promises.

Both run in EDM's world (alpha = 1, sigma = t) with the exact Gaussian-mixture denoiser, on the same x_T and the
same sigmas, in float64. Deterministic samplers must agree to rounding; stochastic ones are replayed: the reference
draws from a recorded stream, and k-diffusion's `noise_sampler(sigma, sigma_next)` (or `torch.randn_like`, where
k-diffusion draws without one) hands out the same arrays, through the map `diffspec.reference.interop.k_diffusion`
documents. A last test walks every function and every keyword of its signature: each is compared here with a
value other than its default, or refused with a reason.
"""

import inspect

import numpy as np
import pytest

pytest.importorskip("torch")  # absent only in the numpy-only job

import torch  # noqa: E402
from _kdiffusion import ReplayedNoise, edm_model, load_sampling, sampler_names
from diffspec.conformance.kdiffusion import sampler_functions
from diffspec.reference import make_grid, make_schedule
from diffspec.reference.interop import K_DIFFUSION_SAMPLERS, k_diffusion_grid, k_diffusion_sampler
from diffspec.reference.interop.k_diffusion import (
    K_DIFFUSION_IGNORED,
    K_DIFFUSION_INPUTS,
    K_DIFFUSION_OPTIONS,
    K_DIFFUSION_REFUSED,
    k_diffusion_keywords,
)
from diffspec.reference.oracles import standard_mixture_2d
from diffspec.reference.samplers import SAMPLER_ALIASES, get_sampler
from diffspec.reference.samplers.dpm_solver import fast_orders

EDM = make_schedule("edm")
MIXTURE = standard_mixture_2d()
SIGMAS = make_grid("karras", EDM, 10)  # 80 ... 0.002, then the clean end 0
GRIDS = {"clean": SIGMAS, "noisy": SIGMAS[:-1]}  # a grid that ends at sigma = 0.002
RTOL = 1e-10


@pytest.fixture(autouse=True)
def _float64_default():
    """k-diffusion builds some tensors with torch's default dtype (torch.tensor(sigma_max), linspace): float64."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _x_T(seed=0, n=6):
    return MIXTURE.sample_xt(n, 1.0, SIGMAS[0], np.random.default_rng(seed))


def _close(got, want, rtol=RTOL):
    got = got.numpy() if isinstance(got, torch.Tensor) else got
    want = want.numpy() if isinstance(want, torch.Tensor) else want
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max())), strict=True)


def _in_order(draws):
    """k-diffusion noise_sampler(sigma, sigma_next) handing out `draws` one per call, in order, then zeros for any
    further call (one whose result k-diffusion multiplies by zero, where the reference does not draw)."""
    queue = [torch.from_numpy(z) for z in draws]
    calls = []

    def noise_sampler(sigma, sigma_next):
        calls.append((float(sigma), float(sigma_next)))
        return queue.pop(0) if queue else torch.zeros(draws[0].shape)

    noise_sampler.calls = calls
    noise_sampler.left = queue
    return noise_sampler


def _k(name, x_T, sigmas, **options):
    return getattr(load_sampling(), f"sample_{name}")(
        edm_model(MIXTURE), torch.from_numpy(x_T), torch.from_numpy(sigmas), disable=True, **options
    )


def _ours(name, x_T, sigmas, noise=None, **options):
    fn, kw = k_diffusion_sampler(name, **options)
    return fn(MIXTURE.denoiser(EDM), x_T, k_diffusion_grid(name, EDM, sigmas=sigmas), EDM, noise=noise, **kw)


def test_every_k_diffusion_sampler_is_covered_and_reachable_by_its_name():
    names = sampler_names()
    assert sorted(K_DIFFUSION_SAMPLERS) == names
    for name in names:
        registry_name, _ = K_DIFFUSION_SAMPLERS[name]
        assert get_sampler(name) is get_sampler(registry_name)
        assert name == registry_name or SAMPLER_ALIASES[name] == registry_name


DETERMINISTIC = [
    ("euler", {}),
    ("heun", {}),
    ("dpm_2", {}),
    ("lms", {}),
    ("lms", {"order": 2}),
    ("lms", {"order": 3}),
    ("dpmpp_2m", {}),
    ("dpmpp_2m_sde", {"eta": 0.0}),
    ("dpmpp_3m_sde", {"eta": 0.0}),
    ("euler_ancestral", {"eta": 0.0}),
    ("dpm_2_ancestral", {"eta": 0.0}),
    ("dpmpp_2s_ancestral", {"eta": 0.0}),
    ("dpmpp_sde", {"eta": 0.0}),
    ("dpmpp_sde", {"eta": 0.0, "r": 0.3}),
    ("euler_ancestral", {"s_noise": 0.0}),  # k-diffusion multiplies its draws by zero; the reference draws none
    ("dpmpp_2m_sde", {"s_noise": 0.0, "solver_type": "heun"}),
]


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("name, options", DETERMINISTIC)
def test_deterministic_samplers_agree(name, options, grid):
    x_T = _x_T()
    _close(_ours(name, x_T, GRIDS[grid], **options), _k(name, x_T, GRIDS[grid], **options))


def test_dpmpp_3m_k_diffusion_variant_is_3m_sde_at_eta_0():
    x_T = _x_T(1)
    want = _k("dpmpp_3m_sde", x_T, SIGMAS, eta=0.0)
    got = get_sampler("dpmpp_3m")(
        MIXTURE.denoiser(EDM), x_T, SIGMAS, EDM, variant="k-diffusion", lower_order_final=False
    )
    _close(got, want)
    default = get_sampler("dpmpp_3m")(MIXTURE.denoiser(EDM), x_T, SIGMAS, EDM)
    assert np.abs(default - want.numpy()).max() > 1e-6  # the phi_3 weight: a different method, on purpose


ONE_DRAW_PER_CALL = [
    ("euler_ancestral", {"eta": 1.0}, "clean"),
    ("euler_ancestral", {"eta": 0.6, "s_noise": 0.8}, "noisy"),  # k-diffusion noises the last step onto 0.002 too
    ("dpm_2_ancestral", {"eta": 1.0}, "clean"),
    ("dpm_2_ancestral", {"eta": 0.7, "s_noise": 1.2}, "noisy"),
    ("dpm_2_ancestral", {"eta": 1.05}, "noisy"),  # sigma_up capped at sigma_next: Euler to x0_hat, no noise there
    ("dpmpp_2s_ancestral", {"eta": 1.0}, "clean"),
    ("dpmpp_2s_ancestral", {"eta": 0.8, "s_noise": 0.9}, "noisy"),
    ("dpmpp_2m_sde", {"eta": 1.0, "solver_type": "midpoint"}, "clean"),
    ("dpmpp_2m_sde", {"eta": 0.7, "solver_type": "heun", "s_noise": 1.1}, "noisy"),
    ("dpmpp_3m_sde", {"eta": 1.0}, "clean"),
    ("dpmpp_3m_sde", {"eta": 0.5, "s_noise": 0.7}, "noisy"),
]


@pytest.mark.parametrize("name, options, grid", ONE_DRAW_PER_CALL)
def test_stochastic_samplers_replay_the_same_draws_one_per_call(name, options, grid):
    x_T, sigmas = _x_T(2), GRIDS[grid]
    noise = ReplayedNoise(3)
    got = _ours(name, x_T, sigmas, noise=noise, **options)
    noise_sampler = _in_order(noise.draws)
    want = _k(name, x_T, sigmas, noise_sampler=noise_sampler, **options)
    assert not noise_sampler.left and len(noise.draws) == len(noise_sampler.calls) > 0
    _close(got, want)


def test_ancestral_default_variant_returns_the_mean_on_a_noisy_end():
    """diffspec's euler_ancestral (DDPM's rule) adds no noise on its last step; k-diffusion's adds it onto 0.002."""
    x_T, sigmas = _x_T(3), GRIDS["noisy"]
    ours = get_sampler("euler_ancestral")(MIXTURE.denoiser(EDM), x_T, sigmas, EDM, noise=ReplayedNoise(4))
    noise = ReplayedNoise(4)
    k_variant = get_sampler("euler_ancestral")(
        MIXTURE.denoiser(EDM), x_T, sigmas, EDM, noise=noise, variant="k-diffusion"
    )
    assert len(noise.draws) == len(sigmas) - 1
    sigma_up = sigmas[-1] * np.sqrt(1 - (sigmas[-1] / sigmas[-2]) ** 2)  # eta = 1, alpha = 1 on EDM
    _close(k_variant - sigma_up * noise.draws[-1], ours)


DPMPP_SDE = [{}, {"eta": 0.5, "r": 0.3}, {"s_noise": 0.6, "r": 0.7}]


@pytest.mark.parametrize("options", DPMPP_SDE)
def test_dpmpp_sde_replays_k_diffusions_two_brownian_increments(options):
    """variant='k-diffusion': two draws (a, b) per step make the Brownian path whose increments over
    (sigma, sigma_s) and (sigma, sigma_next) k-diffusion asks for."""
    x_T = _x_T(4)
    noise = ReplayedNoise(5)
    got = _ours("dpmpp_sde", x_T, SIGMAS, noise=noise, **options)
    r = options.get("r", 0.5)
    pairs = iter(zip(noise.draws[0::2], noise.draws[1::2], strict=True))
    state = {}

    def noise_sampler(sigma, sigma_next):
        sigma, sigma_next = float(sigma), float(sigma_next)
        if "z2" in state:  # second call of the step, over (sigma, sigma_next)
            return torch.from_numpy(state.pop("z2"))
        a, b = next(pairs)
        sigma_n = SIGMAS[int(np.argmin(np.abs(SIGMAS - sigma))) + 1]
        sigma_s = np.exp(-(-np.log(sigma) + r * (np.log(sigma) - np.log(sigma_n))))
        np.testing.assert_allclose(sigma_next, sigma_s, rtol=1e-12)
        state["z2"] = (np.sqrt(sigma - sigma_s) * a + np.sqrt(sigma_s - sigma_n) * b) / np.sqrt(sigma - sigma_n)
        return torch.from_numpy(a)

    want = _k("dpmpp_sde", x_T, SIGMAS, noise_sampler=noise_sampler, **options)
    assert len(noise.draws) == 2 * (len(SIGMAS) - 2)
    _close(got, want)


CHURN = [
    ("heun", {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 30.0, "s_noise": 1.003}),
    ("euler", {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 30.0, "s_noise": 1.003}),
    ("euler", {"s_churn": 5.0, "s_tmax": 50.0}),
    ("dpm_2", {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 30.0, "s_noise": 0.97}),
    ("dpm_2", {"s_churn": 80.0, "s_tmax": 50.0, "s_noise": 0.0}),  # churned noise level, nothing added
]


@pytest.mark.parametrize("name, options", CHURN)
def test_churn_replays_k_diffusions_randn_like(name, options, monkeypatch):
    """k-diffusion's euler / heun / dpm_2 draw torch.randn_like on every step and use it only when churning; the
    reference draws only on churned steps. s_tmax stays below sigma_max (the reference caps sigma_hat at the
    schedule's top, 80 on EDM; k-diffusion does not)."""
    x_T = _x_T(6)
    noise = ReplayedNoise(7)
    got = _ours(name, x_T, SIGMAS, noise=noise, **options)
    s_tmin, s_tmax = options.get("s_tmin", 0.0), options.get("s_tmax", np.inf)
    churned = [s_tmin <= s <= s_tmax and options.get("s_noise", 1.0) > 0 for s in SIGMAS[:-1]]
    draws = iter(noise.draws)
    replay = [torch.from_numpy(next(draws)) if c else torch.zeros(x_T.shape) for c in churned]
    monkeypatch.setattr(torch, "randn_like", lambda x: replay.pop(0))
    want = _k(name, x_T, SIGMAS, **options)
    assert not replay and sum(churned) == len(noise.draws)
    _close(got, want)


FAST = [({}, 5), ({}, 6), ({}, 10), ({"eta": 1.0}, 10), ({"eta": 0.5, "s_noise": 0.8}, 8)]


@pytest.mark.parametrize("options, nfe", FAST)
def test_dpm_fast(options, nfe):
    """k-diffusion's dpm_fast(sigma_min, sigma_max, n) steps uniformly in lam with the orders `fast_orders(n)`; the
    reference's dpm_solver_fast takes its outer times from a grid of n + 1 times: `k_diffusion_grid` builds it.
    With eta > 0 k-diffusion calls noise_sampler on every step; the last one's std is 0 and the reference draws
    nothing there."""
    sigma_min, sigma_max = 0.01, 40.0
    x_T = _x_T(8) * (sigma_max / SIGMAS[0])
    grid = k_diffusion_grid("dpm_fast", EDM, sigma_min=sigma_min, sigma_max=sigma_max, n=nfe)
    assert len(grid) == nfe + 1 and len(fast_orders(nfe)) == nfe // 3 + 1
    noise = ReplayedNoise(9)
    fn, kw = k_diffusion_sampler("dpm_fast", **options)
    got = fn(MIXTURE.denoiser(EDM), x_T, grid, EDM, noise=noise, **kw)
    noise_sampler = _in_order(noise.draws or [np.zeros(x_T.shape)])
    want = load_sampling().sample_dpm_fast(
        edm_model(MIXTURE),
        torch.from_numpy(x_T),
        sigma_min,
        sigma_max,
        nfe,
        disable=True,
        noise_sampler=noise_sampler,
        **options,
    )
    if options.get("eta"):
        assert len(noise_sampler.calls) == len(fast_orders(nfe)) == len(noise.draws) + 1
    _close(got, want)


ADAPTIVE = [
    {},
    {"order": 2, "rtol": 0.02},
    {"pcoeff": 0.1, "icoeff": 0.8, "dcoeff": 0.05},
    {"atol": 0.01, "h_init": 0.1, "accept_safety": 0.9},
    {"eta": 1.0},
    {"eta": 0.6, "s_noise": 0.9, "order": 2},
]


@pytest.mark.parametrize("options", ADAPTIVE)
def test_dpm_adaptive(options):
    """k-diffusion's PID controller (variant='k-diffusion') takes the same steps; with eta > 0 it calls
    noise_sampler on every accepted step, the last one's std 0 (no draw in the reference)."""
    sigma_min, sigma_max = 0.02, 60.0
    x_T = _x_T(9) * (sigma_max / SIGMAS[0])
    noise = ReplayedNoise(10)
    grid = k_diffusion_grid("dpm_adaptive", EDM, sigma_min=sigma_min, sigma_max=sigma_max)
    fn, kw = k_diffusion_sampler("dpm_adaptive", **options)
    den, calls = MIXTURE.denoiser(EDM), []
    got = fn(lambda x, t: (calls.append(t), den(x, t))[1], x_T, grid, EDM, noise=noise, **kw)
    k_calls = []
    noise_sampler = _in_order(noise.draws or [np.zeros(x_T.shape)])
    want, info = load_sampling().sample_dpm_adaptive(
        edm_model(MIXTURE, k_calls),
        torch.from_numpy(x_T),
        sigma_min,
        sigma_max,
        disable=True,
        return_info=True,
        noise_sampler=noise_sampler,
        **options,
    )
    assert len(calls) == len(k_calls) == info["nfe"]
    if options.get("eta"):
        assert len(noise_sampler.calls) == info["n_accept"] == len(noise.draws) + 1
    np.testing.assert_allclose(calls, k_calls, rtol=1e-9)
    _close(got, want, rtol=1e-8)


def _covered():
    """(function, keyword) pairs that some comparison above sets to a value other than k-diffusion's default."""
    cases = [(n, o) for n, o in DETERMINISTIC] + [(n, o) for n, o, _ in ONE_DRAW_PER_CALL] + CHURN
    cases += [("dpmpp_sde", o) for o in DPMPP_SDE] + [("dpm_fast", o) for o, _ in FAST]
    cases += [("dpm_adaptive", o) for o in ADAPTIVE]
    defaults = {
        name.removeprefix("sample_"): {k: p.default for k, p in inspect.signature(fn).parameters.items()}
        for name, fn in sampler_functions().items()
    }
    return {(name, key) for name, options in cases for key, value in options.items() if value != defaults[name][key]}


NON_DEFAULT = {
    "extra_args": {"cond": 1},
    "callback": print,
    "noise_sampler": lambda s, s_next: None,
    "return_info": True,
}


def test_every_keyword_of_every_k_diffusion_sampler_is_compared_or_refused():
    """Walks k_diffusion.sampling as installed: a new function, a new keyword or a keyword no comparison sets fails
    here, so the mapping cannot go stale."""
    covered = _covered()
    for fn_name, fn in sorted(sampler_functions().items()):
        name = fn_name.removeprefix("sample_")
        params = inspect.signature(fn).parameters
        inputs = [k for k in params if k in K_DIFFUSION_INPUTS]
        assert all(params[k].default is inspect.Parameter.empty for k in inputs), fn_name
        assert set(params) - set(inputs) == set(k_diffusion_keywords(name)), fn_name
        for key in params:
            if key in K_DIFFUSION_INPUTS:
                with pytest.raises(ValueError, match=f"{key}=.*an input"):
                    k_diffusion_sampler(name, **{key: 1.0})
            elif key in K_DIFFUSION_OPTIONS[name]:
                assert (name, key) in covered, f"no comparison sets {key} of {fn_name} to a value but its default"
            elif key in K_DIFFUSION_IGNORED:
                _, kwargs = k_diffusion_sampler(name, **{key: True})
                assert key not in kwargs
            else:
                defaults, reason = K_DIFFUSION_REFUSED[key]
                for default in defaults:
                    k_diffusion_sampler(name, **{key: default})
                with pytest.raises(ValueError, match=f"{key}=.*no counterpart: {reason[:20]}"):
                    k_diffusion_sampler(name, **{key: NON_DEFAULT[key]})
        with pytest.raises(ValueError, match="not an option of k-diffusion's sample_"):
            k_diffusion_sampler(name, churn=1.0)


@pytest.mark.parametrize("steps", [2, 3, 5, 10])
@pytest.mark.parametrize("name", ["dpm2_ancestral", "dpm2", "heun", "euler"])
def test_sigma_ve_samplers_stay_in_the_domain_at_a_noisy_end(name, steps):
    """On the cosine VP, t = 0 is a noisy end (sigma_ve = 0.0125). DPM2 ancestral's midpoint sqrt(sigma sigma_down)
    equals that sigma_next exactly at eta = 1, and t_of_sigma_ve gave t = -2.2e-16, which the denoiser check
    refused; the time is now held inside [t_min, t_max] within rounding."""
    schedule = make_schedule("vp_cosine")
    grid = make_grid("uniform", schedule, steps, t_start=0.99)
    assert grid[-1] == schedule.t_min and schedule.sigma(grid[-1]) > 0
    x_T = MIXTURE.sample_xt(4, schedule.alpha(grid[0]), schedule.sigma(grid[0]), np.random.default_rng(0))
    times = []
    denoise = MIXTURE.denoiser(schedule)
    fn = get_sampler(name)
    options = {"s_churn": 30.0} if name != "dpm2_ancestral" else {}
    out = fn(lambda x, t: (times.append(t), denoise(x, t))[1], x_T, grid, schedule, noise=ReplayedNoise(1), **options)
    assert np.all(np.isfinite(out)) and min(times) >= schedule.t_min and max(times) <= schedule.t_max


@pytest.mark.parametrize(
    "fn_name, checks",
    [
        ("sample_dpmpp_sde", ("agreement", "draws")),  # two overlapping Brownian increments per step
        ("sample_dpm_adaptive", ("agreement",)),  # its end points in float64
        ("sample_euler_ancestral", ("agreement",)),  # a grid ending at a noisy sigma (variant="k-diffusion")
        ("sample_dpm_2_ancestral", ("agreement",)),
        ("sample_dpmpp_3m_sde", ("order",)),  # second order, as its contract says for variant="k-diffusion"
    ],
)
def test_the_conformance_kit_finds_k_diffusion_conforming(fn_name, checks):
    """k-diffusion's own functions scored by diffspec.conformance in k-diffusion's calling convention: its
    noise_sampler is one Brownian path built from the kit's draws (`BrownianPath`), so dpmpp_sde's second call of a
    step overlaps its first exactly as the reference's variant='k-diffusion' maps two draws."""
    from diffspec.conformance import check_sampler

    report = check_sampler(
        sampler_functions()[fn_name], K_DIFFUSION_SAMPLERS[fn_name[7:]][0], convention="k-diffusion", checks=checks
    )
    assert report.passed, str(report)


def test_brownian_path_hands_out_the_draws_and_the_documented_overlap():
    from diffspec.conformance.conventions import BrownianPath

    noise = ReplayedNoise(11)
    path = BrownianPath(noise, (3,))
    z = path(10.0, 4.0), path(4.0, 1.0)  # consecutive intervals: the draws themselves
    np.testing.assert_allclose(np.array(z), np.array(noise.draws), rtol=1e-14)
    a = path(1.0, 0.6)
    b_path = path(1.0, 0.2)  # overlaps (1, 0.6): one new draw b over (0.6, 0.2)
    a_draw, b_draw = noise.draws[2:]
    np.testing.assert_allclose(a, a_draw, rtol=1e-14)
    np.testing.assert_allclose(b_path, (np.sqrt(0.4) * a_draw + np.sqrt(0.4) * b_draw) / np.sqrt(0.8), rtol=1e-13)
    assert len(noise.draws) == 4 and np.array_equal(path(4.0, 1.0), z[1])  # a known interval draws nothing
