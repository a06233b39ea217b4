"""One-off comparison of ``tnadapt.tt.cross`` with ``tntorch.cross`` to a 1e-6 tolerance (1 thread).

    python -m benchmarks.cross_compare

Prints, per test function on the 16^6 grid, wall time, function evaluations, max rank and
the relative error on 5000 random held-out entries (not those either method used).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from tnadapt.tt import cross, gather

SHAPE = [16] * 6
FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
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


def main() -> None:
    import tntorch

    torch.set_num_threads(1)
    idx = torch.randint(0, 16, (5000, 6), generator=torch.Generator().manual_seed(5))
    for name, f in FUNCTIONS.items():
        ref = f(idx)
        start = time.perf_counter()
        rep = cross(f, SHAPE, tol=1e-6)
        ours = time.perf_counter() - start
        err = float(torch.linalg.vector_norm(gather(rep.tt, idx) - ref) / torch.linalg.vector_norm(ref))
        print(f"{name}: tnadapt {ours * 1e3:.1f} ms, {rep.evaluations} evals, rank {max(rep.tt.ranks)}, err {err:.1e}")
        count = [0]

        def counted(
            x: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor] = f, count: list[int] = count
        ) -> torch.Tensor:
            count[0] += x.shape[0]
            return f(x.long())

        start = time.perf_counter()
        t = tntorch.cross(
            function=counted, domain=[torch.arange(16).double()] * 6, function_arg="matrix", eps=1e-6, verbose=False
        )
        theirs = time.perf_counter() - start
        err = float(torch.linalg.vector_norm(t.torch()[tuple(idx.T)] - ref) / torch.linalg.vector_norm(ref))
        print(
            f"{name}: tntorch {theirs * 1e3:.1f} ms, {count[0]} evals, rank {max(t.ranks_tt.tolist())}, err {err:.1e}"
        )


if __name__ == "__main__":
    main()
