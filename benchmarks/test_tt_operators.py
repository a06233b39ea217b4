"""pytest-benchmark timings of operator × train products, tnadapt vs torchTT, same inputs and accuracy.

One group per (case, thread setting), so ratios are read off one run::

    pytest benchmarks/test_tt_operators.py --benchmark-enable --benchmark-only --benchmark-min-rounds=5

Cases (float64, seeded; ``A`` a TT-matrix of order 12 with 4x4 legs and rank 5, ``x`` a train
of rank 40, so ``A x`` has rank 200; both with decaying bond weights, see :func:`make_inputs`):

* ``matvec exact``: ``A @ x`` (ranks multiply) — tnadapt ``TTMatrix @ TensorTrain``, torchTT
  ``TT @ TT``;
* ``matvec rounded -> r=40``: the product truncated to rank 40 — tnadapt ``matvec_round``
  (``"exact"``: product then TT-rounding, the guaranteed one; ``"zipup"``), torchTT
  ``(A @ x).round(eps=1e-14, rmax=40)`` (the same product-then-round; ``eps`` tiny so the
  rank cap decides, as in tnadapt) and ``fast_mv(A, x, eps=1e-14, rmax=40)`` (its fast
  product).  Each result's relative error ``||A x - y|| / ||A x||`` is recorded in
  ``extra_info`` (measured outside the timing), so speed is compared at stated accuracy.

:func:`make_inputs` and :data:`ROUNDED` are shared with the smoke test
(``tests/test_benchmarks_smoke.py``), which runs every implementation once on tiny inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch

from benchmarks.conftest import THREAD_SETTINGS, num_threads
from tnadapt import tt

#: (order, leg size, rank of A, rank of x, rank cap of the rounded product)
CASE = (12, 4, 5, 40, 40)


def _decayed(cores: tuple[torch.Tensor, ...], rate: float) -> list[torch.Tensor]:
    """Scale the right bond index ``b`` of every core by ``rate**b`` (decaying bond spectra)."""
    return [c * rate ** torch.arange(c.shape[-1], dtype=c.dtype) for c in cores]


def make_inputs(d: int, n: int, ra: int, rx: int, seed: int = 0) -> tuple[tt.TTMatrix, tt.TensorTrain]:
    """The seeded operator and train of a case (float64), with compressible products.

    ``A = I + 0.5 R`` (``R`` random of rank ``ra - 1`` with bond weights ``0.3**b``, so ``A`` has
    rank ``ra``) and ``x`` random of rank ``rx`` with bond weights ``0.7**b``: ``A x`` has
    decaying bond spectra, so a rank cap gives a small, comparable error (about ``1e-3`` at
    rank 40 in the timed case) instead of truncating white noise.
    """
    g = torch.Generator().manual_seed(seed)
    dims = (n,) * d
    r = tt.TTMatrix(_decayed(tt.TTMatrix.random(dims, dims, ra - 1, generator=g, dtype=torch.float64).cores, 0.3))
    a = tt.TTMatrix.identity(dims, dtype=torch.float64) + 0.5 * r
    x = tt.TensorTrain(_decayed(tt.TensorTrain.random(dims, rx, generator=g, dtype=torch.float64).cores, 0.7))
    return a, x


@functools.cache
def _inputs() -> tuple[tt.TTMatrix, tt.TensorTrain]:
    d, n, ra, rx, _ = CASE
    return make_inputs(d, n, ra, rx)


def _torchtt() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("torchtt")


def to_torchtt(obj: tt.TTMatrix | tt.TensorTrain) -> Any:
    """The same cores as a ``torchtt.TT`` (its TT-matrix cores are ``(r, m, n, r')`` too)."""
    return _torchtt().TT([c.clone() for c in obj.cores])


def from_torchtt(y: Any) -> tt.TensorTrain:
    return tt.TensorTrain(list(y.cores))


#: name -> (make the runner's operands, run it on them with a rank cap, its result as a TensorTrain)
Runner = tuple[Callable[[tt.TTMatrix, tt.TensorTrain], Any], Callable[[Any, int], Any], Callable[[Any], tt.TensorTrain]]

EXACT: dict[str, Runner] = {
    "tnadapt": (lambda a, x: (a, x), lambda s, cap: s[0] @ s[1], lambda y: y),
    "torchtt": (lambda a, x: (to_torchtt(a), to_torchtt(x)), lambda s, cap: s[0] @ s[1], from_torchtt),
}

ROUNDED: dict[str, Runner] = {
    "tnadapt exact+round": (
        lambda a, x: (a, x),
        lambda s, cap: tt.matvec_round(s[0], s[1], max_rank=cap),
        lambda rep: rep.tt,
    ),
    "tnadapt zipup": (
        lambda a, x: (a, x),
        lambda s, cap: tt.matvec_round(s[0], s[1], max_rank=cap, method="zipup"),
        lambda rep: rep.tt,
    ),
    "torchtt (A@x).round": (
        lambda a, x: (to_torchtt(a), to_torchtt(x)),
        lambda s, cap: (s[0] @ s[1]).round(eps=1e-14, rmax=cap),
        from_torchtt,
    ),
    "torchtt fast_mv": (
        lambda a, x: (to_torchtt(a), to_torchtt(x)),
        lambda s, cap: _torchtt().fast_mv(s[0], s[1], eps=1e-14, rmax=cap),
        from_torchtt,
    ),
}


def relative_error(a: tt.TTMatrix, x: tt.TensorTrain, y: tt.TensorTrain) -> float:
    exact = a @ x
    return float((exact - y).norm() / exact.norm())


def _time(benchmark: Any, request: pytest.FixtureRequest, fn: Callable[[], Any], group: str) -> Any:
    benchmark.group = group
    rounds = max(3, int(request.config.getoption("benchmark_min_rounds")))
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("impl", list(EXACT))
@pytest.mark.parametrize("threads", list(THREAD_SETTINGS))
def test_matvec_exact(benchmark: Any, request: pytest.FixtureRequest, threads: str, impl: str) -> None:
    a, x = _inputs()
    make, run, back = EXACT[impl]
    state = make(a, x)
    with num_threads(THREAD_SETTINGS[threads]):
        y = _time(benchmark, request, lambda: run(state, 0), f"matvec exact d=12 n=4 rA=5 rx=40 | threads={threads}")
    assert back(y).ranks == tuple(p * q for p, q in zip(a.ranks, x.ranks))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("impl", list(ROUNDED))
@pytest.mark.parametrize("threads", list(THREAD_SETTINGS))
def test_matvec_rounded(benchmark: Any, request: pytest.FixtureRequest, threads: str, impl: str) -> None:
    a, x = _inputs()
    make, run, back = ROUNDED[impl]
    state = make(a, x)
    cap = CASE[4]
    with num_threads(THREAD_SETTINGS[threads]):
        out = _time(
            benchmark,
            request,
            lambda: run(state, cap),
            f"matvec rounded d=12 n=4 rA=5 rx=40 -> r=40 | threads={threads}",
        )
    y = back(out)
    assert max(y.ranks) <= cap
    benchmark.extra_info["relative_error"] = relative_error(a, x, y)
