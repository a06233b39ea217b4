"""Strategies and dense references for the :class:`~tnadapt.tt.TTMatrix` property tests."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from _helpers import generator, wide
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.tt import TensorTrain, TTMatrix

#: Small operators: orders 1..4, legs 1..3, ranks 1..3, every dtype, at most this many dense entries.
MAX_DENSE = 1024


@st.composite
def dims_for(draw: st.DrawFn, order: int, max_prod: int = 32) -> tuple[int, ...]:
    """``order`` leg sizes in 1..3 with product at most ``max_prod``."""
    dims = [draw(st.integers(1, 3)) for _ in range(order)]
    while math.prod(dims) > max_prod:
        dims[dims.index(max(dims))] -= 1
    return tuple(dims)


@st.composite
def tt_matrices(
    draw: st.DrawFn,
    *,
    row_dims: Sequence[int] | None = None,
    col_dims: Sequence[int] | None = None,
    order: int | None = None,
    dtype: torch.dtype | None = None,
    max_rank: int = 3,
) -> TTMatrix:
    """A random TT-matrix; dims, ranks, dtype and seed drawn unless given."""
    d = len(row_dims or col_dims or ()) or order or draw(st.integers(1, 4))
    rows = tuple(row_dims) if row_dims is not None else draw(dims_for(d))
    cols = tuple(col_dims) if col_dims is not None else draw(dims_for(d))
    ranks = [draw(st.integers(1, max_rank)) for _ in range(d - 1)]
    kind = dtype if dtype is not None else draw(st.sampled_from(testing.DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    return TTMatrix.random(rows, cols, ranks, generator=generator(seed), dtype=kind)


def train_for(dims: Sequence[int], dtype: torch.dtype, seed: int, max_rank: int = 3) -> TensorTrain:
    """A random train of shape ``dims`` (ranks from the seed)."""
    g = generator(seed)
    ranks = [int(torch.randint(1, max_rank + 1, (1,), generator=g)) for _ in range(len(dims) - 1)]
    return TensorTrain.random(tuple(dims), ranks, generator=g, dtype=dtype)


def dense_matrix(a: TTMatrix) -> torch.Tensor:
    """``a``'s dense matrix in double precision by an independent route: the merged-leg train's einsum
    reference (:func:`tnadapt.testing.dense`), legs split and permuted to ``(rows, cols)``."""
    d = a.order
    merged = testing.dense(a.to_tt().to(wide(a.dtype)))
    split = merged.reshape([s for m, n in zip(a.row_dims, a.col_dims) for s in (m, n)])
    perm = [2 * k for k in range(d)] + [2 * k + 1 for k in range(d)]
    return split.permute(perm).reshape(math.prod(a.row_dims), math.prod(a.col_dims)).contiguous()


def dense_vector(x: TensorTrain) -> torch.Tensor:
    """``x`` flattened in C order, in double precision."""
    return testing.dense(x.to(wide(x.dtype))).reshape(-1)


def tol(dtype: torch.dtype) -> float:
    return testing.default_rtol(dtype)
