"""Shared set-up for the benchmarks: thread settings and the timing loop.

Every case is timed at 1 thread and at torch's default thread count (captured at import,
before anything changes it); the caller's setting is restored after each benchmark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from benchmarks.cases import Impl

#: torch's intra-op thread count when the benchmark session started.
DEFAULT_THREADS = torch.get_num_threads()
THREAD_SETTINGS = {"1": 1, "default": DEFAULT_THREADS}


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous value afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_impl(benchmark: Any, request: pytest.FixtureRequest, impl: Impl, state: Any, *, group: str) -> Any:
    """Time ``impl.run(state)`` with pytest-benchmark's pedantic mode.

    Rounds are ``--benchmark-min-rounds`` (at least 5) after 2 warm-up rounds; in-place
    implementations get a fresh copy of ``state`` before every round, outside the timing.
    """
    benchmark.group = group
    rounds = max(5, int(request.config.getoption("benchmark_min_rounds")))
    if impl.mutates:
        assert impl.copy is not None
        copy = impl.copy

        def setup() -> tuple[tuple[Any], dict[str, Any]]:
            return (copy(state),), {}

        return benchmark.pedantic(impl.run, setup=setup, rounds=rounds, warmup_rounds=2, iterations=1)
    return benchmark.pedantic(impl.run, args=(state,), rounds=rounds, warmup_rounds=2, iterations=1)
