"""Property-based fuzzing with Hypothesis.

Two profiles: ``ci`` (the default; a few hundred examples per target so ``make test`` stays
fast) and ``fuzz`` (``make fuzz``: HYPOTHESIS_PROFILE=fuzz, tens of thousands).  Neither keeps
an example database in the tree; a failure prints the reproducing example.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
