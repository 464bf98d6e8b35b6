"""The runtime's Python API on tiny contract-following ONNX models: metadata, denoiser, noise, batching, guidance."""

import numpy as np
import onnxruntime as ort
import pytest
from diffspec.reference.modelcard import ModelCard
from diffspec.reference.parameterizations import x0_from_output
from diffspec.reference.samplers import SAMPLERS
from diffspec.runtime import Model, ModelFileError, ProviderError, SampleNoise, make_denoiser, sample
from diffspec.runtime import model as runtime_model


def test_metadata_round_trip(models):
    """The card written into metadata_props comes back equal through onnxruntime's custom_metadata_map."""
    m = Model.load(models["points"], device="cpu")
    props = ort.InferenceSession(models["points"], providers=["CPUExecutionProvider"]).get_modelmeta()
    assert ModelCard.from_metadata(props.custom_metadata_map) == m.card
    assert m.card.data.shape == (2,) and m.card.num_classes == 3 and m.null_class == 3
    assert m.schedule == m.card.reference_schedule()
    assert m.provider == "CPUExecutionProvider"


def test_denoise_is_float64_and_matches_the_parameterization(models):
    m = Model.load(models["image"], device="cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 8, 8))
    t = 500.0
    out = m.network(x, t)
    assert out.dtype == np.float32 and out.shape == x.shape
    x0 = m.denoise(x, t)
    assert x0.dtype == np.float64
    want = x0_from_output("v", out.astype(np.float64), x, m.schedule.alpha(t), m.schedule.sigma(t))
    np.testing.assert_allclose(x0, want, rtol=0, atol=0)
    per_sample = m.denoise(x, np.array([500.0, 500.0, 500.0]))
    np.testing.assert_array_equal(per_sample, x0)


def test_reproducible_and_per_sample_seeds(models):
    m = Model.load(models["points"], device="cpu")
    a = sample(m, sampler="ddpm", steps=10, n=12, seed=3)
    b = sample(m, sampler="ddpm", steps=10, n=12, seed=3)
    np.testing.assert_array_equal(a, b)
    c = sample(m, sampler="ddpm", steps=10, n=12, seed=4)
    assert not np.allclose(a, c)
    # sample 7 alone equals sample 7 of the run (same noise: its own generator, its own label)
    alone = sample(m, sampler="ddpm", steps=10, indices=[7], seed=3)
    np.testing.assert_allclose(alone[0], a[7], rtol=0, atol=1e-6)
    # noise of sample i does not depend on which other samples share the batch
    both = SampleNoise(5, [2, 9])((2, 4))
    np.testing.assert_array_equal(both[1], SampleNoise(5, [9])((1, 4))[0])
    np.testing.assert_array_equal(both[0], np.random.default_rng([5, 2]).standard_normal(4))


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "ddpm"])
def test_batching_equals_one_batch(models, sampler):
    m = Model.load(models["image_cond"], device="cpu")
    one = sample(m, sampler=sampler, steps=8, n=10, seed=1, batch_size=10)
    many = sample(m, sampler=sampler, steps=8, n=10, seed=1, batch_size=3)
    np.testing.assert_allclose(many, one, rtol=0, atol=1e-5 * 16)


def test_output_in_the_original_range(models):
    m = Model.load(models["image"], device="cpu")
    x = sample(m, steps=5, n=6, seed=0)
    assert x.min() >= 0.0 and x.max() <= 16.0 and x.max() > 4.0
    model_space = sample(m, steps=5, n=6, seed=0, raw=False)
    np.testing.assert_allclose(x, np.clip((model_space + 1.0) * 8.0, 0, 16), rtol=0, atol=1e-9)


def test_labels_cycle_and_class_label(models):
    m = Model.load(models["points"], device="cpu")
    _, labels = sample(m, steps=3, n=7, seed=0, return_labels=True)
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1, 2, 0])
    _, labels = sample(m, steps=3, n=4, seed=0, class_label=2, return_labels=True)
    np.testing.assert_array_equal(labels, [2, 2, 2, 2])
    with pytest.raises(ValueError, match="class label 3 is out of range"):
        sample(m, steps=3, n=4, class_label=3)
    with pytest.raises(ValueError, match="class label -1 is out of range"):
        sample(m, steps=3, n=4, class_label=[0, -1])
    _, labels = sample(m, steps=3, n=2, seed=0, class_label="null", return_labels=True)
    np.testing.assert_array_equal(labels, [3, 3])
    with pytest.raises(ValueError, match="unconditional"):
        sample(Model.load(models["points_uncond"], device="cpu"), steps=3, n=2, class_label=1)


def test_cfg_one_network_call_equals_reference_formula(models):
    """Guided x0 = u + w (c - u), the two branches computed in one network call of 2B rows."""
    m = Model.load(models["points"], device="cpu")
    calls = []
    network = m.network
    m.network = lambda x, t, y=None, **kw: calls.append(len(x)) or network(x, t, y, **kw)
    x = np.random.default_rng(0).standard_normal((4, 2))
    y = np.array([0, 1, 2, 0])
    guided = make_denoiser(m, y, guidance_scale=3.0)(x, 400.0)
    assert calls == [8]
    c, u = m.denoise(x, 400.0, y), m.denoise(x, 400.0, None)
    np.testing.assert_allclose(guided, u + 3.0 * (c - u), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(make_denoiser(m, y, guidance_scale=1.0)(x, 400.0), c)
    rescaled = make_denoiser(m, y, guidance_scale=3.0, guidance_rescale=0.7)(x, 400.0)
    assert rescaled.shape == x.shape and not np.allclose(rescaled, guided)
    with pytest.raises(ValueError, match="unconditional"):
        make_denoiser(Model.load(models["points_uncond"], device="cpu"), None, guidance_scale=2.0)


def test_inpainting_keeps_known_values_and_sdedit(models):
    m = Model.load(models["image"], device="cpu")
    init = np.tile(np.linspace(0, 16, 8), (1, 8, 1))
    mask = np.zeros((1, 8, 8))
    mask[:, :, :4] = 1.0  # keep the left half
    x = sample(m, sampler="dpmpp_2m", steps=10, n=3, seed=0, init=init, mask=mask)
    np.testing.assert_allclose(x[:, :, :, :4], np.broadcast_to(init[:, :, :4], (3, 1, 8, 4)), atol=1e-9)
    assert not np.allclose(x[:, :, :, 4:], init[:, :, 4:])
    same = sample(m, sampler="ddim", steps=10, n=2, seed=0, init=init, strength=0.0)
    np.testing.assert_allclose(same, np.broadcast_to(init, same.shape), atol=1e-9)
    low = sample(m, sampler="ddim", steps=10, n=2, seed=0, init=init, strength=0.3)
    high = sample(m, sampler="ddim", steps=10, n=2, seed=0, init=init, strength=1.0)
    assert np.abs(low - init).mean() < np.abs(high - init).mean()
    with pytest.raises(ValueError, match="needs init"):
        sample(m, n=1, mask=mask)
    with pytest.raises(ValueError, match="mask .inpainting. or strength"):
        sample(m, n=1, init=init)


def test_every_registered_sampler_runs(models):
    """Every sampler in the registry runs end to end through the runtime (a few steps, EDM schedule for the
    ones that want a clean end), or fails with a ValueError that says why."""
    m = Model.load(models["points_eps_edm"], device="cpu")
    for name in sorted(SAMPLERS):
        try:
            x = sample(m, sampler=name, steps=6, n=3, seed=0, raw=False)
        except ValueError as err:
            assert str(err)  # a sampler the schedule cannot run says so
            continue
        assert x.shape == (3, 2) and np.all(np.isfinite(x)), name


def test_iobinding_equals_plain_run(models):
    plain = Model.load(models["image_cond"], device="cpu", io_binding=False)
    bound = Model.load(models["image_cond"], device="cpu", io_binding=True)
    a = sample(plain, steps=6, n=5, seed=2, batch_size=3, guidance_scale=2.0)
    b = sample(bound, steps=6, n=5, seed=2, batch_size=3, guidance_scale=2.0)
    np.testing.assert_array_equal(a, b)


def test_cuda_not_available_is_an_error(models):
    with pytest.raises(ProviderError, match="no CUDAExecutionProvider"):
        Model.load(models["points"], device="cuda")
    m = Model.load(models["points"], device="cuda", allow_cpu_fallback=True)
    assert m.provider == "CPUExecutionProvider"
    assert Model.load(models["points"], device="auto").provider in ("CPUExecutionProvider", "CUDAExecutionProvider")


def test_silent_cuda_fallback_is_detected(models, monkeypatch):
    """onnxruntime-gpu lists CUDA as available even without a GPU and then runs on CPU without an error."""
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with pytest.raises(ProviderError, match="created the session on CPUExecutionProvider"):
        Model.load(models["points"], device="cuda")
    m = Model.load(models["points"], device="cuda", allow_cpu_fallback=True)
    assert m.provider == "CPUExecutionProvider"
    assert Model.load(models["points"], device="auto").provider == "CPUExecutionProvider"


@pytest.mark.parametrize(
    "key, message",
    [
        ("not_onnx", "not a readable ONNX model"),
        ("truncated", "not a readable ONNX model"),
        ("no_metadata", "no diffspec metadata .missing diffspec.format"),
        ("int_t", "input 't' is tensor.int64."),
    ],
)
def test_bad_files(models, key, message):
    with pytest.raises(ModelFileError, match=message):
        Model.load(models[key], device="cpu")


def test_bad_arguments(models):
    m = Model.load(models["points"], device="cpu")
    with pytest.raises(ValueError, match="unknown sampler 'nope': expected one of .*dpmpp_2m"):
        sample(m, sampler="nope", n=2)
    with pytest.raises(ValueError, match="n=0"):
        sample(m, n=0)
    with pytest.raises(ValueError, match="has no option 'eta'"):
        sample(m, sampler="dpmpp_2m", n=1, eta=1.0)
    with pytest.raises(ValueError, match="unknown grid"):
        sample(m, n=1, grid="nope")
    with pytest.raises(ValueError, match="steps"):
        sample(m, n=1, steps=5000)
    with pytest.raises(ValueError, match="x of shape"):
        m.denoise(np.zeros((2, 3)), 10.0)
    with pytest.raises(ValueError, match="device="):
        Model.load(models["points"], device="tpu")
    assert runtime_model.DEVICES == ("auto", "cuda", "cpu")


def _as_student(src, dst, student):
    """A copy of the ONNX file `src` whose card's train_config carries `student` (a few-step student's entry)."""
    import json

    import onnx
    from diffspec.reference.modelcard import PREFIX

    m = onnx.load(src)
    props = {p.key: p.value for p in m.metadata_props}
    train = {**json.loads(props.get(PREFIX + "train_config", "{}")), "student": student}
    del m.metadata_props[:]
    for key, value in {**props, PREFIX + "train_config": json.dumps(train)}.items():
        m.metadata_props.add(key=key, value=value)
    onnx.save(m, dst)
    return str(dst)


def test_a_students_card_chooses_its_sampler_steps_and_grid(models, tmp_path, capsys):
    """With nothing named, a student samples as its card says (a consistency model on DDPM's schedule: 2 steps of
    `consistency` on Karras down to its boundary, t_eps when the card does not say); named arguments win; other models keep
    dpmpp_2m at 20 steps."""
    from diffspec.runtime.cli import main
    from diffspec.runtime.sampling import sampling_recipe

    path = _as_student(models["points_uncond"], tmp_path / "cd.onnx", {"procedure": "consistency_distillation"})
    m = Model.load(path, device="cpu")
    t_eps = float(m.schedule.t_eps)
    assert sampling_recipe(m.card) == ("consistency", 2, "karras", {"t_end": t_eps})
    got = sample(m, n=6, seed=2)
    named = dict(grid="karras", grid_options={"t_end": t_eps}, n=6, seed=2)
    np.testing.assert_array_equal(got, sample(m, sampler="consistency", steps=2, **named))
    assert not np.allclose(got, sample(m, sampler="consistency", steps=1, **named))
    assert sampling_recipe(m.card, "lcm", 4) == ("lcm", 4, "karras", {"t_end": t_eps})
    assert sampling_recipe(m.card, grid="karras", grid_options={"rho": 3.0})[2:] == ("karras", {"rho": 3.0})

    edm = _as_student(models["points_eps_edm"], tmp_path / "ct.onnx", {"procedure": "consistency_training"})
    m_edm = Model.load(edm, device="cpu")
    t_eps = float(m_edm.schedule.t_eps)  # EDM's
    assert sampling_recipe(m_edm.card) == ("consistency", 2, "karras", {"t_end": t_eps})
    assert sampling_recipe(m_edm.card, grid_options={"rho": 5.0})[3] == {"t_end": t_eps, "rho": 5.0}
    assert sampling_recipe(Model.load(models["points_uncond"], device="cpu").card) == (
        "dpmpp_2m",
        20,
        "exponential",
        {},
    )

    # the pipeline graph of a student, built with nothing named, runs the same recipe (verified on write)
    import json

    from diffspec.export.pipeline import PIPELINE_KEY, export_pipeline

    pipe = export_pipeline(edm, tmp_path / "pipe.onnx")
    meta = ort.InferenceSession(str(pipe), providers=["CPUExecutionProvider"]).get_modelmeta()
    meta = json.loads(meta.custom_metadata_map[PIPELINE_KEY])
    assert (meta["sampler"], meta["steps"], meta["grid"], meta["grid_options"]) == (
        "consistency",
        2,
        "karras",
        {"t_end": t_eps},
    )

    out = tmp_path / "s.npy"
    assert main([edm, "-n", "4", "--out", str(out), "--no-progress"]) == 0
    line = capsys.readouterr().out
    assert f"consistency, 2 steps, grid karras, t_end={t_eps}" in line, line
    np.testing.assert_allclose(
        np.load(out), sample(m_edm, n=4, seed=0), rtol=0, atol=1e-6 * max(1.0, float(np.abs(np.load(out)).max()))
    )

    bad = _as_student(
        models["points_uncond"], tmp_path / "bad.onnx", {"procedure": "reflow", "steps_for_sampling": 0.5}
    )
    with pytest.raises(ValueError, match=r"metadata: the student entry's steps_for_sampling=0.5: expected an integer"):
        sample(Model.load(bad, device="cpu"), n=2)


def test_info_shows_the_default_sampling_and_a_bad_student_entry(models, tmp_path, capsys):
    import json

    from diffspec.runtime.cli import main

    assert main([models["points_uncond"], "--info"]) == 0
    plain = json.loads(capsys.readouterr().out)["default_sampling"]
    assert plain == {"sampler": "dpmpp_2m", "steps": 20, "grid": "exponential", "grid_options": {}}
    bad = _as_student(models["points_uncond"], tmp_path / "bad.onnx", {"procedure": "reflow", "sampler": 7})
    assert main([bad, "--info"]) == 0
    assert "student entry's sampler=7" in json.loads(capsys.readouterr().out)["default_sampling"]
