"""pytest-benchmark timings of the tnadapt.tt kernels beside the LAPACK floor and the anchors.

One benchmark group per (case, thread setting), so the ratios are read off one run::

    make bench                      # or: pytest benchmarks --benchmark-enable --benchmark-only

``pytest benchmarks --benchmark-disable`` runs every implementation once (a smoke check).
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from benchmarks.cases import EXTRAS, IMPLS, Case, benchmark_cases, prepared
from benchmarks.conftest import THREAD_SETTINGS, num_threads, time_impl

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:torchtt.*")

CASES: dict[str, Case] = {case.group: case for case in benchmark_cases()}


@functools.cache
def _inputs(group: str) -> Any:
    return CASES[group].make()


@functools.cache
def _state(group: str, impl_name: str) -> Any:
    """Converted inputs (the floor's recorded matrices, an anchor's objects), shared by both thread settings."""
    return prepared(CASES[group].impls[impl_name], _inputs(group))


@pytest.mark.parametrize("impl_name", [*IMPLS, *EXTRAS])
@pytest.mark.parametrize("threads", list(THREAD_SETTINGS))
@pytest.mark.parametrize("group", list(CASES))
def test_tt_kernel(benchmark: Any, request: pytest.FixtureRequest, group: str, threads: str, impl_name: str) -> None:
    if impl_name not in CASES[group].impls:
        pytest.skip(f"{impl_name}: not an implementation of {group!r}")
    impl = CASES[group].impls[impl_name]
    if impl.unsupported is not None:
        pytest.skip(f"{impl_name}: {impl.unsupported}")
    state = _state(group, impl_name)
    with num_threads(THREAD_SETTINGS[threads]):
        time_impl(benchmark, request, impl, state, group=f"{group} | threads={threads}")
