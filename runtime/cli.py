"""`diffspec-sample` (also `python -m diffspec.runtime`): sample from an exported .onnx file, no torch needed.

    diffspec-sample model.onnx --sampler dpmpp_2m --steps 20 -n 64 --seed 0 --out grid.png

Every sampler of `diffspec.reference.samplers.SAMPLERS` is available by name, and every keyword option of
any sampler or grid is a flag (--eta, --order, --s-churn, --rho ...), derived from the functions' signatures.
"""

import argparse
import os
import sys
import time

import numpy as np

from diffspec.reference import grids as ref_grids
from diffspec.reference.samplers import SAMPLER_INFO, SAMPLERS
from diffspec.runtime.model import DEVICES, Model, ModelFileError, ProviderError
from diffspec.runtime.output import check_output_path, write_samples
from diffspec.runtime.sampling import DEFAULT_STEPS, default_grid, keyword_options, sample

RESERVED = {
    "model", "sampler", "steps", "n", "seed", "out", "batch_size", "device", "allow_cpu_fallback", "cuda_graph",
    "io_binding", "threads", "grid", "class_label", "guidance_scale", "guidance_rescale", "mask", "init_image",
    "strength", "index", "quiet", "verbose", "list_samplers", "info", "help",
}


def _flag(name):
    return "--" + name.replace("_", "-")


# sampler options that are callables the runtime supplies itself (ddpm's variance_v: the model's variance half)
NOT_FLAGS = frozenset({"variance_v"})


def _parse_value(text):
    """A CLI option value: true/false, int, float, or a string (variant names)."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _typed(default):
    """An argparse type from an option's default value."""
    if isinstance(default, bool):
        def as_bool(text):
            value = _parse_value(text)
            if not isinstance(value, bool):
                raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")
            return value
        return as_bool, "BOOL"
    if isinstance(default, int):
        return int, "INT"
    if isinstance(default, float):
        return float, "FLOAT"
    if isinstance(default, str):
        return str, "NAME"
    return _parse_value, "VALUE"


def _option_table(functions):
    """{option: (default, [owners])} over the keyword-only options of several functions."""
    table = {}
    for owner, fn in functions.items():
        for name, default in keyword_options(fn).items():
            entry = table.setdefault(name, [default, []])
            entry[1].append(owner)
    return table


def _parse_indices(text):
    out = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sample indices >= 0 such as 5, 0,3,9 or 0-15")
    return out


def _parse_labels(text):
    if text.strip().lower() == "null":
        return "null"
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a class index, a list such as 1,3,7, or 'null'") from None
    return values[0] if len(values) == 1 else values


def build_parser():
    p = argparse.ArgumentParser(
        prog="diffspec-sample",
        description="Sample from an exported diffspec .onnx model with numpy + onnxruntime (CUDA or CPU).",
        epilog="Output by suffix of --out: .png (image grid, or a scatter plot for 2-D points), .npy, .npz (with "
               "labels). Values are in the data's original range. Sample i uses noise seeded by (seed, i).",
    )
    p.add_argument("model", nargs="?", help="the .onnx file written by diffspec-export")
    p.add_argument("--sampler", default="dpmpp_2m", help="sampler name (default dpmpp_2m; --list-samplers)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"grid steps (default {DEFAULT_STEPS})")
    p.add_argument("-n", "--num-samples", dest="n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--index", type=_parse_indices, metavar="I[,J|A-B]",
                   help="generate only these sample indices (same noise as in a full run), e.g. 5 or 0-7")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--out", "-o", default="samples.png", help="output .png, .npy or .npz (default samples.png)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per batch (default 64)")
    g = p.add_argument_group("device")
    g.add_argument("--device", choices=DEVICES, default="auto", help="cuda, cpu or auto (default: CUDA if offered)")
    g.add_argument("--allow-cpu-fallback", action="store_true", help="with --device cuda, run on CPU if CUDA fails")
    g.add_argument("--cuda-graph", action="store_true", help="capture the network as a CUDA graph (fixed batch)")
    g.add_argument("--io-binding", choices=("auto", "on", "off"), default="auto",
                   help="onnxruntime IOBinding (auto: on for CUDA, off for CPU)")
    g.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    c = p.add_argument_group("conditioning and guidance")
    c.add_argument("--class-label", type=_parse_labels, metavar="K|K1,K2,...|null",
                   help="class label(s) for a conditional model (default: cycle through the classes)")
    c.add_argument("--guidance-scale", type=float, default=1.0,
                   help="classifier-free guidance, diffusers convention (1 = off; uses the null class)")
    c.add_argument("--guidance-rescale", type=float, default=0.0, help="guidance rescale phi (Lin et al. 2023)")
    c.add_argument("--init-image", metavar="PATH", help="init image (.png, or .npy in the data range)")
    c.add_argument("--mask", metavar="PATH", help="inpainting mask, diffusers' convention: white (1) = generate, black (0) = keep --init-image "
                   "(.png, or .npy in [0, 1])")
    c.add_argument("--strength", type=float, help="SDEdit: fraction of the grid to run from the noised init (0, 1]")

    grid_names = ", ".join(sorted(ref_grids.GRIDS))
    gr = p.add_argument_group("time grid")
    gr.add_argument("--grid", help=f"one of {grid_names} (default: karras for EDM, shifted for flow, else uniform)")
    sampler_opts = _option_table(SAMPLERS)
    grid_opts = _option_table(ref_grids.GRIDS)
    dests = {}
    for name, (default, owners) in sorted(grid_opts.items()):
        flag_name = name if name not in RESERVED and name not in sampler_opts else "grid_" + name
        kind, metavar = _typed(default)
        gr.add_argument(_flag(flag_name), dest="gridopt_" + name, type=kind, metavar=metavar, default=None,
                        help=f"grid option of {', '.join(owners)}")
        dests["gridopt_" + name] = ("grid", name)
    so = p.add_argument_group("sampler options (each applies to the samplers listed)")
    for name, (default, owners) in sorted(sampler_opts.items()):
        if name in NOT_FLAGS:
            continue
        flag_name = name if name not in RESERVED else "sampler_" + name
        kind, metavar = _typed(default)
        defaults = {repr(keyword_options(SAMPLERS[o])[name]) for o in owners}
        owners_text = ", ".join(owners) if len(owners) <= 6 else ", ".join(owners[:6]) + ", ..."
        default_text = f"default {default!r}" if len(defaults) == 1 else "default per sampler"
        so.add_argument(_flag(flag_name), dest="opt_" + name, type=kind, metavar=metavar, default=None,
                        help=f"{default_text}; {owners_text}")
        dests["opt_" + name] = ("sampler", name)
    o = p.add_argument_group("other")
    o.add_argument("--list-samplers", action="store_true", help="list the samplers and their options, then exit")
    o.add_argument("--info", action="store_true", help="print the model's metadata and provider, then exit")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    o.add_argument("--verbose", action="store_true", help="onnxruntime's log (e.g. why CUDA was not used)")
    p.set_defaults(_option_dests=dests)
    return p


def list_samplers():
    lines = []
    for name in sorted(SAMPLERS):
        info = SAMPLER_INFO.get(name)
        opts = ", ".join(f"{_flag(k)} {v!r}" for k, v in keyword_options(SAMPLERS[name]).items()
                         if k not in NOT_FLAGS)
        kind = "stochastic" if info and info.stochastic else "deterministic"
        order = f", order {info.order}" if info and info.order else ""
        lines.append(f"{name:22s} {kind}{order}" + (f"; options: {opts}" if opts else ""))
    return "\n".join(lines) if lines else "(no samplers registered yet)"


def _load_array(path, what):
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path!r} does not exist")
    if path.lower().endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False)
        except Exception as err:
            raise ValueError(f"{what} {path!r} is not a readable .npy file ({err})") from None
    return None


def load_image(path, model, *, what, as_mask=False):
    """A PNG (or .npy) as an array in the model's data shape: images in the data range, masks in [0, 1]."""
    arr = _load_array(path, what)
    if arr is not None:
        return arr.astype(np.float64)
    from PIL import Image, UnidentifiedImageError

    shape = model.data_shape
    if model.card.data.kind != "image" or len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"{what} as an image needs an image model; this model's data shape is {shape}: use .npy")
    channels, height, width = shape
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 or as_mask else "RGB").resize((width, height), Image.BILINEAR)
            pixels = np.asarray(img, dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{what} {path!r} is not a readable image ({err})") from None
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    if as_mask:
        return np.round(pixels)  # white = 1 = generate
    lo, hi = model.card.data.range
    return lo + pixels * (hi - lo)


def run(args, parser):
    if args.list_samplers:
        print(list_samplers())
        return 0
    if not args.model:
        parser.error("the model (.onnx file) is required")
    if args.index is None and args.n < 1:
        raise ValueError(f"-n {args.n}: expected the number of samples, at least 1")
    if not args.info:
        check_output_path(args.out)
    io_binding = {"auto": None, "on": True, "off": False}[args.io_binding]
    model = Model.load(args.model, device=args.device, allow_cpu_fallback=args.allow_cpu_fallback,
                       io_binding=io_binding, cuda_graph=args.cuda_graph, threads=args.threads, verbose=args.verbose)
    if args.device == "cuda" and model.provider != "CUDAExecutionProvider":
        print(f"diffspec-sample: CUDA not available, running on {model.provider} (--allow-cpu-fallback)",
              file=sys.stderr)
    if args.info:
        print(f"{model}\nprovider: {model.provider}\ncard: {model.card}")
        return 0
    sampler_options, grid_options = {}, {}
    for dest, (where, name) in args._option_dests.items():
        value = getattr(args, dest)
        if value is not None:
            (sampler_options if where == "sampler" else grid_options)[name] = value
    init = None if args.init_image is None else load_image(args.init_image, model, what="--init-image")
    # the CLI mask marks what to generate (diffusers); the API's, like reference.guidance.inpaint's, what to keep
    mask = None if args.mask is None else 1.0 - load_image(args.mask, model, what="--mask", as_mask=True)
    if args.class_label is not None and not model.conditional:
        raise ValueError(f"--class-label {args.class_label}: this model is unconditional (no classes in its metadata)")
    if (args.guidance_scale != 1.0 or args.guidance_rescale) and not model.conditional:
        raise ValueError(
            f"--guidance-scale {args.guidance_scale}: classifier-free guidance needs a class-conditional model, and "
            "this one is unconditional"
        )
    indices = args.index if args.index is not None else list(range(args.n))
    grid_name = args.grid or default_grid(model.schedule)
    print(f"diffspec-sample: {len(indices)} samples, {args.sampler}, {args.steps} steps, grid {grid_name}, "
          f"provider {model.provider}", file=sys.stderr)
    start = time.perf_counter()
    samples, labels = sample(
        model, sampler=args.sampler, steps=args.steps, indices=indices, seed=args.seed, batch_size=args.batch_size,
        grid=args.grid, grid_options=grid_options, class_label=args.class_label,
        guidance_scale=args.guidance_scale, guidance_rescale=args.guidance_rescale, init=init, mask=mask,
        strength=args.strength, progress=not args.quiet, return_labels=True, **sampler_options,
    )
    seconds = time.perf_counter() - start
    write_samples(args.out, samples, kind=model.card.data.kind, value_range=model.card.data.range, labels=labels,
                  indices=indices)
    print(f"wrote {args.out}: {len(indices)} samples of shape {model.data_shape} in {seconds:.2f} s "
          f"({len(indices) / seconds:.1f} samples/s, {model.provider})")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args, parser)
    except KeyboardInterrupt:
        print("diffspec-sample: interrupted", file=sys.stderr)
        return 130
    except (ModelFileError, ProviderError, ValueError, FloatingPointError, RuntimeError, OSError) as err:
        print(f"diffspec-sample: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, (ProviderError, RuntimeError, OSError)) and not isinstance(err, ValueError) else 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
