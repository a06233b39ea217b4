"""pytest-benchmark timings of sum rounding (round_sum vs rounding the formed sum) and of the norms.

One group per (case, thread setting), so ratios are read off one run::

    pytest benchmarks/test_tt_approx.py --benchmark-enable --benchmark-only --benchmark-min-rounds=3

Cases (float64, seeded):

* ``sum 8x d=16 n=16 r=50->50``: eight random trains of rank 50, rounded to rank 50 —
  ``formed``: ``round_tt(x_1 + ... + x_8, max_rank=50)`` (the rank-400 train is built inside the
  timing); ``round_sum`` deterministic and randomized (oversample 10, seed 0);
* ``norm d=8 n=32 r=64``: ``norm`` (QR sweep), ``norm(method="gram")``, tntorch's ``Tensor.norm``
  (``sqrt(<x, x>)``, the Gram contraction) on the same cores.

The rank-400 rounding takes seconds, so rounds are ``--benchmark-min-rounds`` capped at 3
after one warm-up round.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch

from benchmarks.conftest import THREAD_SETTINGS, num_threads
from tnadapt import tt


@functools.cache
def _summands() -> list[tt.TensorTrain]:
    g = torch.Generator().manual_seed(0)
    return [tt.TensorTrain.random((16,) * 16, 50, generator=g, dtype=torch.float64) for _ in range(8)]


@functools.cache
def _norm_train() -> tt.TensorTrain:
    return tt.TensorTrain.random((32,) * 8, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _formed() -> tt.TruncationReport:
    xs = _summands()
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return tt.round_tt(total, max_rank=50)


SUM_IMPLS: dict[str, Callable[[], Any]] = {
    "formed+round_tt": _formed,
    "round_sum deterministic": lambda: tt.round_sum(_summands(), max_rank=50),
    "round_sum randomized": lambda: tt.round_sum(_summands(), max_rank=50, method="randomized", generator=0),
}


def _tntorch_norm() -> Callable[[], Any]:
    tntorch = pytest.importorskip("tntorch")
    t = tntorch.Tensor(list(_norm_train().cores))
    return lambda: t.norm()


NORM_IMPLS: dict[str, Callable[[], Callable[[], Any]]] = {
    "tnadapt qr": lambda: lambda: _norm_train().norm(),
    "tnadapt gram": lambda: lambda: _norm_train().norm(method="gram"),
    "tntorch": _tntorch_norm,
}


def _time(benchmark: Any, request: pytest.FixtureRequest, fn: Callable[[], Any], group: str, cap: int) -> Any:
    benchmark.group = group
    rounds = min(cap, max(1, int(request.config.getoption("benchmark_min_rounds"))))
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("impl", list(SUM_IMPLS))
@pytest.mark.parametrize("threads", list(THREAD_SETTINGS))
def test_round_sum(benchmark: Any, request: pytest.FixtureRequest, threads: str, impl: str) -> None:
    with num_threads(THREAD_SETTINGS[threads]):
        rep = _time(benchmark, request, SUM_IMPLS[impl], f"sum 8x d=16 n=16 r=50->50 | threads={threads}", 3)
    benchmark.extra_info["relative_error"] = float(rep.relative_error)
    assert rep.tt.bond_dims == (16, *([50] * 13), 16)


@pytest.mark.parametrize("impl", list(NORM_IMPLS))
@pytest.mark.parametrize("threads", list(THREAD_SETTINGS))
def test_norm(benchmark: Any, request: pytest.FixtureRequest, threads: str, impl: str) -> None:
    fn = NORM_IMPLS[impl]()
    with num_threads(THREAD_SETTINGS[threads]):
        value = _time(benchmark, request, fn, f"norm d=8 n=32 r=64 | threads={threads}", 30)
    reference = float(_norm_train().norm())
    assert abs(float(value) - reference) <= 1e-12 * reference
