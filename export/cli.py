"""`diffspec-export CHECKPOINT_DIR -o model.onnx`: export a checkpoint to a verified ONNX file.

Errors (a missing manifest, an unknown arch, a missing output directory, an unsupported opset, a failed
verification) print one line `diffspec-export: error: ...` and exit with status 2 (bad arguments) or 1 (export
or verification failed), without a traceback.
"""

import argparse
import sys


def build_parser():
    from diffspec.export.exporter import DEFAULT_OPSET, EXPORTERS, SUPPORTED_OPSETS

    p = argparse.ArgumentParser(prog="diffspec-export", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="checkpoint directory (checkpoint-STEP with manifest.json) or a run folder "
                   "(its latest checkpoint is used)")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write (its directory must exist)")
    p.add_argument("--no-ema", dest="ema", action="store_false", help="export the raw weights instead of the EMA")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 inputs and outputs")
    p.add_argument("--cfg-fused", action="store_true",
                   help="write the fused classifier-free-guidance graph (extra input guidance_scale [1]; "
                   "out = u + s (c - u), diffusers convention) instead of the plain one")
    p.add_argument("--dynamic-size", action="store_true",
                   help="symbolic spatial axes too (fully convolutional networks such as the UNet)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, one of {list(SUPPORTED_OPSETS)}")
    p.add_argument("--exporter", default="dynamo", choices=EXPORTERS, help="torch exporter (default dynamo)")
    p.add_argument("--seed", type=int, default=None, help="seed of the verification inputs (default: fresh)")
    p.add_argument("--verify-only", action="store_true",
                   help="do not export: verify the existing OUTPUT file against the checkpoint")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from diffspec.export.exporter import export_checkpoint
    from diffspec.export.verify import VerificationError, verify

    try:
        if args.verify_only:
            verify(args.output, args.checkpoint, seed=args.seed)
        else:
            export_checkpoint(args.checkpoint, args.output, ema=args.ema, fp16=args.fp16, cfg_fused=args.cfg_fused,
                              dynamic_size=args.dynamic_size, opset=args.opset, exporter=args.exporter, seed=args.seed)
    except ValueError as err:
        print(f"diffspec-export: error: {err}", file=sys.stderr)
        return 2
    except (VerificationError, OSError) as err:
        print(f"diffspec-export: error: {err}", file=sys.stderr)
        return 1
    return 0
