"""`check_schedule`: a noise schedule given as `alphas_cumprod` or as alpha / sigma callables, against the
registry schedule it claims to be (`diffspec.reference.schedules.make_schedule(name, **params)`)."""

import numpy as np
from diffspec.conformance.report import Report


def check_schedule(
    name: str, *, alphas_cumprod=None, alpha=None, sigma=None, params=None, rtol: float = 1e-6, times=None
) -> Report:
    """Score a schedule against registry schedule `name` (with `params`).

    alphas_cumprod: diffusers-style alphabar over the T training steps (discrete schedules): compared with the
    reference's alpha(n)^2 for n = 0..T-1, relative error <= rtol (1e-6 allows float32 products; pass 1e-12 for
    float64 code). 1 - alphabar is compared too, on the scale its rounding allows.
    alpha, sigma: callables t -> alpha_t, sigma_t on the reference's time domain, compared at `times` (default 257
    points over [t_min, t_max]); with both given, the half log-SNR lam = log(alpha / sigma) is compared as well.
    """
    from diffspec.reference.schedules import make_schedule

    schedule = make_schedule(name, **(params or {}))
    report = Report(f"schedule claimed as {name}{'' if not params else ' ' + str(params)}")
    if alphas_cumprod is None and alpha is None and sigma is None:
        raise ValueError("check_schedule needs alphas_cumprod, or alpha and/or sigma callables")
    if alphas_cumprod is not None:
        try:
            got = np.asarray(alphas_cumprod, dtype=np.float64).reshape(-1)
        except Exception as exc:
            report.fail("alphas_cumprod", f"not an array of numbers ({exc})")
            return report
        T = getattr(schedule, "num_steps", None)
        if T is None:
            report.fail("alphas_cumprod", f"{name} is not a discrete schedule", expected="a discrete schedule name")
            return report
        if got.shape != (T,):
            report.fail("alphas_cumprod (length)", len(got), expected=T)
            return report
        n = np.arange(T, dtype=np.float64)
        want = schedule.alpha(n) ** 2
        err = float(np.max(np.abs(got - want) / want))
        report.add(f"alphas_cumprod ({T} steps)", err, 0.0, rtol, err <= rtol)
        # 1 - alphabar inherits alphabar's error amplified by alphabar / (1 - alphabar): compared on that scale
        want_1m = schedule.sigma(n) ** 2
        err = float(np.max(np.abs((1 - got) - want_1m) / (rtol * (want + want_1m))))
        report.add("1 - alphas_cumprod (in units of rtol)", err, 0.0, 1.0, err <= 1.0)
        ok = bool(np.all(np.diff(got) < 0))
        report.add("alphas_cumprod decreasing", ok, True, "", ok)
    if alpha is not None or sigma is not None:
        t = np.linspace(schedule.t_min, schedule.t_max, 257) if times is None else np.asarray(times, np.float64)
        values = {}
        for label, fn, ref in (("alpha", alpha, schedule.alpha), ("sigma", sigma, schedule.sigma)):
            if fn is None:
                continue
            try:
                got = np.asarray([fn(float(ti)) for ti in t], dtype=np.float64).reshape(-1)
            except Exception as exc:
                report.fail(label, f"raised {type(exc).__name__}: {exc}")
                continue
            want = ref(t)
            scale = np.maximum(np.abs(want), 1e-300)
            err = float(np.max(np.abs(got - want) / scale))
            report.add(f"{label}(t) ({len(t)} times)", err, 0.0, rtol, err <= rtol)
            values[label] = got
        if len(values) == 2:
            inner = (values["alpha"] > 0) & (values["sigma"] > 0)
            lam = np.log(values["alpha"][inner] / values["sigma"][inner])
            err = float(np.max(np.abs(lam - schedule.lam(t[inner]))))
            report.add("lam = log(alpha / sigma)", err, 0.0, 10 * rtol, err <= 10 * rtol)
    return report
