"""torch network -> one verified, self-describing `.onnx` file.

See the package docstring for the exporter choice. The steps of `export_model`:

1. trace the network (fp32, eval, CPU) with `torch.onnx.export(dynamo=True)` and a symbolic batch axis (and
   symbolic spatial axes with `dynamic_size=True`); or, with `exporter="torchscript"`, the TorchScript exporter
   with `dynamic_axes`. `cfg_fused=True` wraps the network in `CfgFused` first.
2. `fp16=True`: convert the graph with `diffspec.export.fp16.convert_to_fp16`.
3. attach `ModelCard.to_metadata()` plus `diffspec.export` (exporter, opset, weights, torch/onnx versions).
4. write to a temporary directory next to the target, run `verify` on that file, then rename into place.
"""

import contextlib
import dataclasses
import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx
import torch
from diffspec.export.checkpoints import card_from_config, inference_mode, load_checkpoint
from diffspec.export.files import EXTERNAL_DATA_THRESHOLD, write_atomically
from diffspec.export.fp16 import convert_to_fp16
from diffspec.export.verify import EXPORT_KEY, RANDOM_OPS, VerificationError, VerifyReport, verify
from diffspec.reference.modelcard import ModelCard
from torch import nn

SUPPORTED_OPSETS = (18, 19, 20)
DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")


class CfgFused(nn.Module):
    """Classifier-free guidance in one call: out = u + s (c - u) (the diffusers convention: off at s = 1).

    The batch is concatenated inside the graph, [x; x] with labels [y; null_class], so the conditional and
    unconditional passes share one network call. Ho & Salimans (2022) write (1 + w) c - w u: s = 1 + w.
    With a learned variance (2C output channels) only the first C are guided; the variance comes from the
    conditional pass (the GLIDE / ADM convention).
    """

    def __init__(self, model, null_class, *, learned_variance=False):
        super().__init__()
        self.model, self.null_class, self.learned_variance = model, int(null_class), bool(learned_variance)

    def forward(self, x, t, y, guidance_scale):
        b = x.shape[0]
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, self.null_class)]))
        cond, uncond = out[:b], out[b:]
        if self.learned_variance:  # channels [C: 2C] are the variance output: taken from the conditional pass
            c = x.shape[1]
            guided = uncond[:, :c] + guidance_scale * (cond[:, :c] - uncond[:, :c])
            return torch.cat([guided, cond[:, c:]], dim=1)
        return uncond + guidance_scale * (cond - uncond)


def _check_options(card, path, opset, exporter, example_shape):
    if not isinstance(card, ModelCard):
        raise ValueError(f"card={card!r}: expected a diffspec.reference.modelcard.ModelCard")
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"opset={opset!r}: expected one of {list(SUPPORTED_OPSETS)} (18-20: GroupNorm stays "
            "decomposed and attention is MatMul+Softmax, what onnxruntime's CUDA provider fuses best)"
        )
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter={exporter!r}: expected one of {list(EXPORTERS)}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"output path {str(path)!r}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"output path {str(path)!r} is a directory: expected a file name such as model.onnx")
    if example_shape is not None and (len(example_shape) < 1 or any(int(d) < 1 for d in example_shape)):
        raise ValueError(f"example_shape={example_shape!r}: expected the shape of one sample, e.g. (1, 8, 8)")
    card.reference_schedule()
    return path


def _example_inputs(card, shape, cfg_fused, batch=2):
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(batch, *shape, generator=g), torch.rand(batch, generator=g)]
    if card.num_classes is not None:
        args.append(torch.randint(0, card.num_classes + 1, (batch,), generator=g))
    if cfg_fused:
        args.append(torch.tensor([2.0]))
    return tuple(args)


def _trace(net, args, names, *, opset, exporter, dynamic_size):
    spatial = len(args[0].shape) - 2 if dynamic_size else 0
    log = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # torch logs guard failures and a torchvision notice on its own handlers
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            return _fix_axis_names(_trace_quiet(net, args, names, opset=opset, exporter=exporter, spatial=spatial))
    finally:
        logging.disable(previous)


def _size_name(i, spatial):
    return ("height", "width")[i] if spatial == 2 else f"size{i}"


def _trace_quiet(net, args, names, *, opset, exporter, spatial):
    if exporter == "dynamo":
        batch = torch.export.Dim("batch")
        x_dyn = {0: batch}
        for i in range(spatial):
            x_dyn[2 + i] = torch.export.Dim(_size_name(i, spatial), min=2)
        dyn = [x_dyn, {0: batch}] + [{0: batch}] * ("y" in names) + [None] * ("guidance_scale" in names)
        prog = torch.onnx.export(
            net,
            args,
            dynamo=True,
            opset_version=opset,
            input_names=names,
            output_names=["out"],
            dynamic_shapes=tuple(dyn),
            verbose=False,
        )
        model = prog.model_proto
    else:
        axes = {n: {0: "batch"} for n in names if n != "guidance_scale"}
        axes["out"] = {0: "batch"}
        for i in range(spatial):
            axes["x"][2 + i] = axes["out"][2 + i] = _size_name(i, spatial)
        buf = io.BytesIO()
        torch.onnx.export(
            net,
            args,
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=["out"],
            dynamic_axes=axes,
        )
        model = onnx.load_from_string(buf.getvalue())
    return model


def _fix_axis_names(model):
    """One name per symbolic axis: "batch" for axis 0 everywhere, and the output's symbolic axes named like x's
    (the dynamo exporter writes expressions such as 2*((height - 1)//2) + 2 for a UNet's output)."""
    for vi in [*model.graph.input, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    x_dims = model.graph.input[0].type.tensor_type.shape.dim
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(x_dims) == len(out_dims):
        for xd, od in zip(x_dims[1:], out_dims[1:]):
            if xd.dim_param and not od.HasField("dim_value"):
                od.dim_param = xd.dim_param
    return model


def to_onnx(
    model,
    card,
    *,
    opset=DEFAULT_OPSET,
    fp16=False,
    cfg_fused=False,
    dynamic_size=False,
    example_shape=None,
    exporter="dynamo",
    weights="ema",
):
    """The exported ModelProto with its metadata (not written, not verified). See `export_model`."""
    shape = tuple(int(d) for d in (example_shape or card.data.shape))
    if cfg_fused and card.num_classes is None:
        raise ValueError("cfg_fused=True needs a class-conditional model (card.num_classes is None)")
    if dynamic_size and len(shape) < 2:
        raise ValueError(f"dynamic_size=True needs image data [C, H, W]: the data shape is {list(shape)}")
    card = dataclasses.replace(card, cfg_fused=bool(cfg_fused), precision="fp16" if fp16 else "fp32")
    net = CfgFused(model, card.null_class, learned_variance=card.learned_variance) if cfg_fused else model
    names = ["x", "t"] + ["y"] * (card.num_classes is not None) + ["guidance_scale"] * bool(cfg_fused)
    args = _example_inputs(card, shape, cfg_fused)
    try:
        with inference_mode(model):
            onnx_model = _trace(net, args, names, opset=opset, exporter=exporter, dynamic_size=dynamic_size)
    except ValueError:
        raise
    except Exception as err:
        raise VerificationError(
            f"torch.onnx.export ({exporter}, opset {opset}) failed: {type(err).__name__}: {str(err)[:2000]}"
        ) from err
    random_ops = sorted({n.op_type for n in onnx_model.graph.node if n.op_type in RANDOM_OPS})
    if random_ops:
        raise VerificationError(f"the exported graph contains random ops {random_ops}: is the network in eval mode?")
    if fp16:
        onnx_model = convert_to_fp16(onnx_model)
    onnx_model.producer_name, onnx_model.producer_version = "diffspec", card.version
    onnx_model.doc_string = "diffspec denoiser; metadata keys diffspec.* (diffspec.reference.modelcard)"
    del onnx_model.metadata_props[:]
    props = card.to_metadata()
    props[EXPORT_KEY] = json.dumps(
        {
            "exporter": exporter,
            "opset": opset,
            "weights": weights,
            "dynamic_size": bool(dynamic_size),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
        }
    )
    onnx.helper.set_model_props(onnx_model, props)
    return onnx_model


def export_model(
    model: nn.Module,
    card: ModelCard,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    cfg_fused: bool = False,
    dynamic_size: bool = False,
    example_shape: Sequence[int] | None = None,
    exporter: str = "dynamo",
    weights: str = "ema",
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
    verify_batch_sizes: Sequence[int] = (1, 4),
    seed: int | None = None,
    log: Callable[[str], object] = print,
) -> VerifyReport:
    """Export a network with forward(x, t, y=None) to `path`, verified; returns the VerifyReport.

    Any torch module works, not only diffspec's: give it the contract with `diffspec.export.NetworkAdapter`
    (e.g. diffusers-style forward(sample, timestep, class_labels) returning an object with `.sample`) and describe
    it with a card (`ModelCard.from_diffusers(scheduler_config, sample_size=..., in_channels=...)`, or a ModelCard
    built by hand): t is the schedule's own time, x the data in the card's model space.
    `card`: the ModelCard to store (its `cfg_fused` and `precision` are set from the options).
    `fp16`: float16 weights and compute, float32 inputs/outputs (see `diffspec.export.fp16`).
    `cfg_fused`: the graph takes `guidance_scale` float32 [1] and returns u + s (c - u) (see `CfgFused`).
    `dynamic_size`: symbolic spatial axes too (fully convolutional networks only; verified at two sizes).
    `example_shape`: one sample's shape for tracing, default `card.data.shape`.
    `external_data_threshold`: initializer bytes above which weights go to `path.name + ".data"`.
    Nothing is left at `path` if tracing, conversion or verification fails.
    """
    path = _check_options(card, path, opset, exporter, example_shape)
    onnx_model = to_onnx(
        model,
        card,
        opset=opset,
        fp16=fp16,
        cfg_fused=cfg_fused,
        dynamic_size=dynamic_size,
        example_shape=example_shape,
        exporter=exporter,
        weights=weights,
    )
    reports = []

    def check(tmp):
        # The file is verified under its temporary name; the log names the path the user asked for.
        def log_final(line: str) -> object:
            return log(line.replace(str(tmp), str(path)))

        reports.append(verify(tmp, model, batch_sizes=verify_batch_sizes, seed=seed, log=log_final))

    written = write_atomically(onnx_model, path, external_data_threshold=external_data_threshold, check=check)
    log("wrote " + ", ".join(f"{p} ({p.stat().st_size / 1e6:.2f} MB)" for p in written))
    report = reports[0]
    report.path = str(path)
    return report


def export_checkpoint(ckpt_dir: str | Path, path: str | Path, *, ema: bool = True, **options) -> VerifyReport:
    """Export a trainer checkpoint (EMA weights unless ema=False) to `path`; options as in `export_model`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"output path {str(path)!r}: directory {str(path.parent)!r} does not exist")
    model, config, ckpt, weights = load_checkpoint(ckpt_dir, ema=ema)
    card = card_from_config(config, ckpt=ckpt)
    options.get("log", print)(f"checkpoint {ckpt} ({weights} weights, arch {config['model']['arch']})")
    return export_model(model, card, path, weights=weights, **options)
