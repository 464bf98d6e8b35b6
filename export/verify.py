"""Verification of an exported `.onnx` file: structure, metadata, and onnxruntime against the torch network.

`verify(onnx_path, model_or_checkpoint_dir)` runs, and prints, in order:

1. the external-data locations are safe (`files.check_external_data`);
2. `onnx.checker.check_model(full_check=True)` and strict shape inference;
3. the diffspec metadata parses (`ModelCard.from_metadata`) and rebuilds its reference schedule;
4. the graph contract (docs/architecture.md): inputs `x` float32 [B, ...], `t` float32 [B], `y` int64 [B] exactly
   when the card has classes, `guidance_scale` float32 [1] exactly when cfg_fused; one output `out` float32 of
   x's rank; a symbolic batch axis everywhere; no random op in the graph;
5. onnxruntime (CPU) against the torch network on fresh random inputs at two batch sizes (and at two
   resolutions when the spatial axes are symbolic), with t spread over [t_eps, t_max] and x drawn from the
   forward process at those t. Printed per run: max |d|, max |d| / max |torch|, relative L2 ||d|| / ||torch||.
   A fused-CFG graph is compared with u + s (c - u) from two torch calls.

Tolerances (`TOLERANCES`, chosen from the file's precision). fp32: max|d|/max|torch| <= 1e-4 and relative L2
<= 1e-4; measured 1e-7 to 3.5e-6 on the test networks and ~1e-6 on the trainer's default 4.3M-parameter UNet
(measured ~1e-6 on a 7M-parameter UNet), so the bound has >= 30x headroom for deeper networks yet catches any real
divergence (a wrong constant or a baked-in t are off by 1e-2 and more). fp16 (compared with the float32 torch
network): max|d|/max|torch| <= 3e-2 and relative L2 <= 1e-2; float16's eps is 9.8e-4 and the test networks
measure 2.6e-4 to 1.2e-3 relative L2.
Any failure raises `VerificationError` (a RuntimeError) with the numbers; bad arguments raise ValueError.
"""

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from diffspec.export.checkpoints import inference_mode, load_checkpoint
from diffspec.export.files import check_external_data, load_index_tensors, load_model_safely
from diffspec.reference.modelcard import PREFIX, ModelCard
from onnx import TensorProto

if TYPE_CHECKING:
    import torch


class VerificationError(RuntimeError):
    """An exported file failed a check; the message carries the measured numbers."""


@dataclass(frozen=True)
class Tolerance:
    max_abs_scaled: float  # max |onnx - torch| / max |torch|
    rel_l2: float  # ||onnx - torch|| / ||torch||


TOLERANCES = {"fp32": Tolerance(max_abs_scaled=1e-4, rel_l2=1e-4), "fp16": Tolerance(max_abs_scaled=3e-2, rel_l2=1e-2)}
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"}
)
EXPORT_KEY = PREFIX + "export"  # extra metadata (exporter, opset, weights); ModelCard.from_metadata ignores it


@dataclass(frozen=True)
class ParityRun:
    batch: int
    shape: tuple
    t: tuple
    max_abs: float
    max_abs_scaled: float
    rel_l2: float
    finite: bool
    guidance_scale: float | None = None

    def line(self):
        s = "" if self.guidance_scale is None else f" scale={self.guidance_scale:g}"
        ts = ", ".join(f"{v:.4g}" for v in self.t[:5]) + (", ..." if len(self.t) > 5 else "")
        return (
            f"B={self.batch} x{list(self.shape)} t=[{ts}]{s}: max|d| {self.max_abs:.2e}  "
            f"max|d|/max|ref| {self.max_abs_scaled:.2e}  relL2 {self.rel_l2:.2e}"
            + ("" if self.finite else "  NON-FINITE OUTPUT")
        )


@dataclass
class VerifyReport:
    path: str
    card: ModelCard
    tolerance: Tolerance
    runs: list = field(default_factory=list)
    node_count: int = 0
    op_types: tuple = ()

    @property
    def max_abs_scaled(self):
        return max(r.max_abs_scaled for r in self.runs)

    @property
    def rel_l2(self):
        return max(r.rel_l2 for r in self.runs)


def _dims(value_info):
    return [
        d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
        for d in value_info.type.tensor_type.shape.dim
    ]


def _fmt(value_info):
    name = TensorProto.DataType.Name(value_info.type.tensor_type.elem_type).lower()
    return f"{value_info.name} {name}[{','.join(map(str, _dims(value_info)))}]"


def metadata_of(model):
    return {p.key: p.value for p in model.metadata_props}


def export_info(model):
    """The exporter's extra metadata (weights, exporter, opset), {} when absent."""
    raw = metadata_of(model).get(EXPORT_KEY)
    return json.loads(raw) if raw else {}


def check_graph(model, *, source="the model"):
    """Steps 3-4 of the module docstring on a loaded ModelProto; returns the ModelCard. Raises VerificationError."""
    try:
        card = ModelCard.from_metadata(metadata_of(model), source=source)
    except (ValueError, TypeError, KeyError) as err:
        raise VerificationError(f"{source}: {err}") from None
    graph = model.graph
    random_ops = sorted({n.op_type for n in graph.node if n.op_type in RANDOM_OPS})
    if random_ops:
        raise VerificationError(
            f"{source}: the graph contains random ops {random_ops}: noise must be drawn by the runtime"
        )
    expected = {"x": TensorProto.FLOAT, "t": TensorProto.FLOAT}
    if card.num_classes is not None:
        expected["y"] = TensorProto.INT64
    if card.cfg_fused:
        expected["guidance_scale"] = TensorProto.FLOAT
    inputs = {i.name: i for i in graph.input}
    if list(inputs) != list(expected):
        raise VerificationError(f"{source}: graph inputs {list(inputs)}: expected {list(expected)} for this model card")
    for name, dtype in expected.items():
        if inputs[name].type.tensor_type.elem_type != dtype:
            wanted = TensorProto.DataType.Name(dtype).lower()
            raise VerificationError(f"{source}: input {_fmt(inputs[name])}: expected {wanted}")
    x_dims = _dims(inputs["x"])
    outputs = graph.output
    if len(outputs) != 1 or outputs[0].name != "out" or outputs[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise VerificationError(f"{source}: outputs {[_fmt(o) for o in outputs]}: expected one output 'out' float32")
    out_dims = _dims(graph.output[0])
    if len(out_dims) != len(x_dims):
        raise VerificationError(
            f"{source}: output {_fmt(graph.output[0])} does not have the rank of {_fmt(inputs['x'])}"
        )
    batch_inputs = [n for n in ("x", "t", "y") if n in inputs]
    for name in batch_inputs:
        if not isinstance(_dims(inputs[name])[0], str):
            raise VerificationError(f"{source}: input {_fmt(inputs[name])}: the batch axis must be symbolic (dynamic)")
    if len(_dims(inputs["t"])) != 1 or ("y" in inputs and len(_dims(inputs["y"])) != 1):
        raise VerificationError(f"{source}: t and y must be 1-D [B]: got {_fmt(inputs['t'])}")
    if "guidance_scale" in inputs and _dims(inputs["guidance_scale"]) != [1]:
        raise VerificationError(f"{source}: input {_fmt(inputs['guidance_scale'])}: expected shape [1]")
    static = [d for d in x_dims[1:] if not isinstance(d, str)]
    if len(static) == len(x_dims) - 1 and tuple(static) != tuple(card.data.shape):
        raise VerificationError(
            f"{source}: input {_fmt(inputs['x'])} does not match the card's data shape {list(card.data.shape)}"
        )
    return card


def _session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit():
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise VerificationError(f"{path}: onnxruntime cannot load the model ({type(err).__name__}: {err})") from None


def _torch_network(model_or_checkpoint_dir, onnx_model):
    if isinstance(model_or_checkpoint_dir, (str, os.PathLike)):
        ema = export_info(onnx_model).get("weights", "ema") == "ema"
        return load_checkpoint(model_or_checkpoint_dir, ema=ema)[0]
    return model_or_checkpoint_dir


def _inputs(card, shape, batch, rng, *, scale=None):
    schedule = card.reference_schedule()
    t_lo, t_hi = float(schedule.t_eps), float(schedule.t_max)
    t = rng.uniform(t_lo, t_hi, size=batch)
    if batch >= 2:
        t[0], t[-1] = t_hi, t_lo
    lo, hi = card.data.range
    x0 = rng.uniform(lo, hi, size=(batch, *shape)) * card.data.scale + card.data.shift
    bshape = (batch,) + (1,) * len(shape)
    x = schedule.alpha(t).reshape(bshape) * x0 + schedule.sigma(t).reshape(bshape) * rng.standard_normal(x0.shape)
    feeds = {"x": x.astype(np.float32), "t": t.astype(np.float32)}
    if card.num_classes is not None:
        feeds["y"] = rng.integers(0, card.num_classes + 1, size=batch).astype(np.int64)
    if card.cfg_fused:
        feeds["guidance_scale"] = np.array([scale], dtype=np.float32)
    return feeds


def _torch_output(net, card, feeds):
    import torch

    with torch.inference_mode():
        x, t = torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["t"])
        if card.num_classes is None:
            return net(x, t).float().numpy()
        y = torch.from_numpy(feeds["y"])
        if not card.cfg_fused:
            return net(x, t, y).float().numpy()
        cond = net(x, t, y).double()
        uncond = net(x, t, torch.full_like(y, card.null_class)).double()
        c = x.shape[1] if card.learned_variance else cond.shape[1]
        guided = uncond[:, :c] + float(feeds["guidance_scale"][0]) * (cond[:, :c] - uncond[:, :c])
        return torch.cat([guided, cond[:, c:]], dim=1).numpy()


def compare(ort_out, ref):
    """(max |d|, max |d| / max |ref|, ||d|| / ||ref||, all finite) in float64."""
    ort_out, ref = np.asarray(ort_out, np.float64), np.asarray(ref, np.float64)
    if ort_out.shape != ref.shape:
        raise VerificationError(f"onnxruntime output shape {ort_out.shape} != torch output shape {ref.shape}")
    finite = bool(np.all(np.isfinite(ort_out)))
    d = ort_out - ref
    max_abs = float(np.max(np.abs(d))) if finite else float("inf")
    scale = max(float(np.max(np.abs(ref))), np.finfo(np.float64).tiny)
    tiny = np.finfo(np.float64).tiny
    rel = float(np.linalg.norm(d) / max(float(np.linalg.norm(ref)), tiny)) if finite else float("inf")
    return max_abs, max_abs / scale, rel, finite


def verify(
    onnx_path: str | Path,
    model_or_checkpoint_dir: "torch.nn.Module | str | Path",
    *,
    batch_sizes: Sequence[int] = (1, 4),
    seed: int | None = None,
    tolerance: Tolerance | None = None,
    log: Callable[[str], object] = print,
) -> VerifyReport:
    """Check an exported file and compare onnxruntime with the torch network; print and return a VerifyReport.

    `model_or_checkpoint_dir`: the torch network (an nn.Module with forward(x, t, y=None), fp32, eval) or a
    checkpoint directory (loaded with the weights recorded in the file's metadata, EMA by default).
    `seed`: None draws fresh inputs (the seed used is printed so a failure can be replayed).
    `tolerance`: a `Tolerance`, default `TOLERANCES[card.precision]`. Raises VerificationError on any failure.
    """
    path = Path(onnx_path)
    if len(batch_sizes) < 2 or len(set(batch_sizes)) < 2 or min(batch_sizes) < 1:
        raise ValueError(f"batch_sizes={batch_sizes!r}: expected at least two different batch sizes >= 1")
    log(f"verify {path}")
    header = load_model_safely(path, load_external_data=False)
    check_external_data(header, path.parent, source=str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:
        raise VerificationError(f"{path}: onnx.checker failed: {err}") from None
    log("  onnx.checker.check_model(full_check=True): ok")
    try:
        indexed = load_index_tensors(onnx.ModelProto.FromString(header.SerializeToString()), path.parent)
        inferred = onnx.shape_inference.infer_shapes(indexed, check_type=True, strict_mode=True, data_prop=True)
    except Exception as err:
        raise VerificationError(f"{path}: shape inference failed: {err}") from None
    log(f"  shape inference (strict): ok, output {_fmt(inferred.graph.output[0])}")
    card = check_graph(header, source=str(path))
    info = export_info(header)
    classes = "unconditional" if card.num_classes is None else f"{card.num_classes} classes (null {card.null_class})"
    log(
        f"  metadata: schedule {card.schedule.get('name')}, parameterization {card.parameterization}, "
        f"precision {card.precision}, {classes}, cfg_fused {card.cfg_fused}, data {list(card.data.shape)}, "
        f"weights {info.get('weights', '?')}, exporter {info.get('exporter', '?')} opset {info.get('opset', '?')}"
    )
    log(
        f"  graph: {', '.join(_fmt(i) for i in header.graph.input)} -> {_fmt(header.graph.output[0])}; "
        f"{len(header.graph.node)} nodes, no random ops"
    )
    if tolerance is None:
        if card.precision not in TOLERANCES:
            raise VerificationError(f"{path}: precision {card.precision!r}: expected one of {sorted(TOLERANCES)}")
        tolerance = TOLERANCES[card.precision]
    net = _torch_network(model_or_checkpoint_dir, header)
    with inference_mode(net):
        return _parity(path, header, card, net, tolerance, batch_sizes, seed, log)


def _parity(path, header, card, net, tolerance, batch_sizes, seed, log):
    ops = tuple(sorted({n.op_type for n in header.graph.node}))
    session = _session(path)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    x_dims = _dims(next(i for i in header.graph.input if i.name == "x"))[1:]
    shapes = [tuple(card.data.shape)]
    if any(isinstance(d, str) for d in x_dims):  # dynamic resolution: also run at twice the spatial size
        shapes.append(tuple(card.data.shape[:1]) + tuple(2 * d for d in card.data.shape[1:]))
    tolerance_name = card.precision if tolerance is TOLERANCES.get(card.precision) else "custom"
    log(
        f"  onnxruntime {session.get_providers()[0]} vs torch, seed {seed}, tolerance {tolerance_name}: "
        f"max|d|/max|ref| <= {tolerance.max_abs_scaled:g}, relL2 <= {tolerance.rel_l2:g}"
    )
    report = VerifyReport(str(path), card, tolerance, node_count=len(header.graph.node), op_types=ops)
    scales = iter([1.5, 7.5, 4.0, 3.0])
    for shape in shapes:
        for batch in batch_sizes:
            scale = next(scales, 2.0) if card.cfg_fused else None
            feeds = _inputs(card, shape, batch, rng, scale=scale)
            try:
                (out,) = session.run(["out"], feeds)
            except Exception as err:
                raise VerificationError(
                    f"{path}: onnxruntime failed at batch {batch}, x {list(feeds['x'].shape)}: {err}"
                ) from None
            ref = _torch_output(net, card, feeds)
            run = ParityRun(
                batch,
                feeds["x"].shape[1:],
                tuple(float(v) for v in feeds["t"]),
                *compare(out, ref),
                guidance_scale=scale,
            )
            report.runs.append(run)
            log("    " + run.line())
    bad = [
        r
        for r in report.runs
        if not r.finite or r.max_abs_scaled > tolerance.max_abs_scaled or r.rel_l2 > tolerance.rel_l2
    ]
    if bad:
        raise VerificationError(
            f"{path}: onnxruntime and torch disagree beyond the {card.precision} tolerance "
            f"(max|d|/max|ref| <= {tolerance.max_abs_scaled:g}, relL2 <= {tolerance.rel_l2:g}; seed {seed}): "
            + "; ".join(r.line() for r in bad)
        )
    log("  ok")
    return report
