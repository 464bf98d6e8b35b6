"""Parity: with the same noise, the runtime's samples equal the trainer's torch samplers and the reference samplers
driven through the same exported (torch -> ONNX) network, to float32 accuracy, for every registered sampler that
runs on the network's schedule (the contract's requirements; adaptive step control is left to tests/conformance,
whose runtime backend drives every sampler through a numpy network)."""

import diffspec.trainer.models as trainer_models
import diffspec.trainer.parameterizations as trainer_param
import diffspec.trainer.samplers as trainer_samplers
import diffspec.trainer.schedules as trainer_schedules
import numpy as np
import pytest
import torch
from diffspec.reference.modelcard import DataInfo, ModelCard  # noqa: E402
from diffspec.reference.parameterizations import x0_from_output as ref_x0_from_output  # noqa: E402
from diffspec.reference.samplers import SAMPLER_INFO, Requirement  # noqa: E402
from diffspec.reference.samplers import SAMPLERS as REF_SAMPLERS  # noqa: E402
from diffspec.reference.schedules import make_schedule  # noqa: E402
from diffspec.runtime import Model, SampleNoise, labels_for, make_sampling_grid, sample  # noqa: E402

SCHEDULE = make_schedule("cosine")
PARAM = "eps"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small trainer MLP with random (non-zero) weights, exported with the contract's inputs and metadata."""
    import onnx

    torch.manual_seed(0)
    net = trainer_models.build_model("mlp", dim=2, hidden=32, depth=2, num_classes=3).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("parity") / "mlp.onnx"
    args = (torch.randn(4, 2), torch.rand(4) * 999, torch.tensor([0, 1, 2, 3]))
    torch.onnx.export(
        net,
        args,
        str(path),
        dynamo=False,
        opset_version=18,
        input_names=["x", "t", "y"],
        output_names=["out"],
        dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "y": {0: "B"}, "out": {0: "B"}},
    )
    card = ModelCard(
        schedule=SCHEDULE.to_dict(),
        parameterization=PARAM,
        data=DataInfo(shape=(2,), kind="points", range=(-3.0, 3.0)),
        num_classes=3,
        null_class=3,
    )
    model = onnx.load(str(path))
    for k, v in card.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))
    return net, str(path)


def _torch_denoiser(net, y, schedule):
    """Trainer side: x float64 tensor -> float32 network -> x0 in float64 with the trainer's own conversion."""

    def denoise(x, t):
        t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
        with torch.no_grad():
            out = net(x.float(), t.float(), y).double()
        return trainer_param.x0_from_output(PARAM, out, x, schedule.alpha(t), schedule.sigma(t))

    return denoise


def _reference_denoiser(net, y):
    """Reference side: the reference conversion around the same torch network."""

    def denoise(x, t):
        tt = torch.full((x.shape[0],), float(t))
        with torch.no_grad():
            out = net(torch.as_tensor(x, dtype=torch.float32), tt, y).double().numpy()
        return ref_x0_from_output(PARAM, out, x, SCHEDULE.alpha(t), SCHEDULE.sigma(t))

    return denoise


PARITY = sorted(
    name for name, info in SAMPLER_INFO.items() if Requirement.FLOW_SCHEDULE not in info.requires and not info.adaptive
)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("sampler", PARITY)
def test_runtime_equals_trainer_and_reference(exported, sampler):
    net, path = exported
    model = Model.load(path, device="cpu")
    steps, seed, idx = 12, 7, np.arange(6)
    got = sample(model, sampler=sampler, steps=steps, indices=idx, seed=seed, raw=False)

    grid = make_sampling_grid(SCHEDULE, steps)
    labels = labels_for(model, idx)
    y = torch.as_tensor(labels)
    sigma0 = float(SCHEDULE.sigma(grid[0]))

    noise = SampleNoise(seed, idx)  # the runtime's noise: x_T first, then the sampler's draws
    x_T = sigma0 * noise((6, 2))
    ref = REF_SAMPLERS[sampler](_reference_denoiser(net, y), x_T, grid, SCHEDULE, noise=noise)

    noise = SampleNoise(seed, idx)
    x_T = torch.as_tensor(sigma0 * noise((6, 2)))
    t_schedule = trainer_schedules.schedule_from_dict(SCHEDULE.to_dict())
    trained = trainer_samplers.SAMPLERS[sampler](
        _torch_denoiser(net, y, t_schedule), x_T, grid, t_schedule, noise=noise
    ).numpy()

    scale = np.abs(ref).max()
    assert scale > 0.1  # a non-trivial result
    # float32 network, float64 samplers: differences come from float32 rounding in the network (ORT vs torch
    # kernels, ~1e-7 relative per call) carried through `steps` calls
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(got, trained, rtol=0, atol=2e-5 * scale)
