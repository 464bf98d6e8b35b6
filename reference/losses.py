"""Training losses: the weighted diffusion MSE, flow matching, iDDPM's hybrid loss, consistency training and
distillation, the progressive-distillation target, and two explicit noise transforms.

Losses take `t` and `eps` (and any other randomness) as arguments (the noise contract, docs/architecture.md) and return
one value per sample, shape (B,). There are no gradients in NumPy: where a loss has stop-gradient semantics the
docstring says which input the trainer must detach; the value is the same.
"""

import enum
import math

import numpy as np
from diffspec.reference import _checks
from diffspec.reference import parameterizations as P
from diffspec.reference.forward import ddpm_posterior, learned_range_log_variance
from diffspec.reference.noise import as_noise_source
from diffspec.reference.vlb import discretized_gaussian_log_likelihood, gaussian_kl
from diffspec.reference.weightings import WEIGHTINGS


def _mean_per_sample(a):
    return np.mean(a, axis=tuple(range(1, a.ndim))) if a.ndim > 1 else a


def _same_shape(name, a, ref_name, ref):
    if a.shape != ref.shape:
        raise ValueError(f"{name} of shape {a.shape}: expected the shape of {ref_name} {ref.shape}")


def _batch_times(t, x0, schedule):
    t = _checks.times_in_domain("t", t, schedule)
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape != (x0.shape[0],)):
        raise ValueError(f"t of shape {t.shape}: expected a scalar or shape ({x0.shape[0]},)")
    return t


def diffusion_loss(output, x0, eps, t, schedule, *, parameterization, weighting=None, weighting_options=None):
    """The diffusion loss per sample, shape (B,): plain MSE of the parameterization, or w(lam) times the eps-MSE.

    Ho et al. (2020), eq. 14 (L_simple); Kingma & Gao (2023), arXiv:2303.00848, eq. 5 (weighted loss in lam).
    With x_t = alpha_t x0 + sigma_t eps and F = output:

        weighting None:  mean_d (F - target(x0, eps))^2           target = `training_target(parameterization)`
        weighting w:     w(lam_t) mean_d (eps_hat - eps)^2         eps_hat = d_skip x_t + d_out F

    `weighting` is a name in WEIGHTINGS (options in `weighting_options`) or a callable lam -> w. eps_hat uses
    `parameterizations.eps_from_output`, which never divides by alpha. Identities (checked in tests): v-MSE =
    weighting "v" (VP), flow-MSE = "flow" (alpha + sigma = 1), eps-MSE = "uniform", x0-MSE = w = e^{-2 lam}.
    """
    x0 = _checks.finite_array("x0", x0)
    eps = _checks.finite_array("eps", eps)
    output = _checks.finite_array("output", output)
    _same_shape("eps", eps, "x0", x0)
    _same_shape("output", output, "x0", x0)
    t = _batch_times(t, x0, schedule)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    if weighting is None:
        if weighting_options:
            raise ValueError(f"weighting_options={weighting_options!r}: expected None when weighting is None")
        target = P.training_target(parameterization, x0, eps, alpha, sigma)
        return _mean_per_sample((output - target) ** 2)
    w_fn = weighting if callable(weighting) else _checks.lookup(WEIGHTINGS, weighting, what="weighting")
    w = np.asarray(w_fn(schedule.lam(t), **(weighting_options or {})), dtype=np.float64)
    x = P.broadcast_to_batch(alpha, x0) * x0 + P.broadcast_to_batch(sigma, x0) * eps
    eps_hat = P.eps_from_output(parameterization, output, x, alpha, sigma)
    return w * _mean_per_sample((eps_hat - eps) ** 2)


def flow_matching_loss(output, x0, eps):
    """Conditional flow matching / rectified flow loss per sample: mean_d (u_hat - (eps - x0))^2.

    Lipman et al. (2023), "Flow Matching for Generative Modeling", eq. 23 with the OT path (sigma_min = 0);
    Liu et al. (2023), "Flow Straight and Fast", eq. 1. Time runs data (t = 0) -> noise (t = 1) as in `Flow`:
    x_t = (1 - t) x0 + t eps, whose velocity dx_t/dt = u = eps - x0 does not depend on t.
    """
    x0 = _checks.finite_array("x0", x0)
    eps = _checks.finite_array("eps", eps)
    output = _checks.finite_array("output", output)
    _same_shape("eps", eps, "x0", x0)
    _same_shape("output", output, "x0", x0)
    return _mean_per_sample((output - (eps - x0)) ** 2)


def hybrid_loss(output, var_output, x0, eps, n, schedule, *, parameterization="eps", lambda_vlb=0.001):
    """iDDPM's hybrid loss with a learned-range variance, per sample: L_simple + lambda_vlb T L_vlb[n].

    Nichol & Dhariwal (2021), "Improved DDPM", eqs. 15-16 and Sec. 3.1. At integer step n (B,):

        L_simple = mean_d (eps_hat - eps)^2
        Sigma    = exp(f log beta_n + (1 - f) log beta_tilde_n),  f = (var_output + 1) / 2
        L_vlb[n] = KL(q(x_{n-1} | x_n, x0) || N(mu(x0_hat), Sigma)) in bits/dim   (n > 0)
                   -log p(x0 | x_n) (discretized Gaussian decoder) in bits/dim  (n = 0)

    T L_vlb[n] is an unbiased estimate of the whole bound for n uniform, and lambda_vlb = 0.001 gives iDDPM's
    `RESCALED_MSE` factor T / 1000. Stop-gradient: L_vlb sees the mean through a *detached* `output`, so it trains
    only the variance and L_simple alone trains the mean; the trainer must detach `output` (not `var_output`)
    before computing L_vlb. Here the value is the same with or without. x0 must be in [-1, 1] for the decoder.
    """
    x0 = _checks.finite_array("x0", x0)
    eps = _checks.finite_array("eps", eps)
    output = _checks.finite_array("output", output)
    var_output = _checks.finite_array("var_output", var_output)
    for name, arr in (("eps", eps), ("output", output), ("var_output", var_output)):
        _same_shape(name, arr, "x0", x0)
    lambda_vlb = _checks.nonnegative("lambda_vlb", lambda_vlb)
    n = _checks.finite_array("n", n)
    if n.shape != (x0.shape[0],) or np.any(n != np.round(n)) or np.any(n < 0) or np.any(n > schedule.num_steps - 1):
        raise ValueError(
            f"n={_checks._short(n.tolist())}: expected ({x0.shape[0]},) integer steps in [0, {schedule.num_steps - 1}]"
        )
    n = n.astype(np.int64)
    alpha, sigma = schedule.alpha(n), schedule.sigma(n)
    x = P.broadcast_to_batch(alpha, x0) * x0 + P.broadcast_to_batch(sigma, x0) * eps
    eps_hat = P.eps_from_output(parameterization, output, x, alpha, sigma)
    l_simple = _mean_per_sample((eps_hat - eps) ** 2)

    x0_hat = P.x0_from_output(parameterization, output, x, alpha, sigma)  # detached in the trainer
    mean, _, _ = ddpm_posterior(x0_hat, x, n, schedule)
    logvar = learned_range_log_variance(var_output, n, schedule)
    true_mean, _, true_logvar = ddpm_posterior(x0, x, n, schedule)
    axes = tuple(range(1, x0.ndim))
    per_dim = math.prod(x0.shape[1:]) * np.log(2.0)
    kl = np.sum(gaussian_kl(true_mean, true_logvar, mean, logvar), axis=axes) / per_dim
    nll = -np.sum(discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar), axis=axes) / per_dim
    l_vlb = np.where(n == 0, nll, kl)
    return l_simple + lambda_vlb * schedule.num_steps * l_vlb


# --------------------------------------------------------------------------------------------------------
# Consistency models (Song et al. 2023, arXiv:2303.01469; Song & Dhariwal 2023, iCT, arXiv:2310.14189).
# EDM world: alpha = 1, sigma = sigma_ve; the sigmas below are noise levels, not schedule times.
# --------------------------------------------------------------------------------------------------------


class ConsistencyMetric(enum.StrEnum):
    L2 = "l2"
    PSEUDO_HUBER = "pseudo_huber"


def pseudo_huber(a, b, c):
    """Pseudo-Huber distance per sample: sqrt(||a - b||^2 + c^2) - c, the norm over all non-batch dims.

    Song & Dhariwal (2023), "Improved Techniques for Training Consistency Models", Sec. 3.3. Behaves like
    ||a - b||^2 / (2c) for ||a - b|| << c and like ||a - b|| for ||a - b|| >> c. Written as
    ||a - b||^2 / (sqrt(||a - b||^2 + c^2) + c), which does not cancel when ||a - b|| << c.
    """
    a, b = _checks.finite_array("a", a), _checks.finite_array("b", b)
    _same_shape("b", b, "a", a)
    c = _checks.positive("c", c)
    sq = np.sum((a - b) ** 2, axis=tuple(range(1, a.ndim)))
    return sq / (np.sqrt(sq + c**2) + c)


def ict_default_c(d):
    """iCT's pseudo-Huber constant c = 0.00054 sqrt(d) for data of d dimensions (Song & Dhariwal 2023, Sec. 3.3)."""
    d = _checks.integer("d", d, minimum=1)
    return 0.00054 * math.sqrt(d)


def consistency_loss(pred, target, *, metric="l2", c=None):
    """d(f_theta(x_{i+1}, sigma_{i+1}), f_theta-(x_i, sigma_i)) per sample, shape (B,).

    Song et al. (2023), eq. 7 (l2: squared Euclidean norm over all non-batch dims); Song & Dhariwal (2023),
    Sec. 3.3 (pseudo_huber with c, default 0.00054 sqrt(d), d = dims of one sample). `target` comes from the
    target network (EMA in CD/CT, the online weights under stop-gradient in iCT): detach it in the trainer.
    """
    pred, target = _checks.finite_array("pred", pred), _checks.finite_array("target", target)
    _same_shape("target", target, "pred", pred)
    match _checks.lookup({m.value: m for m in ConsistencyMetric}, str(metric), what="metric"):
        case ConsistencyMetric.L2:
            if c is not None:
                raise ValueError(f"c={c!r}: expected None for metric 'l2'")
            return np.sum((pred - target) ** 2, axis=tuple(range(1, pred.ndim)))
        case ConsistencyMetric.PSEUDO_HUBER:
            c = ict_default_c(math.prod(pred.shape[1:])) if c is None else c
            return pseudo_huber(pred, target, c)


def consistency_scalings(sigma, *, sigma_min=0.002, sigma_data=0.5):
    """(c_skip, c_out) of a consistency model f(x, sigma) = c_skip x + c_out F(x, sigma), with f(x, sigma_min) = x.

    Song et al. (2023), App. C (eq. 9 there):

        c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2)
        c_out  = sigma_data (sigma - sigma_min) / sqrt(sigma^2 + sigma_data^2)

    (iCT sets sigma_min = 0.002 as well; the LCM/diffusers variant scales sigma by 10 first, not done here.)
    """
    sigma = _checks.finite_array("sigma", sigma)
    sigma_min = _checks.nonnegative("sigma_min", sigma_min)
    sigma_data = _checks.positive("sigma_data", sigma_data)
    if np.any(sigma < sigma_min):
        raise ValueError(
            f"sigma contains {sigma[sigma < sigma_min].ravel()[0]}: expected sigma >= sigma_min = {sigma_min}"
        )
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = sigma_data * (sigma - sigma_min) / np.sqrt(sigma**2 + sigma_data**2)
    return c_skip, c_out


def ict_num_steps(k, total_steps, *, s0=10, s1=1280):
    """iCT's discretization curriculum N(k): the number of noise levels at training iteration k.

    Song & Dhariwal (2023), eq. 8 (exponential curriculum): with K' = floor(K / (log2(s1 / s0) + 1)),

        N(k) = min(s0 2^{floor(k / K')}, s1) + 1
    """
    total_steps = _checks.integer("total_steps", total_steps, minimum=1)
    k = _checks.integer("k", k, minimum=0, maximum=total_steps)
    s0 = _checks.integer("s0", s0, minimum=1)
    s1 = _checks.integer("s1", s1, minimum=s0)
    k_prime = max(1, math.floor(total_steps / (math.log2(s1 / s0) + 1)))
    return min(s0 * 2 ** (k // k_prime), s1) + 1


def ict_sigmas(num_steps, *, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """The N Karras noise levels of consistency training, increasing: sigma_1 = sigma_min ... sigma_N = sigma_max.

    Song et al. (2023), Sec. 5 / Karras et al. (2022), eq. 5, in increasing order (the CM paper's i = 1..N):
    sigma_i = (sigma_min^{1/rho} + (i - 1) / (N - 1) (sigma_max^{1/rho} - sigma_min^{1/rho}))^rho.
    """
    num_steps = _checks.integer("num_steps", num_steps, minimum=2)
    sigma_min = _checks.positive("sigma_min", sigma_min)
    sigma_max = _checks.positive("sigma_max", sigma_max)
    rho = _checks.positive("rho", rho)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max={sigma_max}: expected sigma_max > sigma_min = {sigma_min}")
    ramp = np.linspace(0.0, 1.0, num_steps)
    sigmas = (sigma_min ** (1 / rho) + ramp * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho
    sigmas[0], sigmas[-1] = sigma_min, sigma_max
    return sigmas


_erf = np.frompyfunc(math.erf, 1, 1)


def ict_index_probabilities(sigmas, *, p_mean=-1.1, p_std=2.0):
    """p(i) for i = 0..N-2 (the pair (sigma_i, sigma_{i+1})): iCT's discretized lognormal.

    Song & Dhariwal (2023), Sec. 3.5: p(sigma_i) proportional to
    erf((log sigma_{i+1} - P_mean) / (sqrt(2) P_std)) - erf((log sigma_i - P_mean) / (sqrt(2) P_std)).
    """
    sigmas = _checks.finite_array("sigmas", sigmas)
    if sigmas.ndim != 1 or len(sigmas) < 2 or not np.all(np.diff(sigmas) > 0) or sigmas[0] <= 0:
        raise ValueError(f"sigmas={_checks._short(sigmas.tolist())}: expected >= 2 positive increasing noise levels")
    p_std = _checks.positive("p_std", p_std)
    e = _erf((np.log(sigmas) - p_mean) / (np.sqrt(2.0) * p_std)).astype(np.float64)
    p = np.diff(e)
    return p / p.sum()


def sample_ict_index(sigmas, n, rng, *, p_mean=-1.1, p_std=2.0):
    """n indices i in 0..N-2 drawn from `ict_index_probabilities` with a numpy Generator."""
    n = _checks.integer("n", n, minimum=1)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng={rng!r}: expected a numpy.random.Generator")
    p = ict_index_probabilities(sigmas, p_mean=p_mean, p_std=p_std)
    return rng.choice(len(p), size=n, p=p)


def ict_weight(sigma, sigma_next):
    """iCT's loss weight lambda(sigma_i) = 1 / (sigma_{i+1} - sigma_i) (Song & Dhariwal 2023, Sec. 3.4)."""
    sigma, sigma_next = _checks.finite_array("sigma", sigma), _checks.finite_array("sigma_next", sigma_next)
    if np.any(sigma_next <= sigma):
        raise ValueError("sigma_next: expected sigma_next > sigma for every pair")
    return 1.0 / (sigma_next - sigma)


def consistency_training_inputs(x0, z, sigma, sigma_next):
    """(x_next, x) for consistency training: both points share one noise draw z.

    Song et al. (2023), Algorithm 3: x_{i+1} = x0 + sigma_{i+1} z (online network, with gradient) and
    x_i = x0 + sigma_i z (target network, stop-gradient). sigma, sigma_next: scalars or (B,), sigma < sigma_next.
    """
    x0, z = _checks.finite_array("x0", x0), _checks.finite_array("z", z)
    _same_shape("z", z, "x0", x0)
    s, s_next = P.broadcast_to_batch(sigma, x0), P.broadcast_to_batch(sigma_next, x0)
    ict_weight(s, s_next)  # validates sigma < sigma_next
    return x0 + s_next * z, x0 + s * z


def consistency_distillation_inputs(x_next, x0_teacher, sigma, sigma_next):
    """x_i for consistency distillation: one Euler step of the teacher's PF ODE from sigma_{i+1} to sigma_i.

    Song et al. (2023), Algorithm 2 with Euler as Phi (eq. 6 in the EDM world, dx/dsigma = (x - D(x)) / sigma):

        x_i = x_{i+1} + (sigma_i - sigma_{i+1}) (x_{i+1} - x0_teacher) / sigma_{i+1}

    with x0_teacher = D(x_{i+1}, sigma_{i+1}) the teacher's denoiser output (x_{i+1} = x0 + sigma_{i+1} z).
    """
    x_next = _checks.finite_array("x_next", x_next)
    x0_teacher = _checks.finite_array("x0_teacher", x0_teacher)
    _same_shape("x0_teacher", x0_teacher, "x_next", x_next)
    s, s_next = P.broadcast_to_batch(sigma, x_next), P.broadcast_to_batch(sigma_next, x_next)
    ict_weight(s, s_next)
    return x_next + (s - s_next) * (x_next - x0_teacher) / s_next


def progressive_distillation_target(teacher_denoise, x, t, t_next, schedule):
    """The student's x0 target x_tilde: two teacher DDIM steps t -> t_mid -> t_next, matched by one student step.

    Salimans & Ho (2022), "Progressive Distillation", Algorithm 2. With t_mid = (t + t_next) / 2, the teacher's
    two DDIM steps z_t -> z_mid -> z_next, and one student DDIM step from t to t_next landing on z_next:

        x_tilde = (z_next - (sigma_next / sigma_t) z_t) / (alpha_next - (sigma_next / sigma_t) alpha_t)

    DDIM step: z_s = alpha_s x0_hat + sigma_s (z_t - alpha_t x0_hat) / sigma_t. At a clean t_next (sigma = 0)
    x_tilde = z_next. teacher_denoise(x, t) is called with t as given (scalar or (B,)). Model calls: 2.
    """
    x = _checks.finite_array("x", x)
    t = _batch_times(t, x, schedule)
    t_next = _batch_times(t_next, x, schedule)
    if np.any(t_next >= t):
        raise ValueError("t_next: expected t_next < t (distillation steps run noise -> data)")
    t_mid = 0.5 * (t + t_next)

    def ab(u):
        return P.broadcast_to_batch(schedule.alpha(u), x), P.broadcast_to_batch(schedule.sigma(u), x)

    def ddim(z, x0_hat, a, s, a_to, s_to):
        return a_to * x0_hat + s_to * (z - a * x0_hat) / s

    (a_t, s_t), (a_m, s_m), (a_n, s_n) = ab(t), ab(t_mid), ab(t_next)
    z_mid = ddim(x, np.asarray(teacher_denoise(x, t), dtype=np.float64), a_t, s_t, a_m, s_m)
    z_next = ddim(z_mid, np.asarray(teacher_denoise(z_mid, t_mid), dtype=np.float64), a_m, s_m, a_n, s_n)
    ratio = s_n / s_t
    return (z_next - ratio * x) / (a_n - ratio * a_t)


# --------------------------------------------------------------------------------------------------------
# Noise transforms: what the training step feeds the forward process instead of plain eps.
# --------------------------------------------------------------------------------------------------------


def offset_noise(eps, strength, noise):
    """eps + strength * delta with delta ~ N(0, 1) of shape (B, C, 1, ...): one offset per sample and channel.

    Guttenberg (2023), "Diffusion with Offset Noise" (crosslabs.org blog); strength 0.1 in the post. Lets the
    model change an image's mean brightness. The network's target is the transformed noise (it is the noise
    actually added). Noise draws: one array of shape (B, C) + (1,) * (ndim - 2) from `noise`.
    """
    eps = _checks.finite_array("eps", eps)
    if eps.ndim < 2:
        raise ValueError(f"eps of shape {eps.shape}: expected (B, C, ...) with a channel axis")
    strength = _checks.nonnegative("strength", strength)
    draw = as_noise_source(noise, sampler="offset_noise")
    return eps + strength * draw(eps.shape[:2] + (1,) * (eps.ndim - 2))


def input_perturbation(eps, gamma, noise):
    """The noise used to build x_t under input perturbation: eps' = eps + gamma * xi, xi ~ N(0, I).

    Ning et al. (2023), "Input Perturbation Reduces Exposure Bias in Diffusion Models", eq. 9 (gamma = 0.1):
    x_t = alpha_t x0 + sigma_t (eps + gamma xi) while the eps-target stays the *unperturbed* eps. Noise draws:
    one array of eps's shape from `noise`.
    """
    eps = _checks.finite_array("eps", eps)
    gamma = _checks.nonnegative("gamma", gamma)
    draw = as_noise_source(noise, sampler="input_perturbation")
    return eps + gamma * draw(eps.shape)
