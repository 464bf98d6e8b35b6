"""How many examples a slow Hypothesis property draws in each profile (tests/conftest.py registers the profiles)."""

import os

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def examples(n: int) -> int:
    """`max_examples` for a property too slow for the profile's own count: n in the ci and dev profiles, and under
    `thorough` ten times n, at most 1,000 (an explicit `max_examples` would otherwise hold it at n there too)."""
    return min(10 * n, 1000) if THOROUGH else n
