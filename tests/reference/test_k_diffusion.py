"""Every sampler of k-diffusion 0.1.1.post1 (`k_diffusion.sampling`) against the reference of the name it promises.

Both run in EDM's world (alpha = 1, sigma = t) with the exact Gaussian-mixture denoiser, on the same x_T and the
same sigmas, in float64. Deterministic samplers must agree to rounding; stochastic ones are replayed: the reference
draws from a recorded stream, and k-diffusion's `noise_sampler(sigma, sigma_next)` (or `torch.randn_like`, where
k-diffusion draws without one) hands out the same arrays, through the map the reference's docstring documents.
"""

import numpy as np
import pytest

pytest.importorskip("torch")  # absent only in the numpy-only job

import torch  # noqa: E402
from _kdiffusion import ReplayedNoise, edm_model, load_sampling, sampler_names
from diffspec.reference import make_grid, make_schedule
from diffspec.reference.interop import K_DIFFUSION_SAMPLERS, k_diffusion_sampler
from diffspec.reference.oracles import standard_mixture_2d
from diffspec.reference.samplers import SAMPLER_ALIASES, get_sampler
from diffspec.reference.samplers.dpm_solver import fast_orders

EDM = make_schedule("edm")
MIXTURE = standard_mixture_2d()
SIGMAS = make_grid("karras", EDM, 10)  # 80 ... 0.002, then the clean end 0
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


def _close(got, want):
    got = got.numpy() if isinstance(got, torch.Tensor) else got
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * max(1.0, float(np.abs(want).max())), strict=True)


def _in_order(draws):
    """k-diffusion noise_sampler(sigma, sigma_next) handing out `draws` one per call, in order."""
    queue = [torch.from_numpy(z) for z in draws]

    def noise_sampler(sigma, sigma_next):
        return queue.pop(0)

    return noise_sampler, queue


def test_every_k_diffusion_sampler_is_covered_and_reachable_by_its_name():
    names = sampler_names()
    assert sorted(K_DIFFUSION_SAMPLERS) == names
    for name in names:
        registry_name, _ = K_DIFFUSION_SAMPLERS[name]
        assert get_sampler(name) is get_sampler(registry_name)
        assert name == registry_name or SAMPLER_ALIASES[name] == registry_name


DETERMINISTIC = {
    "euler": {},
    "heun": {},
    "dpm_2": {},
    "lms": {"order": 4},
    "dpmpp_2m": {},
    "dpmpp_2m_sde": {"eta": 0.0},
    "dpmpp_3m_sde": {"eta": 0.0},
    "euler_ancestral": {"eta": 0.0},
    "dpm_2_ancestral": {"eta": 0.0},
    "dpmpp_2s_ancestral": {"eta": 0.0},
    "dpmpp_sde": {"eta": 0.0},
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_samplers_agree(name):
    options = DETERMINISTIC[name]
    x_T = _x_T()
    want = getattr(load_sampling(), f"sample_{name}")(
        edm_model(MIXTURE), torch.from_numpy(x_T), torch.from_numpy(SIGMAS), disable=True, **options
    )
    fn, kw = k_diffusion_sampler(name, **options)
    got = fn(MIXTURE.denoiser(EDM), x_T, SIGMAS, EDM, **kw)
    _close(got, want.numpy())


def test_dpmpp_3m_k_diffusion_variant_is_3m_sde_at_eta_0():
    x_T = _x_T(1)
    want = load_sampling().sample_dpmpp_3m_sde(
        edm_model(MIXTURE), torch.from_numpy(x_T), torch.from_numpy(SIGMAS), disable=True, eta=0.0
    )
    got = get_sampler("dpmpp_3m")(
        MIXTURE.denoiser(EDM), x_T, SIGMAS, EDM, variant="k-diffusion", lower_order_final=False
    )
    _close(got, want.numpy())
    default = get_sampler("dpmpp_3m")(MIXTURE.denoiser(EDM), x_T, SIGMAS, EDM)
    assert np.abs(default - want.numpy()).max() > 1e-6  # the phi_3 weight: a different method, on purpose


@pytest.mark.parametrize(
    "name, options",
    [
        ("euler_ancestral", {"eta": 1.0}),
        ("euler_ancestral", {"eta": 0.6}),
        ("dpm_2_ancestral", {"eta": 1.0}),
        ("dpmpp_2s_ancestral", {"eta": 1.0}),
        ("dpmpp_2m_sde", {"eta": 1.0, "solver_type": "midpoint"}),
        ("dpmpp_2m_sde", {"eta": 0.7, "solver_type": "heun"}),
        ("dpmpp_3m_sde", {"eta": 1.0}),
        ("dpmpp_3m_sde", {"eta": 0.5}),
    ],
)
def test_stochastic_samplers_replay_the_same_draws_one_per_call(name, options):
    x_T = _x_T(2)
    noise = ReplayedNoise(3)
    fn, kw = k_diffusion_sampler(name, **options)
    got = fn(MIXTURE.denoiser(EDM), x_T, SIGMAS, EDM, noise=noise, **kw)
    noise_sampler, left = _in_order(noise.draws)
    want = getattr(load_sampling(), f"sample_{name}")(
        edm_model(MIXTURE),
        torch.from_numpy(x_T),
        torch.from_numpy(SIGMAS),
        disable=True,
        noise_sampler=noise_sampler,
        **options,
    )
    assert not left and len(noise.draws) > 0
    _close(got, want.numpy())


@pytest.mark.parametrize("options", [{}, {"eta": 0.5, "r": 0.3}])
def test_dpmpp_sde_replays_k_diffusions_two_brownian_increments(options):
    """variant='k-diffusion': two draws (a, b) per step make the Brownian path whose increments over
    (sigma, sigma_s) and (sigma, sigma_next) k-diffusion asks for."""
    x_T = _x_T(4)
    noise = ReplayedNoise(5)
    fn, kw = k_diffusion_sampler("dpmpp_sde", **options)
    got = fn(MIXTURE.denoiser(EDM), x_T, SIGMAS, EDM, noise=noise, **kw)
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

    want = load_sampling().sample_dpmpp_sde(
        edm_model(MIXTURE),
        torch.from_numpy(x_T),
        torch.from_numpy(SIGMAS),
        disable=True,
        noise_sampler=noise_sampler,
        **options,
    )
    assert len(noise.draws) == 2 * (len(SIGMAS) - 2)
    _close(got, want.numpy())


def test_heun_churn_replays_k_diffusions_randn_like(monkeypatch):
    """k-diffusion's Heun draws torch.randn_like on every step and uses it only when churning; the reference draws
    only on churned steps. s_tmax stays below sigma_max (the reference caps sigma_hat at the schedule's top)."""
    options = {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 30.0, "s_noise": 1.003}
    x_T = _x_T(6)
    noise = ReplayedNoise(7)
    got = get_sampler("heun")(MIXTURE.denoiser(EDM), x_T, SIGMAS, EDM, noise=noise, **options)
    churned = [options["s_tmin"] <= s <= options["s_tmax"] for s in SIGMAS[:-1]]
    draws = iter(noise.draws)
    replay = [torch.from_numpy(next(draws)) if c else torch.zeros(x_T.shape) for c in churned]
    monkeypatch.setattr(torch, "randn_like", lambda x: replay.pop(0))
    want = load_sampling().sample_heun(
        edm_model(MIXTURE), torch.from_numpy(x_T), torch.from_numpy(SIGMAS), disable=True, **options
    )
    assert not replay and sum(churned) == len(noise.draws) > 0
    _close(got, want.numpy())


@pytest.mark.parametrize("nfe", [5, 6, 10])
def test_dpm_fast(nfe):
    """k-diffusion's dpm_fast(sigma_min, sigma_max, n) steps uniformly in lam with the orders `fast_orders(n)`; the
    reference's dpm_solver_fast takes its outer times from a grid of n + 1 times: `k_diffusion_grid` builds it."""
    from diffspec.reference.interop import k_diffusion_grid

    sigma_min, sigma_max = 0.01, 40.0
    x_T = _x_T(8) * (sigma_max / SIGMAS[0])
    want = load_sampling().sample_dpm_fast(
        edm_model(MIXTURE), torch.from_numpy(x_T), sigma_min, sigma_max, nfe, disable=True
    )
    grid = k_diffusion_grid("dpm_fast", EDM, sigma_min=sigma_min, sigma_max=sigma_max, n=nfe)
    assert len(grid) == nfe + 1 and len(fast_orders(nfe)) == nfe // 3 + 1
    fn, kw = k_diffusion_sampler("dpm_fast")
    _close(fn(MIXTURE.denoiser(EDM), x_T, grid, EDM, **kw), want.numpy())


@pytest.mark.parametrize("options", [{}, {"order": 2, "rtol": 0.02}, {"pcoeff": 0.1, "icoeff": 0.8, "dcoeff": 0.05}])
def test_dpm_adaptive(options):
    from diffspec.reference.interop import k_diffusion_grid

    sigma_min, sigma_max = 0.02, 60.0
    x_T = _x_T(9) * (sigma_max / SIGMAS[0])
    k_calls, calls = [], []
    want, info = load_sampling().sample_dpm_adaptive(
        edm_model(MIXTURE, k_calls),
        torch.from_numpy(x_T),
        sigma_min,
        sigma_max,
        disable=True,
        return_info=True,
        **options,
    )
    grid = k_diffusion_grid("dpm_adaptive", EDM, sigma_min=sigma_min, sigma_max=sigma_max)
    fn, kw = k_diffusion_sampler("dpm_adaptive", **options)
    den = MIXTURE.denoiser(EDM)
    got = fn(lambda x, t: (calls.append(t), den(x, t))[1], x_T, grid, EDM, **kw)
    assert info["n_reject"] >= 0 and len(calls) == len(k_calls) == info["nfe"]
    np.testing.assert_allclose(calls, k_calls, rtol=1e-9)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-8, atol=1e-8 * np.abs(want.numpy()).max())
