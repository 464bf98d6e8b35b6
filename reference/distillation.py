"""Few-step students: the math of consistency distillation and training, progressive distillation and reflow.

Each procedure trains a student network against targets built from a teacher (or, in consistency training, from
the student itself). This module holds those targets, the boundary-condition parameterization of a consistency
model and the curricula, for any schedule x_t = alpha_t x0 + sigma_t eps; the losses they feed are in `losses`
(`consistency_loss`, `flow_matching_loss`) and the training loops only wire them.

- Consistency models (Song, Dhariwal, Chen & Sutskever 2023, arXiv:2303.01469; iCT: Song & Dhariwal 2023,
  arXiv:2310.14189). The papers work with alpha = 1 and sigma = the noise level; for another schedule the same
  formulas are applied to sigma_ve = sigma / alpha and the VE variable x_ve = x / alpha (x_t = alpha (x0 + sigma_ve
  eps)), as EDM's preconditioning does (Karras et al. 2022, Table 1).
- Progressive distillation (Salimans & Ho 2022, arXiv:2202.00512): one student DDIM step matches two teacher DDIM
  steps; rounds halve the number of steps.
- Reflow (Liu, Gong & Liu 2022, arXiv:2209.03003): retrain a flow on the (noise, sample) pairs its own ODE couples;
  straightness measures how far the flow is from straight lines.

Times are the schedule's own t; a pair (t, t_next) has t > t_next (noise -> data, sampling order).
"""

import math

import numpy as np
from diffspec.reference import _checks
from diffspec.reference import parameterizations as P
from diffspec.reference.grids import GRIDS
from diffspec.reference.losses import consistency_scalings, ict_num_steps, ict_sigmas
from diffspec.reference.samplers import SAMPLER_INFO, get_sampler
from diffspec.reference.schedules import Flow

# --------------------------------------------------------------------------------------------------------
# Consistency models
# --------------------------------------------------------------------------------------------------------


def consistency_boundary(sigma_ve, *, sigma_min, sigma_data=0.5):
    """(a_skip, a_out) with f(x, t) = a_skip x_ve + a_out x0_hat: the consistency model built on a denoiser.

    Song et al. (2023), App. C: f = c_skip x + c_out F with c_skip(sigma_min) = 1, c_out(sigma_min) = 0, so that
    f(x, sigma_min) = x (the boundary condition), where F is the raw output of an EDM-preconditioned network,
    x0_hat = c_skip_edm x + c_out_edm F (Karras et al. 2022, Table 1: c_skip_edm = sigma_data^2 / (sigma^2 +
    sigma_data^2), c_out_edm = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)). Writing F through x0_hat lets any
    parameterization carry the same consistency model:

        a_out  = c_out / c_out_edm = (sigma - sigma_min) / sigma        (1 where sigma = sigma_min = 0)
        a_skip = c_skip - a_out c_skip_edm

    For an EDM-preconditioned network this is exactly the paper's model; with sigma_min = 0 it is f = x0_hat.
    """
    s = _checks.finite_array("sigma_ve", sigma_ve)
    sigma_min = _checks.nonnegative("sigma_min", sigma_min)
    sigma_data = _checks.positive("sigma_data", sigma_data)
    c_skip, _ = consistency_scalings(s, sigma_min=sigma_min, sigma_data=sigma_data)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_out = np.where(s > 0, (s - sigma_min) / np.where(s > 0, s, 1.0), 1.0)
    c_skip_edm = sigma_data**2 / (s**2 + sigma_data**2)
    return c_skip - a_out * c_skip_edm, a_out


def consistency_function(x0_hat, x, t, schedule, *, sigma_min, sigma_data=0.5):
    """f(x, t) = a_skip x / alpha_t + a_out x0_hat (`consistency_boundary` at sigma_ve(t)); f(x, t_min') = x / alpha.

    x0_hat is the network's denoised estimate at (x, t) through its parameterization; t a scalar or (B,).
    """
    x0_hat = _checks.finite_array("x0_hat", x0_hat)
    x = _checks.finite_array("x", x)
    if x0_hat.shape != x.shape:
        raise ValueError(f"x0_hat of shape {x0_hat.shape}: expected the shape of x {x.shape}")
    t = _checks.times_in_domain("t", t, schedule)
    a_skip, a_out = consistency_boundary(schedule.sigma_ve(t), sigma_min=sigma_min, sigma_data=sigma_data)
    alpha = schedule.alpha(t)
    return P.broadcast_to_batch(a_skip / alpha, x) * x + P.broadcast_to_batch(a_out, x) * x0_hat


def distillation_times(schedule, num_steps, *, grid="karras"):
    """The N + 1 noisy times of consistency distillation, decreasing: t_N = t_max, ..., t_0 = the boundary time.

    Song et al. (2023), Sec. 4 use Karras et al.'s sigma grid (eq. 5, rho = 7) between sigma_min and sigma_max; here
    any grid of `GRIDS` over the schedule, with a clean end (sigma = 0) dropped and replaced by the last noisy time,
    so that every time has sigma > 0. sigma_ve of the last time is the student's sigma_min.
    """
    num_steps = _checks.integer("num_steps", num_steps, minimum=1)
    fn = _checks.lookup(GRIDS, grid, what="grid")
    clean = bool(schedule.sigma(schedule.t_min) == 0)
    times = np.asarray(fn(schedule, num_steps + clean), dtype=np.float64)
    times = times[:-1] if schedule.sigma(times[-1]) == 0 else times
    if len(times) != num_steps + 1 or not np.all(schedule.sigma(times) > 0):
        raise ValueError(f"grid {grid!r} with num_steps={num_steps}: expected {num_steps + 1} distinct noisy times")
    return times


def teacher_step(teacher_denoise, x, t, t_next, schedule, *, sampler="ddim"):
    """The teacher's ODE step x_{t_next} = Phi(x_t, t, t_next): one step of a deterministic registry sampler.

    Song et al. (2023), Algorithm 2: x_hat_{t_n} = x_{t_{n+1}} + (t_n - t_{n+1}) Phi(x_{t_{n+1}}, t_{n+1}; phi). Phi
    is any sampler of `SAMPLERS` without noise, run on the two-point grid [t, t_next] (t, t_next scalars); a
    multistep sampler then takes its first, single-step form (DDIM for dpmpp_2m, Euler for lms, ...).
    """
    fn = get_sampler(sampler)
    info = SAMPLER_INFO[{v.fn: k for k, v in SAMPLER_INFO.items()}[fn]]
    if info.stochastic:
        raise ValueError(
            f"sampler={sampler!r} is stochastic: the teacher step needs a deterministic ODE sampler "
            "such as ddim, euler, heun, dpmpp_2m or flow_euler"
        )
    t, t_next = float(t), float(t_next)
    if not t > t_next:
        raise ValueError(f"t={t}, t_next={t_next}: expected t > t_next (noise -> data)")
    return np.asarray(
        fn(teacher_denoise, _checks.finite_array("x", x), np.array([t, t_next]), schedule), dtype=np.float64
    )


def consistency_training_pair(x0, z, t, t_next, schedule):
    """(x_t, x_{t_next}) sharing one noise draw z: consistency training's unbiased estimate of the teacher step.

    Song et al. (2023), Algorithm 3 (x + t_{n+1} z and x + t_n z) in a general schedule: x_u = alpha_u x0 + sigma_u z.
    t, t_next scalars or (B,), t > t_next.
    """
    x0, z = _checks.finite_array("x0", x0), _checks.finite_array("z", z)
    if z.shape != x0.shape:
        raise ValueError(f"z of shape {z.shape}: expected the shape of x0 {x0.shape}")
    t = _checks.times_in_domain("t", t, schedule)
    t_next = _checks.times_in_domain("t_next", t_next, schedule)
    if np.any(t_next >= t):
        raise ValueError("t_next: expected t_next < t for every pair")

    def at(u):
        return P.broadcast_to_batch(schedule.alpha(u), x0) * x0 + P.broadcast_to_batch(schedule.sigma(u), x0) * z

    return at(t), at(t_next)


def ict_times(schedule, k, total_steps, *, sigma_min=0.002, sigma_max=80.0, rho=7.0, s0=10, s1=1280):
    """The noise levels of improved consistency training at iteration k, as schedule times.

    Song & Dhariwal (2023): N(k) Karras levels (`ict_num_steps`, `ict_sigmas`) in sigma_ve, clipped to the part of
    [sigma_min, sigma_max] the schedule reaches, mapped to t with the schedule's inverse. Returns (times, sigmas)
    with sigmas increasing (the papers' order, for `ict_index_probabilities`) and times[i] the time of sigmas[i],
    so times increase too.
    """
    n = ict_num_steps(k, total_steps, s0=s0, s1=s1)
    lo = max(float(sigma_min), float(schedule.sigma_ve(schedule.t_eps)) * (1 + 1e-9))
    hi = min(float(sigma_max), float(schedule.sigma_ve(schedule.t_max)))
    if not hi > lo:
        raise ValueError(
            f"schedule {type(schedule).__name__} spans sigma_ve in [{lo:g}, {hi:g}]: too narrow for "
            "consistency training"
        )
    sigmas = ict_sigmas(n, sigma_min=lo, sigma_max=hi, rho=rho)
    times = np.clip(schedule.t_of_sigma_ve(sigmas), schedule.t_eps, schedule.t_max)
    return times, sigmas


# --------------------------------------------------------------------------------------------------------
# Progressive distillation
# --------------------------------------------------------------------------------------------------------


def progressive_rounds(teacher_steps, student_steps):
    """The sampling steps of each round's student: teacher_steps / 2, teacher_steps / 4, ..., student_steps.

    Salimans & Ho (2022), Algorithm 2: every round halves the steps, the student of one round teaching the next, so
    student_steps must be teacher_steps / 2^k with k >= 1.
    """
    teacher_steps = _checks.integer("teacher_steps", teacher_steps, minimum=2)
    student_steps = _checks.integer("student_steps", student_steps, minimum=1)
    ratio = teacher_steps // student_steps
    if student_steps >= teacher_steps or teacher_steps % student_steps or ratio & (ratio - 1):
        raise ValueError(
            f"student_steps={student_steps}: expected teacher_steps / 2^k for k >= 1 with "
            f"teacher_steps={teacher_steps} (e.g. {teacher_steps // 2}, {teacher_steps // 4})"
        )
    rounds = int(math.log2(ratio))
    return [teacher_steps >> (r + 1) for r in range(rounds)]


def progressive_grid_name(schedule):
    """The sampling grid (`GRIDS` name) that `progressive_grid` equals: trailing (discrete), uniform (flow), else
    time_quadratic."""
    if schedule.is_discrete:
        return "trailing"
    return "uniform" if isinstance(schedule, Flow) else "time_quadratic"


def progressive_grid(schedule, steps):
    """The student's time grid of a round: steps + 1 times from t_max to t_min (decreasing), nested under halving.

    Salimans & Ho (2022), Algorithm 2 space the times evenly (t = i / N on [0, 1]); halving the steps keeps every
    other time, so each round's student is only asked about times its teacher was trained on. Evenly in t for
    discrete schedules (diffusers' "trailing" spacing when steps divides T) and for flow; for other schedules
    (EDM, VP in continuous time) evenly in sqrt(t - t_min), the "time_quadratic" grid, which crowds steps near the
    data as sigma-spaced grids do and still nests.
    """
    steps = _checks.integer("steps", steps, minimum=1)
    t_max, t_min = float(schedule.t_max), float(schedule.t_min)
    if progressive_grid_name(schedule) == "time_quadratic":
        u = np.linspace(np.sqrt(t_max - t_min), 0.0, steps + 1)
        grid = t_min + u**2
        grid[0], grid[-1] = t_max, t_min
        return grid
    return np.linspace(t_max, t_min, steps + 1)


def progressive_teacher_target(teacher_denoise, x, t, t_next, schedule, *, sampler="ddim", substeps=2):
    """The x0 target x_tilde whose one student DDIM step t -> t_next lands where the teacher's ODE solve does.

    Salimans & Ho (2022), Algorithm 2, with the teacher's two DDIM steps t -> (t + t_next) / 2 -> t_next replaced by
    `substeps` equal steps in t of a deterministic registry sampler, z_next = Phi(z_t; t -> t_next), then

        x_tilde = (z_next - (sigma_next / sigma_t) z_t) / (alpha_next - (sigma_next / sigma_t) alpha_t)

    (z_next itself at a clean t_next). sampler="ddim", substeps=2 is the paper's target
    (`losses.progressive_distillation_target`); a finer or higher-order solve lets the first round start from a
    teacher more accurate than its own DDIM on the round's grid. t, t_next: scalars shared by the batch.
    Model calls: substeps times the sampler's calls per step.
    """
    fn = get_sampler(sampler)
    info = SAMPLER_INFO[{v.fn: k for k, v in SAMPLER_INFO.items()}[fn]]
    if info.stochastic:
        raise ValueError(f"sampler={sampler!r} is stochastic: the teacher's solve needs a deterministic ODE sampler")
    substeps = _checks.integer("substeps", substeps, minimum=1)
    t, t_next = float(t), float(t_next)
    if not t > t_next:
        raise ValueError(f"t={t}, t_next={t_next}: expected t > t_next (noise -> data)")
    x = _checks.finite_array("x", x)
    z_next = np.asarray(fn(teacher_denoise, x, np.linspace(t, t_next, substeps + 1), schedule), dtype=np.float64)
    a_t, s_t = schedule.alpha(t), schedule.sigma(t)
    a_n, s_n = schedule.alpha(t_next), schedule.sigma(t_next)
    ratio = s_n / s_t
    return (z_next - ratio * x) / (a_n - ratio * a_t)


def truncated_snr_weight(t, schedule):
    """Salimans & Ho (2022), Sec. 4 "truncated SNR" weighting of the x0-MSE: w = max(snr, 1) = max(e^{2 lam}, 1)."""
    lam = schedule.lam(_checks.times_in_domain("t", t, schedule))
    return np.exp(2 * np.maximum(lam, 0.0))


def progressive_distillation_loss(x0_hat, x_tilde, t, schedule):
    """max(snr_t, 1) mean_d (x0_hat - x_tilde)^2 per sample: the student's loss against the two-step target.

    Salimans & Ho (2022), Algorithm 2 and Sec. 4. x_tilde from `losses.progressive_distillation_target` (no gradient).
    """
    x0_hat, x_tilde = _checks.finite_array("x0_hat", x0_hat), _checks.finite_array("x_tilde", x_tilde)
    if x0_hat.shape != x_tilde.shape:
        raise ValueError(f"x_tilde of shape {x_tilde.shape}: expected the shape of x0_hat {x0_hat.shape}")
    sq = (x0_hat - x_tilde) ** 2
    return truncated_snr_weight(t, schedule) * (np.mean(sq, axis=tuple(range(1, sq.ndim))) if sq.ndim > 1 else sq)


# --------------------------------------------------------------------------------------------------------
# Reflow
# --------------------------------------------------------------------------------------------------------


def _flow_only(schedule, what):
    if not isinstance(schedule, Flow):
        raise ValueError(
            f"schedule {type(schedule).__name__}: {what} needs a flow-matching model (the 'flow' "
            "schedule, alpha = 1 - t, sigma = t)"
        )


def reflow_pairs(teacher_denoise, z, schedule, *, steps, sampler="flow_euler"):
    """(z, x0): the teacher's ODE coupling, x0 = ODE(z) integrated from t = 1 to t = 0 with `steps` steps.

    Liu et al. (2022), Algorithm 1 ("Reflow"): draw z ~ N(0, I), couple it with the 1-rectified flow's output
    Z_0 = ODE_1(z); the next flow is trained on the straight interpolation of (z, x0). The grid is uniform in t.
    """
    _flow_only(schedule, "reflow")
    steps = _checks.integer("steps", steps, minimum=1)
    grid = np.linspace(float(schedule.t_max), float(schedule.t_min), steps + 1)
    return np.asarray(
        get_sampler(sampler)(teacher_denoise, _checks.finite_array("z", z), grid, schedule), dtype=np.float64
    )


def straightness(denoise, z, schedule, *, steps):
    """(x0, S) per sample: the ODE's end point and its straightness along a uniform Euler path from t = 1 to t = 0.

    Liu et al. (2022), Sec. 2.3 / eq. 6: S = int_0^1 E ||(X_1 - X_0) - u(X_t, t)||^2 dt, zero exactly when every
    path is a straight line. With Euler steps of size dt_i = 1 / steps, velocities u_i = (x_i - x0_hat_i) / t_i:

        S ~ (1 / steps) sum_i mean_d ((x_1 - x_0) - u_i)^2         (mean over dimensions)
    """
    _flow_only(schedule, "straightness")
    steps = _checks.integer("steps", steps, minimum=1)
    x = _checks.finite_array("z", z)
    grid = np.linspace(float(schedule.t_max), float(schedule.t_min), steps + 1)
    velocities = []
    for i in range(steps):
        u = (x - np.asarray(denoise(x, float(grid[i])), dtype=np.float64)) / grid[i]
        velocities.append(u)
        x = x + (grid[i + 1] - grid[i]) * u
    chord = z - x  # (X_1 - X_0): t = 1 is the noise end
    axes = tuple(range(1, x.ndim))
    s = sum(np.mean((chord - u) ** 2, axis=axes) for u in velocities) / steps
    return x, s


# --------------------------------------------------------------------------------------------------------
# How a student is sampled
# --------------------------------------------------------------------------------------------------------

# The sampler each procedure's student is trained for.
STUDENT_SAMPLERS = {
    "consistency_distillation": "consistency",
    "consistency_training": "consistency",
    "progressive_distillation": "ddim",
    "reflow": "flow_euler",
}

# Steps when none are asked for: 2 for consistency models and reflow (measured in docs/distillation.md: going from
# 1 to 2 steps improves the score by 25-60%, from 2 to 4 by at most 17%); a progressive student's own steps.
STUDENT_STEPS = 2
# The most steps a card may ask for (a file's metadata is not trusted to set the amount of work).
MAX_STEPS = 10_000


def student_grid(schedule, procedure, student=None):
    """(name, options) of the sampling grid a student is trained for (`GRIDS[name](schedule, steps, **options)`);
    `student` is the card's student entry (its "grid" and "sigma_min" place a consistency model's grid).

    - a progressive student: its `progressive_grid`;
    - reflow: uniform in t;
    - a consistency model: its discretization's grid (Karras in sigma_ve; uniform in t for flow and cosine VP) down
      to t_end = its boundary time, where sigma_ve = sigma_min, as in Song et al. (2023), Algorithm 1 (re-noise to
      sqrt(tau^2 - eps^2)). Its k-step times are then times it was trained at whenever k divides the
      discretization's N (`distillation_times` spaces N + 1 times the same way between the same ends), and no
      evaluation is wasted on the boundary, where f(x, eps) = x (the plain Karras grid ends its noisy times there,
      which makes a k-step sample a (k - 1)-step one).
    """
    if procedure not in STUDENT_SAMPLERS:
        raise ValueError(f"procedure={procedure!r}: expected one of {sorted(STUDENT_SAMPLERS)}")
    if procedure == "progressive_distillation":
        return progressive_grid_name(schedule), {}
    if procedure == "reflow":
        return "uniform", {}
    flat = schedule.to_dict()["name"] in ("flow", "vp_cosine")
    student = student or {}
    grid = student.get("grid") or ("uniform" if flat else "karras")
    sigma_min = student.get("sigma_min")
    if sigma_min is None:  # an older card: the schedule's own boundary
        t_end = float(schedule.t_eps)
    elif isinstance(sigma_min, (int, float)) and not isinstance(sigma_min, bool) and 0 < sigma_min < math.inf:
        t_end = float(schedule.t_of_sigma_ve(float(sigma_min)))
    else:
        raise ValueError(f"the student entry's sigma_min={sigma_min!r}: expected a positive number")
    t_end = min(max(t_end, float(schedule.t_min)), float(schedule.t_max))
    return str(grid), {"t_end": t_end}


def student_sampling(student, schedule):
    """(sampler, steps, grid, grid_options) a student's card asks for: its "sampler", "steps_for_sampling",
    "grid_for_sampling" and "grid_options_for_sampling" entries, filled by the rules above where an older card
    lacks them. None when `student` (a card's "student" entry) is None or names no known procedure; a ValueError
    naming the entry when one has the wrong type."""
    if student is None:
        return None
    if not isinstance(student, dict):
        raise ValueError(f"student={student!r}: expected the card's student entry, a JSON object")
    procedure = student.get("procedure")
    if procedure not in STUDENT_SAMPLERS:
        return None
    default_steps = student.get("student_steps", STUDENT_STEPS) if procedure == "progressive_distillation" else None
    sampler = student.get("sampler") or STUDENT_SAMPLERS[procedure]
    steps = student.get("steps_for_sampling") or default_steps or STUDENT_STEPS
    if student.get("grid_for_sampling"):
        grid, options = student["grid_for_sampling"], student.get("grid_options_for_sampling") or {}
    else:
        grid, options = student_grid(schedule, procedure, student)
    for name, value, kind in (
        ("sampler", sampler, str),
        ("steps_for_sampling", steps, int),
        ("grid_for_sampling", grid, str),
        ("grid_options_for_sampling", options, dict),
    ):
        if isinstance(value, bool) or not isinstance(value, kind) or (kind is int and not 1 <= value <= MAX_STEPS):
            want = {int: f"an integer in 1..{MAX_STEPS}", str: "a name", dict: "a JSON object"}[kind]
            raise ValueError(f"the student entry's {name}={value!r}: expected {want}")
    return sampler, steps, grid, dict(options)
