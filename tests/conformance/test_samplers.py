"""The conformance suite: every registered sampler on every backend, scored by `diffspec.conformance`.

Backends (`diffspec.conformance.backends.BACKENDS`): the reference (every check: order on exact flow maps for
every (options, order) pair of the contract, distribution, draws, clean ends, option and input validation, noise
contract), the trainer in float64 and float32 (step-by-step agreement with the reference given the same draws,
and the edge checks), and the runtime driven through a numpy network. Under HYPOTHESIS_PROFILE=thorough every
probe option value and larger distribution samples are checked too.
"""

import os

import pytest
from diffspec.conformance import check_sampler
from diffspec.conformance.backends import BACKENDS, runtime_report
from diffspec.reference.samplers import SAMPLER_INFO

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
NAMES = sorted(SAMPLER_INFO)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_backend_conforms(backend, name):
    b = BACKENDS[backend]
    fn = b.sampler(name)
    assert fn is not None, f"backend {backend} has no sampler {name!r}"
    # the reference, the truth, is held to every (options, order) pair of its contract in CI too
    report = check_sampler(
        fn, name, precision=b.precision, checks=b.checks, thorough=THOROUGH, all_orders=backend == "reference"
    )
    assert report.passed, str(report)


@pytest.mark.parametrize("name", NAMES)
def test_runtime_conforms(name):
    report = runtime_report(name)
    assert report.passed, str(report)
