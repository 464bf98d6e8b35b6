"""to_diffusers: configs diffusers loads and then uses as written (prediction names, no ignored keys, VE)."""

import inspect

import numpy as np
import pytest
from diffspec.reference import interop
from diffspec.reference.schedules import make_schedule
from test_interop import diffusers, torch


def _init_keys(cls_name):
    params = inspect.signature(getattr(diffusers, cls_name).__init__).parameters.values()
    return {p.name for p in params if p.kind != p.VAR_KEYWORD} - {"self"}


def test_honoured_keys_are_exactly_what_each_class_reads():
    """The writer refuses keys outside HONOURED[class]: that set must be the class's own parameters."""
    for cls_name, spec in {**interop.HONOURED, **interop.writing.WRITE_ONLY}.items():
        expected = _init_keys(cls_name)
        if cls_name == "LTXEulerAncestralRFScheduler":  # its set_timesteps builds a FlowMatchEuler from its config
            expected |= _init_keys("FlowMatchEulerDiscreteScheduler")
        # keys a pipeline reads from the scheduler's config to compute mu (FLUX-style dynamic shifting)
        read_by_pipelines = {"base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len"}
        assert expected <= set(spec) <= expected | read_by_pipelines, cls_name


@pytest.mark.parametrize(
    "ours, theirs", [("eps", "epsilon"), ("x0", "sample"), ("v", "v_prediction"), ("v_prediction", "v_prediction")]
)
def test_prediction_names_are_translated_and_step_runs(ours, theirs):
    config = interop.to_diffusers(make_schedule("linear"), class_name="DDIMScheduler", prediction_type=ours)
    assert config["prediction_type"] == theirs
    sched = diffusers.DDIMScheduler.from_config(config)
    sched.set_timesteps(4)
    x = torch.ones(2, 3)
    out = sched.step(torch.zeros(2, 3), sched.timesteps[0], x).prev_sample
    assert torch.isfinite(out).all()
    back = interop.from_diffusers(config, 4)
    assert back.prediction_type == theirs


def test_flow_prediction_goes_where_it_is_read():
    flow = make_schedule("flow", shift=3.0)
    assert "prediction_type" not in interop.to_diffusers(flow, prediction_type="flow")
    with pytest.raises(ValueError, match="prediction_type"):
        interop.to_diffusers(flow, prediction_type="eps")
    with pytest.raises(ValueError, match="score"):
        interop.to_diffusers(make_schedule("linear"), prediction_type="score")


@pytest.mark.parametrize("cls_name", sorted(interop.HONOURED))
def test_zero_snr_is_written_only_where_it_is_read(cls_name):
    schedule = make_schedule("scaled_linear", rescale_zero_snr=True)
    if not {"num_train_timesteps", "beta_schedule", "beta_start", "beta_end"} <= set(interop.HONOURED[cls_name]):
        with pytest.raises(ValueError):
            interop.to_diffusers(schedule, class_name=cls_name)
        return
    if "rescale_betas_zero_snr" not in interop.HONOURED[cls_name]:
        with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
            interop.to_diffusers(schedule, class_name=cls_name)
        return
    sched = getattr(diffusers, cls_name).from_config(interop.to_diffusers(schedule, class_name=cls_name))
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), schedule.alphas_cumprod(), rtol=1e-4, atol=1e-7)


def test_extra_keys_the_class_ignores_are_refused():
    with pytest.raises(ValueError, match="'timestep_spacing'"):
        interop.to_diffusers(make_schedule("flow"), timestep_spacing="trailing")
    config = interop.to_diffusers(make_schedule("linear"), class_name="DDPMScheduler", timestep_spacing="trailing")
    assert diffusers.DDPMScheduler.from_config(config).config.timestep_spacing == "trailing"


def test_ve_is_written_as_score_sde_ve():
    ve = make_schedule("ve", sigma_min=0.02, sigma_max=90.0)
    config = interop.to_diffusers(ve)
    sched = diffusers.ScoreSdeVeScheduler.from_config(config)
    assert (sched.config.sigma_min, sched.config.sigma_max) == (0.02, 90.0)
    sched.set_sigmas(5)
    np.testing.assert_allclose(sched.discrete_sigmas.double().numpy()[[0, -1]], [0.02, 90.0], rtol=1e-6)
    with pytest.raises(ValueError, match="score"):
        interop.to_diffusers(ve, prediction_type="eps")
