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
    defaults = {cls for cls, overrides, _, options in CASES if not overrides and not options}
    assert sorted(set(interop.SUPPORTED_CLASSES) - defaults - OWN_LOOP) == []


@pytest.mark.parametrize("name", sorted(interop.REFUSED))
def test_refused_classes_say_why(name):
    assert hasattr(diffusers, name) or name in STEPPING or name == "ScoreSdeVeScheduler"
    with pytest.raises(ValueError, match="no counterpart|not implemented") as err:
        interop.from_diffusers({"_class_name": name}, 4)
    assert interop.REFUSED[name] in str(err.value)


# Classes that diffusers drives with their own pipeline loop instead of `step`, tested below, and classes whose `step`
# takes what their pipeline passes, tested against that pipeline's loop in test_interop_more_classes.
OWN_LOOP = {"ScoreSdeVeScheduler", *PIPELINE_LOOPS}


def _score_sde_ve_pipeline(config, n, score, x_T, noise):
    """diffusers' ScoreSdeVePipeline loop, without its final clamp to [0, 1]."""
    import diffusers.schedulers.scheduling_sde_ve as sde_ve
    import numpy as np
    from test_interop import patched_randn, torch

    sched = diffusers.ScoreSdeVeScheduler.from_config(config)
    sched.set_timesteps(n)
    sched.set_sigmas(n)
    sample = torch.from_numpy(x_T).float() * sched.init_noise_sigma
    saved = sde_ve.randn_tensor
    with patched_randn(noise):
        sde_ve.randn_tensor = lambda shape, **kw: torch.from_numpy(noise(tuple(shape))).float()
        try:
            for i, t in enumerate(sched.timesteps):
                sigma_t = sched.sigmas[i] * torch.ones(x_T.shape[0])
                for _ in range(sched.config.correct_steps):
                    out = torch.from_numpy(score(sample.double().numpy(), sigma_t[0].numpy())).float()
                    sample = sched.step_correct(out, sample).prev_sample
                out = torch.from_numpy(score(sample.double().numpy(), sigma_t[0].numpy())).float()
                output = sched.step_pred(out, t, sample)
                sample, sample_mean = output.prev_sample, output.prev_sample_mean
        finally:
            sde_ve.randn_tensor = saved
    return sample_mean.double().numpy(), np.asarray(sched.sigmas)


@pytest.mark.parametrize("overrides, n", [({}, 20), ({"correct_steps": 2, "snr": 0.1, "sigma_max": 50.0}, 12)])
def test_score_sde_ve_matches_the_pipeline_loop(overrides, n):
    import numpy as np
    from test_interop import MIX, TOL, NoiseList

    config = {"_class_name": "ScoreSdeVeScheduler", **overrides}
    plan = interop.from_diffusers(config, n)

    def score(x, sigma):
        flat = x.reshape(x.shape[0], -1)
        return MIX.score(flat, 1.0, float(sigma)).reshape(x.shape)

    x_T = np.random.default_rng(5).standard_normal((64, 2))
    ours_noise, theirs_noise = NoiseList(9), NoiseList(9)
    ours = plan.run(score, x_T, noise=ours_noise)
    theirs, their_sigmas = _score_sde_ve_pipeline(config, n, score, x_T, theirs_noise)
    assert len(ours_noise.drawn) == len(theirs_noise.drawn) == n * (plan.config["correct_steps"] + 1)
    np.testing.assert_allclose(plan.sigmas, their_sigmas, rtol=1e-6)
    assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < TOL
