"""pytest-benchmark timings of the TT solvers: AMEn vs torchTT, DMRG vs quimb and TeNPy.

One group per (case, thread setting), so ratios are read off one run::

    pytest benchmarks/test_tt_solvers.py --benchmark-enable --benchmark-only --benchmark-min-rounds=3

Cases (float64):

* ``amen poisson d=12``: the QTT Laplacian (``laplacian_mpo``, rank 3) with the right-hand side
  ``sin(3πx) + x²`` (TT-SVD to 1e-13): ``amen_solve(tol=1e-7)`` (the exact relative residual)
  vs ``torchtt.solvers.amen_solve(eps=1e-5)`` (torchTT's local-residual target; the loosest of
  1e-7/1e-6/1e-5 whose true residual is still <= 1e-7, measured by ``benchmarks/solver_compare.py``);
* ``dmrg heisenberg L=32 chi=32``: the open Heisenberg chain to convergence (energy change
  <= 1e-9 relative, cutoff 1e-10): ``dmrg_eigsh``, quimb ``DMRG2.solve`` and TeNPy's
  ``TwoSiteDMRGEngine.run`` (default ``conserve="Sz"``, block-sparse).

numpy-based libraries get the thread setting through ``threadpoolctl`` when it is installed.
Time-to-accuracy comparisons (same energy accuracy, same residual) are in ``solver_compare.py``.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from benchmarks.conftest import THREAD_SETTINGS, num_threads
from tnadapt import tt

#: (d, relative residual) of the Poisson case, (L, chi) of the DMRG case; the smoke test passes small ones.
POISSON = (12, 1e-7)
HEISENBERG = (32, 32)


@functools.cache
def poisson(d: int) -> tuple[tt.TTMatrix, tt.TensorTrain]:
    A = tt.laplacian_mpo([2] * d, dtype=torch.float64)
    grid = torch.arange(1, 2**d + 1, dtype=torch.float64) / (2**d + 1)
    f = torch.sin(3 * torch.pi * grid) + grid**2
    return A, tt.TensorTrain.from_dense(f.reshape((2,) * d), eps=1e-13)


def amen_tnadapt(d: int, residual: float) -> Callable[[], tt.TensorTrain]:
    A, b = poisson(d)
    return lambda: tt.amen_solve(A, b, tol=residual).x


def amen_torchtt(d: int, residual: float) -> Callable[[], tt.TensorTrain]:
    torchtt = pytest.importorskip("torchtt")
    from torchtt import solvers

    A, b = poisson(d)
    tA, tb = torchtt.TT(list(A.cores)), torchtt.TT(list(b.cores))

    def run() -> tt.TensorTrain:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tt.TensorTrain(list(solvers.amen_solve(tA, tb, eps=100 * residual, verbose=False).cores))

    return run


AMEN_IMPLS: dict[str, Callable[[int, float], Callable[[], tt.TensorTrain]]] = {
    "tnadapt amen_solve": amen_tnadapt,
    "torchTT amen_solve": amen_torchtt,
}


def dmrg_tnadapt(length: int, chi: int) -> Callable[[], float]:
    H = tt.heisenberg_mpo(length, dtype=torch.float64)
    return lambda: tt.dmrg_eigsh(H, max_rank=chi, cutoff=1e-10, tol=1e-9).energy


def dmrg_quimb(length: int, chi: int) -> Callable[[], float]:
    qtn = pytest.importorskip("quimb.tensor")
    H = qtn.MPO_ham_heis(length)

    def run() -> float:
        solver = qtn.DMRG2(H, bond_dims=[chi], cutoffs=1e-10)
        solver.solve(tol=1e-9 * 0.45 * length, verbosity=0, max_sweeps=20)
        return float(solver.energy)

    return run


def dmrg_tenpy(length: int, chi: int) -> Callable[[], float]:
    pytest.importorskip("tenpy")
    import logging

    from tenpy.algorithms import dmrg
    from tenpy.models.xxz_chain import XXZChain
    from tenpy.networks.mps import MPS

    logging.disable(logging.WARNING)
    model = XXZChain({"L": length, "Jxx": 1.0, "Jz": 1.0, "hz": 0.0, "bc_MPS": "finite"})

    def run() -> float:
        psi = MPS.from_product_state(model.lat.mps_sites(), ["up", "down"] * (length // 2), "finite")
        options = {"trunc_params": {"chi_max": chi, "svd_min": 1e-5}, "mixer": None, "max_E_err": 1e-9}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            energy, _ = dmrg.TwoSiteDMRGEngine(psi, model, options).run()
        return float(energy)

    return run


DMRG_IMPLS: dict[str, Callable[[int, int], Callable[[], float]]] = {
    "tnadapt dmrg_eigsh": dmrg_tnadapt,
    "quimb DMRG2": dmrg_quimb,
    "TeNPy TwoSiteDMRGEngine": dmrg_tenpy,
}


@contextlib.contextmanager
def all_threads(n: int) -> Iterator[None]:
    """``n`` threads for torch and, through threadpoolctl when present, for numpy's BLAS."""
    with num_threads(n):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl ships with the bench extra's dependencies
            yield
            return
        with threadpool_limits(limits=n):
            yield


def _time(benchmark: Any, request: pytest.FixtureRequest, fn: Callable[[], Any], group: str) -> Any:
    benchmark.group = group
    rounds = min(3, max(1, int(request.config.getoption("benchmark_min_rounds"))))
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("impl", list(AMEN_IMPLS))
@pytest.mark.parametrize("threads", list(THREAD_SETTINGS))
def test_amen_poisson(benchmark: Any, request: pytest.FixtureRequest, threads: str, impl: str) -> None:
    d, residual = POISSON
    fn = AMEN_IMPLS[impl](d, residual)
    with all_threads(THREAD_SETTINGS[threads]):
        x = _time(benchmark, request, fn, f"amen poisson d={d} threads={threads}")
    A, b = poisson(d)
    from tnadapt.tt.solvers import relative_residual

    assert relative_residual(A, x, b) <= residual


@pytest.mark.parametrize("impl", list(DMRG_IMPLS))
@pytest.mark.parametrize("threads", list(THREAD_SETTINGS))
def test_dmrg_heisenberg(benchmark: Any, request: pytest.FixtureRequest, threads: str, impl: str) -> None:
    length, chi = HEISENBERG
    fn = DMRG_IMPLS[impl](length, chi)
    with all_threads(THREAD_SETTINGS[threads]):
        energy = _time(benchmark, request, fn, f"dmrg heisenberg L={length} chi={chi} threads={threads}")
    assert energy < (0.25 - 0.6931471805599453) * length + 0.19  # below the bulk value + surface energy
