"""The kit's own behaviour: bad input never crashes it, reports read and serialise, the command line's exit
status, the k-diffusion convention on k-diffusion itself, schedulers, schedules and losses."""

import json
import subprocess
import sys

import numpy as np
import pytest
from diffspec.conformance import check_loss, check_sampler, check_schedule, check_scheduler
from diffspec.conformance.kdiffusion import KDIFFUSION, sampler_functions
from diffspec.reference.samplers import SAMPLERS


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "diffspec.conformance", *args],
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def test_not_callable_unknown_name_and_convention_are_usage_errors():
    with pytest.raises(ValueError, match="dpmpp_9m.*expected one of .*dpmpp_2m"):
        check_sampler(SAMPLERS["dpmpp_2m"], "dpmpp_9m")
    with pytest.raises(ValueError, match="convention='jax'"):
        check_sampler(SAMPLERS["dpmpp_2m"], "dpmpp_2m", convention="jax")
    with pytest.raises(ValueError, match="eta=-1.0 is not allowed for ddim"):
        check_sampler(SAMPLERS["ddim"], "ddim", options={"eta": -1.0})
    report = check_sampler(42, "ddim")
    assert not report.passed and report.failed_checks() == ["signature"] and "not callable" in str(report)


def test_a_signature_that_does_not_fit_names_the_expected_one():
    report = check_sampler(lambda x: x, "ddim")
    assert report.failed_checks() == ["signature"]
    assert "fn(denoise, x_T, grid, schedule, *, noise=None" in report.rows[0].measured
    report = check_sampler(SAMPLERS["ddim"], "ddim", convention="k-diffusion")
    assert report.failed_checks() == ["signature"] and "fn(model, x, sigmas" in report.rows[0].measured


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (lambda denoise, x_T, grid, schedule, noise=None: 1 / 0, "raised ZeroDivisionError"),
        (lambda denoise, x_T, grid, schedule, noise=None: x_T[:1], "returned shape (1, 2)"),
        (lambda denoise, x_T, grid, schedule, noise=None: np.full_like(x_T, np.nan), "NaN"),
        (lambda denoise, x_T, grid, schedule, noise=None: "oops", "not an array"),
    ],
    ids=["raises", "wrong-shape", "nan", "not-an-array"],
)
def test_a_broken_sampler_gives_failing_rows_that_name_the_problem(body, problem):
    report = check_sampler(body, "ddim")
    assert not report.passed
    assert any(problem in str(row.measured) for row in report.failed), str(report)


def test_report_table_and_json():
    report = check_sampler(SAMPLERS["ddim"], "ddim", checks=("draws", "agreement"))
    assert report.passed
    text = str(report)
    assert "PASSED" in text and "| check" in text and "agreement (" in text
    doc = json.loads(report.to_json())
    assert doc["passed"] is True and {r["check"] for r in doc["rows"]} == {r.check for r in report.rows}
    assert set(doc["rows"][0]) == {"check", "measured", "expected", "tolerance", "passed", "note"}


def test_k_diffusion_dpmpp_2m_conforms():
    fn = sampler_functions()["sample_dpmpp_2m"]
    report = check_sampler(fn, "dpmpp_2m", convention="k-diffusion")
    assert report.passed, str(report)
    assert {"agreement", "order", "clean end", "draws"} <= {r.check.split(" (")[0] for r in report.rows}


@pytest.mark.parametrize("name", ["sample_dpm_fast", "sample_dpm_adaptive"])
def test_k_diffusion_end_point_samplers_are_scored_on_the_times_they_pick(name):
    """sample_dpm_fast / sample_dpm_adaptive take (sigma_min, sigma_max[, n]) and log sigma_min: a clean end is
    refused with a ValueError naming sigma_min, and the agreement rows run the reference on the times they pick
    between the grid's first and last noisy time, where the two agree to rounding."""
    fn = sampler_functions()[name]
    report = check_sampler(fn, KDIFFUSION[name][0], convention="k-diffusion", checks=("clean end", "agreement"))
    assert report.passed, str(report)
    kinds = [r.check.split(" (")[0] for r in report.rows]
    assert kinds.count("clean end") == kinds.count("noisy end") == 3 and kinds.count("agreement") == 2
    assert all(float(r.measured) < 1e-10 for r in report.rows if r.check.startswith("agreement"))


def test_an_end_point_sampler_that_moves_its_end_points_fails_agreement():
    """The same function told a sigma_min 10% higher than it was given: a finite sample that is not the reference's
    (the end points are what the kit checks it by)."""
    real = sampler_functions()["sample_dpm_fast"]

    def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None, callback=None, disable=None, **kw):
        return real(model, x, sigma_min * 1.1, sigma_max, n, disable=disable, **kw)

    report = check_sampler(sample_dpm_fast, "dpm_solver_fast", convention="k-diffusion", checks=("agreement",))
    assert report.failed_checks() == ["agreement"] and len(report.failed) == 2, str(report)


def test_every_k_diffusion_sampler_has_a_registry_counterpart():
    functions = sampler_functions()
    assert set(functions) == set(KDIFFUSION), set(functions) ^ set(KDIFFUSION)
    for registry_name, _, _ in KDIFFUSION.values():
        assert registry_name in SAMPLERS


def test_cli_exit_status():
    ok = _run_cli("sampler", "k_diffusion.sampling:sample_dpmpp_2m", "--as", "dpmpp_2m", "--convention", "k-diffusion")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASSED" in ok.stdout
    # a registry sampler claimed as another: the table names the failing checks, exit 1
    bad = _run_cli("sampler", "diffspec.reference.samplers.k_diffusion:sample_euler", "--as", "heun")
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "order (" in bad.stdout
    for args in (
        ["sampler", "no_such_module:fn", "--as", "ddim"],
        ["sampler", "math:sqrt", "--as", "nope"],
        ["frobnicate"],
        ["sampler", "math:sqrt"],
    ):
        usage = _run_cli(*args)
        assert usage.returncode == 2, (args, usage.stdout, usage.stderr)
        assert "Traceback" not in usage.stderr


def test_diffusers_dpm_solver_multistep_conforms_and_a_broken_subclass_does_not():
    diffusers = pytest.importorskip("diffusers")
    import torch

    torch.set_num_threads(1)
    report = check_scheduler(diffusers.DPMSolverMultistepScheduler())
    assert report.passed, str(report)

    class Shifted(diffusers.DPMSolverMultistepScheduler):
        """One coefficient wrong: the data-prediction output scaled by 1.01."""

        def convert_model_output(self, model_output, *args, sample=None, **kwargs):
            return 1.01 * super().convert_model_output(model_output, *args, sample=sample, **kwargs)

    broken = check_scheduler(Shifted(), order=False)
    assert not broken.passed and "loop" in broken.failed_checks(), str(broken)


def test_a_subclass_that_draws_its_noise_in_its_own_module_gets_the_same_draws():
    """A custom scheduler that draws through the `randn_tensor` imported into its own module (here, this test
    module) is fed the kit's draws too, so its stochastic loop is compared draw for draw."""
    diffusers = pytest.importorskip("diffusers")
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    torch.set_num_threads(1)
    globals()["randn_tensor"] = randn_tensor  # where the kit looks for it: the module that defines the class

    class LocalNoise(diffusers.DPMSolverMultistepScheduler):
        def step(self, model_output, timestep, sample, generator=None, variance_noise=None, return_dict=True):
            noise = globals()["randn_tensor"](model_output.shape, dtype=model_output.dtype)
            return super().step(model_output, timestep, sample, variance_noise=noise, return_dict=return_dict)

    report = check_scheduler(LocalNoise(algorithm_type="sde-dpmsolver++"), steps=(10,), order=False)
    assert report.passed, str(report)


class _Port:
    """A DDIM scheduler written against diffusers' API without deriving from a diffusers class (here it delegates
    to a hidden instance); `wrong` scales the model output, one coefficient off."""

    init_noise_sigma = 1.0

    def __init__(self, wrong=1.0):
        import diffusers

        self._inner, self.wrong = diffusers.DDIMScheduler(clip_sample=False), wrong
        self.config = dict(self._inner.config)

    @property
    def timesteps(self):
        return self._inner.timesteps

    def set_timesteps(self, n, **kwargs):
        self._inner.set_timesteps(n, **kwargs)

    def scale_model_input(self, x, t):
        return x

    def step(self, out, t, x, **kwargs):
        return self._inner.step(out * self.wrong, t, x, **kwargs)


def test_a_port_that_claims_a_class_is_scored_as_that_class():
    pytest.importorskip("diffusers")
    from diffspec.conformance.cli import main

    assert check_scheduler(_Port(), order=False).failed_checks() == ["class"]
    claimed = check_scheduler(_Port(), as_class="DDIMScheduler")
    assert claimed.passed and {"loop", "order"} <= {r.check.split(" (")[0] for r in claimed.rows}, str(claimed)
    wrong = check_scheduler(_Port(wrong=1.01), as_class="DDIMScheduler", order=False)
    assert wrong.failed_checks() == ["loop"], str(wrong)
    with pytest.raises(ValueError, match="as_class='DDIMSchedule'.*expected one of"):
        check_scheduler(_Port(), as_class="DDIMSchedule")
    assert main(["scheduler", "diffusers:DDIMScheduler", "--as", "DDIMSchedule"]) == 2


# classes whose pipeline feeds the network something else than (x, timestep) in the class's prediction type, or
# whose step takes more than (output, t, x), or that their pipeline drives with its own loop
OWN_CONVENTIONS = [
    ("CMStochasticIterativeScheduler", {}),  # timestep 250 log sigma, boundary-condition output
    ("CosineDPMSolverMultistepScheduler", {}),  # timestep atan(sigma) 2 / pi, a Brownian tree
    ("MiniMaxH3Scheduler", {}),  # time 1 - sigma, negated velocity
    ("CogVideoXDPMScheduler", {}),  # step(out, old x0, t, t_back, x)
    ("UnCLIPScheduler", {}),  # step(..., prev_timestep)
    ("DDPMWuerstchenScheduler", {}),  # continuous times as a batch, one timestep fewer
    ("ScoreSdeVeScheduler", {}),  # step_correct / step_pred on a score model
    ("HeliosScheduler", {"stages": 1}),
]


@pytest.mark.parametrize(("name", "overrides"), OWN_CONVENTIONS, ids=[n for n, _ in OWN_CONVENTIONS])
def test_classes_with_their_own_conventions_are_driven_as_their_pipelines_drive_them(name, overrides):
    """Each such class, run by its pipeline's loop on the exact network in its convention, agrees with
    from_diffusers (a broken subclass failing is tested above)."""
    diffusers = pytest.importorskip("diffusers")
    import torch

    torch.set_num_threads(1)
    report = check_scheduler(getattr(diffusers, name)(**overrides), steps=(10,))
    assert report.passed, str(report)
    assert {"timesteps", "loop"} <= set(r.check.split(" (")[0] for r in report.rows)


def test_check_schedule_and_check_loss():
    from diffspec.reference.losses import diffusion_loss
    from diffspec.reference.schedules import make_schedule

    ref = make_schedule("cosine")
    abar = ref.alpha(np.arange(ref.num_steps, dtype=np.float64)) ** 2
    assert check_schedule("cosine", alphas_cumprod=abar, rtol=1e-12).passed
    assert not check_schedule("linear", alphas_cumprod=abar).passed
    vp = make_schedule("vp_cosine")
    assert check_schedule("vp_cosine", alpha=vp.alpha, sigma=vp.sigma, rtol=1e-12).passed

    def min_snr_v(output, x0, eps, t, schedule):
        return diffusion_loss(output, x0, eps, t, schedule, parameterization="v", weighting="min_snr")

    assert check_loss(min_snr_v, "v", weighting="min_snr").passed
    wrong_target = check_loss(lambda o, x0, e, t, s: np.mean((o - e) ** 2, axis=1), "v")
    assert {"value", "zero at the target"} <= set(wrong_target.failed_checks())


def test_cli_scheduler_from_a_config_file(tmp_path, capsys):
    diffusers = pytest.importorskip("diffusers")
    from diffspec.conformance.cli import main

    diffusers.DPMSolverMultistepScheduler().save_config(str(tmp_path))
    assert main(["scheduler", str(tmp_path / "scheduler_config.json")]) == 0
    assert "PASSED" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps({"_class_name": "NoSuchScheduler"}))
    assert main(["scheduler", str(tmp_path / "bad.json")]) == 2
    assert "NoSuchScheduler" in capsys.readouterr().err
