"""Hypothesis under mutation testing: few examples, same ones every run.

mutmut (``benchmarks/mutation.py``) reruns these tests once per mutant; a
surviving mutant runs every property in full. Under it the properties run
``MUTATION_EXAMPLES`` derandomized examples, so a run takes minutes and two
runs give the same verdicts. Plain pytest and CI keep their full budgets.
"""

from __future__ import annotations

import os

from hypothesis import settings

UNDER_MUTMUT = "MUTANT_UNDER_TEST" in os.environ
MUTATION_EXAMPLES = 60


def examples(n: int) -> int:
    """The example budget of a property: ``n``, or fewer under mutmut."""
    return min(n, MUTATION_EXAMPLES) if UNDER_MUTMUT else n


if UNDER_MUTMUT:
    settings.register_profile(
        "mutation", max_examples=MUTATION_EXAMPLES, derandomize=True, database=None, deadline=None
    )
    settings.load_profile("mutation")
