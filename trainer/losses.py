"""Training losses on tensors, per sample: the torch twin of `diffspec.reference.losses` (weighted diffusion MSE,
flow matching, iDDPM's hybrid loss, consistency training/distillation, the progressive-distillation target, offset
noise and input perturbation).

A diffusion loss is w(lam) || eps_hat - eps ||^2 averaged over the non-batch dimensions (Kingma & Gao 2023): the
eps-, x0-, v- and flow-MSE differ only by a weight in lam (`weightings`). The step draws t and eps with its own
torch.Generator and passes them in (the noise contract, docs/architecture.md).
"""

import enum
import math

import torch
from diffspec.trainer import parameterizations as P
from diffspec.trainer import weightings as W
from diffspec.trainer.forward import ddpm_posterior, learned_range_log_variance
from diffspec.trainer.noise import as_noise_source
from diffspec.trainer.vlb import discretized_gaussian_log_likelihood, gaussian_kl


def _mean_per_sample(sq):
    """Mean over every dimension but the batch: (B, ...) -> (B,)."""
    return sq.reshape(sq.shape[0], -1).mean(dim=1)


def eps_scale(param, alpha, sigma):
    """k with eps_hat - eps = -k (F - F_target) for the network output F (so the eps-MSE is k^2 times the F-MSE).

    From x0_hat = c_skip x + c_out F and eps_hat = (x - alpha x0_hat) / sigma, eps_hat is affine in F with slope
    -alpha c_out / sigma, and F_target maps to eps. In closed form, with no division by alpha or by sigma where the
    parameterization does not need one:

        eps: 1    x0: alpha / sigma    v: alpha / (alpha^2 + sigma^2)    flow: alpha / (alpha + sigma)    score: sigma
    """
    match P.parse(param):
        case P.Parameterization.EPS:
            return torch.ones_like(alpha)
        case P.Parameterization.X0:
            return alpha / sigma
        case P.Parameterization.V:
            return alpha / (alpha**2 + sigma**2)
        case P.Parameterization.FLOW:
            return alpha / (alpha + sigma)
        case P.Parameterization.SCORE:
            return sigma


def diffusion_loss(output, x0, eps, t, schedule, *, parameterization, weighting=None, weighting_options=None):
    """Per-sample diffusion loss, shape (B,).

    `weighting` is a name in WEIGHTINGS (options in `weighting_options`) or a callable lam -> w.
    weighting None: the plain MSE of the output against `training_target(parameterization, x0, eps, alpha, sigma)`,
    averaged over the non-batch dimensions. Otherwise w(lam) mean_d (eps_hat - eps)^2 with w = WEIGHTINGS[weighting]
    and eps_hat the eps implied by the output at x_t = alpha x0 + sigma eps, computed as
    eps_hat - eps = -k (F - F_target) (`eps_scale`): the same number without forming x_t, x0_hat or eps_hat, so it
    stays finite at alpha = 0 (zero terminal SNR) for every parameterization that is finite there.

    t has shape (B,); alpha, sigma, lam are evaluated per sample. No host synchronisation.
    """
    if weighting is None and weighting_options:
        raise ValueError(f"weighting_options={weighting_options!r}: expected None when weighting is None")
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    target = P.training_target(parameterization, x0, eps, alpha, sigma)
    mse = _mean_per_sample((output - target) ** 2)
    if weighting is None:
        return mse
    w_fn = weighting if callable(weighting) else W.get_weighting(weighting)
    w = w_fn(schedule.lam(t), **(weighting_options or {}))
    return w * eps_scale(parameterization, alpha, sigma) ** 2 * mse


def flow_matching_loss(output, x0, eps):
    """Conditional flow matching / rectified flow (Lipman et al. 2022; Liu et al. 2022): mean_d (F - (eps - x0))^2,
    per sample, for x_t = (1 - t) x0 + t eps."""
    return _mean_per_sample((output - (eps - x0)) ** 2)


def hybrid_loss(output, var_output, x0, eps, n, schedule, *, parameterization="eps", lambda_vlb=0.001):
    """iDDPM's hybrid loss with a learned-range variance, per sample: L_simple + lambda_vlb T L_vlb[n].

    Nichol & Dhariwal (2021), eqs. 15-16. n: integer steps (B,). L_simple = mean_d (eps_hat - eps)^2; L_vlb[n] is the
    KL of the true posterior to N(mu(x0_hat), Sigma) in bits/dim (n > 0), or the discretized decoder NLL (n = 0),
    with mu computed from a *detached* output (stop-gradient: L_vlb trains only the variance). x0 in [-1, 1].
    """
    if not (math.isfinite(lambda_vlb) and lambda_vlb >= 0):
        raise ValueError(f"lambda_vlb={lambda_vlb!r}: expected a finite number >= 0")
    n = torch.as_tensor(n, device=x0.device)
    t = n.to(x0.dtype)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    x = P.broadcast_to_batch(alpha, x0) * x0 + P.broadcast_to_batch(sigma, x0) * eps
    eps_hat = P.eps_from_output(parameterization, output, x, alpha, sigma)
    l_simple = _mean_per_sample((eps_hat - eps) ** 2)

    x0_hat = P.x0_from_output(parameterization, output.detach(), x, alpha, sigma)
    mean, _, _ = ddpm_posterior(x0_hat, x, n, schedule)
    logvar = learned_range_log_variance(var_output, n, schedule)
    true_mean, _, true_logvar = ddpm_posterior(x0, x, n, schedule)
    per_dim = math.prod(x0.shape[1:]) * math.log(2.0)
    kl = gaussian_kl(true_mean, true_logvar, mean, logvar).reshape(x0.shape[0], -1).sum(dim=1) / per_dim
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar).reshape(x0.shape[0], -1).sum(dim=1) / per_dim
    l_vlb = torch.where(n == 0, nll, kl)
    return l_simple + lambda_vlb * schedule.num_steps * l_vlb


# --------------------------------------------------------------------------------------------------------
# Consistency models (Song et al. 2023; Song & Dhariwal 2023, iCT). EDM world: the sigmas are noise levels.
# --------------------------------------------------------------------------------------------------------


class ConsistencyMetric(enum.StrEnum):
    L2 = "l2"
    PSEUDO_HUBER = "pseudo_huber"


def pseudo_huber(a, b, c):
    """sqrt(||a - b||^2 + c^2) - c per sample (iCT, Sec. 3.3), as ||a - b||^2 / (sqrt(||a - b||^2 + c^2) + c)."""
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"c={c!r}: expected a finite number > 0")
    sq = ((a - b) ** 2).reshape(a.shape[0], -1).sum(dim=1)
    return sq / (torch.sqrt(sq + c**2) + c)


def ict_default_c(d):
    """iCT's c = 0.00054 sqrt(d) for d-dimensional data."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d={d!r}: expected an integer >= 1")
    return 0.00054 * math.sqrt(d)


def consistency_loss(pred, target, *, metric="l2", c=None):
    """d(f(x_{i+1}, sigma_{i+1}), f^-(x_i, sigma_i)) per sample: squared L2 (CM eq. 7) or pseudo-Huber (iCT).
    `target` is detached here (stop-gradient)."""
    target = target.detach()
    if str(metric) not in {m.value for m in ConsistencyMetric}:
        raise ValueError(f"unknown metric {metric!r}: expected one of l2, pseudo_huber")
    match ConsistencyMetric(str(metric)):
        case ConsistencyMetric.L2:
            if c is not None:
                raise ValueError(f"c={c!r}: expected None for metric 'l2'")
            return ((pred - target) ** 2).reshape(pred.shape[0], -1).sum(dim=1)
        case ConsistencyMetric.PSEUDO_HUBER:
            c = ict_default_c(math.prod(pred.shape[1:])) if c is None else c
            return pseudo_huber(pred, target, c)


def consistency_scalings(sigma, *, sigma_min=0.002, sigma_data=0.5):
    """(c_skip, c_out) of f(x, sigma) = c_skip x + c_out F with f(x, sigma_min) = x (Song et al. 2023, App. C):
    c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2), c_out = sigma_data (sigma - sigma_min) / sqrt(sigma^2 + sigma_data^2)."""
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = sigma_data * (sigma - sigma_min) / torch.sqrt(sigma**2 + sigma_data**2)
    return c_skip, c_out


def ict_num_steps(k, total_steps, *, s0=10, s1=1280):
    """iCT's curriculum N(k) = min(s0 2^{floor(k / K')}, s1) + 1, K' = floor(K / (log2(s1 / s0) + 1)) (eq. 8)."""
    for name, value, lo in (("total_steps", total_steps, 1), ("k", k, 0), ("s0", s0, 1), ("s1", s1, s0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name}={value!r}: expected an integer >= {lo}")
    if k > total_steps:
        raise ValueError(f"k={k}: expected an integer in [0, {total_steps}]")
    k_prime = max(1, math.floor(total_steps / (math.log2(s1 / s0) + 1)))
    return min(s0 * 2 ** (k // k_prime), s1) + 1


def ict_sigmas(num_steps, *, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """The N Karras noise levels of consistency training, increasing, float64 (CM Sec. 5 / EDM eq. 5)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps={num_steps!r}: expected an integer >= 2")
    if not (0 < sigma_min < sigma_max and rho > 0):
        raise ValueError(
            f"sigma_min={sigma_min}, sigma_max={sigma_max}, rho={rho}: expected 0 < sigma_min < sigma_max, rho > 0"
        )
    step = 1.0 / (num_steps - 1)
    ramp = torch.arange(num_steps, dtype=torch.float64) * step
    ramp[-1] = 1.0
    sigmas = (sigma_min ** (1 / rho) + ramp * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho
    sigmas[0], sigmas[-1] = sigma_min, sigma_max
    return sigmas


def ict_index_probabilities(sigmas, *, p_mean=-1.1, p_std=2.0):
    """p(i), i = 0..N-2: erf((log sigma_{i+1} - P_mean) / (sqrt 2 P_std)) - erf((log sigma_i - P_mean) / (sqrt 2 P_std)),
    normalised (iCT Sec. 3.5)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or len(sigmas) < 2 or not bool((sigmas[1:] > sigmas[:-1]).all()) or float(sigmas[0]) <= 0:
        raise ValueError("sigmas: expected >= 2 positive increasing noise levels")
    if not (math.isfinite(p_std) and p_std > 0):
        raise ValueError(f"p_std={p_std!r}: expected a finite number > 0")
    e = torch.special.erf((torch.log(sigmas) - p_mean) / (math.sqrt(2.0) * p_std))
    p = e[1:] - e[:-1]
    return p / p.sum()


def sample_ict_index(sigmas, n, generator, *, p_mean=-1.1, p_std=2.0):
    """n indices in 0..N-2 from `ict_index_probabilities`, drawn with a torch.Generator (on its device)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: expected an integer >= 1")
    p = ict_index_probabilities(sigmas, p_mean=p_mean, p_std=p_std)
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.multinomial(p.to(device), n, replacement=True, generator=generator)


def ict_weight(sigma, sigma_next):
    """iCT's loss weight 1 / (sigma_{i+1} - sigma_i) (Sec. 3.4)."""
    return 1.0 / (sigma_next - sigma)


def consistency_training_inputs(x0, z, sigma, sigma_next):
    """(x_next, x) = (x0 + sigma_{i+1} z, x0 + sigma_i z): one shared draw z (CM Algorithm 3)."""
    s, s_next = P.broadcast_to_batch(sigma, x0), P.broadcast_to_batch(sigma_next, x0)
    return x0 + s_next * z, x0 + s * z


def consistency_distillation_inputs(x_next, x0_teacher, sigma, sigma_next):
    """x_i = x_{i+1} + (sigma_i - sigma_{i+1}) (x_{i+1} - x0_teacher) / sigma_{i+1}: one teacher Euler step (CM Alg. 2)."""
    s, s_next = P.broadcast_to_batch(sigma, x_next), P.broadcast_to_batch(sigma_next, x_next)
    return x_next + (s - s_next) * (x_next - x0_teacher) / s_next


def progressive_distillation_target(teacher_denoise, x, t, t_next, schedule):
    """The student's x0 target (Salimans & Ho 2022, Algorithm 2): two teacher DDIM steps t -> t_mid -> t_next,
    t_mid = (t + t_next) / 2, matched by one student step: x_tilde = (z_next - (sigma_next/sigma_t) z_t) /
    (alpha_next - (sigma_next/sigma_t) alpha_t). teacher_denoise(x, t) receives t as given ((B,) here)."""
    t_mid = 0.5 * (t + t_next)

    def ab(u):
        return P.broadcast_to_batch(schedule.alpha(u), x), P.broadcast_to_batch(schedule.sigma(u), x)

    def ddim(z, x0_hat, a, s, a_to, s_to):
        return a_to * x0_hat + s_to * (z - a * x0_hat) / s

    (a_t, s_t), (a_m, s_m), (a_n, s_n) = ab(t), ab(t_mid), ab(t_next)
    z_mid = ddim(x, teacher_denoise(x, t), a_t, s_t, a_m, s_m)
    z_next = ddim(z_mid, teacher_denoise(z_mid, t_mid), a_m, s_m, a_n, s_n)
    ratio = s_n / s_t
    return (z_next - ratio * x) / (a_n - ratio * a_t)


# --------------------------------------------------------------------------------------------------------
# Noise transforms.
# --------------------------------------------------------------------------------------------------------


def offset_noise(eps, strength, noise):
    """eps + strength delta, delta ~ N(0, 1) of shape (B, C, 1, ...) (Guttenberg 2023). One draw from `noise`
    (a torch.Generator or a callable shape -> array)."""
    if eps.ndim < 2:
        raise ValueError(f"eps of shape {tuple(eps.shape)}: expected (B, C, ...) with a channel axis")
    if not (math.isfinite(strength) and strength >= 0):
        raise ValueError(f"strength={strength!r}: expected a finite number >= 0")
    draw = as_noise_source(noise, sampler="offset_noise", like=eps)
    return eps + strength * draw(tuple(eps.shape[:2]) + (1,) * (eps.ndim - 2))


def input_perturbation(eps, gamma, noise):
    """eps + gamma xi, xi ~ N(0, I) (Ning et al. 2023, eq. 9): the noise that builds x_t; the target stays eps."""
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma={gamma!r}: expected a finite number >= 0")
    draw = as_noise_source(noise, sampler="input_perturbation", like=eps)
    return eps + gamma * draw(tuple(eps.shape))
