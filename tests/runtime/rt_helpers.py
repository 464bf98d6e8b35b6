"""Helpers for the runtime tests. Tiny ONNX models that follow the contract (docs/architecture.md), built with onnx.helper, for the runtime tests.

The networks are arbitrary smooth functions (their samples mean nothing); what matters is the contract: inputs x
float32 [B, ...], t float32 [B], y int64 [B]; output shaped like x; ModelCard metadata in metadata_props.
"""

import os
import subprocess
import sys

import numpy as np
import onnx
from diffspec.reference.modelcard import DataInfo, ModelCard  # noqa: E402
from diffspec.reference.schedules import make_schedule  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _save(graph, path, metadata):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="diffspec-tests")
    model.ir_version = 9
    for k, v in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def points_model(
    path,
    *,
    num_classes=3,
    dim=2,
    metadata=True,
    t_dtype=TensorProto.FLOAT,
    parameterization="x0",
    schedule=None,
    seed=0,
):
    """x (B, dim) -> tanh(x W + t c + E[y] + b): a smooth x0-predictor for 2-D points, optionally conditional."""
    rng = np.random.default_rng(seed)
    init = [
        numpy_helper.from_array((0.5 * rng.standard_normal((dim, dim))).astype(np.float32), "W"),
        numpy_helper.from_array((0.001 * rng.standard_normal((1, dim))).astype(np.float32), "c"),
        numpy_helper.from_array((0.3 * rng.standard_normal((dim,))).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["tf", "one"], ["t2"]),
        helper.make_node("MatMul", ["t2", "c"], ["tc"]),
        helper.make_node("Add", ["xw", "tc"], ["h1"]),
        helper.make_node("Add", ["h1", "b"], ["h2"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", dim]),
        helper.make_tensor_value_info("t", t_dtype, ["B"]),
    ]
    if num_classes:
        init.append(
            numpy_helper.from_array((0.8 * rng.standard_normal((num_classes + 1, dim))).astype(np.float32), "E")
        )
        nodes.append(helper.make_node("Gather", ["E", "y"], ["ey"], axis=0))
        nodes.append(helper.make_node("Add", ["h2", "ey"], ["h3"]))
        inputs.append(helper.make_tensor_value_info("y", TensorProto.INT64, ["B"]))
    else:
        nodes.append(helper.make_node("Identity", ["h2"], ["h3"]))
    nodes.append(helper.make_node("Tanh", ["h3"], ["out"]))
    graph = helper.make_graph(
        nodes, "points", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", dim])], init
    )
    schedule = schedule or make_schedule("linear")
    card = ModelCard(
        schedule=schedule.to_dict(),
        parameterization=parameterization,
        data=DataInfo(shape=(dim,), kind="points", range=(-2.0, 2.0), scale=0.5, shift=0.0, name="toy"),
        num_classes=num_classes or None,
        null_class=num_classes or None,
    )
    return _save(graph, path, card.to_metadata() if metadata else None), card


def image_model(path, *, shape=(1, 8, 8), num_classes=None, seed=1, parameterization="v"):
    """x (B, C, H, W) -> tanh(a x + roll(x) d + t c): a smooth v-predictor for tiny images in the range 0..16."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    init = [
        numpy_helper.from_array((0.5 + 0.1 * rng.standard_normal(shape)).astype(np.float32), "a"),
        numpy_helper.from_array((0.1 * rng.standard_normal(shape)).astype(np.float32), "d"),
        numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.float32(1e-4).reshape(1, 1, 1, 1), "c"),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "a"], ["ax"]),
        helper.make_node("Transpose", ["x"], ["xT"], perm=[0, 1, 3, 2]),
        helper.make_node("Mul", ["xT", "d"], ["dx"]),
        helper.make_node("Unsqueeze", ["t", "axes"], ["t4"]),
        helper.make_node("Mul", ["t4", "c"], ["tc"]),
        helper.make_node("Add", ["ax", "dx"], ["h1"]),
        helper.make_node("Add", ["h1", "tc"], ["h2"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", *shape]),
        helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B"]),
    ]
    if num_classes:
        init.append(
            numpy_helper.from_array((0.3 * rng.standard_normal((num_classes + 1, 1, 1, 1))).astype(np.float32), "E")
        )
        nodes.append(helper.make_node("Gather", ["E", "y"], ["ey"], axis=0))
        nodes.append(helper.make_node("Add", ["h2", "ey"], ["h3"]))
        inputs.append(helper.make_tensor_value_info("y", TensorProto.INT64, ["B"]))
    else:
        nodes.append(helper.make_node("Identity", ["h2"], ["h3"]))
    nodes.append(helper.make_node("Tanh", ["h3"], ["out"]))
    graph = helper.make_graph(
        nodes, "image", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", *shape])], init
    )
    card = ModelCard(
        schedule=make_schedule("cosine").to_dict(),
        parameterization=parameterization,
        data=DataInfo(shape=shape, kind="image", range=(0.0, 16.0), scale=2 / 16, shift=-1.0, name="digits-like"),
        num_classes=num_classes,
        null_class=num_classes,
    )
    return _save(graph, path, card.to_metadata()), card


def build_models(d):
    """Paths of the tiny models, written under folder d."""
    paths = {
        "points": points_model(d / "points.onnx")[0],
        "points_uncond": points_model(d / "points_uncond.onnx", num_classes=0)[0],
        "points_eps_edm": points_model(
            d / "points_edm.onnx", num_classes=0, parameterization="eps", schedule=make_schedule("edm")
        )[0],
        "image": image_model(d / "image.onnx")[0],
        "image_cond": image_model(d / "image_cond.onnx", num_classes=10)[0],
        "no_metadata": points_model(d / "plain.onnx", metadata=False)[0],
        "int_t": points_model(d / "int_t.onnx", t_dtype=TensorProto.INT64)[0],
    }
    with open(paths["points"], "rb") as f:
        blob = f.read()
    (d / "truncated.onnx").write_bytes(blob[: len(blob) // 2])
    (d / "not_onnx.onnx").write_text("this is not an ONNX file\n")
    paths["truncated"] = str(d / "truncated.onnx")
    paths["not_onnx"] = str(d / "not_onnx.onnx")
    return paths


def run_cli(*args, env_extra=None, block_torch=False, cwd=None):
    """Run `python -m diffspec.runtime ARGS` (optionally with torch blocked) and return the CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.update(env_extra or {})
    if block_torch:
        code = (
            "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; "
            "from diffspec.runtime.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        cmd = [sys.executable, "-c", code, *map(str, args)]
    else:
        cmd = [sys.executable, "-m", "diffspec.runtime", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd or ROOT, timeout=120)


def learned_variance_model(path, *, num_classes=3, dim=2, parameterization="eps", seed=2):
    """x (B, dim) -> [tanh(x W + t c + E[y] + b), tanh(x U + F[y])]: iDDPM's 2C output (the parameterization's
    output, then v in [-1, 1]), with learned_variance=True in the card; both halves depend on y."""
    rng = np.random.default_rng(seed)
    init = [
        numpy_helper.from_array((0.5 * rng.standard_normal((dim, dim))).astype(np.float32), "W"),
        numpy_helper.from_array((0.8 * rng.standard_normal((dim, dim))).astype(np.float32), "U"),
        numpy_helper.from_array((0.001 * rng.standard_normal((1, dim))).astype(np.float32), "c"),
        numpy_helper.from_array((0.3 * rng.standard_normal((dim,))).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Unsqueeze", ["t", "one"], ["t2"]),
        helper.make_node("MatMul", ["t2", "c"], ["tc"]),
        helper.make_node("Add", ["xw", "tc"], ["h1"]),
        helper.make_node("Add", ["h1", "b"], ["h2"]),
        helper.make_node("MatMul", ["x", "U"], ["g1"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", dim]),
        helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B"]),
    ]
    if num_classes:
        init.append(
            numpy_helper.from_array((0.8 * rng.standard_normal((num_classes + 1, dim))).astype(np.float32), "E")
        )
        init.append(
            numpy_helper.from_array((1.0 * rng.standard_normal((num_classes + 1, dim))).astype(np.float32), "F")
        )
        nodes += [
            helper.make_node("Gather", ["E", "y"], ["ey"], axis=0),
            helper.make_node("Add", ["h2", "ey"], ["h3"]),
            helper.make_node("Gather", ["F", "y"], ["fy"], axis=0),
            helper.make_node("Add", ["g1", "fy"], ["g2"]),
        ]
        inputs.append(helper.make_tensor_value_info("y", TensorProto.INT64, ["B"]))
    else:
        nodes += [helper.make_node("Identity", ["h2"], ["h3"]), helper.make_node("Identity", ["g1"], ["g2"])]
    nodes += [
        helper.make_node("Tanh", ["h3"], ["mean"]),
        helper.make_node("Tanh", ["g2"], ["v"]),
        helper.make_node("Concat", ["mean", "v"], ["out"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "points_lv", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 2 * dim])], init
    )
    card = ModelCard(
        schedule=make_schedule("linear").to_dict(),
        parameterization=parameterization,
        data=DataInfo(shape=(dim,), kind="points", range=(-2.0, 2.0), scale=0.5, shift=0.0, name="toy"),
        num_classes=num_classes or None,
        null_class=num_classes or None,
        learned_variance=True,
    )
    return _save(graph, path, card.to_metadata()), card
