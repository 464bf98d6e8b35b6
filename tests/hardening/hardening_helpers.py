"""Helpers of the bad-input suite: tiny ONNX models built with onnx.helper, and in-process CLI runs."""

import contextlib
import io
import os
import traceback

import numpy as np
import onnx
from diffspec.reference.modelcard import DataInfo, ModelCard
from diffspec.reference.schedules import make_schedule
from onnx import TensorProto, helper, numpy_helper

W = np.array([[0.5, -0.2], [0.1, 0.7]], dtype=np.float32)


def card(**data_overrides):
    """The ModelCard of `points_model`: 2-D points, linear VP schedule, x0-prediction, 3 classes."""
    data = dict(shape=(2,), kind="points", range=(-2.0, 2.0), scale=0.5, shift=0.0, name="toy")
    data.update(data_overrides)
    return ModelCard(
        schedule=make_schedule("linear").to_dict(),
        parameterization="x0",
        data=DataInfo(**data),
        num_classes=3,
        null_class=3,
    )


def points_graph(*, initializer=None, extra_nodes=(), sparse=()):
    """x (B, 2), t (B,), y (B,) -> tanh(x W + E[y]) (t is read and ignored through a Cast)."""
    w = initializer if initializer is not None else numpy_helper.from_array(W, "W")
    emb = numpy_helper.from_array(np.linspace(-0.3, 0.3, 8, dtype=np.float32).reshape(4, 2), "E")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Gather", ["E", "y"], ["ey"], axis=0),
        helper.make_node("Add", ["xw", "ey"], ["h"]),
        helper.make_node("Tanh", ["h"], ["out"]),
        helper.make_node("Cast", ["t"], ["t_unused"], to=TensorProto.FLOAT),
        *extra_nodes,
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 2]),
        helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B"]),
        helper.make_tensor_value_info("y", TensorProto.INT64, ["B"]),
    ]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 2])]
    return helper.make_graph(nodes, "points", inputs, outputs, [w, emb], sparse_initializer=list(sparse))


def save(graph, path, metadata=None):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="diffspec-tests")
    model.ir_version = 9
    for k, v in (card().to_metadata() if metadata is None else metadata).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))
    return str(path)


def points_model(path, metadata=None):
    return save(points_graph(), path, metadata)


def external_tensor(name, location, array=W):
    """A TensorProto whose bytes live in `location` (offset 0), as onnx writes external data."""
    tensor = numpy_helper.from_array(array, name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(array.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def external_model(path, location, *, where="initializer"):
    """A points model whose weight W (or a tensor somewhere else in the graph) names external data at `location`."""
    if where == "initializer":
        return save(points_graph(initializer=external_tensor("W", location)), path)
    if where == "subgraph":  # an If node whose then-branch holds a Constant with external data
        const = helper.make_node("Constant", [], ["k"], value=external_tensor("K", location))
        branch = helper.make_graph([const], "then", [], [helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, 2])])
        cond = numpy_helper.from_array(np.array(True), "cond")
        node = helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=branch)
        graph = points_graph(extra_nodes=[node])
        graph.initializer.append(cond)
        return save(graph, path)
    if where == "sparse":
        values = external_tensor("S_values", location, np.array([1.0], dtype=np.float32))
        indices = numpy_helper.from_array(np.array([0], dtype=np.int64), "S_indices")
        sparse = helper.make_sparse_tensor(values, indices, [4])
        return save(points_graph(sparse=[sparse]), path)
    raise ValueError(where)


def run_cli(main, argv):
    """(exit code, stdout, stderr) of `main(argv)` run in-process; SystemExit is caught, a traceback is kept."""
    out, err = io.StringIO(), io.StringIO()
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
        except BaseException:  # noqa: BLE001 - a traceback reaching the user is exactly what the suite detects
            err.write(traceback.format_exc())
            code = "traceback"
    return code, out.getvalue(), err.getvalue()


def assert_clean_failure(code, stderr, *needles):
    """A non-zero exit, one message naming each needle, and no traceback."""
    assert code not in (0, None, "traceback"), (code, stderr)
    assert "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle.lower() in stderr.lower(), (needle, stderr)


def chdir(path):
    return contextlib.chdir(os.fspath(path))


def image_card(num_classes=3):
    data = DataInfo(shape=(1, 4, 4), kind="image", range=(0.0, 1.0), scale=2.0, shift=-1.0, name="tiny")
    return ModelCard(
        schedule=make_schedule("linear").to_dict(),
        parameterization="x0",
        data=data,
        num_classes=num_classes,
        null_class=num_classes,
    )


def image_model(path, *, num_classes=3):
    """x (B, 1, 4, 4), t (B,), y (B,) -> tanh(0.9 x + E[y]): a tiny class-conditional image denoiser."""
    init = [numpy_helper.from_array(np.array(0.9, dtype=np.float32), "a")]
    nodes = [helper.make_node("Mul", ["x", "a"], ["xa"]), helper.make_node("Cast", ["t"], ["t_unused"], to=1)]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 1, 4, 4]),
        helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B"]),
    ]
    if num_classes:
        emb = np.linspace(-0.5, 0.5, (num_classes + 1) * 16, dtype=np.float32).reshape(num_classes + 1, 1, 4, 4)
        init.append(numpy_helper.from_array(emb, "E"))
        nodes += [helper.make_node("Gather", ["E", "y"], ["ey"], axis=0), helper.make_node("Add", ["xa", "ey"], ["h"])]
        inputs.append(helper.make_tensor_value_info("y", TensorProto.INT64, ["B"]))
    else:
        nodes.append(helper.make_node("Identity", ["xa"], ["h"]))
    nodes.append(helper.make_node("Tanh", ["h"], ["out"]))
    graph = helper.make_graph(
        nodes, "image", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 1, 4, 4])], init
    )
    return save(graph, path, image_card(num_classes or None).to_metadata())


def _metadata_with(**changes):
    """card()'s metadata with some data fields replaced (data__scale=0.0 sets data.scale)."""
    import json

    meta = card().to_metadata()
    data = json.loads(meta["diffspec.data"])
    for key, value in changes.items():
        data[key.split("__", 1)[1]] = value
    meta["diffspec.data"] = json.dumps(data)
    return meta
