"""float32 -> float16 conversion of an exported ONNX graph, with float32 kept where float16 is unsafe.

onnxconverter-common is not a dependency; this is the small, explicit version of what it does:

1. Every node gets a *compute dtype*. Matrix products and convolutions (`FP16_OPS`) compute in float16;
   normalization, softmax and the transcendental/reduction ops whose float16 versions overflow or lose the
   time embedding (`FP32_OPS`: InstanceNormalization - the decomposed GroupNorm of opsets 18-20 -,
   LayerNormalization, Softmax, ReduceMean, Pow, Sqrt, Exp, Sin, Cos, ...) stay float32; every other node
   follows its inputs (float16 as soon as one of them is float16; float16 when all of them are constants, e.g.
   an embedding table read by Gather). The graph inputs are float32, so the
   sinusoidal embedding of `t` (Mul, Sin, Cos) stays float32 until its first Gemm: float16 would round
   t = 999 to a multiple of 0.5.
2. Which inputs of a node are "data" (converted) and which are not (a Resize's `scales`, a Reshape's shape)
   is read from the operator schema: an input is data when it shares its type variable with an output.
3. An initializer used only as data of float16 nodes is stored in float16 (unless a value exceeds the
   float16 range); one that also feeds a float32 node stays float32 and is cast where needed (onnxruntime
   folds such Casts at load time).
4. A Cast is inserted wherever a tensor's dtype differs from its consumer's compute dtype, and before each
   graph output that ends in float16, so the graph's inputs and outputs remain float32.

Graphs with subgraphs (If/Loop/Scan) or non-default operator domains are refused rather than half converted.
"""

import copy
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16

FP16_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum"})
FP32_OPS = frozenset(
    {
        "Softmax",
        "LogSoftmax",
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "BatchNormalization",
        "RMSNormalization",
        "LpNormalization",
        "MeanVarianceNormalization",
        "ReduceMean",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "ReduceLogSumExp",
        "ReduceProd",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Exp",
        "Log",
        "Sin",
        "Cos",
        "Range",
        "CumSum",
    }
)
_FP16_MAX = float(np.finfo(np.float16).max)


def _formal(params, i):
    """The formal parameter of actual argument i (the last one may be variadic)."""
    if i < len(params):
        return params[i]
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return params[-1]
    return None


def _data_io(node, opset):
    """Indices of the node's inputs and outputs that share a type variable (the tensors to convert)."""
    schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    out_types = {}
    for j in range(len(node.output)):
        p = _formal(schema.outputs, j)
        if p is not None:
            out_types[j] = p.type_str
    shared = set(out_types.values())
    ins = [
        i for i in range(len(node.input)) if node.input[i] and (p := _formal(schema.inputs, i)) and p.type_str in shared
    ]
    data_types = {_formal(schema.inputs, i).type_str for i in ins}
    outs = [j for j, ts in out_types.items() if ts in data_types and node.output[j]]
    return ins, outs


def convert_to_fp16(model):
    """A new ModelProto computing in float16 with float32 graph inputs and outputs (see the module docstring)."""
    model = copy.deepcopy(model)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"fp16 conversion: node {node.name!r} uses domain {node.domain!r}: expected only ONNX ops")
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(f"fp16 conversion: node {node.name!r} ({node.op_type}) has a subgraph: not supported")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    elem = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        elem[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name: t for t in graph.initializer}
    for name, t in inits.items():
        elem[name] = t.data_type

    dtype = {i.name: i.type.tensor_type.elem_type for i in graph.input}  # converted dtypes of non-constant tensors
    plan = []  # (node, compute dtype or None, data input indices)
    init_uses = defaultdict(set)  # initializer name -> set of compute dtypes it is data for (None = non-data use)
    for node in graph.node:
        ins, outs = _data_io(node, opset)
        ins = [i for i in ins if elem.get(node.input[i]) in (FLOAT, FLOAT16)]
        mode = None
        if ins:
            live = [dtype.get(node.input[i], FLOAT) for i in ins if node.input[i] not in inits]
            if node.op_type in FP32_OPS:
                mode = FLOAT
            elif node.op_type in FP16_OPS or FLOAT16 in live or not live:
                mode = FLOAT16
            else:
                mode = FLOAT
        for i, name in enumerate(node.input):
            if name in inits:
                init_uses[name].add(mode if i in ins else None)
        for j, name in enumerate(node.output):
            dtype[name] = mode if (mode is not None and j in outs) else elem.get(name, 0)
        plan.append((node, mode, ins))

    for name, t in inits.items():
        if t.data_type != FLOAT or init_uses[name] != {FLOAT16}:
            continue
        values = numpy_helper.to_array(t)
        if np.all(np.abs(values) <= _FP16_MAX):
            t.CopyFrom(numpy_helper.from_array(values.astype(np.float16), name))

    def current(name):
        return inits[name].data_type if name in inits else dtype.get(name, elem.get(name))

    nodes, casts = [], {}
    for node, mode, ins in plan:
        for i in ins:
            src = node.input[i]
            if current(src) == mode:
                continue
            key = (src, mode)
            if key not in casts:
                casts[key] = f"{src}__to_{'fp16' if mode == FLOAT16 else 'fp32'}"
                nodes.append(helper.make_node("Cast", [src], [casts[key]], to=mode, name=casts[key]))
            node.input[i] = casts[key]
        nodes.append(node)
    for out in graph.output:
        if dtype.get(out.name) == FLOAT16 and out.type.tensor_type.elem_type == FLOAT:
            inner = out.name + "__fp16"
            for node in nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if o == out.name else o for o in node.input]
            nodes.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=out.name + "__to_fp32"))
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.ClearField("value_info")
    return model
