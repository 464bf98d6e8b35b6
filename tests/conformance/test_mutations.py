"""The kit tests itself: copies of correct samplers with one defect each must fail, and the report must name
the check that caught them (a wrong coefficient, a wrong multistep weight, a missing draw, a skipped last step),
in diffspec's convention and in k-diffusion's."""

import numpy as np
import pytest
from diffspec.conformance import check_sampler
from diffspec.reference.noise import as_noise_source

CHECKS = ("draws", "agreement", "order", "clean end", "noise contract")  # all but option validation
NO_LOF = {"lower_order_final": False}  # the copies below always take the full-order final steps


def dpmpp_2m(weight=0.5, coefficient="alpha_next", last_step=True):
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, multistep second order in data prediction), written
    out here with a switch per defect: `weight` the extrapolation weight (1/(2r) correct), `coefficient` which
    alpha scales the data term (alpha_next correct), `last_step` whether the last grid interval is taken."""

    def sample(denoise, x_T, grid, schedule, *, noise=None, lower_order_final=True):
        alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
        x, x0_prev = np.array(x_T, dtype=np.float64), None
        n = len(grid) - 1 if last_step else len(grid) - 2
        for i in range(n):
            x0 = denoise(x, float(grid[i]))
            h = lam[i + 1] - lam[i]
            if x0_prev is None or sigma[i + 1] == 0:
                D = x0
            else:
                r = (lam[i] - lam[i - 1]) / h
                D = (1 + weight / r) * x0 - (weight / r) * x0_prev
            a = alpha[i + 1] if coefficient == "alpha_next" else alpha[i]
            x = (sigma[i + 1] / sigma[i]) * x - a * np.expm1(-h) * D
            x0_prev = x0
        return x

    return sample


def ddpm(skip_first_draw=False):
    """DDPM ancestral sampling (Ho et al. 2020, eqs. 6-7, fixed_small variance), written out here; the defect
    leaves out the first step's draw."""

    def sample(denoise, x_T, grid, schedule, *, noise=None, variance="fixed_small", variance_v=None):
        draw = as_noise_source(noise, sampler="ddpm")
        alpha, sigma, lam = schedule.alpha(grid), schedule.sigma(grid), schedule.lam(grid)
        x = np.array(x_T, dtype=np.float64)
        for i in range(len(grid) - 1):
            x0 = denoise(x, float(grid[i]))
            c = -np.expm1(2 * (lam[i] - lam[i + 1]))
            mean = (alpha[i] / alpha[i + 1]) * (sigma[i + 1] / sigma[i]) ** 2 * x + alpha[i + 1] * c * x0
            if i == len(grid) - 2:
                return mean
            x = mean if (skip_first_draw and i == 0) else mean + np.sqrt(c) * sigma[i + 1] * draw(x.shape)
        return x

    return sample


def test_correct_copies_pass():
    """The written-out copies without defects conform: the mutants below fail for their defect alone."""
    report = check_sampler(dpmpp_2m(), "dpmpp_2m", options=NO_LOF, checks=CHECKS)
    assert report.passed, str(report)
    report = check_sampler(ddpm(), "ddpm", checks=CHECKS)
    assert report.passed, str(report)


@pytest.mark.parametrize(
    ("mutant", "name", "caught_by"),
    [
        (dpmpp_2m(coefficient="alpha"), "dpmpp_2m", {"agreement", "order"}),  # one wrong coefficient
        (dpmpp_2m(weight=1.0), "dpmpp_2m", {"agreement", "order"}),  # the wrong multistep extrapolation weight
        (dpmpp_2m(last_step=False), "dpmpp_2m", {"agreement"}),  # the last step skipped
        (ddpm(skip_first_draw=True), "ddpm", {"draws", "agreement"}),  # one draw missing
    ],
    ids=["wrong-coefficient", "wrong-multistep-weight", "skipped-last-step", "missing-draw"],
)
def test_mutants_fail_naming_the_check(mutant, name, caught_by):
    report = check_sampler(mutant, name, options=NO_LOF if name == "dpmpp_2m" else {}, checks=CHECKS)
    assert not report.passed
    assert caught_by <= set(report.failed_checks()), str(report)
    assert any(check in str(report) and "FAIL" in str(report) for check in caught_by)


def _kd_dpmpp_2m(wrong=False):
    """k-diffusion's `sample_dpmpp_2m` (Crowson), rewritten here in its convention; `wrong` scales the multistep
    correction by 1/r instead of 1/(2r) (one coefficient)."""
    import torch

    def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = {} if extra_args is None else extra_args
        s_in = x.new_ones([x.shape[0]])
        old = None
        for i in range(len(sigmas) - 1):
            denoised = model(x, sigmas[i] * s_in, **extra_args)
            t, t_next = -torch.log(sigmas[i]), -torch.log(sigmas[i + 1])
            h = t_next - t
            if old is None or sigmas[i + 1] == 0:
                d = denoised
            else:
                r = (t - (-torch.log(sigmas[i - 1]))) / h
                k = 1 / r if wrong else 1 / (2 * r)
                d = (1 + k) * denoised - k * old
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
            old = denoised
        return x

    return sample_dpmpp_2m


def test_k_diffusion_convention_copy_with_a_wrong_coefficient_fails():
    good = check_sampler(_kd_dpmpp_2m(), "dpmpp_2m", convention="k-diffusion", checks=("agreement", "order"))
    assert good.passed, str(good)
    bad = check_sampler(_kd_dpmpp_2m(wrong=True), "dpmpp_2m", convention="k-diffusion", checks=("agreement", "order"))
    assert {"agreement", "order"} <= set(bad.failed_checks()), str(bad)


def test_runtime_backend_catches_a_wrong_denoiser_wrapper(monkeypatch):
    """The runtime row compares the runtime's own sampling path (grid, per-sample noise, denoiser wrapper) with the
    reference: a wrapper that scales x0_hat by 1.01 fails it."""
    from diffspec.conformance.backends import runtime_report
    from diffspec.runtime import sampling

    assert runtime_report("dpmpp_2m").passed
    original = sampling.make_denoiser

    def scaled(*args, **kwargs):
        denoise = original(*args, **kwargs)
        return lambda x, t: 1.01 * denoise(x, t)

    monkeypatch.setattr(sampling, "make_denoiser", scaled)
    report = runtime_report("dpmpp_2m")
    assert report.failed_checks() == ["agreement"], str(report)
