"""k-diffusion's samplers (Euler, Euler ancestral, Heun, DPM2, DPM2 ancestral), in sigma_ve for any schedule.

Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative Models" (EDM), Algorithms 1-2,
and Crowson's k-diffusion (`sample_euler`, `sample_euler_ancestral`, `sample_heun`, `sample_dpm_2`,
`sample_dpm_2_ancestral`). k-diffusion lives in EDM's world alpha = 1, sigma = t. Any schedule maps onto it with
y = x / alpha and sigma_ve = sigma / alpha = e^{-lam}: y = x0 + sigma_ve eps, and the probability-flow ODE is

    dy / dsigma_ve = d = (y - x0_hat) / sigma_ve.

The model is called with x = alpha(t) y at t = t_of_sigma_ve(sigma_ve); the result is returned as x = alpha y.
Notation: k-diffusion's `sigmas[i]` is our sigma_ve(grid[i]); a step onto sigma_ve = 0 (a clean end) is an Euler
step, which there returns x0_hat.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.noise import as_noise_source
from diffspec.reference.samplers._info import VARIANT, Option, Requirement, SamplerInfo


def _setup(x_T, grid, schedule, sampler):
    """(grid, alpha over the grid, sigma_ve over the grid, y = x_T / alpha)."""
    grid = _checks.decreasing_grid(grid, schedule, sampler=sampler)
    alpha = schedule.alpha(grid)
    if alpha[0] == 0:
        raise ValueError(
            f"grid[0]={grid[0]} has alpha = 0 (sigma_ve = inf): {sampler} works in sigma_ve = sigma / alpha; "
            "start the grid at a time with alpha > 0"
        )
    sigma_ve = schedule.sigma(grid) / alpha
    return grid, alpha, sigma_ve, _checks.finite_array("x_T", x_T) / alpha[0]


def _t_of_sigma_ve(schedule, sigma_ve):
    """The time at noise level sigma_ve. The schedule's inverse holds it inside the domain where it lands within
    rounding outside: DPM2 ancestral's midpoint sqrt(sigma sigma_down) is sigma_next exactly at eta = 1, so on a grid
    that ends at the schedule's first time (a noisy end, such as the cosine VP's t = 0) it must give that time."""
    return float(schedule.t_of_sigma_ve(sigma_ve))


def _d(denoise, schedule, y, sigma_ve, t=None):
    """The ODE derivative d = (y - x0_hat) / sigma_ve at noise level sigma_ve (time t if known)."""
    t = _t_of_sigma_ve(schedule, sigma_ve) if t is None else float(t)
    x0 = np.asarray(denoise(schedule.alpha(t) * y, t), dtype=np.float64)
    return (y - x0) / sigma_ve


_VARIANTS = {"diffspec": False, "k-diffusion": True}  # k-diffusion's own rule for the noise of the last step


def _ancestral_step(sigma, sigma_next, eta):
    """k-diffusion's `get_ancestral_step`: sigma_up^2 = eta^2 sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2 (capped at
    sigma_next), sigma_down = sqrt(sigma_next^2 - sigma_up^2); eta = 1 is DDPM's posterior variance in sigma_ve."""
    if sigma_next == 0:
        return 0.0, 0.0
    sigma_up = min(sigma_next, eta * sigma_next * np.sqrt(-np.expm1(2 * np.log(sigma_next / sigma))))
    return np.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def _churner(noise, schedule, sampler, n, s_churn, s_tmin, s_tmax, s_noise):
    """EDM's churn (Karras et al. 2022, Algorithm 2, lines 4-6) as churn(y, sigma_ve, t) -> (y_hat, sigma_hat, t_hat).

    gamma = min(s_churn / n, sqrt(2) - 1) for s_tmin <= sigma_ve <= s_tmax (else 0), sigma_hat = sigma_ve (1 + gamma)
    capped at the schedule's largest sigma_ve so the model time stays in its domain, and
    y_hat = y + sqrt(sigma_hat^2 - sigma_ve^2) s_noise z with one draw z, only when sigma_hat > sigma_ve and
    s_noise > 0. t_hat is t when nothing was churned, else None (the model time follows from sigma_hat).
    """
    s_churn, s_noise = _checks.nonnegative("s_churn", s_churn), _checks.nonnegative("s_noise", s_noise)
    if not (_checks._is_real(s_tmin) and _checks._is_real(s_tmax) and 0 <= s_tmin <= s_tmax):
        raise ValueError(f"s_tmin={s_tmin!r}, s_tmax={s_tmax!r}: expected 0 <= s_tmin <= s_tmax")
    draw = as_noise_source(noise, sampler=f"{sampler} with s_churn > 0") if s_churn > 0 and s_noise > 0 else None
    sigma_top = float(schedule.sigma_ve(schedule.t_max)) if schedule.alpha(schedule.t_max) > 0 else np.inf

    def churn(y, sigma, t):
        gamma = min(s_churn / n, np.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = min(sigma * (1 + gamma), sigma_top)
        # At t_max the cap is sigma itself; exp(-lam(t_max)) and sigma / alpha may differ by an ulp there.
        if not sigma_hat > sigma or t == schedule.t_max:
            return y, sigma, t
        if draw is not None:
            y = y + np.sqrt(sigma_hat**2 - sigma**2) * s_noise * draw(y.shape)
        return y, sigma_hat, None

    return churn


def sample_euler(
    denoise, x_T, grid, schedule, *, noise=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0
):
    """Euler's method on the probability-flow ODE in sigma_ve, with EDM's optional churn.

    Karras et al. (2022), Algorithm 2 with Euler steps (k-diffusion `sample_euler`); without churn, Algorithm 1
    without the correction. With (y_hat, sigma_hat) from the churn (`_churner`; y_hat = y, sigma_hat = sigma_ve
    when s_churn = 0):

        y_next = y_hat + (sigma_ve_next - sigma_hat) d,   d = (y_hat - x0_hat(y_hat, sigma_hat)) / sigma_hat

    On a VP schedule without churn this is exactly deterministic DDIM. Model calls per step: 1. Noise draws: one
    array per churned step (sigma_hat > sigma_ve, s_noise > 0), in grid order, none without churn. Order: 1.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="euler")
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "euler")
    churn = _churner(noise, schedule, "euler", len(grid) - 1, s_churn, s_tmin, s_tmax, s_noise)
    for i in range(len(grid) - 1):
        y, sigma_hat, t_hat = churn(y, sigma_ve[i], grid[i])
        d = _d(denoise, schedule, y, sigma_hat, t_hat)
        y = y + (sigma_ve[i + 1] - sigma_hat) * d
    return alpha[-1] * y


def sample_euler_ancestral(denoise, x_T, grid, schedule, *, noise=None, eta=1.0, s_noise=1.0, variant="diffspec"):
    """Euler ancestral: an Euler step down to sigma_down, then fresh noise of std sigma_up back up to sigma_ve_next.

    k-diffusion `sample_euler_ancestral` (Crowson), in sigma_ve with eta scaling the injected noise:

        sigma_up   = min(sigma_next, eta sigma_next sqrt(1 - sigma_next^2 / sigma^2))
        sigma_down = sqrt(sigma_next^2 - sigma_up^2)
        y_next = y + (sigma_down - sigma) d + s_noise sigma_up z

    eta = 1 is DDPM (fixed_small) written in sigma_ve; eta = 0 is `euler`; s_noise != 1 scales the noise (EDM's
    S_noise). The last step adds no noise: like DDPM it returns the mean y + (sigma_down - sigma) d (x0_hat at a
    clean end, where sigma_up = 0 anyway). variant="k-diffusion" departs from that only on a grid that ends at a
    noisy time: as k-diffusion, its last step adds its noise too (the result is a sample at grid[-1], not a mean).
    Model calls per step: 1. Noise draws: one array per step with eta > 0 and s_noise > 0, in grid order, none on
    the last step (with variant="k-diffusion", one on the last step onto a noisy end). Order: none (stochastic;
    1 at eta = 0).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="euler_ancestral")
    eta, s_noise = _checks.nonnegative("eta", eta), _checks.nonnegative("s_noise", s_noise)
    k_diffusion = _checks.lookup(_VARIANTS, variant, what="variant")
    draw = as_noise_source(noise, sampler="euler_ancestral with eta > 0") if eta > 0 and s_noise > 0 else None
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "euler_ancestral")
    for i in range(len(grid) - 1):
        d = _d(denoise, schedule, y, sigma_ve[i], grid[i])
        sigma_down, sigma_up = _ancestral_step(sigma_ve[i], sigma_ve[i + 1], eta)
        y = y + (sigma_down - sigma_ve[i]) * d
        if draw is not None and sigma_up > 0 and (k_diffusion or i < len(grid) - 2):
            y = y + sigma_up * s_noise * draw(y.shape)
    return alpha[-1] * y


def sample_heun(denoise, x_T, grid, schedule, *, noise=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun's method with EDM's stochastic churn, in sigma_ve.

    Karras et al. (2022), Algorithm 2 (t_i is our sigma_ve; N = len(grid) - 1), k-diffusion `sample_heun`. With
    (y_hat, sigma_hat) from the churn (`_churner`: gamma = min(s_churn / N, sqrt(2) - 1) for
    s_tmin <= sigma <= s_tmax, sigma_hat = sigma (1 + gamma) capped at the schedule's largest sigma_ve,
    y_hat = y + sqrt(sigma_hat^2 - sigma^2) s_noise z):

        y_next = y_hat + (sigma_next - sigma_hat) (d(y_hat, sigma_hat) + d(y_e, sigma_next)) / 2,
        y_e    = y_hat + (sigma_next - sigma_hat) d(y_hat, sigma_hat)                 (the Euler predictor)

    A step onto sigma_next = 0 is the Euler step y_e (EDM's "if t_{i+1} != 0").
    Model calls per step: 2 (1 onto sigma = 0). Noise draws: one array per churned step (sigma_hat > sigma,
    s_noise > 0), in grid order, none without churn. Order: 2 without churn (checked in tests).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="heun")
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "heun")
    churn = _churner(noise, schedule, "heun", len(grid) - 1, s_churn, s_tmin, s_tmax, s_noise)
    for i in range(len(grid) - 1):
        y, sigma_hat, t_hat = churn(y, sigma_ve[i], grid[i])
        dt = sigma_ve[i + 1] - sigma_hat
        d = _d(denoise, schedule, y, sigma_hat, t_hat)
        y_euler = y + dt * d
        if sigma_ve[i + 1] == 0:
            y = y_euler
        else:
            y = y + dt * (d + _d(denoise, schedule, y_euler, sigma_ve[i + 1], grid[i + 1])) / 2
    return alpha[-1] * y


def _dpm2_step(denoise, schedule, y, d, sigma, sigma_to):
    """k-diffusion's DPM2 step from sigma to sigma_to: the midpoint method at the geometric mean noise level."""
    if sigma_to == 0:
        return y - sigma * d
    sigma_mid = np.exp(0.5 * (np.log(sigma) + np.log(sigma_to)))
    d_mid = _d(denoise, schedule, y + (sigma_mid - sigma) * d, sigma_mid)
    return y + (sigma_to - sigma) * d_mid


def sample_dpm2(denoise, x_T, grid, schedule, *, noise=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """DPM2: the midpoint method in sigma_ve with its midpoint at the geometric mean noise level, with EDM's churn.

    k-diffusion `sample_dpm_2` (Crowson), after DPM-Solver-2 (Lu et al. 2022, Algorithm 1 with r1 = 1/2, whose
    lam-midpoint is sigma_mid = sqrt(sigma sigma_next)) inside Karras et al. (2022)'s Algorithm 2. With
    (y_hat, sigma_hat) from the churn (`_churner`; y_hat = y, sigma_hat = sigma_ve when s_churn = 0) and
    sigma_mid = sqrt(sigma_hat sigma_next):

        y_mid  = y_hat + (sigma_mid - sigma_hat) d(y_hat, sigma_hat)
        y_next = y_hat + (sigma_next - sigma_hat) d(y_mid, sigma_mid)

    A step onto sigma_next = 0 is the Euler step. Model calls per step: 2 (1 onto sigma = 0). Noise draws: one
    array per churned step, in grid order, none without churn. Order: 2 without churn (checked in tests).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpm2")
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "dpm2")
    churn = _churner(noise, schedule, "dpm2", len(grid) - 1, s_churn, s_tmin, s_tmax, s_noise)
    for i in range(len(grid) - 1):
        y, sigma_hat, t_hat = churn(y, sigma_ve[i], grid[i])
        d = _d(denoise, schedule, y, sigma_hat, t_hat)
        y = _dpm2_step(denoise, schedule, y, d, sigma_hat, sigma_ve[i + 1])
    return alpha[-1] * y


def sample_dpm2_ancestral(denoise, x_T, grid, schedule, *, noise=None, eta=1.0, s_noise=1.0, variant="diffspec"):
    """DPM2 ancestral: a DPM2 step down to sigma_down, then fresh noise of std sigma_up (as `euler_ancestral`).

    k-diffusion `sample_dpm_2_ancestral`: sigma_down, sigma_up as in `euler_ancestral`; a DPM2 step from sigma to
    sigma_down (the Euler step to x0_hat when sigma_down = 0), then y += s_noise sigma_up z, except on the last step,
    which returns the mean as in `euler_ancestral`. variant="k-diffusion" is k-diffusion's rule instead: noise
    exactly where sigma_down > 0, so also on a last step onto a noisy end, and not where eta > 1 caps sigma_up at
    sigma_next (k-diffusion returns x0_hat at a noisy level there; `euler_ancestral` adds sigma_next z).
    Model calls per step: 2 (1 onto sigma_down = 0). Noise draws: one array per step with eta > 0 and s_noise > 0,
    in grid order, none on the last step (variant="k-diffusion": one per step with sigma_down > 0 and
    sigma_up > 0). Order: none (stochastic; 2 at eta = 0).
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="dpm2_ancestral")
    eta, s_noise = _checks.nonnegative("eta", eta), _checks.nonnegative("s_noise", s_noise)
    k_diffusion = _checks.lookup(_VARIANTS, variant, what="variant")
    draw = as_noise_source(noise, sampler="dpm2_ancestral with eta > 0") if eta > 0 and s_noise > 0 else None
    grid, alpha, sigma_ve, y = _setup(x_T, grid, schedule, "dpm2_ancestral")
    for i in range(len(grid) - 1):
        d = _d(denoise, schedule, y, sigma_ve[i], grid[i])
        sigma_down, sigma_up = _ancestral_step(sigma_ve[i], sigma_ve[i + 1], eta)
        y = _dpm2_step(denoise, schedule, y, d, sigma_ve[i], sigma_down)
        if draw is not None and sigma_up > 0 and (sigma_down > 0 if k_diffusion else i < len(grid) - 2):
            y = y + sigma_up * s_noise * draw(y.shape)
    return alpha[-1] * y


_ETA = Option(1.0, low=0.0, invalid=(-0.1, float("nan")), probe=(0.0, 0.5))  # 0: the deterministic method
_S_NOISE = Option(1.0, low=0.0, invalid=(-1.0, float("nan")))  # != 1 changes the distribution: no probe
_CHURN = dict(
    s_churn=Option(0.0, low=0.0, invalid=(-1.0,), probe=(10.0,)),
    s_tmin=Option(0.0, low=0.0, invalid=(-1.0,)),
    s_tmax=Option(float("inf"), low=0.0),
    s_noise=_S_NOISE,
)
_A = frozenset({Requirement.ALPHA_START})


def _churn_draws(options):
    """One draw per churned step: the count depends on the grid (which steps fall in [s_tmin, s_tmax])."""
    return None if options["s_churn"] > 0 and options["s_noise"] > 0 else (0, 0)


def _ancestral_draws(options):
    """One draw per step (none onto the clean end) while eta > 0 and s_noise > 0."""
    return (1, 0) if options["eta"] > 0 and options["s_noise"] > 0 else (0, 0)


def _dpm2_ancestral_draws(options):
    """As `_ancestral_draws`, but variant='k-diffusion' with eta > 1 skips the steps whose sigma_up is capped."""
    k_diffusion = options["variant"] == "k-diffusion"
    return None if k_diffusion and options["eta"] > 1 and options["s_noise"] > 0 else _ancestral_draws(options)


INFO = [
    SamplerInfo(
        "euler",
        sample_euler,
        order=1,
        stochastic=False,
        calls_per_step=1,
        requires=_A,
        draws=_churn_draws,
        options=_CHURN,
    ),
    SamplerInfo(
        "euler_ancestral",
        sample_euler_ancestral,
        order=1,
        stochastic=True,
        calls_per_step=1,
        requires=_A,
        draws=_ancestral_draws,
        order_options={"eta": 0.0},
        orders=(({"eta": 0.0, "variant": "k-diffusion"}, 1),),
        options=dict(eta=_ETA, s_noise=_S_NOISE, variant=VARIANT),
    ),
    SamplerInfo(
        "heun",
        sample_heun,
        order=2,
        stochastic=False,
        calls_per_step=2,
        requires=_A,
        draws=_churn_draws,
        options=_CHURN,
    ),
    SamplerInfo(
        "dpm2",
        sample_dpm2,
        order=2,
        stochastic=False,
        calls_per_step=2,
        requires=_A,
        aliases=("dpm_2",),
        draws=_churn_draws,
        options=_CHURN,
    ),
    SamplerInfo(
        "dpm2_ancestral",
        sample_dpm2_ancestral,
        order=2,
        stochastic=True,
        calls_per_step=2,
        requires=_A,
        aliases=("dpm_2_ancestral",),
        draws=_dpm2_ancestral_draws,
        order_options={"eta": 0.0},
        orders=(({"eta": 0.0, "variant": "k-diffusion"}, 2),),
        options=dict(eta=_ETA, s_noise=_S_NOISE, variant=VARIANT),
    ),
]
