"""How closely `interop.from_diffusers` reproduces diffusers' own loops: every case of the interop test table, run
through both with the same model (the Gaussian-mixture oracle) and the same draws, scored by the largest final
difference relative to max |x|.

    python bench/interop_agreement.py            # every case (about a minute on 2 CPU cores)
    python bench/interop_agreement.py --top 10   # and the ten largest deviations

Needs the test extra (diffusers, torch). Prints markdown tables. No timing is measured: every number is a
deviation (the tests require < 1e-4 of max |x|).
"""

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reference"))


def _deviation(case, t):
    """max |ours - diffusers'| / max |diffusers'| for one (class, overrides, steps, step options) case."""
    from diffspec.reference import interop

    cls, overrides, n, step_options = case
    config = {"_class_name": cls, **overrides}
    plan = interop.from_diffusers(config, n, **step_options)
    model = t.model_for(plan)
    x_T = np.random.default_rng(1).standard_normal(t.SHAPE)
    ours = plan.run(model, x_T, noise=t.NoiseList(7) if plan.stochastic else None)
    theirs, _ = t.run_diffusers(config, n, model, x_T, t.NoiseList(7), step_options)
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5, help="list this many of the largest deviations")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import diffusers
    import test_interop as t  # the case table and the diffusers loop of the tests

    diffusers.utils.logging.set_verbosity_error()  # its notes on adjusted configs would interleave with the tables

    start = time.time()
    rows = []
    for case in t.CASES:
        if case[0] == "DPMSolverSDEScheduler":  # diffusers imports torchsde with this class
            try:
                import torchsde  # noqa: F401
            except ImportError:
                continue
        rows.append((case, _deviation(case, t)))
    devs = np.array([d for _, d in rows])
    print(f"interop agreement with diffusers, {platform.node()} ({os.cpu_count()} CPUs), {time.ctime()}")
    print()
    print("| cases | median | 90th percentile | max | cases at or above 1e-4 |")
    print("|---|---|---|---|---|")
    q50, q90 = np.quantile(devs, [0.5, 0.9])
    print(f"| {len(devs)} | {q50:.1e} | {q90:.1e} | {devs.max():.1e} | {int(np.sum(devs >= 1e-4))} |")
    print()
    print("| class | config overrides | steps | step options | deviation |")
    print("|---|---|---|---|---|")
    for (cls, overrides, n, options), dev in sorted(rows, key=lambda r: -r[1])[: args.top]:
        print(f"| {cls} | {overrides} | {n} | {options} | {dev:.1e} |")
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
