"""Shared pytest configuration: hypothesis profiles.

Profiles (select with ``HYPOTHESIS_PROFILE=<name>``; default ``dev``):

* ``dev``: 50 random examples per property, no deadline (the machines are shared);
* ``ci``: derandomized (reproducible across runs, no example database), no deadline, and
  sized so ``tests/tt`` stays within its CI time budget.

Tests that are expensive per example scale the profile down with ``tests/tt/_helpers.scaled``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# ``--doctest-modules`` would import every conftest.py as a plain module named ``conftest``; two of them
# (this one and ``cli/conftest.py``) then clash. They hold no doctests, so they are not collected as modules
# (pytest still loads them as conftests).
collect_ignore = ["conftest.py", "cli/conftest.py"]
