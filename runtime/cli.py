"""`diffspec-sample` (also `python -m diffspec.runtime`): sample from an exported .onnx file, no torch needed.

    diffspec-sample model.onnx --sampler dpmpp_2m --steps 20 -n 64 --seed 0 --out grid.png

Every sampler of `diffspec.reference.samplers.SAMPLERS` is available by name, and every keyword option of
any sampler or grid is a flag (--eta, --order, --s-churn, --rho ...), derived from the functions' signatures.
"""

import argparse
import errno
import json
import math
import os
import sys
import time
from dataclasses import asdict

import numpy as np
from diffspec.reference import grids as ref_grids
from diffspec.reference.samplers import SAMPLER_INFO, SAMPLERS
from diffspec.runtime.model import DEVICES, Model, ModelFileError, ProviderError
from diffspec.runtime.output import check_output_path, write_samples
from diffspec.runtime.sampling import (
    DEFAULT_STEPS,
    check_sample_size,
    describe_recipe,
    keyword_options,
    sample,
    sampling_recipe,
)

RESERVED = {
    "model",
    "sampler",
    "steps",
    "n",
    "seed",
    "out",
    "batch_size",
    "device",
    "allow_cpu_fallback",
    "cuda_graph",
    "io_binding",
    "threads",
    "grid",
    "class_label",
    "guidance_scale",
    "guidance_rescale",
    "mask",
    "init_image",
    "strength",
    "index",
    "quiet",
    "verbose",
    "list_samplers",
    "info",
    "help",
    "no_progress",
    "repaint_mask",
    "num_inference_steps",
    "num_samples",
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


MAX_INDICES = 10**7  # --index ranges beyond this are refused before a list is built


def _parse_indices(text):
    expected = f"{text!r}: expected sample indices >= 0 such as 5, 0,3,9 or 0-15"
    out = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo or hi - lo >= MAX_INDICES or len(out) + hi - lo >= MAX_INDICES:
                    raise argparse.ArgumentTypeError(f"{text!r}: range {part} is empty or longer than {MAX_INDICES}")
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(expected)
    return out


def _int_at_least(minimum, maximum=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= {minimum}") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = "" if maximum is None else f" and <= {maximum}"
            raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= {minimum}{upper}")
        return value

    parse.__name__ = "integer"
    return parse


def _finite_float(lo=None, hi=None, *, lo_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = (
            math.isfinite(value)
            and (lo is None or (value > lo if lo_open else value >= lo))
            and (hi is None or value <= hi)
        )
        if not ok:
            left = "(" if lo_open else "["
            where = "" if lo is None and hi is None else f" in {left}{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number{where}")
        return value

    parse.__name__ = "number"
    return parse


def _finite_option(kind):
    """Sampler and grid options: a float must be finite (NaN or inf never reaches the math)."""
    if kind is not float:
        return kind

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number")
        return value

    parse.__name__ = "number"
    return parse


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
        "labels). Values are in the data's original range. Sample i uses noise seeded by (seed, i). Grid "
        "layout: for a class-conditional model with the default labels (sample i has class i mod K), one row "
        "per K samples, so column k shows class k whatever -n is; otherwise a square-ish grid in sample "
        "order. Errors print one line and exit with status 2 (bad input) or 1 (runtime failure).",
    )
    p.add_argument("model", nargs="?", help="the .onnx file written by diffspec-export")
    p.add_argument(
        "--sampler",
        help="sampler name (--list-samplers); default dpmpp_2m, or the sampler a few-step student's card names",
    )
    p.add_argument(
        "--steps",
        "--num-inference-steps",
        dest="steps",
        type=_int_at_least(1),
        default=None,
        help=f"grid steps (default {DEFAULT_STEPS}, or a few-step student's own; --num-inference-steps is diffusers' "
        "name for it)",
    )
    p.add_argument("-n", "--num-samples", dest="n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument(
        "--index",
        type=_parse_indices,
        metavar="I[,J|A-B]",
        help="generate only these sample indices (same noise as in a full run), e.g. 5 or 0-7",
    )
    p.add_argument(
        "--seed",
        type=_int_at_least(0, 2**63 - 1),
        default=0,
        help="base seed, an integer in [0, 2**63) (default 0); sample i uses noise seeded by (seed, i)",
    )
    p.add_argument("--out", "-o", default="samples.png", help="output .png, .npy or .npz (default samples.png)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=64, help="samples per batch (default 64)")
    g = p.add_argument_group("device")
    g.add_argument("--device", choices=DEVICES, default="auto", help="cuda, cpu or auto (default: CUDA if offered)")
    g.add_argument("--allow-cpu-fallback", action="store_true", help="with --device cuda, run on CPU if CUDA fails")
    g.add_argument("--cuda-graph", action="store_true", help="capture the network as a CUDA graph (fixed batch)")
    g.add_argument(
        "--io-binding",
        choices=("auto", "on", "off"),
        default="auto",
        help="onnxruntime IOBinding (auto: on for CUDA, off for CPU)",
    )
    g.add_argument(
        "--threads", type=_int_at_least(0, 1024), default=0, help="onnxruntime intra-op threads (0: its default)"
    )
    c = p.add_argument_group("conditioning and guidance")
    c.add_argument(
        "--class-label",
        type=_parse_labels,
        metavar="K|K1,K2,...|null",
        help="class label(s) for a conditional model (default: cycle through the classes)",
    )
    c.add_argument(
        "--guidance-scale",
        type=_finite_float(),
        default=1.0,
        help="classifier-free guidance, diffusers convention (1 = off; uses the null class)",
    )
    c.add_argument(
        "--guidance-rescale",
        type=_finite_float(0.0, 1.0),
        default=0.0,
        help="guidance rescale phi in [0, 1] (Lin et al. 2023)",
    )
    c.add_argument("--init-image", metavar="PATH", help="init image (.png, or .npy in the data range)")
    masks = c.add_mutually_exclusive_group()
    masks.add_argument(
        "--mask",
        metavar="PATH",
        help="inpainting mask, white (1) = keep --init-image, black (0) = generate, as in the Python "
        "API (.png, or .npy in [0, 1])",
    )
    masks.add_argument(
        "--repaint-mask",
        metavar="PATH",
        help="the opposite polarity, diffusers' mask_image: white (1) = generate, black (0) = keep",
    )
    c.add_argument(
        "--strength",
        type=_finite_float(0.0, 1.0),
        help="SDEdit: fraction of the grid to run from the noised init, in [0, 1] (0 returns the init)",
    )

    grid_names = ", ".join(sorted(ref_grids.GRIDS))
    gr = p.add_argument_group("time grid")
    gr.add_argument(
        "--grid",
        help=f"one of {grid_names} (default: a few-step student's own; shifted for flow, uniform for vp_cosine, "
        "else exponential)",
    )
    sampler_opts = _option_table(SAMPLERS)
    grid_opts = _option_table(ref_grids.GRIDS)
    dests = {}
    for name, (default, owners) in sorted(grid_opts.items()):
        flag_name = name if name not in RESERVED and name not in sampler_opts else "grid_" + name
        kind, metavar = _typed(default)
        gr.add_argument(
            _flag(flag_name),
            dest="gridopt_" + name,
            type=_finite_option(kind),
            metavar=metavar,
            default=None,
            help=f"grid option of {', '.join(owners)}",
        )
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
        so.add_argument(
            _flag(flag_name),
            dest="opt_" + name,
            type=_finite_option(kind),
            metavar=metavar,
            default=None,
            help=f"{default_text}; {owners_text}",
        )
        dests["opt_" + name] = ("sampler", name)
    o = p.add_argument_group("other")
    o.add_argument("--list-samplers", action="store_true", help="list the samplers and their options, then exit")
    o.add_argument("--info", action="store_true", help="print the model's metadata and provider, then exit")
    o.add_argument(
        "--no-progress",
        "--quiet",
        "-q",
        dest="quiet",
        action="store_true",
        help="no progress bar (there is none anyway when stderr is not a terminal)",
    )
    o.add_argument("--verbose", action="store_true", help="onnxruntime's log (e.g. why CUDA was not used)")
    p.set_defaults(_option_dests=dests)
    return p


def _order_text(name, info, options):
    if info is None or not info.order:
        return "-"
    if "order" in options:  # the order is an option: say which one the default gives
        return f"--order (default {options['order']!r}, up to {info.order:g})"
    return f"{info.order:g}"


def list_samplers() -> str:
    """One line per sampler: name, deterministic or stochastic, its order, its options with their real defaults."""
    rows = []
    for name in sorted(SAMPLERS):
        info = SAMPLER_INFO.get(name)
        options = {k: v for k, v in keyword_options(SAMPLERS[name]).items() if k not in NOT_FLAGS}
        kind = "stochastic" if info and info.stochastic else "deterministic"
        opts = ", ".join(f"{_flag(k)} {v!r}" for k, v in options.items()) or "-"
        aliases = f" (also {', '.join(info.aliases)})" if info and info.aliases else ""
        rows.append((name, kind, _order_text(name, info, options), opts + aliases))
    if not rows:
        return "(no samplers registered yet)"
    header = ("sampler", "kind", "order", "options (default value)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _load_array(path, what):
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path!r} does not exist")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".npy", ".npz"):
        return None
    try:
        loaded = np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with loaded:
                names = list(loaded.files)
                if len(names) != 1:
                    raise ValueError(f"it holds {len(names)} arrays ({', '.join(names) or 'none'}), expected one")
                loaded = loaded[names[0]]
        arr = np.asarray(loaded)
    except Exception as err:  # numpy raises ValueError, OSError, EOFError, zipfile.BadZipFile... for a bad file
        raise ValueError(f"{what} {path!r} is not a readable {suffix} file ({_first_line(err)})") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} {path!r} holds an array of dtype {arr.dtype}: expected numbers")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} {path!r} contains NaN or inf: expected finite values")
    return arr


def _first_line(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


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
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{what} {path!r} is not a readable image ({_first_line(err)})") from None
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    if as_mask:
        return np.round(pixels)  # white = 1
    lo, hi = model.card.data.range
    return lo + pixels * (hi - lo)


def _info(model):
    """The model card, the graph's inputs, the provider and what sampling uses when nothing is named, as JSON."""
    inputs = {i.name: f"{i.type}{list(i.shape)}" for i in model.session.get_inputs()}
    try:  # a bad student entry is reported here, not raised: --info is how one looks at a file
        names = ("sampler", "steps", "grid", "grid_options")
        default_sampling: dict | str = dict(zip(names, sampling_recipe(model.card), strict=True))
    except ValueError as err:
        default_sampling = str(err)
    record = {
        "path": model.path,
        "provider": model.provider,
        "inputs": inputs,
        "card": asdict(model.card),
        "default_sampling": default_sampling,
    }
    return json.dumps(record, indent=2, default=list)


def _grid_columns(model, args, indices):
    """Column k = class k: with the default cycling labels, one row per num_classes samples."""
    if model.conditional and args.class_label is None and args.index is None and model.num_classes <= 32:
        return min(model.num_classes, len(indices))
    return None


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
    model = Model.load(
        args.model,
        device=args.device,
        allow_cpu_fallback=args.allow_cpu_fallback,
        io_binding=io_binding,
        cuda_graph=args.cuda_graph,
        threads=args.threads,
        verbose=args.verbose,
    )
    if args.device == "cuda" and model.provider != "CUDAExecutionProvider":
        print(
            f"diffspec-sample: CUDA not available, running on {model.provider} (--allow-cpu-fallback)", file=sys.stderr
        )
    if args.info:
        print(_info(model))
        return 0
    count = len(args.index) if args.index is not None else args.n
    check_sample_size(count, model.data_shape, what="-n" if args.index is None else "--index")
    sampler_options, grid_options = {}, {}
    for dest, (where, name) in args._option_dests.items():
        value = getattr(args, dest)
        if value is not None:
            (sampler_options if where == "sampler" else grid_options)[name] = value
    init = None if args.init_image is None else load_image(args.init_image, model, what="--init-image")
    # one polarity everywhere: mask 1 (white) = keep init, as in sample() and reference.guidance.inpaint
    mask = None if args.mask is None else load_image(args.mask, model, what="--mask", as_mask=True)
    if args.repaint_mask is not None:  # diffusers' mask_image: white = generate
        mask = 1.0 - load_image(args.repaint_mask, model, what="--repaint-mask", as_mask=True)
    if args.class_label is not None and not model.conditional:
        raise ValueError(f"--class-label {args.class_label}: this model is unconditional (no classes in its metadata)")
    if (args.guidance_scale != 1.0 or args.guidance_rescale) and not model.conditional:
        raise ValueError(
            f"--guidance-scale {args.guidance_scale}: classifier-free guidance needs a class-conditional model, and "
            "this one is unconditional"
        )
    indices = args.index if args.index is not None else range(args.n)
    sampler, steps, grid_name, grid_options = sampling_recipe(
        model.card, args.sampler, args.steps, args.grid, grid_options
    )
    start = time.perf_counter()
    samples, labels = sample(
        model,
        sampler=sampler,
        steps=steps,
        indices=list(indices),
        seed=args.seed,
        batch_size=args.batch_size,
        grid=grid_name,
        grid_options=grid_options,
        class_label=args.class_label,
        guidance_scale=args.guidance_scale,
        guidance_rescale=args.guidance_rescale,
        init=init,
        mask=mask,
        strength=args.strength,
        progress=not args.quiet,
        return_labels=True,
        **sampler_options,
    )
    seconds = max(time.perf_counter() - start, 1e-9)
    write_samples(
        args.out,
        samples,
        kind=model.card.data.kind,
        value_range=model.card.data.range,
        labels=labels,
        indices=list(indices),
        columns=_grid_columns(model, args, indices),
    )
    print(
        f"wrote {args.out}: {len(indices)} samples of shape {model.data_shape}, "
        f"{describe_recipe(sampler, steps, grid_name, grid_options)}, in {seconds:.2f} s "
        f"({len(indices) / seconds:.1f} samples/s, {model.provider})"
    )
    return 0


def _message(err):
    """One line for an error a user can meet; OSError carries its path, MemoryError gets a hint."""
    if isinstance(err, MemoryError):
        return "out of memory: use a smaller -n or --batch-size"
    if isinstance(err, OSError):
        if err.errno == errno.ENOSPC and "no space" not in str(err):
            return f"no space left on device while writing {err.filename or 'the output'!r}"
        if err.filename is not None:
            return f"{err.strerror or err} ({err.filename!r})"
    text = " ".join(str(err).split()) or type(err).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status: 0, 2 for bad input, 1 for a failure while running, 130 on Ctrl-C."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return run(args, parser)
    except KeyboardInterrupt:
        print("diffspec-sample: interrupted (nothing was written)", file=sys.stderr)
        return 130
    except (ValueError, ModelFileError) as err:
        print(f"diffspec-sample: error: {_message(err)}", file=sys.stderr)
        return 2
    except (ProviderError, FloatingPointError, RuntimeError, OSError, MemoryError, ImportError) as err:
        print(f"diffspec-sample: error: {_message(err)}", file=sys.stderr)
        return 1
    except Exception as err:  # an onnxruntime or PIL error type not caught above: still one line, no traceback
        print(f"diffspec-sample: error: {type(err).__name__}: {_message(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
