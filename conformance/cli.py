"""`diffspec-check`: the conformance kit on the command line.

    diffspec-check sampler my_pkg.my_mod:my_fn --as dpmpp_2m [--convention k-diffusion] [--option eta=0.5]
    diffspec-check scheduler scheduler_config.json | my_pkg.my_mod:make_scheduler | diffusers:DDIMScheduler
    diffspec-check scheduler my_pkg.my_mod:MyPort --as DPMSolverMultistepScheduler
    diffspec-check samplers            (the registry's own contract, listed)

Exit status: 0 when every check passes, 1 (with the table) when one fails, 2 on bad usage.
"""

import argparse
import ast
import importlib
import json
import os
import sys

from diffspec.conformance.conventions import CONVENTIONS


class UsageError(Exception):
    pass


def _load_object(spec: str):
    """`package.module:attr.path` -> the object (the working directory is importable, as for `python -m`)."""
    if ":" not in spec:
        raise UsageError(f"{spec!r}: expected module:name (e.g. my_pkg.samplers:sample_dpmpp_2m)")
    module_name, attr = spec.split(":", 1)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if module_name == "k_diffusion.sampling":
        from diffspec.conformance.kdiffusion import load_sampling

        module = load_sampling()
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            raise UsageError(f"cannot import {module_name!r}: {type(err).__name__}: {err}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _options(pairs):
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--option {pair!r}: expected name=value")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _scheduler(spec: str):
    if spec.endswith(".json") or os.path.isfile(spec):
        try:
            with open(spec) as f:
                config = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise UsageError(f"cannot read scheduler config {spec!r}: {err}") from None
        name = config.get("_class_name") if isinstance(config, dict) else None
        if not name:
            raise UsageError(f"{spec!r} has no _class_name: expected a diffusers scheduler_config.json")
        import diffusers

        cls = getattr(diffusers, name, None)
        if cls is None:
            raise UsageError(f"{spec!r}: diffusers has no scheduler class {name!r}")
        return cls.from_config(config)
    obj = _load_object(spec)
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "step")):
        try:
            obj = obj()
        except Exception as err:
            raise UsageError(f"{spec!r}: calling it to make a scheduler raised {type(err).__name__}: {err}") from None
    return obj


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="diffspec-check", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("sampler", help="check a sampler function against a registry sampler's contract")
    p.add_argument("function", help="module:function, e.g. k_diffusion.sampling:sample_dpmpp_2m")
    p.add_argument("--as", dest="name", required=True, help="the registry sampler it claims to be (or an alias)")
    p.add_argument("--convention", default="diffspec", choices=CONVENTIONS)
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="an option passed to the function")
    p.add_argument("--thorough", action="store_true", help="every (options, order) pair of the contract")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    s = sub.add_parser("scheduler", help="check a diffusers scheduler against from_diffusers and exact answers")
    s.add_argument("scheduler", help="scheduler_config.json, or module:factory (a class or function)")
    s.add_argument(
        "--as",
        dest="as_class",
        default=None,
        help="the diffusers class it behaves as, for a scheduler that does not derive from one",
    )
    s.add_argument("--json", action="store_true")
    sub.add_parser("samplers", help="list the registry's samplers and their contract")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if exit_.code in (0, None) else 2
    try:
        if args.what == "samplers":
            from diffspec.reference.samplers import SAMPLER_INFO

            for name, info in sorted(SAMPLER_INFO.items()):
                opts = ", ".join(f"{k}={o.default!r}" for k, o in info.options.items()) or "-"
                order = "-" if info.order is None else f"{info.order:g}"
                print(f"{name:22s} order {order:3s} stochastic {str(info.stochastic):5s} options: {opts}")
            return 0
        if args.what == "sampler":
            from diffspec.conformance.samplers import check_sampler

            fn = _load_object(args.function)
            try:
                report = check_sampler(
                    fn, args.name, convention=args.convention, options=_options(args.option), thorough=args.thorough
                )
            except ValueError as err:
                raise UsageError(str(err)) from None
        else:
            from diffspec.conformance.schedulers import check_scheduler

            try:
                report = check_scheduler(_scheduler(args.scheduler), as_class=args.as_class)
            except ValueError as err:
                raise UsageError(str(err)) from None
    except UsageError as err:
        print(f"diffspec-check: {err}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
