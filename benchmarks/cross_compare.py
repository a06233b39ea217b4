"""One-off comparison of ``tnadapt.tt.cross`` with ``tntorch.cross`` and ``teneva.cross`` to a 1e-6 tolerance (1 thread).

    python -m benchmarks.cross_compare

Prints, per test function on the 16^6 grid and per library, wall time, function evaluations,
max rank and the relative error on 5000 random held-out entries (not those any method used).
Every library is asked for the same target, 1e-6, in its own terms: tnadapt ``tol`` (checked on
its own held-out sample), tntorch ``eps``, teneva ``e_vld`` on a 1000-entry validation set whose
evaluations are counted (teneva's own accuracy-based stop; its default stop, the relative change
between sweeps, needed more evaluations in a trial), followed by ``teneva.truncate`` to 1e-7.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tnadapt.tt import cross, gather

SHAPE = [16] * 6
TOL = 1e-6
Function = Callable[[torch.Tensor], torch.Tensor]
FUNCTIONS: dict[str, Function] = {
    "hilbert 1/(i1+...+i6+1)": lambda i: 1.0 / (i.sum(1).double() + 1),
    "sum of separable": lambda i: (
        torch.sin(i[:, 0] * 0.3)
        + torch.cos(i[:, 1] * 0.2)
        + i[:, 2].double() ** 2 / 10
        + torch.exp(-i[:, 3] * 0.1)
        + i[:, 4].double().sqrt()
        + 0.1 * i[:, 5]
    ).double(),
}


@dataclass(frozen=True)
class CrossResult:
    """One library's approximation: ``values(idx)`` evaluates it at integer multi-indices ``(N, d)``."""

    values: Callable[[torch.Tensor], torch.Tensor]
    evaluations: int
    seconds: float
    rank: int


def _counted(f: Function) -> tuple[Function, list[int]]:
    count = [0]

    def g(i: torch.Tensor) -> torch.Tensor:
        count[0] += int(i.shape[0])
        return f(i)

    return g, count


def run_tnadapt(f: Function, shape: list[int], tol: float = TOL) -> CrossResult:
    start = time.perf_counter()
    rep = cross(f, shape, tol=tol)
    seconds = time.perf_counter() - start
    out = rep.tt
    return CrossResult(lambda i: gather(out, i), rep.evaluations, seconds, max(out.ranks))


def run_tntorch(f: Function, shape: list[int], tol: float = TOL) -> CrossResult:
    import tntorch

    g, count = _counted(lambda x: f(x.long()))
    start = time.perf_counter()
    t = tntorch.cross(
        function=g, domain=[torch.arange(n).double() for n in shape], function_arg="matrix", eps=tol, verbose=False
    )
    seconds = time.perf_counter() - start
    return CrossResult(lambda i: t.torch()[tuple(i.T)], count[0], seconds, int(max(t.ranks_tt.tolist())))


def run_teneva(f: Function, shape: list[int], tol: float = TOL, seed: int = 6) -> CrossResult:
    import numpy as np
    import teneva

    g, count = _counted(f)

    def numpy_f(i: np.ndarray) -> np.ndarray:
        return g(torch.from_numpy(i)).numpy()

    start = time.perf_counter()
    i_vld = np.random.default_rng(seed).integers(0, shape, (1000, len(shape)))
    y_vld = numpy_f(i_vld)
    y0 = teneva.rand(shape, 1, seed=0)
    y = teneva.cross(numpy_f, y0, nswp=50, dr_max=2, I_vld=i_vld, y_vld=y_vld, e_vld=tol)
    y = teneva.truncate(y, tol / 10)
    seconds = time.perf_counter() - start
    return CrossResult(
        lambda i: torch.from_numpy(teneva.get_many(y, i.numpy())), count[0], seconds, max(teneva.props.ranks(y))
    )


RUNNERS: dict[str, Callable[[Function, list[int]], CrossResult]] = {
    "tnadapt": run_tnadapt,
    "tntorch": run_tntorch,
    "teneva": run_teneva,
}


def main() -> None:
    torch.set_num_threads(1)
    idx = torch.randint(0, 16, (5000, 6), generator=torch.Generator().manual_seed(5))
    print("| function | library | ms | evaluations | max rank | held-out rel. error |")
    print("|---|---|---|---|---|---|")
    for name, f in FUNCTIONS.items():
        ref = f(idx)
        for lib, runner in RUNNERS.items():
            res = runner(f, SHAPE)
            err = float(torch.linalg.vector_norm(res.values(idx) - ref) / torch.linalg.vector_norm(ref))
            print(f"| {name} | {lib} | {res.seconds * 1e3:.1f} | {res.evaluations} | {res.rank} | {err:.1e} |")


if __name__ == "__main__":
    main()
