"""`check_loss`: a user's diffusion loss against the reference's `diffusion_loss` (Kingma & Gao 2023,
arXiv:2303.00848, eq. 5: w(lam) times the eps-MSE, or the plain MSE of a parameterization's training target)."""

import numpy as np
from diffspec.conformance.report import Report


def check_loss(
    fn, name: str, *, weighting=None, weighting_options=None, schedules=("linear", "edm"), rtol: float = 1e-10
) -> Report:
    """Score `fn(output, x0, eps, t, schedule) -> per-sample loss (B,)` as the diffusion loss of parameterization
    `name` ("eps", "x0", "v", "flow", "score") with `weighting` (None: the plain MSE of the training target; else a
    name in `diffspec.reference.weightings.WEIGHTINGS` with `weighting_options`).

    Rows: `value` (random network outputs, data, noise and per-sample times on each schedule; rtol 1e-10 suits
    float64 code, 1e-5 float32), `shape` (one value per sample), `zero at the target` (the exact training target as
    output gives 0: the target and parameterization conventions), `weight` (with a weighting: the loss of the
    output eps_hat = eps + delta divided by mean(delta^2) is w(lam(t)): the weighting convention, lam being half
    the log-SNR).
    """
    from diffspec.reference import parameterizations as P
    from diffspec.reference.losses import diffusion_loss
    from diffspec.reference.schedules import make_schedule
    from diffspec.reference.weightings import WEIGHTINGS

    if not callable(fn):
        raise ValueError(f"fn={fn!r} is not callable: expected fn(output, x0, eps, t, schedule) -> loss (B,)")
    P.parse(name)
    if weighting is not None and not callable(weighting) and weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}: expected one of {', '.join(sorted(WEIGHTINGS))}")
    kw = dict(parameterization=name, weighting=weighting, weighting_options=weighting_options)
    report = Report(f"{getattr(fn, '__name__', fn)} as the {name} loss, weighting {weighting}")
    rng = np.random.default_rng(0)
    for sname in schedules:
        schedule = make_schedule(sname)
        B = 16
        x0, eps, out = rng.standard_normal((B, 3)), rng.standard_normal((B, 3)), rng.standard_normal((B, 3))
        t = schedule.t_eps + (schedule.t_max - schedule.t_eps) * rng.uniform(0.02, 0.98, B)
        if getattr(schedule, "is_discrete", False):
            t = np.round(t)
        want = diffusion_loss(out, x0, eps, t, schedule, **kw)
        try:
            got = np.asarray(fn(out, x0, eps, t, schedule), dtype=np.float64)
        except Exception as exc:
            report.fail(f"value ({sname})", f"raised {type(exc).__name__}: {exc}")
            continue
        if got.shape != want.shape:
            report.fail(f"shape ({sname})", got.shape, expected=want.shape)
            continue
        report.add(f"shape ({sname})", got.shape, want.shape, "", True)
        err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12)))
        report.add(f"value ({sname})", err, 0.0, rtol, err <= rtol)
        a, s = schedule.alpha(t), schedule.sigma(t)
        alpha, sigma = a[:, None], s[:, None]
        target = P.training_target(name, x0, eps, a, s)
        zero = float(np.max(np.abs(np.asarray(fn(target, x0, eps, t, schedule), dtype=np.float64))))
        report.add(f"zero at the target ({sname})", zero, 0.0, 1e-12, zero <= 1e-12)
        if weighting is not None:
            x = alpha * x0 + sigma * eps
            delta = 1e-3 * rng.standard_normal(x0.shape)
            output = P.output_from_x0(name, (x - sigma * (eps + delta)) / alpha, x, a, s)
            ratio = np.asarray(fn(output, x0, eps, t, schedule), dtype=np.float64) / np.mean(delta**2, axis=1)
            w_fn = weighting if callable(weighting) else WEIGHTINGS[weighting]
            w = np.asarray(w_fn(schedule.lam(t), **(weighting_options or {})), dtype=np.float64)
            err = float(np.max(np.abs(ratio - w) / np.maximum(np.abs(w), 1e-300)))
            report.add(f"weight w(lam) ({sname})", err, 0.0, 1e-6, err <= 1e-6)
    return report
