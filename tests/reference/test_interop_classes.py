"""Every scheduler class of the installed diffusers that has a `step`: from_diffusers reproduces it (and the
diffusers-loop test runs it on its default config at least), or refuses it with the documented reason."""

import inspect

import pytest
from diffspec.reference import interop
from test_interop import CASES, diffusers
from test_interop_more_classes import LOOPS as PIPELINE_LOOPS


def _stepping_classes():
    import diffusers.schedulers as schedulers

    names = []
    for name in dir(schedulers):
        cls = getattr(schedulers, name, None)
        if name.endswith("Scheduler") and not name.startswith("Flax") and inspect.isclass(cls):
            # DummyObject placeholders stand for classes whose backend is not installed: they have no `step`
            if callable(getattr(cls, "step", None)) and type(cls).__name__ != "DummyObject":
                names.append(name)
    return sorted(names)


STEPPING = _stepping_classes()


def test_every_class_is_either_reproduced_or_refused():
    assert len(STEPPING) > 40, STEPPING  # the listing works
    covered = set(interop.SUPPORTED_CLASSES) | set(interop.REFUSED)
    assert [n for n in STEPPING if n not in covered] == []
    assert not set(interop.SUPPORTED_CLASSES) & set(interop.REFUSED)


def test_every_reproduced_class_runs_against_diffusers_on_its_default_config():
    from tests.reference.test_interop_dpm_variants import CASES as DPM_VARIANT_CASES

    defaults = {cls for cls, overrides, _, options in CASES + DPM_VARIANT_CASES if not overrides and not options}
    assert sorted(set(interop.SUPPORTED_CLASSES) - defaults - OWN_LOOP) == []


@pytest.mark.parametrize("name", sorted(interop.REFUSED))
def test_refused_classes_say_why(name):
    assert hasattr(diffusers, name) or name in STEPPING or name == "ScoreSdeVeScheduler"
    with pytest.raises(ValueError, match="no counterpart") as err:
        interop.from_diffusers({"_class_name": name}, 4)
    assert interop.REFUSED[name] in str(err.value)


# Classes that diffusers drives with their own pipeline loop instead of `step`, tested below, and classes whose `step`
# takes what their pipeline passes, tested against that pipeline's loop in test_interop_more_classes.
OWN_LOOP = {"ScoreSdeVeScheduler", *PIPELINE_LOOPS}


@pytest.mark.parametrize(
    "overrides, n, set_timesteps",
    [({}, 20, {}), ({"correct_steps": 2, "snr": 0.1, "sigma_max": 50.0}, 12, {}), ({}, 10, {"sampling_eps": 0.05})],
)
def test_score_sde_ve_matches_the_pipeline_loop(overrides, n, set_timesteps):
    import numpy as np
    from diffspec.conformance.diffusers_loops import model_for, run_pipeline
    from test_interop import TOL, NoiseList

    config = {"_class_name": "ScoreSdeVeScheduler", **overrides}
    plan = interop.from_diffusers(config, n, **set_timesteps)

    score = model_for(plan)  # the exact score of the mixture (alpha = 1, noise sigma)
    x_T = np.random.default_rng(5).standard_normal((64, 2))
    ours_noise, theirs_noise = NoiseList(9), NoiseList(9)
    ours = plan.run(score, x_T, noise=ours_noise)
    sched = diffusers.ScoreSdeVeScheduler.from_config(config)
    # diffusers' ScoreSdeVePipeline loop, without its final clamp to [0, 1]; its "timesteps" are the sigmas
    theirs, their_sigmas = run_pipeline(sched, score, x_T, theirs_noise, n, set_timesteps=set_timesteps)
    assert len(ours_noise.drawn) == len(theirs_noise.drawn) == n * (plan.config["correct_steps"] + 1)
    np.testing.assert_allclose(plan.sigmas, their_sigmas, rtol=1e-6)
    assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < TOL


# ---- every option of the list, in every class that has it -------------------------------------------------

# The options that diffusers' classes read and diffspec reproduces or refuses, with the values that are not the
# default: a key's test value where any non-default value will do (NON_DEFAULT), every value of an enumerated key.
NON_DEFAULT = {
    "lambda_min_clipped": -5.0,
    "shift_terminal": 0.1,
    "snr_shift_scale": 2.0,
    "flow_shift": 3.0,
    "noise_sampler_seed": 0,
    "sample_max_value": 0.8,  # below 1, where diffusers' dynamic thresholding becomes a fixed divisor
}
ENUMERATED = {
    "use_exponential_sigmas": (True,),
    "use_beta_sigmas": (True,),
    "use_lu_lambdas": (True,),
    "use_karras_sigmas": (True,),
    "interpolation_type": ("log_linear",),
    "timestep_type": ("continuous",),
    "invert_sigmas": (True,),
    "rescale_betas_zero_snr": (True,),
    "beta_schedule": ("laplace", "exp"),  # the others run in many cases above
    "prediction_type": ("epsilon", "sample", "v_prediction", "flow_prediction"),
    "use_flow_sigmas": (True,),
    "predict_x0": (False,),
    "variance_type": ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"),
    "algorithm_type": ("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver", "deis"),
    "use_dynamic_shifting": (True,),
    "thresholding": (True,),
}
INPUTS = ("timesteps", "sigmas", "mu")
# variance_type is read by these classes' steps; the DPM-Solver family only splits a learned variance off the output
VARIANCE_CLASSES = {"DDPMScheduler", "DDPMParallelScheduler", "UnCLIPScheduler"}


def _companions(name, key, value, params):
    """The other keys a value needs to run at all in diffusers (flow sigmas with a flow model, mu with the dynamic
    shift, thresholding for sample_max_value, a final sigma the noise-prediction solvers can step onto)."""
    extra = {}
    if (key, value) in (("prediction_type", "flow_prediction"), ("use_dynamic_shifting", True)) or (
        key == "use_flow_sigmas"
    ):
        extra.update(
            {k: v for k, v in (("use_flow_sigmas", True), ("prediction_type", "flow_prediction")) if k in params}
        )
    if key == "sample_max_value" and "thresholding" in params:
        extra["thresholding"] = True
    if key == "algorithm_type" and value in ("dpmsolver", "sde-dpmsolver") and "final_sigmas_type" in params:
        extra["final_sigmas_type"] = "sigma_min"
    extra.pop(key, None)
    return extra


def _diffusers_runs(name, config, mu):
    """Whether diffusers itself builds the class from `config` and takes a step with it (a value it accepts)."""
    import torch

    cls = getattr(diffusers, name)
    try:
        sched = cls.from_config(config)
        sched.set_timesteps(4, **({"mu": mu} if mu is not None else {}))
        x = torch.zeros((2, 2, 1, 1))
        t = sched.timesteps[0]
        inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        learned = str(config.get("variance_type", "")).startswith("learned")
        out = torch.zeros((2, 4, 1, 1)) if learned else torch.zeros_like(inp)
        sched.step(out, t, x)
    except Exception:  # noqa: BLE001 - any failure means diffusers does not run this value
        return False
    return True


def _requirements():
    """(class, key, value, companions): every option value of the list above that the class reads and runs."""
    reqs = []
    for name in interop.SUPPORTED_CLASSES:
        cls = getattr(diffusers, name, None)
        if cls is None or not hasattr(cls, "set_timesteps"):
            continue
        params = inspect.signature(cls.__init__).parameters
        for key in list(ENUMERATED) + list(NON_DEFAULT):
            if key not in params or (key == "variance_type" and name not in VARIANCE_CLASSES):
                continue
            values = ENUMERATED.get(key, (NON_DEFAULT.get(key),))
            for value in values:
                if value == params[key].default:
                    continue
                extra = _companions(name, key, value, params)
                mu = (
                    0.5 if extra.get("use_dynamic_shifting") or (key, value) == ("use_dynamic_shifting", True) else None
                )
                if _diffusers_runs(name, {key: value, **extra}, mu):
                    reqs.append((name, key, value, extra))
        for key in INPUTS:
            if key in inspect.signature(cls.set_timesteps).parameters:
                reqs.append((name, key, "given", {}))
    return reqs


def _exercised():
    """(class, config overrides, custom input keys) of every case the interop tests run against diffusers."""
    import test_interop_inputs
    import test_interop_more_classes

    from tests.reference import test_interop_dpm_variants

    rows = [(c, o, set()) for c, o, _, _ in CASES]
    rows += [(c, o, {k for k in custom if k in INPUTS}) for c, o, _, custom, *_ in test_interop_more_classes.CASES]
    rows += [(c, o, set()) for c, o, _, _ in test_interop_dpm_variants.CASES]
    return rows + list(test_interop_inputs.EXERCISED)


def _is_exercised(name, key, value, rows):
    for cls, overrides, inputs in rows:
        if cls != name:
            continue
        if value == "given":
            if key in inputs:
                return True
        elif key == "sample_max_value":
            has_thresholding = "thresholding" in inspect.signature(getattr(diffusers, name).__init__).parameters
            if (overrides.get("thresholding") or not has_thresholding) and overrides.get(key, 1.0) < 1.0:
                return True
        elif key in NON_DEFAULT:
            default = inspect.signature(getattr(diffusers, name).__init__).parameters[key].default
            if overrides.get(key, default) != default:
                return True
        elif key in overrides and overrides[key] == value:
            return True
    return False


def _is_refused(name, key, value):
    entry = interop.REFUSED_OPTIONS.get((name, key))
    return entry is not None and (entry[0] is None or value in entry[0])


def test_every_option_value_is_reproduced_or_refused_with_a_reason():
    """For each class and each listed option value that diffusers runs: a case compares it with diffusers, or
    REFUSED_OPTIONS says why not (and `test_refused_options_say_why` checks that from_diffusers says so)."""
    reqs = _requirements()
    assert len(reqs) > 150, len(reqs)  # the walk sees the classes' options
    rows = _exercised()
    missing = [(n, k, v) for n, k, v, _ in reqs if not _is_exercised(n, k, v, rows) and not _is_refused(n, k, v)]
    assert missing == []
    # and nothing is refused that a case runs
    assert [(n, k) for n, k, v, _ in reqs if _is_refused(n, k, v) and _is_exercised(n, k, v, rows)] == []


@pytest.mark.parametrize("name, key", sorted(interop.REFUSED_OPTIONS))
def test_refused_options_say_why(name, key):
    values, reason = interop.REFUSED_OPTIONS[(name, key)]
    params = inspect.signature(getattr(diffusers, name).__init__).parameters
    value = NON_DEFAULT.get(key, True) if values is None else values[0]
    if key in INPUTS:
        config, custom = {"_class_name": name}, {key: 0.5 if key == "mu" else [999.0, 500.0, 0.0]}
    else:
        config, custom = {"_class_name": name, key: value, **_companions(name, key, value, params)}, {}
    with pytest.raises(ValueError) as err:
        interop.from_diffusers(config, None if custom else 4, **custom)
    assert reason in str(err.value)
