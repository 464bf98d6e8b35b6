"""The networks: shapes, class labels with a null class, fp32 time embedding, export-friendliness."""

import pytest
import torch
from diffspec.trainer.models import build_model
from diffspec.trainer.models.embedding import timestep_embedding

torch.set_num_threads(1)

SMALL = {
    "mlp": dict(dim=3, hidden=32, depth=2, freq_dim=16, num_classes=4, time_scale=1.0),
    "unet": dict(
        in_channels=1,
        image_size=8,
        model_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        num_heads=2,
        groups=8,
        num_classes=4,
    ),
    "dit": dict(in_channels=1, image_size=8, patch_size=2, hidden=32, depth=2, num_heads=2, num_classes=4),
}


def _x(arch, b):
    return torch.randn(b, 3) if arch == "mlp" else torch.randn(b, 1, 8, 8)


def _perturb(model):
    """Zero-initialised output layers make every output 0: give them weights so tests see real outputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if torch.count_nonzero(p) == 0 and p.ndim > 1:
                p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_shapes_and_labels(arch):
    torch.manual_seed(0)
    model = _perturb(build_model(arch, **SMALL[arch]))
    x, t = _x(arch, 5), torch.rand(5) * 999
    y = torch.tensor([0, 1, 2, 3, 4])  # 4 = the null class
    out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(model(x, t, None), model(x, t, torch.full((5,), 4)))  # y=None is the null class
    assert not torch.allclose(model(x, t, y), model(x, t, torch.zeros(5, dtype=torch.long)))
    assert not torch.allclose(model(x, t, y), model(x, t + 1.0, y))  # time matters


@pytest.mark.parametrize("arch", ["mlp", "unet", "dit"])
def test_learned_variance_doubles_channels(arch):
    kw = dict(SMALL[arch], learned_variance=True)
    out = build_model(arch, **kw)(_x(arch, 2), torch.rand(2))
    assert out.shape[1] == (6 if arch == "mlp" else 2)


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_export_dynamic_batch(arch):
    """torch.export with a dynamic batch, then the exported program runs at two batch sizes like eager."""
    torch.manual_seed(0)
    model = _perturb(build_model(arch, **SMALL[arch])).eval()
    x, t, y = _x(arch, 3), torch.rand(3) * 999, torch.tensor([0, 1, 4])
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(model, (x, t, y), dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
    for b in (2, 7):
        xb, tb, yb = _x(arch, b), torch.rand(b) * 999, torch.arange(b) % 5
        torch.testing.assert_close(ep.module()(xb, tb, yb), model(xb, tb, yb), rtol=1e-5, atol=1e-5)


def test_jit_trace_unconditional_unet_two_batches():
    model = _perturb(build_model("unet", **dict(SMALL["unet"], num_classes=None))).eval()
    traced = torch.jit.trace(model, (torch.randn(2, 1, 8, 8), torch.rand(2)))
    for b in (1, 5):
        x, t = torch.randn(b, 1, 8, 8), torch.rand(b) * 999
        torch.testing.assert_close(traced(x, t), model(x, t))


def test_time_embedding_stays_float32_under_half_and_bf16():
    t = torch.tensor([999.0, 999.5])
    emb = timestep_embedding(t, 32)
    assert emb.dtype == torch.float32 and not torch.equal(emb[0], emb[1])  # fp16 would round 999.5 to 999 or 1000
    model = build_model("unet", **SMALL["unet"])
    out = model.to(torch.bfloat16)(torch.randn(2, 1, 8, 8, dtype=torch.bfloat16), t, torch.tensor([0, 4]))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 1, 8, 8)


def test_precond_outputs_x0_and_exports():
    """EDM preconditioning: at sigma -> 0 the wrapper returns x itself (c_skip -> 1, c_out -> 0)."""
    model = build_model(
        "precond",
        inner={"arch": "mlp", "kwargs": dict(SMALL["mlp"], time_scale=250.0)},
        schedule={"name": "edm"},
        sigma_data=0.5,
    )
    _perturb(model)
    x = torch.randn(4, 3)
    torch.testing.assert_close(model(x, torch.full((4,), 1e-4)), x, atol=1e-3, rtol=0)
    out = model(x, torch.full((4,), 80.0))  # at huge sigma: c_skip x ~ 0, c_out ~ sigma_data
    assert out.abs().max() < 5
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(model, (x, torch.rand(4) * 80), dynamic_shapes=({0: batch}, {0: batch}))
    x5, t5 = torch.randn(5, 3), torch.rand(5) * 80
    torch.testing.assert_close(ep.module()(x5, t5), model(x5, t5))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model arch 'resnet'.*mlp"):
        build_model("resnet")
    with pytest.raises(ValueError, match="no option 'widht'"):
        build_model("mlp", widht=3)
    with pytest.raises(ValueError, match="image_size=10"):
        build_model("unet", image_size=10, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="patch"):
        build_model("dit", image_size=8, patch_size=3)
