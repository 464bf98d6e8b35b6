"""`check_scheduler`: a diffusers scheduler instance (custom subclasses included) against the reference's
reading of its config (`diffspec.reference.interop.from_diffusers`) and against exact answers.

Rows: `class` (the diffusers class it is, or derives from, has a counterpart), `timesteps` (the times the model
saw in the loop, against the plan's) and `sigmas` (the scheduler's after `set_timesteps(n)`, against the plan's),
`loop` (the loop of the pipeline that drives the class, `diffusers_loops.run_pipeline`, on the exact network of the
Gaussian-mixture model in the class's own input, time and output convention, with the same draws fed to both:
final samples within 2e-4 of max |x|, diffusers' float32 arithmetic), and `order`
(the loop's final sample on Gaussian data against the exact probability-flow map from the start state to the
data: the observed order of convergence, for deterministic classes with a known nominal order).
"""

import math

import numpy as np
from diffspec.conformance.diffusers_loops import latent_shape, model_for, run_pipeline
from diffspec.conformance.report import Report
from diffspec.reference.oracles import GaussianMixture, gaussian_flow_map, standard_mixture_2d

LOOP_TOL = 2e-4  # diffusers runs in float32; its own float64 run moves samples by up to 6e-5 of max |x|
ORDER_TOL = 0.3
TIMESTEP_TOL = 16 * float(np.finfo(np.float32).eps)  # fractional (Karras) timesteps are float32 in diffusers
MEAN, STD = np.array([0.5, -0.2]), np.array([0.3, 0.8])
GAUSS = GaussianMixture.gaussian(MEAN, STD)


def nominal_order(class_name: str, config) -> float | None:
    """The order a deterministic diffusers class is documented to have with this config (None: stochastic or none
    documented). Multistep solvers count their `solver_order`; UniPC's corrector adds one."""
    algorithm = config.get("algorithm_type", "")
    if "sde" in str(algorithm):
        return None
    table = {
        "DDIMScheduler": 1,
        "EulerDiscreteScheduler": 1,
        "HeunDiscreteScheduler": 2,
        "KDPM2DiscreteScheduler": 2,
        "FlowMatchEulerDiscreteScheduler": 1,
        "EDMEulerScheduler": 1,
    }
    if class_name in table:
        return table[class_name]
    if class_name in (
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "DEISMultistepScheduler",
        "EDMDPMSolverMultistepScheduler",
    ):
        return config.get("solver_order", 2)
    if class_name == "UniPCMultistepScheduler":
        return config.get("solver_order", 2) + 1
    if class_name == "LMSDiscreteScheduler":
        return 4
    return None


def counterpart(scheduler):
    """The supported diffusers class `scheduler` is or derives from (None if none)."""
    from diffspec.reference.interop import SUPPORTED_CLASSES

    for cls in type(scheduler).__mro__:
        if cls.__name__ in SUPPORTED_CLASSES:
            return cls.__name__
    return None


def config_of(scheduler, class_name):
    cfg = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    cfg["_class_name"] = class_name
    return cfg


def run_loop(scheduler, n, model, x_T, noise, class_name=None):
    """The final latents (float64 numpy) of `scheduler`'s pipeline loop at n steps (`diffusers_loops.run_pipeline`)."""
    return run_pipeline(scheduler, model, x_T, noise, n, class_name=class_name)[0]


class _Draws:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, shape):
        return self.rng.standard_normal(tuple(shape))


def start_state(plan):
    """(alpha, sigma) that the loop's first latents (x_T * init_noise_sigma) stand for: VE (alpha = 1, sigma =
    sigmas[0]) for the classes that scale their input (init_noise_sigma > 1), else the schedule at the first
    timestep (flow: timestep / 1000)."""
    if plan.init_noise_sigma > 1.0 and plan.sigmas is not None:
        return 1.0, float(plan.sigmas[0])
    t = float(plan.timesteps[0]) / (1000.0 if type(plan.schedule).__name__ == "Flow" else 1.0)
    return float(plan.schedule.alpha(t)), float(plan.schedule.sigma(t))


def measure_scheduler_order(scheduler, class_name, config, steps=(10, 20, 40, 80)):
    """(observed order, errors) of the diffusers loop on Gaussian data against the exact flow map from the start
    state to the data (alpha = 1, sigma = 0): whatever keeps a loop from the data (a final sigma_min, alphabar[0]
    instead of 1) shows as a low order."""
    from diffspec.reference.interop import from_diffusers

    errors = []
    for n in steps:
        plan = from_diffusers(config, n)
        a0, s0 = start_state(plan)
        z = np.random.default_rng(0).standard_normal((16, 2))
        latents = a0 * MEAN + np.sqrt(a0**2 * STD**2 + s0**2) * z
        x_T = latents / plan.init_noise_sigma
        model = model_for(plan, GAUSS)
        out = run_loop(scheduler, n, model, x_T.reshape(16, 2, 1, 1), _Draws(1), class_name).reshape(16, 2)
        errors.append(float(np.max(np.abs(out - gaussian_flow_map(latents, MEAN, STD, a0, s0, 1.0, 0.0)))))
    errors = np.array(errors)
    if np.any(errors <= 0) or not np.all(np.isfinite(errors)):
        return float("nan"), errors
    return float(-np.polyfit(np.log(steps), np.log(errors), 1)[0]), errors


def _line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_scheduler(
    scheduler, *, steps: tuple[int, ...] = (10, 25), order: bool = True, as_class: str | None = None
) -> Report:
    """Score a diffusers scheduler instance against `from_diffusers(scheduler.config)` and exact answers.

    scheduler: anything with diffusers' `set_timesteps` / `step` (and `scale_model_input`, `config`, `timesteps`,
    on torch tensors), custom subclasses of a supported class included. as_class: the diffusers class it claims to
    behave as, for a scheduler that does not derive from one (a port with diffusers' API): its config is read as
    that class's and it runs that class's pipeline loop. steps: the step counts compared. order: also measure the
    order.
    """
    for attr in ("set_timesteps", "config"):
        if not hasattr(scheduler, attr):
            raise ValueError(
                f"scheduler={type(scheduler).__name__}: has no `{attr}`: expected a diffusers scheduler instance"
            )
    from diffspec.reference.interop import SUPPORTED_CLASSES, from_diffusers

    if as_class is not None and as_class not in SUPPORTED_CLASSES:
        raise ValueError(f"as_class={as_class!r}: expected one of {', '.join(SUPPORTED_CLASSES)}")
    report = Report(f"{type(scheduler).__name__} (diffusers scheduler)")
    class_name = as_class or counterpart(scheduler)
    if class_name is None:
        report.fail("class", type(scheduler).__name__, expected="one of " + ", ".join(SUPPORTED_CLASSES))
        return report
    report.add("class", type(scheduler).__name__, class_name, "", True, note="as claimed" if as_class else "")
    config = config_of(scheduler, class_name)
    mixture = standard_mixture_2d()
    for n in steps:
        try:
            plan = from_diffusers(config, n)
        except ValueError as exc:
            report.fail(f"config ({n} steps)", _line(exc), expected="a config from_diffusers implements")
            return report
        check = f"loop ({n} steps, 2-D mixture)"
        x_T = np.random.default_rng(3).standard_normal(latent_shape(class_name, 32))
        model = model_for(plan, mixture)
        try:
            want = plan.run(model, x_T, noise=_Draws(7) if plan.stochastic else None)
            got, seen = run_pipeline(scheduler, model, x_T, _Draws(7), n, class_name=class_name)
        except Exception as exc:
            report.fail(check, f"raised {type(exc).__name__}: {_line(exc)[:160]}", expected="the reference's sample")
            continue
        # the times the model saw (ScoreSdeVe's model sees sigma) against the plan's
        want_t = np.asarray(plan.sigmas if class_name == "ScoreSdeVeScheduler" else plan.timesteps, dtype=np.float64)
        if seen.shape != want_t.shape:
            report.fail(f"timesteps ({n} steps)", f"{len(seen)} model calls", expected=f"{len(want_t)} timesteps")
        else:
            err = float(np.max(np.abs(seen - want_t)) / max(1.0, float(np.max(np.abs(want_t)))))
            report.add(f"timesteps ({n} steps)", err, 0.0, TIMESTEP_TOL, err <= TIMESTEP_TOL)
        if plan.sigmas is not None and hasattr(scheduler, "sigmas") and class_name != "ScoreSdeVeScheduler":
            got_s = np.asarray(scheduler.sigmas, dtype=np.float64)
            want_s = np.asarray(plan.sigmas, dtype=np.float64)
            if got_s.shape != want_s.shape:  # Heun / KDPM2 interleave their intermediate sigmas
                got_s, want_s = np.unique(got_s)[::-1], np.unique(want_s)[::-1]
            if got_s.shape != want_s.shape:
                report.fail(f"sigmas ({n} steps)", f"{len(got_s)} sigmas", expected=f"{len(want_s)} sigmas")
            else:
                err = float(np.max(np.abs(got_s - want_s) / np.maximum(np.abs(want_s), 1e-3)))
                report.add(f"sigmas ({n} steps)", err, 0.0, LOOP_TOL, err <= LOOP_TOL)
        if got.shape != want.shape or not np.all(np.isfinite(got)):
            report.fail(check, f"shape {got.shape}, finite: {bool(np.all(np.isfinite(got)))}", expected=want.shape)
            continue
        err = float(np.max(np.abs(got - want))) / max(1.0, float(np.max(np.abs(want))))
        report.add(check, err, 0.0, LOOP_TOL, err <= LOOP_TOL)
    expected = nominal_order(class_name, config)
    if order and expected is not None:
        try:
            slope, errors = measure_scheduler_order(scheduler, class_name, config)
        except Exception as exc:
            report.fail("order", f"raised {type(exc).__name__}: {str(exc)[:160]}", expected=expected)
            return report
        # the final step onto sigma = 0 of a multistep solver is first order in its own step, and the warm-up caps
        # multistep orders above 2: the loop is held to min(nominal, 2)
        target = min(expected, 2)
        ok = math.isfinite(slope) and slope > target - ORDER_TOL
        known = [k for k in ("clip_sample", "thresholding") if config.get(k)]
        known += ["set_alpha_to_one=False"] if config.get("set_alpha_to_one") is False else []
        known += ["final_sigmas_type=sigma_min"] if config.get("final_sigmas_type") == "sigma_min" else []
        why = f" (the config has {', '.join(known)}: the loop does not end on the data)" if known else ""
        report.add(
            "order (gaussian, 10-80 steps)",
            slope,
            f">= {target}",
            ORDER_TOL,
            ok,
            note="" if ok else f"errors {np.round(errors, 8).tolist()}; nominal order {expected}{why}",
        )
    return report
