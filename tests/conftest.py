"""Shared pytest configuration: hypothesis profiles.

Profiles (select with ``HYPOTHESIS_PROFILE=<name>``; default ``dev``):

* ``dev``: 50 random examples per property, no deadline (the machines are shared);
* ``ci``: derandomized (reproducible across runs, no example database), no deadline, and
  sized so ``tests/tt`` stays within its CI time budget.

Tests that are expensive per example scale the profile down with ``tests/tt/_helpers.scaled``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Import a repository script (``"examples/x.py"``, ``"docs/y.py"``) as a module named after its file."""

    def load(relative: str) -> ModuleType:
        path = ROOT / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module  # dataclasses look their module up while a class is built
        spec.loader.exec_module(module)
        return module

    return load
