"""ONNX export: round trips for the real MLP, UNet (attention, classes) and DiT, metadata, dynamic batch and
size, fp16, fused CFG, external data, path traversal, atomic writes, bad inputs."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from diffspec.export import (
    TOLERANCES,
    VerificationError,
    check_external_data,
    export_model,
    load_model_safely,
    verify,
)
from diffspec.export.verify import check_graph, export_info
from diffspec.reference.modelcard import ModelCard
from diffspec.reference.schedules import make_schedule
from export_helpers import NUM_CLASSES, SHAPES, build, card_for
from onnx import TensorProto, helper

ARCHS = ["mlp", "unet", "dit"]


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def feeds_for(arch, batch, rng, *, shape=None, scale=None):
    shape = shape or SHAPES[arch]
    f = {
        "x": rng.standard_normal((batch, *shape)).astype(np.float32),
        "t": rng.uniform(0, 999, batch).astype(np.float32),
    }
    if arch != "mlp":
        f["y"] = rng.integers(0, NUM_CLASSES + 1, batch).astype(np.int64)
    if scale is not None:
        f["guidance_scale"] = np.array([scale], np.float32)
    return f


def torch_out(model, f):
    args = [torch.from_numpy(f["x"]), torch.from_numpy(f["t"])] + ([torch.from_numpy(f["y"])] if "y" in f else [])
    with torch.no_grad():
        return model(*args).numpy()


def rel_l2(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """arch -> (model, card, path, report) for the fp32 export of each network."""
    out = {}
    for arch in ARCHS:
        model, card = build(arch), card_for(arch)
        path = tmp_path_factory.mktemp(arch) / "model.onnx"
        report = export_model(model, card, path, seed=0, log=lambda s: None)
        out[arch] = (model, card, path, report)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_fp32(exported, arch):
    model, card, path, report = exported[arch]
    assert report.max_abs_scaled < TOLERANCES["fp32"].max_abs_scaled
    assert len(report.runs) == 2 and {r.batch for r in report.runs} == {1, 4}
    sess = session(path)
    names = [i.name for i in sess.get_inputs()]
    assert names == (["x", "t"] if arch == "mlp" else ["x", "t", "y"])
    types = {i.name: i.type for i in sess.get_inputs()}
    assert types["x"] == types["t"] == "tensor(float)" and types.get("y", "tensor(int64)") == "tensor(int64)"
    assert [o.name for o in sess.get_outputs()] == ["out"] and sess.get_outputs()[0].type == "tensor(float)"
    rng = np.random.default_rng(1)
    for batch in (1, 3, 7):  # dynamic batch, beyond the two the verifier used
        f = feeds_for(arch, batch, rng)
        (out,) = sess.run(["out"], f)
        ref = torch_out(model, f)
        assert out.shape == ref.shape == f["x"].shape
        assert rel_l2(out, ref) < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_metadata_round_trip(exported, arch):
    _, card, path, _ = exported[arch]
    props = session(path).get_modelmeta().custom_metadata_map
    back = ModelCard.from_metadata(props)
    assert back == card  # fp32, not fused: the card is stored unchanged
    assert back.reference_schedule() == make_schedule("linear", T=1000)
    info = json.loads(props["diffspec.export"])
    assert info["exporter"] == "dynamo" and info["opset"] == 18 and info["weights"] == "ema"


def test_metadata_round_trip_other_schedule(tmp_path):
    schedule = make_schedule("edm", sigma_min=0.002, sigma_max=80.0).to_dict()
    model, card = build("mlp"), card_for("mlp", schedule=schedule, parameterization="x0")
    export_model(model, card, tmp_path / "m.onnx", seed=0, log=lambda s: None)
    back = ModelCard.from_metadata(session(tmp_path / "m.onnx").get_modelmeta().custom_metadata_map)
    assert back.reference_schedule() == make_schedule("edm", sigma_min=0.002, sigma_max=80.0)
    assert back.parameterization == "x0" and back.data == card.data


@pytest.mark.parametrize("arch", ARCHS)
def test_no_random_ops_and_graph_contract(exported, arch):
    _, _, path, _ = exported[arch]
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "Dropout",
    }
    check_graph(model)
    assert model.opset_import[0].version == 18


def test_random_op_refused():
    card = card_for("mlp")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    t = helper.make_tensor_value_info("t", TensorProto.FLOAT, ["batch"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2])
    nodes = [helper.make_node("RandomNormalLike", ["x"], ["n"]), helper.make_node("Add", ["x", "n"], ["out"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x, t], [out]), opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, card.to_metadata())
    with pytest.raises(VerificationError, match="random ops"):
        check_graph(model)


def test_verify_public_and_detects_wrong_network(exported):
    model, _, path, _ = exported["unet"]
    report = verify(path, model, seed=123, log=lambda s: None)
    assert report.rel_l2 < 1e-5
    other = build("unet")
    torch.nn.init.normal_(other.inp.weight)
    with pytest.raises(VerificationError, match="disagree"):
        verify(path, other, seed=0, log=lambda s: None)


@pytest.mark.parametrize("arch", ["unet", "dit"])
def test_fp16(tmp_path, arch):
    model, card = build(arch), card_for(arch)
    path = tmp_path / "m16.onnx"
    report = export_model(model, card, path, fp16=True, seed=0, log=lambda s: None)
    assert all(r.finite for r in report.runs)
    assert report.max_abs_scaled < TOLERANCES["fp16"].max_abs_scaled and report.rel_l2 < TOLERANCES["fp16"].rel_l2
    assert report.rel_l2 > 1e-5  # it really is float16
    m = onnx.load(str(path))
    assert ModelCard.from_metadata({p.key: p.value for p in m.metadata_props}).precision == "fp16"
    assert [i.type.tensor_type.elem_type for i in m.graph.input][:2] == [TensorProto.FLOAT, TensorProto.FLOAT]
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    # Conv / Linear weights in float16; GroupNorm's affine [C, 1, 1] stays float32 beside its normalization.
    weights = [t for t in m.graph.initializer if sum(d > 1 for d in t.dims) >= 2]
    assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights)
    inferred = onnx.shape_inference.infer_shapes(m)
    elem = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]}
    kept = [n for n in m.graph.node if n.op_type in ("Softmax", "InstanceNormalization", "LayerNormalization")]
    assert kept and all(elem[n.input[0]] == TensorProto.FLOAT for n in kept)
    matmuls = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert matmuls and all(elem.get(n.input[0]) == TensorProto.FLOAT16 for n in matmuls)
    # Finite on large inputs too (t at both ends, x at the EDM-like scale 80).
    rng = np.random.default_rng(2)
    f = feeds_for(arch, 3, rng)
    f["x"] *= 80
    f["t"] = np.array([0, 500, 999], np.float32)
    (out,) = session(path).run(["out"], f)
    assert np.all(np.isfinite(out))


def test_cfg_fused_equals_two_calls(exported, tmp_path):
    model, card, plain_path, _ = exported["unet"]
    path = tmp_path / "cfg.onnx"
    report = export_model(model, card, path, cfg_fused=True, seed=0, log=lambda s: None)
    assert report.card.cfg_fused and {r.guidance_scale for r in report.runs} == {1.5, 7.5}
    fused, plain = session(path), session(plain_path)
    assert [i.name for i in fused.get_inputs()] == ["x", "t", "y", "guidance_scale"]
    assert ModelCard.from_metadata(fused.get_modelmeta().custom_metadata_map).cfg_fused is True
    rng = np.random.default_rng(3)
    for batch, scale in [(1, 1.0), (3, 5.0)]:
        f = feeds_for("unet", batch, rng, scale=scale)
        (out,) = fused.run(["out"], f)
        (c,) = plain.run(["out"], {k: f[k] for k in ("x", "t", "y")})
        (u,) = plain.run(["out"], {"x": f["x"], "t": f["t"], "y": np.full_like(f["y"], NUM_CLASSES)})
        np.testing.assert_allclose(out, u + scale * (c - u), rtol=0, atol=1e-5 * max(1.0, np.abs(c).max() * scale))


def test_cfg_fused_needs_classes(tmp_path):
    with pytest.raises(ValueError, match="class-conditional"):
        export_model(build("mlp"), card_for("mlp"), tmp_path / "m.onnx", cfg_fused=True, log=lambda s: None)


def test_dynamic_size_unet(tmp_path):
    model, card = build("unet"), card_for("unet")
    path = tmp_path / "dyn.onnx"
    report = export_model(model, card, path, dynamic_size=True, seed=0, log=lambda s: None)
    assert {r.shape for r in report.runs} == {(1, 8, 8), (1, 16, 16)}
    sess = session(path)
    f = feeds_for("unet", 2, np.random.default_rng(4), shape=(1, 24, 16))
    (out,) = sess.run(["out"], f)
    assert rel_l2(out, torch_out(model, f)) < 1e-5
    assert [d.dim_param for d in onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim] == [
        "batch",
        "",
        "height",
        "width",
    ]


def test_external_data_written_and_loaded(tmp_path):
    model, card = build("unet"), card_for("unet")
    path = tmp_path / "ext.onnx"
    export_model(model, card, path, external_data_threshold=0, seed=0, log=lambda s: None)
    data = tmp_path / "ext.onnx.data"
    assert data.is_file() and data.stat().st_size > path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ext.onnx", "ext.onnx.data"]
    header = onnx.load(str(path), load_external_data=False)
    assert check_external_data(header, tmp_path) == [data.resolve()]
    full = load_model_safely(path)
    assert all(
        not t.HasField("data_location") or t.data_location == TensorProto.DEFAULT for t in full.graph.initializer
    )
    verify(path, model, seed=1, log=lambda s: None)
    f = feeds_for("unet", 2, np.random.default_rng(5))
    assert rel_l2(session(path).run(["out"], f)[0], torch_out(model, f)) < 1e-5


def _crafted_external(tmp_path, location):
    """A one-node model whose weight W claims to live at `location` (relative to the model)."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [2], vals=b"\x00" * 8, raw=True)
    onnx.external_data_helper.set_external_data(w, location=location, offset=0, length=8)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "sub" / "crafted.onnx"
    path.parent.mkdir(exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    "location, message",
    [
        ("../evil", r"contains '\.\.'"),
        ("a/../../evil", r"contains '\.\.'"),
        ("..\\evil", r"contains '\.\.'"),
        ("/etc/passwd", "absolute"),
        ("C:\\evil", "absolute"),
        ("link.data", "symlink"),
        ("missing.data", "not found"),
    ],
)
def test_external_data_location_refused(tmp_path, location, message):
    (tmp_path / "evil").write_bytes(b"\x00" * 8)
    path = _crafted_external(tmp_path, location)
    (path.parent / "link.data").symlink_to(tmp_path / "evil")
    with pytest.raises(ValueError, match=message):
        load_model_safely(path)
    with pytest.raises(ValueError, match=message):
        verify(path, build("mlp"), log=lambda s: None)


def test_failed_export_leaves_nothing(tmp_path):
    class Drifting(torch.nn.Module):
        """Its output changes on every call, so onnxruntime (traced once) cannot match torch."""

        def __init__(self):
            super().__init__()
            self.lin, self.calls = torch.nn.Linear(2, 2), 0

        def forward(self, x, t, y=None):
            self.calls += 1
            return self.lin(x) * self.calls + t[:, None]

    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous export")
    with pytest.raises(VerificationError, match="disagree"):
        export_model(Drifting(), card_for("mlp"), path, seed=0, log=lambda s: None)
    assert path.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary left behind


def test_bad_arguments(tmp_path):
    model, card = build("mlp"), card_for("mlp")
    with pytest.raises(ValueError, match="does not exist"):
        export_model(model, card, tmp_path / "missing" / "m.onnx", log=lambda s: None)
    with pytest.raises(ValueError, match="opset=17"):
        export_model(model, card, tmp_path / "m.onnx", opset=17, log=lambda s: None)
    with pytest.raises(ValueError, match="is a directory"):
        export_model(model, card, tmp_path, log=lambda s: None)
    with pytest.raises(ValueError, match="float32 CPU"):
        export_model(build("mlp").half(), card, tmp_path / "m.onnx", log=lambda s: None)
    with pytest.raises(ValueError, match="no such file"):
        verify(tmp_path / "nothing.onnx", model, log=lambda s: None)
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage\xff\xff")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        verify(tmp_path / "junk.onnx", model, log=lambda s: None)
    assert not list(tmp_path.glob("*.tmp"))


def test_torchscript_exporter_also_works(tmp_path):
    model, card = build("dit"), card_for("dit")
    report = export_model(model, card, tmp_path / "ts.onnx", exporter="torchscript", seed=0, log=lambda s: None)
    assert report.rel_l2 < 1e-5
    assert export_info(onnx.load(str(tmp_path / "ts.onnx")))["exporter"] == "torchscript"
