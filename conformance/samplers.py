"""`check_sampler`: a sampler scored against the contract of the registry sampler it claims to be.

The checks, each a row of the `Report` (a check's name is the part of the row's label before " ("):

- `signature`: the function fits its calling convention;
- `clean end`: on grids that end at sigma = 0 (three schedule families), a finite sample of x's shape, no model
  call at sigma = 0, the caller's x_T untouched;
- `draws`: the number of noise draws (each of x's shape) equals the contract's count for the options;
- `noise contract`: the same draws give the same sample; a stochastic sampler without `noise` raises ValueError
  naming it, a deterministic one gives the same sample with `noise=None` (diffspec convention);
- `option validation`: each value the contract lists as invalid is refused with a ValueError naming the option
  (diffspec convention);
- `agreement`: step by step against the reference sampler of that name, given the same x_T, grid, model and
  draws: the same model times, the same state at every model call and the same sample, to a tolerance derived
  from the arithmetic's precision (a failing row names the first call where they part);
- `order`: deterministic samplers (and stochastic ones at the options that make them deterministic) on the exact
  probability-flow map of Gaussian data, on three schedule families, between fixed log-SNR endpoints: the
  observed order against the contract's (first step split so that multistep warm-up does not cap it);
- `distribution`: stochastic samplers' outputs for the 2-D Gaussian mixture (consistency samplers: Gaussian data
  and its exact consistency function) against the exact distribution: mean and covariance within 5 standard
  errors, and a two-sample Kolmogorov-Smirnov test per coordinate (p > 1e-3).

Bad input never crashes the kit: a sampler that raises, returns the wrong shape or NaN gives a failing row that
says so. Bad usage (an unknown registry name or convention, options the contract does not have) is a ValueError.
"""

from collections.abc import Mapping

import numpy as np
from diffspec.conformance import _world
from diffspec.conformance.conventions import (
    CONVENTIONS,
    accepts,
    adapt,
    endpoint_grid,
    signature_problem,
    takes_endpoints,
)
from diffspec.conformance.report import Report
from diffspec.reference.grids import make_grid
from diffspec.reference.noise import CountingNoise
from diffspec.reference.samplers import SAMPLER_ALIASES, SAMPLER_INFO, Requirement
from diffspec.reference.schedules import make_schedule

F64_RTOL = 1e-9  # a few dozen float64 operations per step on O(1)-conditioned coefficients, a hundredfold margin
ADAPTIVE_RTOL = 1e-7  # step-size control feeds rounding back into the accepted times
ORDER_TOL = 0.3
ORDER_TOL_HIGH = 0.5  # fourth order approaches its slope from below on affordable grids; a defect drops it by >= 1
N_DISTRIBUTION = 2000


def sampler_info(name):
    """The contract of registry sampler `name` (an alias resolves), or a ValueError listing the known names."""
    key = SAMPLER_ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in SAMPLER_INFO:
        raise ValueError(f"unknown sampler {name!r}: expected one of {', '.join(sorted(SAMPLER_INFO))}")
    return SAMPLER_INFO[key]


def tolerance(info, precision: str, steps: int, options=None) -> float:
    """Relative agreement tolerance for `precision`: float64 a fixed margin over rounding; float32 derived from
    float32 epsilon times the number of rounded operations that feed the result (model inputs and outputs are
    rounded at every call, the state at every step), with a factor 16 for the coefficients' conditioning. An
    adaptive solver in float32 may accept different steps: each run is within its own error control of the
    exact solution, so two runs agree to 2 (rtol + atol)."""
    if precision == "float64":
        return ADAPTIVE_RTOL if info.adaptive else F64_RTOL
    if precision == "float32" and info.adaptive:
        opts = info.with_defaults(options)
        if "rtol" in opts and "atol" in opts:
            return 2 * (float(opts["rtol"]) + float(opts["atol"]))
    if precision == "float32":
        calls = (info.calls_per_step or 4) * steps
        return 16 * float(np.finfo(np.float32).eps) * (calls + steps)
    raise ValueError(f"precision={precision!r}: expected 'float64' or 'float32'")


class _Recorder:
    """The model wrapped to record the times it is called at and the states it sees (every intermediate x: the
    step-by-step trace), and to count calls at sigma = 0."""

    def __init__(self, denoise, schedule):
        self.denoise, self.schedule, self.times, self.inputs, self.clean_calls = denoise, schedule, [], [], 0

    def __call__(self, x, t):
        t = float(np.asarray(t).reshape(-1)[0])
        self.times.append(t)
        self.inputs.append(np.array(x, dtype=np.float64, copy=True))
        if self.schedule.sigma(t) == 0:
            self.clean_calls += 1
        return self.denoise(x, t)


class _Draws:
    """A seeded standard-normal stream that records shapes; two with the same seed give the same draws."""

    def __init__(self, seed):
        self.rng, self.shapes = np.random.default_rng(seed), []

    def __call__(self, shape):
        self.shapes.append(tuple(shape))
        return self.rng.standard_normal(tuple(shape))


def _call(run, *args, **kwargs):
    """(output, None) or (None, a one-line problem): exceptions, wrong shapes and NaN become problems."""
    x_T = args[1]
    try:
        with np.errstate(all="ignore"):
            out = run(*args, **kwargs)
    except Exception as err:  # the user's code may raise anything: report it, never crash the kit
        return None, f"raised {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    try:
        out = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float64)
    except Exception as err:
        return None, f"returned {type(out).__name__} that is not an array ({err})"
    if out.shape != np.shape(x_T):
        return None, f"returned shape {out.shape}: expected x_T's shape {np.shape(x_T)}"
    if not np.all(np.isfinite(out)):
        return None, f"returned {int(np.sum(~np.isfinite(out)))} NaN or inf values"
    return out, None


def _scale(*arrays):
    return max(1.0, *(float(np.max(np.abs(a))) for a in arrays))


def check_sampler(
    fn,
    name: str,
    *,
    convention: str = "diffspec",
    options: Mapping | None = None,
    reference_options: Mapping | None = None,
    precision: str = "float64",
    thorough: bool = False,
    all_orders: bool = False,
    checks: tuple[str, ...] | None = None,
) -> Report:
    """Score sampler `fn` against the contract of registry sampler `name` (see the module docstring).

    fn: the sampler, in `convention` ("diffspec" or "k-diffusion", see `diffspec.conformance.conventions`).
    options: keyword options passed to `fn` with every call (in its own convention's names).
    reference_options: the registry sampler's options that `fn` with `options` claims to equal (default: `options`
      in the diffspec convention; in k-diffusion's, the `options` whose names the contract has, no lower-order
      final steps and variant="k-diffusion" where the reference has them, `kdiffusion.registry_options`).
    precision: the arithmetic `fn` runs in ("float64" or "float32"), which sets the agreement tolerance.
    thorough: also the contract's further (options, order) pairs, agreement and distributions at its probe option
      values, and a larger distribution sample. all_orders: the further (options, order) pairs only.
    checks: run only these checks (names as in the module docstring); default all that apply.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r}: expected one of {', '.join(CONVENTIONS)}")
    info = sampler_info(name)
    options = dict(options or {})
    if reference_options is None and convention == "k-diffusion":
        from diffspec.conformance.kdiffusion import registry_options

        own = {k: v for k, v in options.items() if k in info.options}
        reference_options = {**registry_options(getattr(fn, "__name__", ""), info), **own}
    elif reference_options is None:
        reference_options = options
    reference_options = dict(reference_options)
    for key, value in reference_options.items():
        if key not in info.options:
            if accepts(info.fn, key):  # a keyword of the reference function the contract does not list (yet)
                continue
            known = ", ".join(info.options) or "none"
            raise ValueError(f"{info.name} has no option {key!r} (its options: {known})")
        if not info.options[key].allows(value):
            raise ValueError(f"{key}={value!r} is not allowed for {info.name}: expected {info.options[key].describe()}")
    tolerance(info, precision, 1)  # validates precision
    label = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
    report = Report(f"{label} as {info.name} ({convention} convention, {precision})")
    problem = signature_problem(fn, convention, options)
    if problem:
        report.fail("signature", problem, expected=convention)
        return report
    report.add("signature", "fits", convention, "", True)
    run = adapt(fn, convention, options)
    ctx = _Context(info, fn, run, convention, options, reference_options, precision, thorough)
    ctx.all_orders = thorough or all_orders
    wanted = set(checks) if checks else None
    for check_name, check in _CHECKS:
        if wanted is None or check_name in wanted:
            try:
                check(ctx, report)
            except Exception as err:  # a defect of the kit itself must still leave a report
                report.fail(check_name, f"the check itself failed: {type(err).__name__}: {err}")
    return report


class _Context:
    all_orders: bool  # set by the caller: measure the order under every listed option set

    def __init__(self, info, fn, run, convention, options, reference_options, precision, thorough):
        self.info, self.fn, self.run, self.convention = info, fn, run, convention
        self.options, self.reference_options = options, reference_options
        self.precision, self.thorough = precision, thorough
        self.run_options = info.with_defaults(reference_options)
        # k-diffusion works in sigma_ve = sigma / alpha: its samplers cannot start where alpha = 0
        self.requires = info.requires | ({Requirement.ALPHA_START} if convention == "k-diffusion" else set())
        # k-diffusion's dpm_fast / dpm_adaptive take (sigma_min, sigma_max[, n]): they take log sigma_min, so they
        # cannot end at sigma = 0, and they pick their own times between the end points (`endpoint_grid`)
        self.endpoints = convention == "k-diffusion" and takes_endpoints(fn)

    def stepped(self, label, schedule, grid):
        """(label, grid) the sampler steps on when given `grid`: `grid` itself, or for an end-points function the
        times it picks between grid[0] and the last noisy time."""
        if not self.endpoints:
            return label, grid
        grid = endpoint_grid(self.fn, schedule, grid)
        return f"{label} to sigma_min", grid

    def reference(self, **extra):
        opts = {**self.reference_options, **extra}
        return lambda denoise, x_T, grid, schedule, *, noise=None: self.info.fn(
            denoise, x_T, grid, schedule, noise=noise, **opts
        )

    def variant(self, extra: Mapping):
        """(run, reference) with `extra` registry options; None where `fn`'s convention cannot express them."""
        own = {}
        for key, value in extra.items():
            if self.convention == "diffspec" or accepts(self.fn, key):
                own[key] = value
            elif key in self.info.options and value != self.info.options[key].default:
                # e.g. lower_order_final: a k-diffusion function has no such switch; its own behaviour is measured
                continue
        return adapt(self.fn, self.convention, {**self.options, **own}), self.reference(**extra)

    @property
    def stochastic(self):
        return self.info.draw_count(3, self.reference_options) != 0


# ------------------------------------------------------------------------------------------------------ checks
def _check_clean_end(ctx, report):
    steps = max(5, ctx.info.min_grid)
    for label, schedule, grid in _world.clean_end_cases(ctx.info, steps, ctx.requires):
        check = f"clean end ({label}, {steps} steps)"
        if ctx.endpoints:
            _refuses_clean_end(ctx, report, check, schedule, grid)
            label, grid = ctx.stepped(label, schedule, grid)
            check = f"noisy end ({label}, {len(grid) - 1} steps)"
        model = _Recorder(_world.MIXTURE.denoiser(schedule), schedule)
        x_T = np.random.default_rng(0).standard_normal((5, 2)) * schedule.sigma(grid[0])
        keep = x_T.copy()
        out, problem = _call(ctx.run, model, x_T, grid, schedule, noise=np.random.default_rng(1))
        if problem:
            report.fail(check, problem, expected="a finite sample")
        elif model.clean_calls:
            report.fail(check, f"{model.clean_calls} model calls at sigma = 0", expected="no model call at sigma = 0")
        elif not np.array_equal(x_T, keep):
            report.fail(check, "x_T was modified in place", expected="the caller's x_T untouched")
        else:
            report.add(check, "finite, no call at sigma = 0", "finite, no call at sigma = 0", "", True)


def _refuses_clean_end(ctx, report, check, schedule, grid):
    """A function that takes (sigma_min, sigma_max) and log sigma_min cannot end at sigma = 0: it must say so with a
    ValueError naming sigma_min (a finite sample is fine too), never crash otherwise or return NaN."""
    x_T = np.random.default_rng(0).standard_normal((5, 2)) * schedule.sigma(grid[0])
    try:
        with np.errstate(all="ignore"):
            out = ctx.run(_world.MIXTURE.denoiser(schedule), x_T, grid, schedule, noise=np.random.default_rng(1))
    except ValueError as err:
        first = str(err).splitlines()[0] if str(err) else ""
        ok = "sigma_min" in first
        report.add(
            check,
            f"ValueError: {first[:120]}",
            "a finite sample, or a ValueError naming sigma_min",
            "",
            ok,
            note="takes log sigma_min: it ends at sigma_min > 0 by design; the noisy-end row checks its sample",
        )
        return
    except Exception as err:
        report.fail(check, f"raised {type(err).__name__}: {str(err)[:120]}", expected="a ValueError naming sigma_min")
        return
    finite = np.all(np.isfinite(np.asarray(out, dtype=np.float64)))
    report.add(check, "finite" if finite else "NaN or inf", "a finite sample", "", bool(finite))


def _check_draws(ctx, report):
    info, steps = ctx.info, 7
    label, schedule, grid = _world.clean_end_cases(info, steps, ctx.requires)[0]
    expected = info.draw_count(steps, ctx.reference_options)
    if ctx.endpoints:  # the contract counts draws on grids that end at sigma = 0: count the reference's own
        label, grid = ctx.stepped(label, schedule, grid)
        steps, reference_draws = len(grid) - 1, CountingNoise(1)
        x_0 = np.random.default_rng(0).standard_normal((8, 2)) * schedule.sigma(grid[0])
        ctx.reference()(_world.MIXTURE.denoiser(schedule), x_0, grid, schedule, noise=reference_draws)
        expected = len(reference_draws.shapes)
    counting = CountingNoise(1)
    x_T = np.random.default_rng(0).standard_normal((8, 2)) * schedule.sigma(grid[0])
    out, problem = _call(ctx.run, _world.MIXTURE.denoiser(schedule), x_T, grid, schedule, noise=counting)
    check = f"draws ({label}, {steps} steps)"
    if problem:
        report.fail(check, problem, expected=expected)
        return
    bad_shapes = [s for s in counting.shapes if s != x_T.shape]
    if bad_shapes:
        report.fail(check, f"a draw of shape {bad_shapes[0]}", expected=f"draws of x's shape {x_T.shape}")
    elif expected is None:
        report.add(
            check,
            len(counting.shapes),
            "grid-dependent",
            "",
            True,
            note="the contract's count depends on the grid (e.g. Heun's churn window); only the shapes are checked",
        )
    else:
        report.add(check, len(counting.shapes), expected, 0, len(counting.shapes) == expected)


def _check_noise_contract(ctx, report):
    if ctx.convention != "diffspec":
        return
    label, schedule, grid = _world.clean_end_cases(ctx.info, 6, ctx.requires)[0]
    denoise = _world.MIXTURE.denoiser(schedule)
    x_T = np.random.default_rng(2).standard_normal((6, 2)) * schedule.sigma(grid[0])
    first, p1 = _call(ctx.run, denoise, x_T, grid, schedule, noise=CountingNoise(3))
    again, p2 = _call(ctx.run, denoise, x_T, grid, schedule, noise=CountingNoise(3))
    if p1 or p2:
        report.fail("noise contract (replay)", p1 or p2, expected="the same sample twice")
        return
    same = float(np.max(np.abs(first - again)))
    report.add("noise contract (replay)", same, 0.0, 0.0, same == 0.0)
    if ctx.stochastic:
        try:
            ctx.run(denoise, x_T, grid, schedule, noise=None)
            report.fail("noise contract (noise=None)", "ran without noise", expected="ValueError naming `noise`")
        except ValueError as err:
            ok = "noise" in str(err)
            report.add(
                "noise contract (noise=None)",
                "ValueError" + ("" if ok else " not naming noise"),
                "ValueError naming `noise`",
                "",
                ok,
            )
        except Exception as err:
            report.fail("noise contract (noise=None)", f"raised {type(err).__name__}", expected="ValueError")
    else:
        out, problem = _call(ctx.run, denoise, x_T, grid, schedule, noise=None)
        diff = float("nan") if problem else float(np.max(np.abs(out - first)))
        report.add("noise contract (noise=None)", problem or diff, 0.0, 0.0, problem is None and diff == 0.0)


def _check_option_validation(ctx, report):
    if ctx.convention != "diffspec":
        return
    schedule = make_schedule("edm")
    grid = make_grid("karras", schedule, 4)
    for key, option in ctx.info.options.items():
        for value in option.invalid:
            check = f"option validation ({key}={value!r})"
            try:
                ctx.fn(
                    _world.GAUSS.denoiser(schedule),
                    np.zeros((2, 2)),
                    grid,
                    schedule,
                    noise=np.random.default_rng(0),
                    **{**ctx.options, key: value},
                )
                report.fail(check, "accepted", expected=f"ValueError naming {key}")
            except ValueError as err:
                report.add(
                    check,
                    "ValueError" + ("" if key in str(err) else f" not naming {key}: {err}"),
                    f"ValueError naming {key}",
                    "",
                    key in str(err),
                )
            except Exception as err:
                report.fail(check, f"raised {type(err).__name__}: {err}", expected=f"ValueError naming {key}")


def _check_input_validation(ctx, report):
    """Bad grids (increasing, repeated, a single time): a ValueError naming the grid."""
    if ctx.convention != "diffspec":
        return
    label, schedule, grid = _world.clean_end_cases(ctx.info, 4, ctx.requires)[0]
    x_T = np.random.default_rng(0).standard_normal((2, 2)) * schedule.sigma(grid[0])
    cases = [
        ("grid", "increasing grid", grid[::-1].copy(), x_T),
        ("grid", "repeated time", grid[[0, 0, -1]], x_T),
        ("grid", "one time", grid[:1], x_T),
    ]
    _refused(ctx, report, "input validation", schedule, cases)


def _check_value_validation(ctx, report):
    """A NaN in x_T: a ValueError naming x_T (the reference checks values; a torch backend that keeps host syncs
    out of its sampling loop may leave this to its caller)."""
    if ctx.convention != "diffspec":
        return
    label, schedule, grid = _world.clean_end_cases(ctx.info, 4, ctx.requires)[0]
    _refused(ctx, report, "value validation", schedule, [("x_T", "NaN in x_T", grid, np.full((2, 2), np.nan))])


def _refused(ctx, report, name, schedule, cases):
    """Each (word, what, grid, x_T) case must raise a ValueError whose message names `word`."""
    denoise = _world.MIXTURE.denoiser(schedule)
    for word, what, g, x in cases:
        check = f"{name} ({what})"
        try:
            with np.errstate(all="ignore"):
                ctx.run(denoise, x, g, schedule, noise=np.random.default_rng(0))
            report.fail(check, "accepted", expected=f"ValueError naming {word}")
        except ValueError as err:
            ok = word in str(err)
            report.add(
                check, "ValueError" + ("" if ok else f" not naming {word}: {err}"), f"ValueError naming {word}", "", ok
            )
        except Exception as err:
            report.fail(check, f"raised {type(err).__name__}: {str(err)[:120]}", expected=f"ValueError naming {word}")


def _check_requirements(ctx, report):
    """Where alpha = 0 at grid[0] (flow at t = 1): a sampler that requires alpha > 0 refuses with a ValueError
    naming alpha; any other runs to a finite sample."""
    if ctx.convention != "diffspec" or Requirement.FLOW_SCHEDULE in ctx.requires:
        return
    schedule = make_schedule("flow")
    grid = make_grid("uniform", schedule, 6)
    x_T = np.random.default_rng(0).standard_normal((4, 2))
    denoise = _world.MIXTURE.denoiser(schedule)
    if Requirement.CONSISTENCY_MODEL in ctx.requires:
        denoise = _world.consistency_function(schedule, grid[-1])
    check = "requirements (alpha = 0 at grid[0])"
    if Requirement.ALPHA_START in ctx.requires:
        try:
            with np.errstate(all="ignore"):
                ctx.run(denoise, x_T, grid, schedule, noise=np.random.default_rng(1))
            report.fail(check, "accepted", expected="ValueError naming alpha (the contract requires alpha > 0)")
        except ValueError as err:
            ok = "alpha" in str(err)
            report.add(
                check, "ValueError" + ("" if ok else f" not naming alpha: {err}"), "ValueError naming alpha", "", ok
            )
        except Exception as err:
            report.fail(check, f"raised {type(err).__name__}: {str(err)[:120]}", expected="ValueError naming alpha")
    else:
        out, problem = _call(ctx.run, denoise, x_T, grid, schedule, noise=np.random.default_rng(1))
        report.add(check, problem or "finite sample", "finite sample", "", problem is None)


def _agreement_rows(ctx, report, run, reference, suffix, steps=10):
    info = ctx.info
    rtol = tolerance(info, ctx.precision, steps, ctx.reference_options)
    for label, schedule, grid in _world.agreement_cases(info, steps):
        label, grid = ctx.stepped(label, schedule, grid)
        mix = _world.MIXTURE
        denoise = mix.denoiser(schedule)
        if Requirement.CONSISTENCY_MODEL in info.requires:
            denoise = _world.consistency_function(schedule, grid[-1])
        x_T = mix.sample_xt(6, schedule.alpha(grid[0]), schedule.sigma(grid[0]), np.random.default_rng(4))
        want_model, got_model = _Recorder(denoise, schedule), _Recorder(denoise, schedule)
        want_draws, got_draws = _Draws(5), _Draws(5)
        want, p_ref = _call(reference, want_model, x_T, grid, schedule, noise=want_draws)
        check = f"agreement ({label}, {len(grid) - 1} steps{suffix})"
        if p_ref:
            report.fail(check, f"the reference {p_ref}", note="the reference itself fails on this case")
            continue
        got, problem = _call(run, got_model, x_T, grid, schedule, noise=got_draws)
        if problem:
            report.fail(check, problem, expected="the reference's sample")
            continue
        if ctx.convention == "diffspec" and got_draws.shapes != want_draws.shapes:
            report.fail(
                check,
                f"{len(got_draws.shapes)} draws",
                expected=f"{len(want_draws.shapes)} draws as the reference, in the same order and shapes",
            )
            continue
        if not info.adaptive:
            t_ref, t_got = np.array(want_model.times), np.array(got_model.times)
            if t_ref.shape != t_got.shape or not np.allclose(t_got, t_ref, rtol=rtol, atol=rtol * (1 + abs(grid[0]))):
                report.fail(
                    f"agreement ({label}, model times{suffix})",
                    f"{len(t_got)} calls at {np.round(t_got[:4], 6).tolist()}...",
                    expected=f"{len(t_ref)} calls at {np.round(t_ref[:4], 6).tolist()}...",
                )
                continue
        err = float(np.max(np.abs(got - want))) / _scale(want, x_T)
        note = ""
        if not info.adaptive:  # the states the model saw, call by call: where the two first part
            for k, (a, b) in enumerate(zip(got_model.inputs, want_model.inputs)):
                step_err = float(np.max(np.abs(a - b))) / _scale(b, x_T) if a.shape == b.shape else np.inf
                err = max(err, step_err)
                if step_err > rtol and not note:
                    note = f"first differs at model call {k} (t = {want_model.times[k]:.6g}): {step_err:.3g}"
            if err > rtol and not note:
                note = "every model call saw the same state: only what follows the last call differs"
        report.add(check, err, 0.0, rtol, err <= rtol, note=note)


def _check_agreement(ctx, report):
    _agreement_rows(ctx, report, ctx.run, ctx.reference(), "")
    if ctx.thorough and ctx.convention == "diffspec":
        for key, option in ctx.info.options.items():
            for value in option.probe:
                if key in ctx.options:
                    continue
                run, reference = ctx.variant({key: value})
                _agreement_rows(ctx, report, run, reference, f", {key}={value!r}")


def measure_order(run, info, family, order, noise=None, *, warm=True, steps=None):
    """(observed order, errors, steps) of `run` on an exact probability-flow map of `family` (Gaussian data; the
    2-D mixture against a tight scipy solution for the flow families), for a method of nominal `order` (which
    picks the log-SNR span and step counts, `_world.order_setup`; `steps` overrides the counts). `warm=False`
    measures on the plain grid, where lower-order warm-up steps may cap the order."""
    _, schedule_name, params, grid_name = family
    schedule = make_schedule(schedule_name, **params)
    mixture = Requirement.FLOW_SCHEDULE in info.requires
    lam_0, lam_1, default_steps = _world.order_setup(order, mixture)
    steps = default_steps if steps is None else list(steps)
    data = _world.MIXTURE if mixture else _world.GAUSS
    exact = None
    errors = []
    for n in steps:
        grid = _world.order_grid(schedule, grid_name, n, lam_0, lam_1, order=order, warm=warm)
        if mixture:
            x_T = data.sample_xt(6, schedule.alpha(grid[0]), schedule.sigma(grid[0]), np.random.default_rng(1))
            exact = _world.mixture_flow(schedule, x_T, grid[0], grid[-1]) if exact is None else exact
        else:
            x_T = _world.gauss_start(schedule, grid[0])
            exact = _world.exact_flow(schedule, x_T, grid)
        draws = None if noise is None else np.random.default_rng(noise)
        out, problem = _call(run, data.denoiser(schedule), x_T, grid, schedule, noise=draws)
        if problem:
            return None, problem, steps
        errors.append(float(np.max(np.abs(out - exact))))
    errors = np.array(errors)
    if np.any(errors <= 0) or not np.all(np.isfinite(errors)):
        return None, f"errors {errors.tolist()}", steps
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    return float(slope), errors, steps


def _check_order(ctx, report):
    cases = ctx.info.order_cases()
    if ctx.convention != "diffspec":  # the registry options a foreign function claims to equal pick its order
        cases = tuple(
            (opts, order)
            for opts, order in cases
            if all(ctx.info.with_defaults(opts).get(k, v) == v for k, v in ctx.reference_options.items())
        )
    if not ctx.all_orders:
        cases = cases[:1]
    for opts, order in cases:
        if ctx.convention != "diffspec" and any(k in ctx.options and ctx.options[k] != v for k, v in opts.items()):
            continue
        if any(
            k in ctx.reference_options and ctx.reference_options[k] != v
            for k, v in opts.items()
            if ctx.convention == "diffspec"
        ):
            continue  # the user fixed an option the order does not hold for
        run, _ = ctx.variant(opts)
        suffix = "".join(f", {k}={v!r}" for k, v in opts.items() if k != "lower_order_final")
        for family in _world.families_for(ctx.info):
            # diffspec's convention promises no draws where the options make a sampler deterministic; others
            # (k-diffusion draws at eta = 0 and multiplies the draws by zero) get a noise source.
            slope, errors, steps = measure_order(
                run, ctx.info, family, order, noise=None if ctx.convention == "diffspec" else 0
            )
            check = f"order ({family[0]}{suffix})"
            if slope is None:
                report.fail(check, errors, expected=order)
            elif not np.all(np.diff(errors) < 0):
                report.fail(
                    check,
                    f"error does not decrease with steps {steps}: {np.round(errors, 12).tolist()}",
                    expected=order,
                )
            else:
                tol = ORDER_TOL if order < 4 else ORDER_TOL_HIGH
                report.add(
                    check,
                    slope,
                    order,
                    tol,
                    abs(slope - order) < tol,
                    note="" if abs(slope - order) < tol else f"errors {errors.tolist()} at {steps} steps",
                )


def _check_distribution(ctx, report):
    _distribution_rows(ctx, report, ctx.run, "")
    if ctx.thorough and ctx.convention == "diffspec":
        for key, option in ctx.info.options.items():
            for value in option.probe:
                if key not in ctx.options and ctx.info.draw_count(3, {**ctx.reference_options, key: value}) != 0:
                    run, _ = ctx.variant({key: value})
                    _distribution_rows(ctx, report, run, f", {key}={value!r}")


def _distribution_rows(ctx, report, run, suffix):
    if not ctx.stochastic and not suffix:
        return
    info = ctx.info
    n = 2 * N_DISTRIBUTION if ctx.thorough else N_DISTRIBUTION
    rng = np.random.default_rng(3)
    if Requirement.CONSISTENCY_MODEL in info.requires:
        schedule = make_schedule("edm")
        grid = make_grid("karras", schedule, 4)
        mean, cov = _world.MEAN, np.diag(_world.STD**2)
        denoise = _world.consistency_function(schedule, grid[-1])
        x_T = _world.GAUSS.sample_xt(n, schedule.alpha(grid[0]), schedule.sigma(grid[0]), rng)
        big = _world.GAUSS.sample(100_000, np.random.default_rng(99))[0]
        fresh = _world.GAUSS.sample(n, np.random.default_rng(4))[0]
        label = f"gaussian, exact consistency function, edm/karras, 4 steps{suffix}"
    else:
        mix = _world.MIXTURE
        schedule = make_schedule("vp")
        steps = 400 if info.calls_per_step == 1 and info.name in ("euler_maruyama",) else 200
        steps = steps // (info.calls_per_step or 1)
        grid = make_grid("uniform_lam", schedule, steps - 1, t_start=float(schedule.t_of_lam(-5.0)))
        grid = np.append(grid, 0.0)
        label_grid, grid = ctx.stepped("vp/uniform_lam", schedule, grid)
        mean, cov = mix.mean(), mix.cov()
        denoise = mix.denoiser(schedule)
        x_T = mix.sample_xt(n, schedule.alpha(grid[0]), schedule.sigma(grid[0]), rng)
        big = mix.sample(100_000, np.random.default_rng(99))[0]
        fresh = mix.sample(n, np.random.default_rng(4))[0]
        label = f"2-D mixture, {label_grid}, {len(grid) - 1} steps{suffix}"
    out, problem = _call(run, denoise, x_T, grid, schedule, noise=rng)
    if problem:
        report.fail(f"distribution ({label})", problem, expected="samples of the data distribution")
        return
    from scipy import stats

    centred = big - mean
    se_mean = np.sqrt(np.diag(cov) / n)
    se_cov = np.array([[np.std(centred[:, i] * centred[:, j]) for j in range(2)] for i in range(2)]) / np.sqrt(n)
    z_mean = float(np.max(np.abs(out.mean(0) - mean) / se_mean))
    z_cov = float(np.max(np.abs(np.cov(out.T) - cov) / se_cov))
    report.add(
        f"distribution (mean, {label})",
        z_mean,
        0.0,
        5.0,
        z_mean < 5.0,
        note="" if z_mean < 5 else "measured in standard errors of the sample mean",
    )
    report.add(
        f"distribution (covariance, {label})",
        z_cov,
        0.0,
        5.0,
        z_cov < 5.0,
        note="" if z_cov < 5 else "measured in standard errors of the sample covariance",
    )
    p = min(stats.ks_2samp(out[:, k], fresh[:, k]).pvalue for k in range(2))
    report.add(f"distribution (KS p-value, {label})", float(p), ">= 1e-3", 1e-3, p >= 1e-3)


_CHECKS = (
    ("clean end", _check_clean_end),
    ("draws", _check_draws),
    ("noise contract", _check_noise_contract),
    ("option validation", _check_option_validation),
    ("input validation", _check_input_validation),
    ("value validation", _check_value_validation),
    ("requirements", _check_requirements),
    ("agreement", _check_agreement),
    ("order", _check_order),
    ("distribution", _check_distribution),
)
CHECKS = tuple(name for name, _ in _CHECKS)
