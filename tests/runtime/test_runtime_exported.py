"""The runtime on files written by the real exporter (diffspec.export): the plain graph and the fused-CFG graph
give the same guided samples; the exporter's metadata round-trips into the runtime's Model."""

import diffspec.export.exporter as exporter
import numpy as np
import pytest
import torch
from diffspec.reference.modelcard import DataInfo, ModelCard  # noqa: E402
from diffspec.reference.schedules import make_schedule  # noqa: E402
from diffspec.runtime import Model, sample  # noqa: E402
from diffspec.trainer.models import build_model  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    net = build_model("mlp", dim=2, hidden=32, depth=2, num_classes=3).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    card = ModelCard(
        schedule=make_schedule("linear").to_dict(),
        parameterization="v",
        data=DataInfo(shape=(2,), kind="points", range=(-4.0, 4.0), scale=0.5),
        num_classes=3,
        null_class=3,
    )
    d = tmp_path_factory.mktemp("exported")
    quiet = dict(log=lambda *a, **k: None)
    exporter.export_model(net, card, d / "plain.onnx", **quiet)
    exporter.export_model(net, card, d / "fused.onnx", cfg_fused=True, **quiet)
    return str(d / "plain.onnx"), str(d / "fused.onnx"), card


def test_exported_card_round_trips(files):
    plain, fused, card = files
    m = Model.load(plain, device="cpu")
    assert m.card.schedule == card.schedule and m.card.data == card.data and m.null_class == 3
    assert not m.cfg_fused and Model.load(fused, device="cpu").cfg_fused


def test_fused_cfg_graph_equals_two_branch_guidance(files):
    plain, fused, _ = files
    kw = dict(sampler="dpmpp_2m", steps=10, n=9, seed=0, guidance_scale=3.0)
    a = sample(Model.load(plain, device="cpu"), **kw)
    b = sample(Model.load(fused, device="cpu"), **kw)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
    unguided = sample(Model.load(fused, device="cpu"), sampler="dpmpp_2m", steps=10, n=9, seed=0)
    assert not np.allclose(unguided, b)
