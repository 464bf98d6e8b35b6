"""Accuracy per step budget: every deterministic sampler's error against the exact probability-flow end point.

Problem: the 2-D Gaussian mixture oracle (`reference.oracles.standard_mixture_2d()`, exact denoiser), 512 start
points x_T ~ N(0, I) at t = 999 of the discrete VP schedule with DDPM's linear betas (T = 1000), integrated to the
clean end on a Karras grid (rho = 7, noisy times down to t = 0, then the clean end t = -1). Error: RMS over the
512 points of the Euclidean distance to the exact end point, which is `pf_ode_rk45` at rtol = atol = 1e-10 when
the registry has it, else a 4000-step dpmpp_3m run (the output says which). NFE is counted with a counting
denoiser; a sampler's steps are chosen from its calls_per_step so the count hits the budget exactly, else '-'.

Beside each sampler, its diffusers counterpart (through `reference.interop.from_diffusers`, i.e. diffusers' own
timesteps, rounding and final steps) on the same problem and start points, when diffusers is installed; its NFE
is counted the same way.

    python bench/sampler_accuracy.py            # a few seconds to a minute on 2 cores
"""

import datetime
import importlib.util
import platform
import sys
import time

import numpy as np
from diffspec.reference import interop
from diffspec.reference.grids import karras
from diffspec.reference.oracles import standard_mixture_2d
from diffspec.reference.parameterizations import output_from_x0
from diffspec.reference.samplers import SAMPLER_INFO, SAMPLERS
from diffspec.reference.schedules import make_schedule

NFES = (5, 10, 20, 50)
N_POINTS = 512
KARRAS = {"use_karras_sigmas": True}
# registry name -> (diffusers class, config overrides); all on the same linear betas
COUNTERPARTS = {
    "ddim": ("DDIMScheduler", {"timestep_spacing": "trailing", "clip_sample": False, "set_alpha_to_one": True}),
    "plms": ("PNDMScheduler", {"timestep_spacing": "trailing", "skip_prk_steps": True, "set_alpha_to_one": True}),
    "euler": ("EulerDiscreteScheduler", KARRAS),
    "heun": ("HeunDiscreteScheduler", KARRAS),
    "lms": ("LMSDiscreteScheduler", KARRAS),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {**KARRAS, "solver_order": 2}),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", {**KARRAS, "solver_order": 3}),
    "unipc": ("UniPCMultistepScheduler", KARRAS),
}


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


def rms(a, b):
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=-1))))


def exact_end(denoise, x_T, schedule):
    if "pf_ode_rk45" in SAMPLERS:
        grid = np.array([schedule.t_max, schedule.t_eps, schedule.t_min])
        return SAMPLERS["pf_ode_rk45"](
            denoise, x_T, grid, schedule, rtol=1e-10, atol=1e-10
        ), "pf_ode_rk45 (rtol=atol=1e-10)"
    grid = karras(schedule, 4000)
    return SAMPLERS["dpmpp_3m"](denoise, x_T, grid, schedule), "dpmpp_3m, 4000 Karras steps"


def candidate_steps(nfe, cps, min_grid):
    out = {nfe // cps, nfe // cps + 1, (nfe + 1) // cps, nfe - 1}
    return sorted(s for s in out if s >= max(1, min_grid - 1))


def ours(name, denoise, x_T, schedule, nfe):
    info = SAMPLER_INFO[name]
    if info.calls_per_step is None:
        return None
    for steps in candidate_steps(nfe, info.calls_per_step, info.min_grid):
        if steps > schedule.num_steps:
            continue
        counted = Counting(denoise)
        try:
            x = info.fn(counted, x_T, karras(schedule, steps), schedule)
        except ValueError:
            return "n/a"
        if counted.calls == nfe:
            return x
    return None


def theirs(name, model, x_T, nfe):
    cls, overrides = COUNTERPARTS[name]
    config = {"_class_name": cls, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, **overrides}
    for steps in sorted({nfe, nfe - 1, (nfe + 1) // 2, nfe // 2}):
        if steps < 1:
            continue
        plan = interop.from_diffusers(config, steps)
        s = plan.init_noise_sigma
        start = x_T / (s / np.sqrt(s**2 + 1)) if s != 1.0 else x_T  # the same VP start point for every class
        counted = Counting(model)
        x = plan.run(counted, start)
        if counted.calls == nfe:
            return x
    return None


def fmt(v):
    return v if isinstance(v, str) else "-" if v is None else f"{v:.1e}"


def main():
    t0 = time.perf_counter()
    schedule = make_schedule("linear")
    mix = standard_mixture_2d()
    denoise = mix.denoiser(schedule)
    x_T = np.random.default_rng(0).standard_normal((N_POINTS, 2))
    x_exact, how = exact_end(denoise, x_T, schedule)

    def eps_model(x, timestep):
        t = float(timestep)
        return output_from_x0("eps", denoise(x, t), x, schedule.alpha(t), schedule.sigma(t))

    have_diffusers = importlib.util.find_spec("diffusers") is not None
    rows = []
    for name, info in SAMPLER_INFO.items():
        if info.stochastic:
            continue
        cells = []
        for nfe in NFES:
            x = ours(name, denoise, x_T, schedule, nfe)
            cells.append(rms(x, x_exact) if isinstance(x, np.ndarray) else x)
        dcells = []
        if have_diffusers and name in COUNTERPARTS:
            for nfe in NFES:
                x = theirs(name, eps_model, x_T, nfe)
                dcells.append(rms(x, x_exact) if x is not None else None)
        rows.append((name, info.order, cells, dcells))

    print(
        f"# Sampler accuracy: RMS error vs the exact PF-ODE end point ({datetime.date.today()}, "
        f"{platform.machine()} {platform.processor() or ''}, python {sys.version.split()[0]})"
    )
    print()
    print(
        f"Problem: 2-D Gaussian mixture oracle (8 narrow + 1 wide), {N_POINTS} points from x_T ~ N(0, I) at t = 999, "
        "discrete VP with linear betas (T = 1000), Karras grid (rho = 7) to the clean end. "
        f"Exact end point: {how}. diffusers columns: the counterpart scheduler run through "
        "`from_diffusers` (its own timesteps; Karras sigmas where it has them, 'trailing' for DDIM/PLMS)."
    )
    print()
    head = " | ".join(f"NFE {n}" for n in NFES)
    dhead = " | ".join(f"diffusers {n}" for n in NFES)
    print(f"| sampler | order | {head} | diffusers class | {dhead} |")
    print("|---|---|" + "---|" * len(NFES) + "---|" + "---|" * len(NFES))
    for name, order, cells, dcells in rows:
        cls = COUNTERPARTS[name][0] if dcells else ""
        dtext = " | ".join(fmt(c) for c in dcells) if dcells else " | ".join("" for _ in NFES)
        print(
            f"| {name} | {order if order is not None else ''} | {' | '.join(fmt(c) for c in cells)} | {cls} | {dtext} |"
        )
    print()
    print(
        f"('-': the budget is not reachable with this sampler's calls per step; 'n/a': the sampler rejects this "
        f"schedule.) Wall time {time.perf_counter() - t0:.1f} s."
    )


if __name__ == "__main__":
    main()
