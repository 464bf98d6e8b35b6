import os
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _import_every_module_of_the_package():
    """Import every module of diffspec before any test runs, so that each test sees the same examples in any order.

    Hypothesis draws now and then (p = 0.05 per choice) a constant found in the source of the local modules imported
    so far (hypothesis.internal.conjecture.providers._get_local_constants). Which of diffspec's modules are imported
    when a test runs depends on the tests that ran before it in the same process, so a derandomized test drew
    different examples alone than in the full suite, and could draw different ones in two CI runs that split the
    tests differently between workers. With every module imported up front the pool, and so every example, is fixed.
    A module whose optional dependency is missing (torch in the numpy-only job) is skipped there, as its tests are.
    """
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for part in ("reference", "trainer", "export", "runtime", "conformance"):
        for path in sorted((root / part).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            if rel.name == "__main__":  # runs a command line
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            try:
                importlib.import_module(".".join(("diffspec", *parts)))
            except ImportError:
                pass


_import_every_module_of_the_package()


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that changes torch's intra-op thread count (the trainer's --threads) leaves it as it found it."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _module_rng_reseeded(request):
    """A test module's `RNG` (the numpy Generator its helpers draw from) is reseeded from the test's id before each
    test, so the values a test draws do not depend on which tests ran before it in the same process: pytest-xdist
    hands the tests to its workers differently from run to run, and a bound met by one stream can be missed by
    another (a 1-ulp rounding bound once failed in CI only)."""
    module = request.module
    if isinstance(getattr(module, "RNG", None), np.random.Generator):
        module.RNG = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
