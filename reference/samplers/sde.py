"""Score-SDE samplers: Euler-Maruyama and predictor-corrector on the reverse SDE.

Song et al. (2021), "Score-Based Generative Modeling through Stochastic Differential Equations", arXiv:2011.13456.
The forward SDE of any schedule x_t = alpha x0 + sigma eps is dx = f x dt + g dW with f = d log alpha / dt and
g^2 = d sigma^2/dt - 2 f sigma^2 = -2 sigma^2 d lam/dt; the reverse SDE (eq. 6) is
dx = (f x - g^2 score) dt + g dW_bar, with score = (alpha x0_hat - x) / sigma^2.

Derivatives: f and g^2 at t are replaced by their secants over the step, f dt -> Delta log alpha =
log(alpha_next / alpha) and g^2 |dt| -> 2 sigma^2 h with h = lam_next - lam (exact differences of log alpha and
lam), so any schedule works, discrete ones included, and the update is Euler-Maruyama to first order in the step.
"""

import enum

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.noise import as_noise_source
from diffspec.reference.samplers._info import Option, Requirement, SamplerInfo, one_per_step


class Predictor(enum.StrEnum):
    REVERSE_DIFFUSION = "reverse_diffusion"
    EULER_MARUYAMA = "euler_maruyama"


def _x0(denoise, x, t):
    return np.asarray(denoise(x, float(t)), dtype=np.float64)


def _em_mean(x, x0, alpha, sigma, alpha_next, h):
    """Drift part of one Euler-Maruyama step: x + Delta log alpha x + 2 sigma^2 h score."""
    return (1 + np.log(alpha_next / alpha)) * x + 2 * h * (alpha * x0 - x)


def _rd_mean(x, x0, alpha, sigma, alpha_next, h):
    """Drift part of the reverse-diffusion predictor: (2 - a) x + G^2 score, a = alpha / alpha_next, G^2 = sigma^2 (1 - e^{-2h})."""
    G2 = -np.expm1(-2 * h) * sigma**2
    return (2 - alpha / alpha_next) * x + G2 * (alpha * x0 - x) / sigma**2


def sample_euler_maruyama(denoise, x_T, grid, schedule, *, noise=None):
    """Euler-Maruyama on the reverse SDE, for any schedule (VP, VE, ...).

    Song et al. (2021), arXiv:2011.13456, eq. 6 with the Euler-Maruyama predictor (App. F); f dt and g^2 |dt| by
    the secants of the module docstring. With h = lam_next - lam and score = (alpha x0_hat - x) / sigma^2:

        x_next = (1 + log(alpha_next / alpha)) x + 2 sigma^2 h score + sigma sqrt(2h) z

    The last step draws nothing: onto a clean end it is Tweedie's denoised x = alpha_next x0_hat, onto a noisy end
    it is the drift alone (score_sde's `x_mean`, their `denoise=True`).
    Model calls per step: 1. Noise draws: one per step, in grid order, none on the last step. Order: weak 1.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="euler_maruyama")
    grid = _checks.decreasing_grid(grid, schedule, sampler="euler_maruyama")
    x = _checks.finite_array("x_T", x_T)
    draw = as_noise_source(noise, sampler="euler_maruyama")
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    _positive_alpha(alpha, grid, "euler_maruyama")
    n = len(grid) - 1
    for i in range(n):
        x0 = _x0(denoise, x, grid[i])
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0
            continue
        h = lam[i + 1] - lam[i]
        x = _em_mean(x, x0, alpha[i], sigma[i], alpha[i + 1], h)
        if i < n - 1:
            x = x + sigma[i] * np.sqrt(2 * h) * draw(x.shape)
    return x


def _positive_alpha(alpha, grid, sampler):
    if alpha[0] == 0:
        raise ValueError(
            f"grid[0]={grid[0]} has alpha = 0: {sampler} uses log(alpha_next / alpha); start at a time with alpha > 0"
        )


def sample_pc(denoise, x_T, grid, schedule, *, noise=None, predictor="reverse_diffusion", snr=0.16, corrector_steps=1):
    """Predictor-corrector sampling: Langevin corrector steps at t, then a predictor step t -> t_next.

    Song et al. (2021), arXiv:2011.13456, Algorithm 1 (PC sampling) with the Langevin corrector of Algorithms 4/5.
    Corrector, `corrector_steps` times at t, with s = score(x, t) and z ~ N(0, I):

        eps_step = 2 a (snr ||z|| / ||s||)^2,   x <- x + eps_step s + sqrt(2 eps_step) z

    where ||.|| is the per-sample norm averaged over the batch (as in their code) and a is their alpha_i = 1 - beta_i
    written for any grid as (alpha / alpha_next)^2 (1 for VE). Predictor 'reverse_diffusion' (their
    ReverseDiffusionPredictor, for any schedule: the forward step x = a' x_next + G z with a' = alpha / alpha_next
    and G^2 = sigma^2 (1 - e^{-2h}) reversed):

        x_next = (2 - a') x + G^2 s + G z

    or 'euler_maruyama' (see `sample_euler_maruyama`). The last predictor step draws nothing (Tweedie alpha_next x0_hat
    onto a clean end, the drift alone onto a noisy end).
    Model calls per step: corrector_steps + 1. Noise draws: per step, corrector_steps draws then one predictor draw
    (none for the last step's predictor). Order: weak 1.
    """
    denoise = _checks.checked_denoiser(denoise, grid, sampler="pc")
    grid = _checks.decreasing_grid(grid, schedule, sampler="pc")
    x = _checks.finite_array("x_T", x_T)
    predictor = _checks.lookup({p.value: p for p in Predictor}, predictor, what="predictor")
    snr = _checks.positive("snr", snr)
    corrector_steps = _checks.integer("corrector_steps", corrector_steps, minimum=0)
    draw = as_noise_source(noise, sampler="pc")
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    _positive_alpha(alpha, grid, "pc")
    mean = _rd_mean if predictor == Predictor.REVERSE_DIFFUSION else _em_mean
    n = len(grid) - 1
    for i in range(n):
        for _ in range(corrector_steps):
            score = (alpha[i] * _x0(denoise, x, grid[i]) - x) / sigma[i] ** 2
            z = draw(x.shape)
            ratio = np.mean(_norm(z)) / np.mean(_norm(score))
            step = 2 * (alpha[i] / alpha[i + 1]) ** 2 * (snr * ratio) ** 2
            x = x + step * score + np.sqrt(2 * step) * z
        x0 = _x0(denoise, x, grid[i])
        if sigma[i + 1] == 0:
            x = alpha[i + 1] * x0
            continue
        h = lam[i + 1] - lam[i]
        x = mean(x, x0, alpha[i], sigma[i], alpha[i + 1], h)
        if i < n - 1:
            G = (
                sigma[i] * np.sqrt(-np.expm1(-2 * h))
                if predictor == Predictor.REVERSE_DIFFUSION
                else sigma[i] * np.sqrt(2 * h)
            )
            x = x + G * draw(x.shape)
    return x


def _norm(a):
    return np.sqrt(np.sum(a.reshape(len(a), -1) ** 2, axis=1))


_A = frozenset({Requirement.ALPHA_START})
INFO = [
    SamplerInfo(
        "euler_maruyama",
        sample_euler_maruyama,
        order=None,
        stochastic=True,
        calls_per_step=1,
        requires=_A,
        draws=one_per_step,
    ),
    SamplerInfo(
        "pc",
        sample_pc,
        order=None,
        stochastic=True,
        calls_per_step=2,
        requires=_A,
        draws=lambda o: (o["corrector_steps"] + 1, o["corrector_steps"]),
        options=dict(
            predictor=Option(
                "reverse_diffusion",
                choices=("reverse_diffusion", "euler_maruyama"),
                invalid=("ancestral",),
                probe=("euler_maruyama",),
            ),
            snr=Option(0.16, low=0.0, low_open=True, invalid=(0.0,)),
            corrector_steps=Option(1, low=0, integer=True, invalid=(-1,), probe=(0, 2)),
        ),
    ),
]
