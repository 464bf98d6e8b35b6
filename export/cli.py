"""`diffspec-export CHECKPOINT_DIR -o model.onnx`: export a checkpoint to a verified ONNX file.

Errors (a missing manifest, an unknown arch, a missing output directory, an unsupported opset, a failed
verification) print one line `diffspec-export: error: ...` and exit with status 2 (bad arguments) or 1 (export
or verification failed), without a traceback.
"""

import argparse
import sys


def build_parser():
    from diffspec.export.pipeline_cli import add_pipeline_arguments

    try:
        from diffspec.export.exporter import DEFAULT_OPSET, EXPORTERS, SUPPORTED_OPSETS
    except ImportError:  # no torch: only --pipeline (from an exported network) can run; these only label options
        DEFAULT_OPSET, EXPORTERS, SUPPORTED_OPSETS = 18, ("dynamo", "torchscript"), (18, 19, 20)

    p = argparse.ArgumentParser(prog="diffspec-export", description=__doc__.split("\n")[0])
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="checkpoint directory (checkpoint-STEP with manifest.json) or a run folder "
        "(its latest checkpoint is used); or a diffusers pipeline folder (model_index.json) or model folder "
        "(config.json, with --scheduler-config)",
    )
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write (its directory must exist)")
    p.add_argument("--no-ema", dest="ema", action="store_false", help="export the raw weights instead of the EMA")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 inputs and outputs")
    p.add_argument(
        "--cfg-fused",
        action="store_true",
        help="write the fused classifier-free-guidance graph (extra input guidance_scale [1]; "
        "out = u + s (c - u), diffusers convention) instead of the plain one",
    )
    p.add_argument(
        "--dynamic-size",
        action="store_true",
        help="symbolic spatial axes too (fully convolutional networks such as the UNet)",
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, one of {list(SUPPORTED_OPSETS)}")
    p.add_argument("--exporter", default="dynamo", choices=EXPORTERS, help="torch exporter (default dynamo)")
    p.add_argument("--seed", type=int, default=None, help="seed of the verification inputs (default: fresh)")
    p.add_argument(
        "--verify-only",
        action="store_true",
        help="do not export: verify the existing OUTPUT file against the checkpoint",
    )
    d = p.add_argument_group("diffusers folders")
    d.add_argument(
        "--scheduler-config",
        metavar="FILE",
        help="scheduler_config.json of a diffusers model folder (replaces a pipeline's own scheduler)",
    )
    d.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load .bin (pickle) weights: pickle can run arbitrary "
        "code when loaded, so only for files you trust (safetensors needs no such flag)",
    )
    d.add_argument(
        "--null-class",
        type=int,
        metavar="K",
        help="UNet2DModel: the label trained as 'no label' "
        "(num_class_embeds - 1), which enables classifier-free guidance",
    )
    add_pipeline_arguments(p)
    return p


def _is_diffusers(path):
    from pathlib import Path

    from diffspec.export.diffusers_folder import folder_kind

    return Path(path).is_dir() and folder_kind(path).startswith("diffusers")


def _diffusers_main(args):
    from diffspec.export.diffusers_folder import export_diffusers, load_diffusers
    from diffspec.export.verify import verify

    options = dict(scheduler_config=args.scheduler_config, allow_pickle=args.allow_pickle, null_class=args.null_class)
    if args.verify_only:
        verify(args.output, load_diffusers(args.checkpoint, **options)[0], seed=args.seed)
        return
    export_diffusers(
        args.checkpoint,
        args.output,
        **options,
        fp16=args.fp16,
        cfg_fused=args.cfg_fused,
        dynamic_size=args.dynamic_size,
        opset=args.opset,
        exporter=args.exporter,
        seed=args.seed,
    )


def _main(argv=None):
    args = build_parser().parse_args(argv)
    from diffspec.export.files import check_output_file

    check_output_file(args.output, must_exist=args.verify_only)  # before any work
    from diffspec.export.pipeline_cli import pipeline_main, wants_pipeline

    if wants_pipeline(args):  # from an exported network: onnx and onnxruntime only, no torch
        pipeline_main(args)
        return 0
    from diffspec.export.exporter import export_checkpoint
    from diffspec.export.verify import VerificationError, verify

    try:
        if not args.checkpoint:
            raise ValueError("expected a checkpoint directory (or --pipeline MODEL_ONNX --sampler NAME)")
        elif _is_diffusers(args.checkpoint):
            _diffusers_main(args)
        elif args.verify_only:
            verify(args.output, args.checkpoint, seed=args.seed)
        else:
            export_checkpoint(
                args.checkpoint,
                args.output,
                ema=args.ema,
                fp16=args.fp16,
                cfg_fused=args.cfg_fused,
                dynamic_size=args.dynamic_size,
                opset=args.opset,
                exporter=args.exporter,
                seed=args.seed,
            )
    except ValueError as err:
        print(f"diffspec-export: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (VerificationError, OSError, RuntimeError) as err:
        print(f"diffspec-export: error: {_one_line(err)}", file=sys.stderr)
        return 1
    return 0


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def main(argv=None):
    """The command line; returns the exit status: 0, 2 for bad input, 1 for a failed export or verification,
    130 on Ctrl-C. Every error a user can meet prints one line `diffspec-export: error: ...`, never a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("diffspec-export: interrupted; the output was not written", file=sys.stderr)
        return 130
    except ValueError as err:  # bad input found before the export's own handler (the output path)
        print(f"diffspec-export: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("diffspec-export: error: out of memory while exporting", file=sys.stderr)
        return 1
    except OSError as err:
        print(
            f"diffspec-export: error: {_one_line(err.strerror or err)}"
            + (f" ({err.filename!r})" if err.filename else ""),
            file=sys.stderr,
        )
        return 1
    except Exception as err:  # torch, onnx and onnxruntime raise their own types: one line all the same
        text = _one_line(err)[:2000]
        print(f"diffspec-export: error: {type(err).__name__}: {text}", file=sys.stderr)
        return 1
