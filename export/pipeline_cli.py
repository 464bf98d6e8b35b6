"""The `diffspec-export` options that write a pipeline graph (the whole sampler in one ONNX file).

diffspec-export CKPT -o digits-sampler.onnx --sampler dpmpp_2m --steps 20 [--grid karras]
    [--guidance-scale 2 | --guidance dynamic] [--sampler-option eta=0.5] [--grid-option rho=7]
diffspec-export --pipeline model.onnx -o digits-sampler.onnx --sampler ...   (no torch needed)
"""

import argparse
import math
import tempfile
from pathlib import Path


def _value(text):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number")
        return value
    return text


def _key_value(text):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. eta=0.5")
    return key.strip(), _value(value)


def _scale(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 0 (1 = no guidance)") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number >= 0 (1 = no guidance)")
    return value


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pipeline graph (the whole sampler inside the .onnx file; docs/pipeline.md)")
    g.add_argument(
        "--pipeline",
        metavar="MODEL_ONNX",
        help="build the pipeline graph from this exported network file instead of a checkpoint (no torch needed)",
    )
    g.add_argument(
        "--sampler",
        help="write a pipeline graph running this sampler (e.g. dpmpp_2m, ddim, euler_ancestral; default with "
        "--pipeline: a few-step student's own, else dpmpp_2m); adaptive samplers cannot be exported",
    )
    g.add_argument(
        "--steps", type=int, default=None, help="grid steps of the pipeline graph (default 20, or a student's own)"
    )
    g.add_argument(
        "--grid",
        help="time grid name (default: a few-step student's own; shifted for flow, uniform for vp_cosine, else "
        "exponential, as diffspec-sample)",
    )
    g.add_argument(
        "--grid-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a grid option, e.g. rho=7 (repeatable)",
    )
    g.add_argument(
        "--sampler-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampler option, e.g. eta=0.5 or order=2 (repeatable)",
    )
    how = g.add_mutually_exclusive_group()
    how.add_argument(
        "--guidance-scale",
        type=_scale,
        default=None,
        help="classifier-free guidance baked into the graph (diffusers convention, 1 = off)",
    )
    how.add_argument("--guidance", choices=["dynamic"], help="'dynamic': the graph takes guidance_scale [1] as input")
    g.add_argument(
        "--guidance-rescale",
        type=float,
        default=0.0,
        metavar="PHI",
        help="guidance rescale phi in [0, 1] (Lin et al. 2023; with guidance, on a network without fused guidance)",
    )
    g.add_argument(
        "--no-image", dest="image_output", action="store_false", help="no uint8 `image` output (images only)"
    )


def wants_pipeline(args) -> bool:
    return bool(args.pipeline or args.sampler)


def pipeline_main(args) -> None:
    """Write the pipeline graph; ValueError (exit 2) for bad arguments, RuntimeError/OSError (exit 1) otherwise."""
    from diffspec.export.pipeline import export_pipeline

    if args.pipeline and args.checkpoint:
        raise ValueError(f"give either a checkpoint ({args.checkpoint!r}) or --pipeline {args.pipeline!r}, not both")
    guidance = "dynamic" if args.guidance else args.guidance_scale
    kw = dict(
        sampler=args.sampler,
        steps=args.steps,
        grid=args.grid,
        grid_options=dict(args.grid_option),
        guidance=guidance,
        guidance_rescale=args.guidance_rescale,
        image_output=args.image_output,
        **dict(args.sampler_option),
    )
    out = Path(args.output)
    if args.pipeline:
        network = Path(args.pipeline)
        if not network.is_file():
            raise ValueError(
                f"--pipeline {args.pipeline!r}: no such file (expected an .onnx file written by diffspec-export)"
            )
        export_pipeline(network, out, **kw)
    else:
        if not args.checkpoint:
            raise ValueError("expected a checkpoint directory or --pipeline MODEL_ONNX")
        from diffspec.export.exporter import export_checkpoint
        from diffspec.export.pipeline import PipelineError, exportable_samplers
        from diffspec.reference.samplers import SAMPLER_ALIASES, get_sampler

        get_sampler(args.sampler)  # unknown names fail before the (slower) network export
        if SAMPLER_ALIASES.get(args.sampler, args.sampler) not in exportable_samplers():
            raise PipelineError(
                f"sampler {args.sampler!r} cannot be exported as a static graph. Samplers that can: "
                f"{', '.join(exportable_samplers())}"
            )
        if not out.parent.is_dir():
            raise ValueError(f"output path {str(out)!r}: directory {str(out.parent)!r} does not exist")
        with tempfile.TemporaryDirectory(prefix=".diffspec-pipeline-", dir=out.parent) as tmp:
            network = Path(tmp) / "network.onnx"
            export_checkpoint(
                args.checkpoint,
                network,
                ema=args.ema,
                fp16=args.fp16,
                cfg_fused=args.cfg_fused,
                dynamic_size=args.dynamic_size,
                opset=args.opset,
                exporter=args.exporter,
                seed=args.seed,
            )
            export_pipeline(network, out, **kw)
    from diffspec.export.pipeline import read_pipeline_card
    from diffspec.runtime.sampling import describe_recipe

    meta = read_pipeline_card(out)  # what the graph holds: the named settings and the card's for the rest
    print(
        f"wrote {out} (pipeline graph: {describe_recipe(meta['sampler'], meta['steps'], meta['grid'], meta['grid_options'])})"
    )
