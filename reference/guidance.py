"""Guidance and conditioning as wrappers around denoisers: each takes denoise(x, t) -> x0_hat and returns another.

Samplers never know about guidance: classifier-free guidance, guidance rescale, thresholding, classifier guidance
and inpainting are closed over here. Two functions are sampler-level instead, because they
change the path and not only the prediction: `sample_repaint` (resampling jumps) and `sdedit` (starting late).

CFG conventions. Two published conventions differ by one in the scale; both are here, under names neither can be
mistaken for the other:

| function        | formula                 | off at    | used by                               |
|-----------------|-------------------------|-----------|---------------------------------------|
| `cfg_diffusers` | u + scale (c - u)       | scale = 1 | diffusers, Stable Diffusion, most UIs |
| `cfg_paper`     | (1 + w) c - w u         | w = 0     | Ho & Salimans (2022), eq. 6           |

so scale = 1 + w (`diffusers_scale_from_paper_w`, `paper_w_from_diffusers_scale`). CFG is affine in the
prediction and the maps eps <-> x0 <-> v at fixed (x, t) are affine with weights summing to one on the
prediction, so guiding x0 equals guiding eps or v (tests check this); guidance rescale is not affine and
therefore names the space it works in.
"""

import numpy as np
from diffspec.reference import _checks
from diffspec.reference.noise import as_noise_source
from diffspec.reference.parameterizations import (
    Parameterization,
    broadcast_to_batch,
    output_from_x0,
    parse,
    x0_from_output,
)


def _x0(denoise, x, t):
    return np.asarray(denoise(x, t), dtype=np.float64)


# --------------------------------------------------------------------------------------------------------
# Classifier-free guidance
# --------------------------------------------------------------------------------------------------------


def diffusers_scale_from_paper_w(w):
    """Ho & Salimans' w -> diffusers' guidance_scale: scale = 1 + w."""
    return 1.0 + _checks.in_range("w", w, -1.0, np.inf)


def paper_w_from_diffusers_scale(scale):
    """diffusers' guidance_scale -> Ho & Salimans' w: w = scale - 1."""
    return _checks.in_range("scale", scale, 0.0, np.inf) - 1.0


def cfg_diffusers(denoise_cond, denoise_uncond, scale):
    """Classifier-free guidance in diffusers' convention: x0 = u + scale (c - u), off at scale = 1.

    Ho & Salimans (2022), "Classifier-Free Diffusion Guidance", eq. 6 with w = scale - 1, applied to x0 instead of
    eps (identical: the guidance is affine and x0 = (x - sigma eps) / alpha is affine in eps at fixed x, t).
    scale = 0 is the unconditional model, scale = 1 the conditional one. Model calls: 2 per denoise call.
    """
    scale = _checks.in_range("scale", scale, 0.0, np.inf)

    def denoise(x, t):
        x0_c = _x0(denoise_cond, x, t)
        x0_u = _x0(denoise_uncond, x, t)
        return x0_u + scale * (x0_c - x0_u)

    return denoise


def cfg_paper(denoise_cond, denoise_uncond, w):
    """Classifier-free guidance in Ho & Salimans' convention: x0 = (1 + w) c - w u, off at w = 0.

    Ho & Salimans (2022), eq. 6, applied to x0 (equal to applying it to eps, see the module docstring).
    Equal to `cfg_diffusers(..., scale=1 + w)`. Model calls: 2 per denoise call.
    """
    w = _checks.in_range("w", w, -1.0, np.inf)

    def denoise(x, t):
        x0_c = _x0(denoise_cond, x, t)
        x0_u = _x0(denoise_uncond, x, t)
        return (1.0 + w) * x0_c - w * x0_u

    return denoise


# --------------------------------------------------------------------------------------------------------
# Guidance rescale, thresholding, clipping
# --------------------------------------------------------------------------------------------------------


def _std_per_sample(a):
    axes = tuple(range(1, a.ndim))
    return np.std(a, axis=axes, keepdims=True, ddof=1 if a[0].size > 1 else 0)


def guidance_rescale(denoise_guided, denoise_cond, schedule, *, phi=0.7, space="eps"):
    """Guidance rescale: pull the guided prediction's per-sample std back to the conditional one's.

    Lin et al. (2023), "Common Diffusion Noise Schedules and Sample Steps are Flawed", eqs. 15-16:

        F_rescaled = F_cfg * std(F_cond) / std(F_cfg)
        F_final    = phi * F_rescaled + (1 - phi) * F_cfg

    with std over all non-batch dimensions. The result depends on the space F lives in because the std ratio is
    not affine: the paper rescales the v-prediction of its v-model; diffusers' `rescale_noise_cfg` rescales
    whatever the UNet outputs (`noise_pred`: eps for eps-models, v for v-models). `space` picks it ("eps", "v",
    "x0", "flow"); choose the model's own prediction type to match diffusers. The two x0 predictions are mapped
    to that space at (x, t), rescaled, and mapped back. phi = 0 is the identity; phi in [0, 1].
    Model calls: those of denoise_guided plus one of denoise_cond (pass a guided denoiser that caches if the
    cost matters).
    """
    phi = _checks.in_range("phi", phi, 0.0, 1.0)
    space = parse(space)
    if space == Parameterization.SCORE:
        raise ValueError("space='score': expected one of eps, x0, v, flow (the score is eps scaled by -1/sigma)")

    def denoise(x, t):
        x0_g = _x0(denoise_guided, x, t)
        if phi == 0.0:
            return x0_g
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        f_g = output_from_x0(space, x0_g, x, alpha, sigma)
        f_c = output_from_x0(space, _x0(denoise_cond, x, t), x, alpha, sigma)
        f_rescaled = f_g * _std_per_sample(f_c) / _std_per_sample(f_g)
        f_final = phi * f_rescaled + (1.0 - phi) * f_g
        return x0_from_output(space, f_final, x, alpha, sigma)

    return denoise


def dynamic_thresholding(denoise, *, percentile=0.995, max_value=1.0):
    """Dynamic thresholding of x0_hat.

    Saharia et al. (2022), "Imagen", Sec. 2.3: per sample, s = the `percentile` quantile of |x0_hat| over all
    non-batch dimensions, s = clip(s, 1, max_value), then x0_hat = clip(x0_hat, -s, s) / s. With max_value = 1 it
    is static clipping to [-1, 1]. diffusers' `sample_max_value` is max_value; it accepts values < 1, where the
    clamp turns s into a fixed divisor: here max_value < 1 is an error.
    """
    percentile = _checks.in_range("percentile", percentile, 0.0, 1.0, lo_open=True)
    max_value = _checks.in_range("max_value", max_value, 1.0, np.inf)

    def wrapped(x, t):
        x0 = _x0(denoise, x, t)
        axes = tuple(range(1, x0.ndim))
        s = np.quantile(np.abs(x0), percentile, axis=axes, keepdims=True)
        s = np.clip(s, 1.0, max_value)
        return np.clip(x0, -s, s) / s

    return wrapped


def static_clipping(denoise, *, clip=1.0):
    """Static thresholding: x0_hat clipped to [-clip, clip] (Ho et al. 2020's sampling code; Saharia et al. 2022)."""
    clip = _checks.positive("clip", clip)

    def wrapped(x, t):
        return np.clip(_x0(denoise, x, t), -clip, clip)

    return wrapped


# --------------------------------------------------------------------------------------------------------
# Classifier guidance
# --------------------------------------------------------------------------------------------------------


def classifier_guidance(denoise, grad_log_p, schedule, *, scale=1.0):
    """Classifier guidance from a supplied gradient grad_log_p(x, t) = grad_x log p(y | x_t).

    Dhariwal & Nichol (2021), "Diffusion Models Beat GANs", Algorithm 2 / eq. 14: eps_hat is shifted to
    eps_hat - sigma * scale * grad. Since x0_hat = (x - sigma eps_hat) / alpha, the same shift in x0 is

        x0_hat + sigma^2 / alpha * scale * grad

    With scale = 1 and the exact gradient this is the exact class-conditional denoiser (Bayes: grad log p(x|y) =
    grad log p(x) + grad log p(y|x), and Tweedie), which the tests check on a mixture oracle.
    Model calls: 1 per denoise call, plus one grad_log_p call.
    """
    scale = _checks.nonnegative("scale", scale)

    def wrapped(x, t):
        x0 = _x0(denoise, x, t)
        grad = np.asarray(grad_log_p(x, t), dtype=np.float64)
        if grad.shape != np.shape(x):
            raise ValueError(f"grad_log_p returned shape {grad.shape}: expected the shape of x, {np.shape(x)}")
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        return x0 + broadcast_to_batch(sigma**2 / alpha * scale, x) * grad

    return wrapped


# --------------------------------------------------------------------------------------------------------
# Inpainting
# --------------------------------------------------------------------------------------------------------


def _checked_mask(known, mask):
    known = _checks.finite_array("known", known)
    mask = _checks.finite_array("mask", mask)
    try:
        mask = np.broadcast_to(mask, known.shape)
    except ValueError:
        raise ValueError(
            f"mask of shape {mask.shape}: expected a shape that broadcasts to known's {known.shape}"
        ) from None
    if np.any((mask < 0) | (mask > 1)):
        raise ValueError("mask has values outside [0, 1]: expected 1 where x0 is known, 0 where it is to be filled")
    return known, mask


def inpaint(denoise, schedule, *, known, mask, noise):
    """Inpainting by replacement: the known region of x is re-imposed, noised to the current time, at every call.

    Song et al. (2021), "Score-Based Generative Modeling through SDEs", App. I.2 (imputation by replacement), and
    the Stable Diffusion (non-inpainting-model) pipeline. At time t the model sees

        x_in  = mask * (alpha_t known + sigma_t z) + (1 - mask) * x
        x0    = mask * known + (1 - mask) * denoise(x_in, t)

    so every sampler's update keeps the known pixels: on a grid ending at the clean end (sigma = 0) the result
    equals `known` where mask = 1. mask: 1 = known, 0 = fill; it broadcasts to known's shape (which must be x's).
    `noise`: an array shaped like known (one fixed z for every time, as diffusers' legacy inpaint pipeline does),
    or a Generator / callable drawing a fresh z per denoise call, in call order.
    """
    known, mask = _checked_mask(known, mask)
    if isinstance(noise, np.ndarray):
        z_fixed = _checks.finite_array("noise", noise)
        if z_fixed.shape != known.shape:
            raise ValueError(f"noise of shape {z_fixed.shape}: expected known's shape {known.shape}")
        draw = None
    else:
        draw = as_noise_source(noise, sampler="inpaint")

    def wrapped(x, t):
        x = np.asarray(x, dtype=np.float64)
        if x.shape != known.shape:
            raise ValueError(f"x of shape {x.shape}: expected known's shape {known.shape}")
        z = z_fixed if draw is None else draw(known.shape)
        x_known = schedule.alpha(t) * known + schedule.sigma(t) * z
        x_in = mask * x_known + (1.0 - mask) * x
        return mask * known + (1.0 - mask) * _x0(denoise, x_in, t)

    return wrapped


def _posterior_step(x, x0, alpha, sigma, lam, alpha_next, sigma_next, lam_next):
    """q(x_next | x, x0) of a DDPM step between any two times (Ho et al. 2020, eqs. 6-7, in VDM's form):
    c = -expm1(2 (lam - lam_next)), mean = alpha_next ((1 - c) / alpha x + c x0), std = sqrt(c) sigma_next."""
    c = -np.expm1(2.0 * (lam - lam_next))
    return alpha_next * ((1.0 - c) / alpha * x + c * x0), np.sqrt(c) * sigma_next


def repaint_schedule(steps, *, jump_length=10, jump_n_sample=10):
    """The RePaint visiting order as grid indices (0 = grid[0], the noisiest; `steps` = the clean end).

    Lugmayr et al. (2022), "RePaint", Sec. 4.2, in the form of the authors' `get_schedule_jump` (also diffusers'
    RePaintScheduler): going down, every `jump_length` steps from the data end the path jumps back up
    `jump_length` steps, `jump_n_sample - 1` times per jump point.
    """
    steps = _checks.integer("steps", steps, minimum=1)
    jump_length = _checks.integer("jump_length", jump_length, minimum=1)
    jump_n_sample = _checks.integer("jump_n_sample", jump_n_sample, minimum=1)
    jumps = {k: jump_n_sample - 1 for k in range(0, steps - jump_length, jump_length)}
    k, order = steps, [steps]
    while k >= 1:
        k -= 1
        order.append(k)
        if jumps.get(k, 0) > 0:
            jumps[k] -= 1
            for _ in range(jump_length):
                k += 1
                order.append(k)
    return [steps - k for k in order]  # k counts steps left to the data; the grid index counts steps taken


def sample_repaint(denoise, x_T, grid, schedule, *, known, mask, noise, jump_length=10, jump_n_sample=10):
    """RePaint: inpainting with DDPM steps and resampling jumps.

    Lugmayr et al. (2022), "RePaint: Inpainting using Denoising Diffusion Probabilistic Models", Algorithm 1 with
    the jump schedule of Sec. 4.2 (`repaint_schedule`). Down a step (t -> t_next, variance-preserving or not):

        x_known   = alpha_next known + sigma_next z1                          (line 4)
        x_unknown = DDPM posterior mean(x, x0_hat) + std z2                   (lines 5-6)
        x_next    = mask * x_known + (1 - mask) * x_unknown                  (line 8)

    Up a step (a jump back, t_next -> t): x = (alpha / alpha_next) x + sqrt(sigma^2 - (alpha/alpha_next)^2
    sigma_next^2) z (line 10, the forward transition q(x_t | x_t_next)). The grid is any decreasing grid; its
    last time may be the clean end. Model calls: one per down step. Noise draws: per down step z1 then z2 (both
    skipped on a step that lands on sigma = 0), one per up step, in visiting order. (diffusers' RePaintScheduler
    reuses one draw for z1 and z2; this follows the paper.)
    """
    grid = _checks.decreasing_grid(grid, schedule, sampler="sample_repaint")
    draw = as_noise_source(noise, sampler="sample_repaint")
    x = _checks.finite_array("x_T", x_T)
    known, mask = _checked_mask(known, mask)
    if x.shape != known.shape:
        raise ValueError(f"x_T of shape {x.shape}: expected known's shape {known.shape}")
    alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
    order = repaint_schedule(len(grid) - 1, jump_length=jump_length, jump_n_sample=jump_n_sample)
    for i, j in zip(order[:-1], order[1:]):
        if j == i + 1:  # down: denoise from grid[i] to grid[j]
            x0 = _x0(denoise, x, grid[i])
            mean, std = _posterior_step(x, x0, alpha[i], sigma[i], lam[i], alpha[j], sigma[j], lam[j])
            if sigma[j] == 0.0:
                x_known, x_unknown = known * alpha[j], mean
            else:
                x_known = alpha[j] * known + sigma[j] * draw(x.shape)
                x_unknown = mean + std * draw(x.shape)
            x = mask * x_known + (1.0 - mask) * x_unknown
        else:  # up: re-noise from grid[i] to grid[j] = grid[i - 1]
            ratio = alpha[j] / alpha[i]
            std = np.sqrt(np.maximum(sigma[j] ** 2 - (ratio * sigma[i]) ** 2, 0.0))
            x = ratio * x + std * draw(x.shape)
    return x


# --------------------------------------------------------------------------------------------------------
# SDEdit / img2img
# --------------------------------------------------------------------------------------------------------


def sdedit(sampler, denoise, x_image, grid, schedule, *, strength, noise, **sampler_options):
    """SDEdit / img2img: noise the image part-way and run the sampler from there.

    Meng et al. (2022), "SDEdit", Algorithm 1, with diffusers' img2img cut of the grid: with n = len(grid) - 1
    steps, keep the last k = floor(n * strength) of them (grid[n - k:]), draw z and start from

        x_start = alpha(grid[n - k]) x_image + sigma(grid[n - k]) z

    strength = 1 keeps the whole grid (pure noise when alpha(grid[0]) = 0, e.g. zero terminal SNR or flow at
    t = 1), strength = 0 (or k = 0) returns a copy of the image without drawing. `noise` is a Generator or
    callable: its first draw is z, later draws go to the sampler (so a stochastic sampler shares the source).
    `sampler_options` are passed to the sampler unchanged.
    """
    strength = _checks.in_range("strength", strength, 0.0, 1.0)
    grid = _checks.decreasing_grid(grid, schedule, sampler="sdedit")
    x_image = _checks.finite_array("x_image", x_image)
    draw = as_noise_source(noise, sampler="sdedit")
    n = len(grid) - 1
    k = min(int(np.floor(n * strength)), n)
    if k == 0:
        return x_image.copy()
    sub = grid[n - k :]
    x_start = schedule.alpha(sub[0]) * x_image + schedule.sigma(sub[0]) * draw(x_image.shape)
    return sampler(denoise, x_start, sub, schedule, noise=draw, **sampler_options)
