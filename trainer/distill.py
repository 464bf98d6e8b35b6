"""Few-step students on tensors: the torch twin of `diffspec.reference.distillation`.

Same names and boundaries as the reference (consistency models: Song et al. 2023, arXiv:2303.01469 and Song &
Dhariwal 2023, arXiv:2310.14189; progressive distillation: Salimans & Ho 2022, arXiv:2202.00512; reflow: Liu et al.
2022, arXiv:2209.03003), written for the training step: per-example times of shape (B,), no branch on tensor values.
Times are the schedule's own t; a pair (t, t_next) has t > t_next.
"""

import math

import torch
from diffspec.trainer.grids import GRIDS
from diffspec.trainer.losses import consistency_scalings, ict_num_steps, ict_sigmas
from diffspec.trainer.parameterizations import broadcast_to_batch

DETERMINISTIC_TEACHER_SAMPLERS = (
    "ddim",
    "euler",
    "heun",
    "dpm_solver_1",
    "dpm_solver_2",
    "dpm_solver_3",
    "dpmpp_2m",
    "dpmpp_3m",
    "lms",
    "deis",
    "unipc",
    "flow_euler",
    "flow_heun",
    "flow_midpoint",
)


# --------------------------------------------------------------------------------------------------------
# Consistency models
# --------------------------------------------------------------------------------------------------------


def consistency_boundary(sigma_ve, *, sigma_min, sigma_data=0.5):
    """(a_skip, a_out) with f = a_skip x_ve + a_out x0_hat (Song et al. 2023, App. C, through EDM's c_skip/c_out):
    a_out = (sigma - sigma_min) / sigma (1 at sigma = 0), a_skip = c_skip - a_out c_skip_edm,
    c_skip_edm = sigma_data^2 / (sigma^2 + sigma_data^2)."""
    c_skip, _ = consistency_scalings(sigma_ve, sigma_min=sigma_min, sigma_data=sigma_data)
    positive = sigma_ve > 0
    a_out = torch.where(
        positive,
        (sigma_ve - sigma_min) / torch.where(positive, sigma_ve, torch.ones_like(sigma_ve)),
        torch.ones_like(sigma_ve),
    )
    return c_skip - a_out * sigma_data**2 / (sigma_ve**2 + sigma_data**2), a_out


def consistency_function(x0_hat, x, t, schedule, *, sigma_min, sigma_data=0.5):
    """f(x, t) = a_skip x / alpha_t + a_out x0_hat at sigma_ve(t); t of shape (B,) or a scalar."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device) if not isinstance(t, torch.Tensor) else t
    a_skip, a_out = consistency_boundary(schedule.sigma_ve(t), sigma_min=sigma_min, sigma_data=sigma_data)
    scale = a_skip / schedule.alpha(t)
    return broadcast_to_batch(scale, x).to(x.dtype) * x + broadcast_to_batch(a_out, x).to(x.dtype) * x0_hat


def distillation_times(schedule, num_steps, *, grid="karras"):
    """The N + 1 noisy times of consistency distillation, decreasing float64 (a `GRIDS` grid, clean end dropped)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r}: expected an integer >= 1")
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}: expected one of {sorted(GRIDS)}")
    clean = bool(schedule.sigma(torch.tensor(float(schedule.t_min), dtype=torch.float64)) == 0)
    times = torch.as_tensor(GRIDS[grid](schedule, num_steps + int(clean)), dtype=torch.float64)
    if bool(schedule.sigma(times[-1:]) == 0):
        times = times[:-1]
    if len(times) != num_steps + 1 or not bool((schedule.sigma(times) > 0).all()):
        raise ValueError(f"grid {grid!r} with num_steps={num_steps}: expected {num_steps + 1} distinct noisy times")
    return times


def teacher_step(teacher_denoise, x, t, t_next, schedule, *, sampler="ddim"):
    """x_{t_next} = Phi(x_t, t, t_next): one step of a deterministic registry sampler on the grid [t, t_next]
    (Song et al. 2023, Algorithm 2). t, t_next: Python floats shared by the batch."""
    from diffspec.trainer.samplers import SAMPLERS

    if sampler not in DETERMINISTIC_TEACHER_SAMPLERS or sampler not in SAMPLERS:
        raise ValueError(
            f"--teacher-sampler {sampler!r}: expected a deterministic ODE sampler, one of "
            f"{sorted(s for s in DETERMINISTIC_TEACHER_SAMPLERS if s in SAMPLERS)}"
        )
    if not float(t) > float(t_next):
        raise ValueError(f"t={t}, t_next={t_next}: expected t > t_next (noise -> data)")
    grid = torch.tensor([float(t), float(t_next)], dtype=torch.float64)
    return SAMPLERS[sampler](teacher_denoise, x, grid, schedule)


def consistency_training_pair(x0, z, t, t_next, schedule):
    """(x_t, x_{t_next}) = (alpha_t x0 + sigma_t z, alpha_next x0 + sigma_next z): one shared z (CM Algorithm 3)."""

    def at(u):
        return (
            broadcast_to_batch(schedule.alpha(u), x0).to(x0.dtype) * x0
            + broadcast_to_batch(schedule.sigma(u), x0).to(x0.dtype) * z
        )

    return at(t), at(t_next)


def ict_times(schedule, k, total_steps, *, sigma_min=0.002, sigma_max=80.0, rho=7.0, s0=10, s1=1280):
    """(times, sigmas), both increasing float64: iCT's N(k) Karras levels in sigma_ve clipped to the schedule's
    range, as schedule times (Song & Dhariwal 2023, eq. 8 and Sec. 3.5)."""
    n = ict_num_steps(k, total_steps, s0=s0, s1=s1)
    f64 = torch.float64
    lo = max(float(sigma_min), float(schedule.sigma_ve(torch.tensor(float(schedule.t_eps), dtype=f64))) * (1 + 1e-9))
    hi = min(float(sigma_max), float(schedule.sigma_ve(torch.tensor(float(schedule.t_max), dtype=f64))))
    if not hi > lo:
        raise ValueError(
            f"schedule {type(schedule).__name__} spans sigma_ve in [{lo:g}, {hi:g}]: too narrow for "
            "consistency training"
        )
    sigmas = ict_sigmas(n, sigma_min=lo, sigma_max=hi, rho=rho)
    times = torch.clamp(schedule.t_of_sigma_ve(sigmas), float(schedule.t_eps), float(schedule.t_max))
    return times, sigmas


# --------------------------------------------------------------------------------------------------------
# Progressive distillation
# --------------------------------------------------------------------------------------------------------


def progressive_rounds(teacher_steps, student_steps):
    """[teacher_steps / 2, ..., student_steps]: each round halves the steps (Salimans & Ho 2022, Algorithm 2)."""
    for name, value, lo in (("--teacher-steps", teacher_steps, 2), ("--student-steps", student_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name}={value!r}: expected an integer >= {lo}")
    ratio = teacher_steps // student_steps
    if student_steps >= teacher_steps or teacher_steps % student_steps or ratio & (ratio - 1):
        raise ValueError(
            f"--student-steps={student_steps}: expected teacher_steps / 2^k for k >= 1 with "
            f"--teacher-steps={teacher_steps} (e.g. {teacher_steps // 2}, {teacher_steps // 4})"
        )
    return [teacher_steps >> (r + 1) for r in range(int(math.log2(ratio)))]


def progressive_grid_name(schedule):
    """trailing (discrete), uniform (flow), else time_quadratic: the grid `progressive_grid` equals."""
    if schedule.is_discrete:
        return "trailing"
    return "uniform" if schedule.to_dict().get("name") == "flow" else "time_quadratic"


def progressive_grid(schedule, steps):
    """steps + 1 float64 times from t_max to t_min, nested under halving (Salimans & Ho 2022, Algorithm 2): evenly
    in t (discrete, flow) or in sqrt(t - t_min) (other schedules)."""
    n = int(steps)
    i = torch.arange(n + 1, dtype=torch.float64)
    t_max, t_min = float(schedule.t_max), float(schedule.t_min)
    if progressive_grid_name(schedule) == "time_quadratic":
        u = math.sqrt(t_max - t_min) * (1 - i / n)
        grid = t_min + u**2
        grid[0], grid[-1] = t_max, t_min
        return grid
    return t_max + (t_min - t_max) * i / n


def progressive_teacher_target(teacher_denoise, x, t, t_next, schedule, *, sampler="ddim", substeps=2):
    """x_tilde = (z_next - (sigma_next/sigma_t) z_t) / (alpha_next - (sigma_next/sigma_t) alpha_t), z_next the
    teacher's solve t -> t_next in `substeps` equal steps of a deterministic sampler (Salimans & Ho 2022, Algorithm
    2: ddim, 2 substeps). t, t_next: Python floats shared by the batch."""
    from diffspec.trainer.samplers import SAMPLERS

    if sampler not in DETERMINISTIC_TEACHER_SAMPLERS or sampler not in SAMPLERS:
        raise ValueError(
            f"--teacher-sampler {sampler!r}: expected a deterministic ODE sampler, one of "
            f"{sorted(s for s in DETERMINISTIC_TEACHER_SAMPLERS if s in SAMPLERS)}"
        )
    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"--teacher-substeps={substeps!r}: expected an integer >= 1")
    t, t_next = float(t), float(t_next)
    if not t > t_next:
        raise ValueError(f"t={t}, t_next={t_next}: expected t > t_next (noise -> data)")
    i = torch.arange(substeps + 1, dtype=torch.float64)
    grid = t + (t_next - t) * i / substeps
    grid[-1] = t_next
    z_next = SAMPLERS[sampler](teacher_denoise, x, grid, schedule)
    tt = torch.tensor([t, t_next], dtype=torch.float64)
    (a_t, a_n), (s_t, s_n) = schedule.alpha(tt).tolist(), schedule.sigma(tt).tolist()
    ratio = s_n / s_t
    return (z_next - ratio * x) / (a_n - ratio * a_t)


def truncated_snr_weight(t, schedule):
    """max(snr, 1) = e^{2 max(lam, 0)} (Salimans & Ho 2022, Sec. 4)."""
    return torch.exp(2 * torch.clamp(schedule.lam(t), min=0.0))


def progressive_distillation_loss(x0_hat, x_tilde, t, schedule):
    """max(snr_t, 1) mean_d (x0_hat - x_tilde)^2 per sample; x_tilde is detached (it is the teacher's target)."""
    sq = (x0_hat - x_tilde.detach()) ** 2
    per = sq.reshape(sq.shape[0], -1).mean(dim=1) if sq.ndim > 1 else sq
    return truncated_snr_weight(t, schedule).to(per.dtype) * per


# --------------------------------------------------------------------------------------------------------
# Reflow
# --------------------------------------------------------------------------------------------------------


def _flow_only(schedule, what):
    if schedule.to_dict().get("name") != "flow":
        raise ValueError(
            f"schedule {type(schedule).__name__}: {what} needs a flow-matching model (the 'flow' "
            "schedule, alpha = 1 - t, sigma = t)"
        )


def _flow_grid(schedule, steps):
    n = int(steps)
    return (
        float(schedule.t_max)
        + (float(schedule.t_min) - float(schedule.t_max)) * torch.arange(n + 1, dtype=torch.float64) / n
    )


def reflow_pairs(teacher_denoise, z, schedule, *, steps, sampler="flow_euler"):
    """x0 = ODE_teacher(z) from t = 1 to t = 0 in `steps` uniform steps (Liu et al. 2022, Algorithm 1)."""
    from diffspec.trainer.samplers import SAMPLERS

    _flow_only(schedule, "reflow")
    if sampler not in SAMPLERS or sampler not in DETERMINISTIC_TEACHER_SAMPLERS:
        raise ValueError(f"--teacher-sampler {sampler!r}: expected a deterministic ODE sampler such as flow_euler")
    return SAMPLERS[sampler](teacher_denoise, z, _flow_grid(schedule, steps), schedule)


def straightness(denoise, z, schedule, *, steps):
    """(x0, S) per sample along a uniform Euler path from t = 1 to 0: S = (1/steps) sum_i mean_d ((x_1 - x_0) - u_i)^2,
    u_i = (x_i - x0_hat_i) / t_i (Liu et al. 2022, eq. 6)."""
    _flow_only(schedule, "straightness")
    grid = _flow_grid(schedule, steps).tolist()
    x, velocities = z, []
    for i in range(int(steps)):
        t = torch.full((z.shape[0],), grid[i], dtype=z.dtype, device=z.device)
        u = (x - denoise(x, t)) / grid[i]
        velocities.append(u)
        x = x + (grid[i + 1] - grid[i]) * u
    chord = z - x
    s = sum(((chord - u) ** 2).reshape(z.shape[0], -1).mean(dim=1) for u in velocities) / int(steps)
    return x, s
