"""The conformance table of the ecosystem: every k_diffusion.sampling function and every diffusers scheduler class
in its common configurations, scored by `diffspec.conformance`; and the registry's own deterministic samplers'
orders with and without the warm-up split (where lower-order start steps cap the asymptotic order).

    python bench/conformance_table.py            # all three tables (a few minutes on 2 CPU cores)
    python bench/conformance_table.py --only k-diffusion|diffusers|warmup

Needs the test extra (diffusers, torch) and k-diffusion installed with --no-deps. Prints markdown tables. No
timing is measured: every number is an error, a tolerance or an observed order of convergence.
"""

import argparse
import os
import platform
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _order_summary(report):
    slopes = [r.measured for r in report.rows if r.check.startswith("order (") and isinstance(r.measured, float)]
    expected = {r.expected for r in report.rows if r.check.startswith("order (")}
    if not slopes:
        return "-", "-"
    return f"{min(slopes):.2f}-{max(slopes):.2f}", ", ".join(str(e) for e in sorted(expected, key=str))


def _departures(report, limit=3):
    out = []
    for r in report.failed:
        measured = r.measured if isinstance(r.measured, str) else f"{r.measured:.3g}"
        out.append(f"{r.check}: {measured[:70]}")
    if len(out) > limit:
        out = out[:limit] + [f"+{len(report.failed) - limit} more"]
    return "; ".join(out) or "none"


def k_diffusion_table():
    from diffspec.conformance import check_sampler, sampler_info
    from diffspec.conformance.kdiffusion import KDIFFUSION, registry_options, sampler_functions

    print(
        "| k_diffusion.sampling | claims | reference options | checks passed | measured order | expected |"
        " departures (failed checks) |"
    )
    print("|---|---|---|---|---|---|---|")
    for fn_name, fn in sorted(sampler_functions().items()):
        name = KDIFFUSION[fn_name][0]
        info = sampler_info(name)
        ref_opts = registry_options(fn_name, info)
        report = check_sampler(fn, name, convention="k-diffusion", reference_options=ref_opts)
        order, expected = _order_summary(report)
        ok = len(report.rows) - len(report.failed)
        opts = ", ".join(f"{k}={v!r}" for k, v in ref_opts.items()) or "-"
        print(
            f"| {fn_name} | {name} | {opts} | {ok}/{len(report.rows)} | {order} | {expected} | {_departures(report)} |",
            flush=True,
        )


SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
CONFIGS = {  # common configurations: the class default, Stable Diffusion's betas, Karras sigmas where offered
    "DDIMScheduler": [{}, {**SD, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}],
    "DDPMScheduler": [{}, {**SD, "clip_sample": False}],
    "PNDMScheduler": [{}, {**SD, "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False}],
    "EulerDiscreteScheduler": [{}, {**SD, "use_karras_sigmas": True}],
    "EulerAncestralDiscreteScheduler": [{}, {**SD}],
    "HeunDiscreteScheduler": [{}, {**SD, "use_karras_sigmas": True}],
    "LMSDiscreteScheduler": [{}, {**SD, "use_karras_sigmas": True}],
    "DPMSolverMultistepScheduler": [
        {},
        {**SD, "use_karras_sigmas": True},
        {"solver_order": 3},
        {"algorithm_type": "sde-dpmsolver++"},
    ],
    "DPMSolverSinglestepScheduler": [{}, {**SD, "use_karras_sigmas": True}],
    "UniPCMultistepScheduler": [{}, {**SD, "use_karras_sigmas": True}],
    "DEISMultistepScheduler": [{}, {**SD, "use_karras_sigmas": True}],
    "KDPM2DiscreteScheduler": [{}, {**SD, "use_karras_sigmas": True}],
    "KDPM2AncestralDiscreteScheduler": [{}],
    "DPMSolverSDEScheduler": [{}],
    "LCMScheduler": [{}],
    "TCDScheduler": [{}],
    "FlowMatchEulerDiscreteScheduler": [{"shift": 3.0}],
    "EDMEulerScheduler": [{}],
    "EDMDPMSolverMultistepScheduler": [{}],
    "HeliosScheduler": [{}, {"stages": 1}],  # the default (3 stages) is the pyramid sampler, refused with its reason
    "HeliosDMDScheduler": [{}, {"stages": 1}],
}


def diffusers_table():
    import diffusers
    import torch
    from diffspec.conformance import check_scheduler
    from diffspec.reference.interop import SUPPORTED_CLASSES

    torch.set_num_threads(1)
    print(
        "| diffusers class | config | checks passed | loop vs from_diffusers (max rel.) | order (10-80 steps) |"
        " departures (failed checks) |"
    )
    print("|---|---|---|---|---|---|")
    for cls_name in SUPPORTED_CLASSES:
        for overrides in CONFIGS.get(cls_name, [{}]):
            cls = getattr(diffusers, cls_name)
            try:
                report = check_scheduler(cls(**overrides))
            except Exception as err:  # a config this diffusers rejects
                line = str(err).strip().splitlines()[0] if str(err).strip() else ""
                print(f"| {cls_name} | {overrides or 'default'} | - | - | - | {type(err).__name__}: {line} |")
                continue
            loops = [r.measured for r in report.rows if r.check.startswith("loop (") and isinstance(r.measured, float)]
            order = [r.measured for r in report.rows if r.check.startswith("order (")]
            ok = len(report.rows) - len(report.failed)
            cfg = ", ".join(f"{k}={v}" for k, v in overrides.items() if k not in SD) or "default"
            if all(k in overrides for k in SD):
                cfg = "SD betas" + ("" if cfg == "default" else f", {cfg}")
            loop = f"{max(loops):.1e}" if loops else "-"
            order_txt = f"{order[0]:.2f}" if order and isinstance(order[0], float) else "-"
            print(
                f"| {cls_name} | {cfg} | {ok}/{len(report.rows)} | {loop} | {order_txt} | {_departures(report)} |",
                flush=True,
            )


def _f(v):
    return "-" if v is None else f"{v:.2f}"


def warmup_table():
    from diffspec.conformance import _world
    from diffspec.conformance.samplers import measure_order
    from diffspec.reference.samplers import SAMPLER_INFO

    family = _world.ORDER_FAMILIES[0]
    print(
        f"| sampler | options | nominal order | warm-up split, 16-128 steps | plain grid, 16-128 | plain grid, "
        f"64-512 | (family {family[0]}) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, info in SAMPLER_INFO.items():
        for opts, order in info.order_cases():
            if _world.Requirement.FLOW_SCHEDULE in info.requires:
                continue
            run = (lambda i, o: lambda d, x, g, s, noise=None: i.fn(d, x, g, s, noise=noise, **o))(info, opts)
            warm = measure_order(run, info, family, order, steps=[16, 32, 64, 128])[0]
            plain = measure_order(run, info, family, order, warm=False, steps=[16, 32, 64, 128])[0]
            far = measure_order(run, info, family, order, warm=False, steps=[64, 128, 256, 512])[0]
            shown = ", ".join(f"{k}={v!r}" for k, v in opts.items()) or "-"
            print(f"| {name} | {shown} | {order} | {_f(warm)} | {_f(plain)} | {_f(far)} | |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("k-diffusion", "diffusers", "warmup"))
    args = parser.parse_args()
    start = time.time()
    import diffusers
    from diffspec.conformance.kdiffusion import load_sampling

    load_sampling()
    print(
        f"conformance_table: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, numpy {np.__version__}, "
        f"diffusers {diffusers.__version__}\n"
    )
    if args.only in (None, "k-diffusion"):
        print("### k-diffusion 0.1.1 samplers (k-diffusion convention)\n")
        k_diffusion_table()
        print()
    if args.only in (None, "diffusers"):
        print("### diffusers scheduler classes\n")
        diffusers_table()
        print()
    if args.only in (None, "warmup"):
        print("### Registry samplers: where warm-up steps cap the order\n")
        warmup_table()
        print()
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
