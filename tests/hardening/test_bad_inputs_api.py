"""Bad input to the Python API: each case raises the expected exception type with a message naming the argument.

Tables, one row per case: the reference's schedules, every registered sampler given a broken denoiser, the model
card read from ONNX metadata, the runtime's `sample`, and the checkpoint manifest.
"""

import json
import math
import os

import numpy as np
import pytest
from diffspec.reference import _checks
from diffspec.reference.modelcard import PREFIX, ModelCard
from diffspec.reference.samplers import SAMPLER_INFO, SAMPLERS
from diffspec.reference.schedules import make_schedule, schedule_from_dict
from hardening_helpers import card, points_graph, points_model, save

# ------------------------------------------------------------------------------------------------ schedules
SCHEDULES = [  # (name, parameters, words the message must contain)
    ("vp", dict(beta_min=-1.0), "beta_min=-1.0"),
    ("vp", dict(beta_min=0.0), "beta_min=0.0"),
    ("vp", dict(beta_max=0.05), "beta_max=0.05"),
    ("vp", dict(beta_min=math.nan), "beta_min=nan"),
    ("subvp", dict(beta_max=math.inf), "beta_max=inf"),
    ("ve", dict(sigma_min=2.0, sigma_max=1.0), "sigma_max=1.0"),
    ("ve", dict(sigma_min=0.0), "sigma_min=0.0"),
    ("edm", dict(sigma_min=-0.1), "sigma_min=-0.1"),
    ("edm", dict(sigma_data=0.0), "sigma_data=0.0"),
    ("edm", dict(sigma_max=0.001), "sigma_max=0.001"),
    ("flow", dict(shift=0.0), "shift=0.0"),
    ("flow", dict(shift="2"), "shift='2'"),
    ("vp_cosine", dict(s=-0.1), "s=-0.1"),
    ("linear", dict(beta_end=1.5), "betas"),
    ("linear", dict(T=1), "T=1"),
    ("cosine", dict(max_beta=1.0), "max_beta=1.0"),
    ("linear", dict(rescale_zero_snr="yes"), "rescale_zero_snr"),
    ("betas", dict(values=(0.1, math.nan)), "betas"),
    ("nope", {}, "unknown schedule 'nope'"),
    ("vp", dict(sigma_min=1.0), "no parameter 'sigma_min'"),
]


@pytest.mark.parametrize("name, params, words", SCHEDULES, ids=[f"{n}-{sorted(p)}" for n, p, _ in SCHEDULES])
def test_schedule_constructor_rejects(name, params, words):
    with pytest.raises(ValueError, match=None) as info:
        make_schedule(name, **params)
    assert words in str(info.value)


def test_schedule_from_metadata_dict_rejects_what_the_constructor_rejects():
    with pytest.raises(ValueError, match="sigma_max"):
        schedule_from_dict({"name": "ve", "sigma_min": 5.0, "sigma_max": 1.0})


# ------------------------------------------------------------------------------------------------- samplers
def _runnable(name):
    """(schedule, grid, noise factory) on which sampler `name` runs with a well-behaved denoiser."""
    fn = SAMPLERS[name]
    from diffspec.reference.grids import GRIDS

    for schedule in (make_schedule("linear"), make_schedule("flow"), make_schedule("edm")):
        grid_fn = GRIDS["karras"] if schedule.name == "edm" else GRIDS["uniform"]
        grid = grid_fn(schedule, 6)
        try:
            fn(lambda x, t: 0.5 * x, np.ones((2, 2)), grid, schedule, noise=np.random.default_rng(0))
        except ValueError:
            continue
        return schedule, grid
    raise AssertionError(f"{name}: no schedule to run it on")


def _bad(kind, after=1):
    calls = []

    def denoise(x, t):
        calls.append(t)
        if len(calls) <= after:
            return 0.5 * x
        if kind == "nan":
            return np.full_like(x, np.nan)
        if kind == "inf":
            return np.full_like(x, np.inf)
        if kind == "none":
            return None
        if kind == "shape":
            return np.zeros((x.shape[0], 3))
        raise AssertionError(kind)

    return denoise


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_refuses_a_nan_denoiser_naming_itself_and_the_step(name):
    schedule, grid = _runnable(name)
    with pytest.raises(ValueError) as info:
        SAMPLERS[name](_bad("nan"), np.ones((2, 2)), grid, schedule, noise=np.random.default_rng(0))
    message = str(info.value)
    assert "NaN or inf" in message and "step" in message, message
    assert SAMPLER_INFO[name].name in message or name in message, message


@pytest.mark.parametrize(
    "kind, words", [("none", "returned None"), ("shape", r"shape \(2, 3\)"), ("inf", "NaN or inf")]
)
@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "heun", "ddpm", "unipc"])
def test_samplers_refuse_none_wrong_shape_and_inf(name, kind, words):
    schedule, grid = _runnable(name)
    with pytest.raises(ValueError, match=words):
        SAMPLERS[name](_bad(kind, after=0), np.ones((2, 2)), grid, schedule, noise=np.random.default_rng(0))


def test_checked_denoiser_names_the_grid_step_of_the_failing_call():
    grid = np.array([1.0, 0.75, 0.5, 0.25, 0.0])
    denoise = _checks.checked_denoiser(lambda x, t: x * (np.nan if t < 0.6 else 1.0), grid, sampler="test")
    denoise(np.ones(2), 1.0)
    denoise(np.ones(2), 0.75)
    with pytest.raises(ValueError, match=r"^test: .* at step 2 \(model call 3, t=0.5\)"):
        denoise(np.ones(2), 0.5)
    assert _checks.checked_denoiser(denoise, grid, sampler="other") is denoise
    with pytest.raises(ValueError, match="denoise=3: expected a callable"):
        _checks.checked_denoiser(3, grid, sampler="test")


# ---------------------------------------------------------------------------------------------- model card
def _metadata(**changes):
    """The card's metadata with some JSON values replaced; a key of the form data.scale edits inside data."""
    meta = card().to_metadata()
    for key, value in changes.items():
        key = key.replace("__", ".")
        if key.startswith("data."):
            data = json.loads(meta[PREFIX + "data"])
            data[key[5:]] = value
            meta[PREFIX + "data"] = json.dumps(data)
        elif value is _RAW:
            meta[PREFIX + key] = "{not json"
        else:
            meta[PREFIX + key] = json.dumps(value)
    return meta


_RAW = object()
CARDS = [  # (changes, words)
    (dict(data__scale=0.0), "data.scale=0.0"),
    (dict(data__scale=-2.0), "data.scale=-2.0"),
    (dict(data__scale=math.nan), "data"),
    (dict(data__shift=math.inf), "data"),
    (dict(data__shape=[0, 2]), "data.shape=[0, 2]"),
    (dict(data__shape=[-1]), "data.shape=[-1]"),
    (dict(data__shape=[10**6, 10**6]), "data.shape=[1000000, 1000000]"),
    (dict(data__shape=[1, 1, 1, 1, 1]), "data.shape"),
    (dict(data__shape="2"), "data.shape='2'"),
    (dict(data__shape=[2.5]), "data.shape=[2.5]"),
    (dict(data__kind="video"), "data.kind='video'"),
    (dict(data__range=[1.0, -1.0]), "data.range"),
    (dict(data__range=[0.0]), "data.range"),
    (dict(data__colour="red"), "data"),
    (dict(data=[1, 2]), "data=[1, 2]"),
    (dict(parameterization="nope"), "parameterization"),
    (dict(parameterization=3), "parameterization=3"),
    (dict(schedule={"name": "nope"}), "schedule"),
    (dict(schedule={"name": "vp", "beta_min": -1}), "beta_min=-1"),
    (dict(schedule={"name": "ve", "sigma_min": 3.0, "sigma_max": 1.0}), "sigma_max=1.0"),
    (dict(schedule="linear"), "schedule='linear'"),
    (dict(num_classes=0), "num_classes=0"),
    (dict(num_classes=2.5), "num_classes=2.5"),
    (dict(num_classes=True), "num_classes=True"),
    (dict(null_class=7), "null_class=7"),
    (dict(cfg_fused="yes"), "cfg_fused='yes'"),
    (dict(learned_variance=1), "learned_variance=1"),
    (dict(precision="fp8"), "precision='fp8'"),
    (dict(time_input=None), "time_input=None"),
    (dict(schedule=_RAW), "diffspec.schedule is not valid JSON"),
]


@pytest.mark.parametrize("changes, words", CARDS, ids=[",".join(c) + f"-{i}" for i, (c, _) in enumerate(CARDS)])
def test_model_card_rejects_bad_metadata(changes, words):
    with pytest.raises(ValueError) as info:
        ModelCard.from_metadata(_metadata(**changes), source="'m.onnx'")
    message = str(info.value)
    assert message.startswith("'m.onnx'") and words in message and "\n" not in message, message


def test_json_nan_in_metadata_is_refused_not_parsed():
    meta = card().to_metadata()
    meta[PREFIX + "data"] = meta[PREFIX + "data"].replace('"scale": 0.5', '"scale": NaN')
    with pytest.raises(ValueError, match="NaN is not a finite number"):
        ModelCard.from_metadata(meta)


@pytest.mark.parametrize(
    "changes, words", [(dict(data__scale=0.0), "data.scale=0.0"), (dict(data__shape=[10**9, 10**9]), "data.shape")]
)
def test_runtime_and_verification_refuse_a_file_with_bad_metadata(tmp_path, changes, words):
    from diffspec.export.verify import VerificationError, check_graph
    from diffspec.runtime import Model, ModelFileError

    path = save(points_graph(), tmp_path / "bad.onnx", metadata=_metadata(**changes))
    with pytest.raises(ModelFileError, match=words.replace("[", r"\[")):
        Model.load(path, device="cpu")
    import onnx

    with pytest.raises(VerificationError, match=words.replace("[", r"\[")):
        check_graph(onnx.load(path), source=path)


# ---------------------------------------------------------------------------------------------- the runtime
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from diffspec.runtime import Model

    return Model.load(points_model(tmp_path_factory.mktemp("m") / "m.onnx"), device="cpu")


SAMPLE = [  # (keyword arguments of sample(), words)
    (dict(n=0), "n=0"),
    (dict(n=-3), "n=-3"),
    (dict(n=2.5), "n=2.5"),
    (dict(n=10**12), "n=1000000000000"),
    (dict(indices=[0, -1]), "indices"),
    (dict(indices=np.arange(10**12, 10**12 + 1) * 0 + [[1]]), "indices"),
    (dict(seed=-1), "seed=-1"),
    (dict(seed=2**64), "seed=18446744073709551616"),
    (dict(seed="a"), "seed='a'"),
    (dict(seed=1.0), "seed=1.0"),
    (dict(steps=0), "steps=0"),
    (dict(steps=2.0), "steps=2.0"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(sampler="nope"), "nope"),
    (dict(grid="nope"), "unknown grid 'nope'"),
    (dict(grid_options={"rho": 3}), "has no option 'rho'"),
    (dict(eta=0.5), "has no option 'eta'"),
    (dict(guidance_scale=math.nan), "guidance_scale=nan"),
    (dict(guidance_scale=-1.0), "guidance_scale=-1.0"),
    (dict(guidance_rescale=2.0), "guidance_rescale=2.0"),
    (dict(class_label=7), "class label 7 is out of range"),
    (dict(class_label=1.5), "class_label=1.5"),
    (dict(init=np.zeros(2), strength=math.nan), "strength=nan"),
    (dict(init=np.zeros(2), strength=1.5), "strength=1.5"),
    (dict(strength=0.5), "needs init"),
    (dict(init=np.zeros(3), strength=0.5), "init of shape (3,)"),
    (dict(init=np.zeros(2), mask=np.full(2, 2.0)), "mask values must lie in [0, 1]"),
    (dict(init=np.zeros(2)), "init needs mask"),
]


@pytest.mark.parametrize("kwargs, words", SAMPLE, ids=[f"{sorted(k)}-{i}" for i, (k, _) in enumerate(SAMPLE)])
def test_sample_rejects(model, kwargs, words):
    from diffspec.runtime import sample

    kwargs = {"n": 2, "steps": 2, **kwargs}
    if "indices" in kwargs:
        kwargs.pop("n")
    with pytest.raises(ValueError) as info:
        sample(model, **kwargs)
    assert words in str(info.value), str(info.value)


def test_fused_guidance_graph_gets_the_same_checks_as_the_plain_one(model, monkeypatch):
    from diffspec.runtime.sampling import make_denoiser

    for fused in (False, True):
        monkeypatch.setattr(type(model), "cfg_fused", property(lambda self, f=fused: f))
        for scale, rescale, words in (
            (math.nan, 0.0, "guidance_scale=nan"),
            (-1.0, 0.0, "guidance_scale=-1.0"),
            (math.inf, 0.0, "guidance_scale=inf"),
            (2.0, 1.5, "guidance_rescale=1.5"),
        ):
            with pytest.raises(ValueError, match=words):
                make_denoiser(model, np.zeros(2, dtype=np.int64), guidance_scale=scale, guidance_rescale=rescale)


def test_model_load_rejects_paths_that_are_not_model_files(tmp_path):
    from diffspec.runtime import Model, ModelFileError

    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.onnx").write_bytes(os.urandom(64))
    for path, words in (
        (None, "expected a file path"),
        (tmp_path / "none.onnx", "does not exist"),
        (tmp_path, "is a directory"),
        (tmp_path / "empty.onnx", "is empty"),
        (tmp_path / "junk.onnx", "junk.onnx"),
    ):
        with pytest.raises(ModelFileError, match=words):
            Model.load(path, device="cpu")
