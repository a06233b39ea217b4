"""Indexing: x[ints, slices, index lists, ...] and batched gathers agree with dense indexing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _helpers import generator, reference, rtol, trains
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.testing import assert_dense_close
from tnadapt.tt import TensorTrain, gather, getitem


@st.composite
def mode_index(draw: st.DrawFn, n: int) -> Any:
    """One per-mode index: int (maybe negative, numpy or 0-d tensor), slice (any step), or index list."""
    kind = draw(st.sampled_from(["int", "np_int", "tensor_int", "slice", "list", "tensor_list"]))
    if kind in ("int", "np_int", "tensor_int"):
        i = draw(st.integers(-n, n - 1))
        return {"int": i, "np_int": np.int64(i), "tensor_int": torch.tensor(i)}[kind]
    if kind == "slice":
        step = draw(st.sampled_from([None, 1, 2, -1, -2]))
        start = draw(st.one_of(st.none(), st.integers(-n, n - 1)))
        stop = draw(st.one_of(st.none(), st.integers(-n - 1, n)))
        sl = slice(start, stop, step)
        if len(range(n)[sl]) == 0:  # empty selections are rejected by design (see test_validation)
            sl = slice(None, None, step)
        return sl
    entries = draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=4))
    return entries if kind == "list" else torch.tensor(entries)


def _dense_index(a: torch.Tensor, items: list[Any]) -> torch.Tensor:
    """Outer (per-mode, numpy ``ix_``-style) indexing applied one mode at a time."""
    out = a
    axis = 0
    for item in items:
        n = out.shape[axis]
        if isinstance(item, slice):
            positions = torch.tensor(list(range(n)[item]), dtype=torch.long)
            out = out.index_select(axis, positions)
            axis += 1
        elif isinstance(item, (list, torch.Tensor)) and torch.as_tensor(item).ndim == 1:
            out = out.index_select(axis, torch.as_tensor(item, dtype=torch.long) % n)
            axis += 1
        else:
            out = out.select(axis, int(item) % n)
    return out


@st.composite
def indexed(draw: st.DrawFn) -> tuple[TensorTrain, tuple[Any, ...], list[Any]]:
    x = draw(trains())
    items = [draw(mode_index(n)) for n in x.shape]
    # Keep a prefix (missing trailing indices are full slices), optionally with '...'.
    cut = draw(st.integers(0, x.order))
    given_items: list[Any] = items[:cut]
    expanded = items[:cut] + [slice(None)] * (x.order - cut)
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(given_items)))
        tail = draw(st.integers(0, x.order - cut))
        # '...' stands for full slices; `tail` explicit indices follow it.
        after = items[x.order - tail :] if tail else []
        given_items = [*given_items[:pos], Ellipsis, *after]
        expanded = items[:pos] + [slice(None)] * (x.order - pos - tail) + after
    return x, tuple(given_items), expanded


@given(indexed())
def test_getitem_agrees_with_dense_outer_indexing(case: tuple[TensorTrain, tuple[Any, ...], list[Any]]) -> None:
    x, index, expanded = case
    got = x[index] if len(index) != 1 else x[index[0]]
    expected = _dense_index(reference(x), expanded)
    scale = float(torch.linalg.vector_norm(reference(x)))
    if isinstance(got, TensorTrain):
        assert got.shape == tuple(expected.shape) and got.dtype == x.dtype
        assert_dense_close(got.full(), expected, rtol=0.0, atol=rtol(x) * scale)
        assert got.order == sum(1 for it in expanded if not _is_scalar_index(it))
    else:
        assert expected.ndim == 0 and got.shape == () and got.dtype == x.dtype
        assert abs(complex(got) - complex(expected)) <= rtol(x) * scale
    assert_same(getitem(x, index), got)
    dense = getitem(x, index, dense=True)
    assert isinstance(dense, torch.Tensor) and dense.shape == expected.shape
    assert_dense_close(dense, expected, rtol=0.0, atol=rtol(x) * scale)


def _is_scalar_index(item: Any) -> bool:
    return not isinstance(item, (slice, list)) and not (isinstance(item, torch.Tensor) and item.ndim == 1)


def assert_same(a: TensorTrain | torch.Tensor, b: TensorTrain | torch.Tensor) -> None:
    if isinstance(a, TensorTrain):
        assert isinstance(b, TensorTrain) and all(torch.equal(p, q) for p, q in zip(a.cores, b.cores))
    else:
        assert torch.equal(a, b)


@given(trains(), st.integers(0, 2**32 - 1), st.integers(0, 6))
def test_gather_agrees_with_dense(x: TensorTrain, seed: int, batch: int) -> None:
    g = generator(seed)
    # Negative entries count from the end, as in x[i, j, ...] and dense indexing.
    idx = torch.stack([torch.randint(-n, n, (batch,), generator=g) for n in x.shape], dim=1)
    got = gather(x, idx)
    assert got.shape == (batch,) and got.dtype == x.dtype
    expected = reference(x)[tuple(idx.T)]
    scale = float(torch.linalg.vector_norm(reference(x)))
    assert_dense_close(got, expected, rtol=0.0, atol=rtol(x) * scale)
    assert torch.equal(x.gather(idx), got)
    # Python lists and int32 indices are accepted as well.
    assert torch.equal(gather(x, idx.tolist()) if batch else got, got)
    assert torch.equal(gather(x, idx.to(torch.int32)), got)
    # Each gathered entry is the fully indexed train.
    for b in range(batch):
        entry = x[tuple(int(i) for i in idx[b])]
        assert isinstance(entry, torch.Tensor)
        assert abs(complex(entry) - complex(got[b])) <= rtol(x) * scale


def test_fully_indexed_train_is_a_zero_dim_tensor_that_matches_full() -> None:
    x = TensorTrain.random((3, 4, 5), 3, generator=generator(0), dtype=torch.float64)
    for idx in [(0, 0, 0), (2, 3, 4), (-1, -2, -3)]:
        got = x[idx]
        assert isinstance(got, torch.Tensor) and got.shape == ()
        assert torch.isclose(got, x.full()[idx])


def test_single_index_forms() -> None:
    x = TensorTrain.random((3, 4), 2, generator=generator(0), dtype=torch.float64)
    assert_dense_close(x[1].full(), x.full()[1])
    assert_dense_close(x[..., 2].full(), x.full()[:, 2])
    assert_dense_close(x[::-1].full(), x.full().flip(0))
    assert_dense_close(x[[2, 0, 2]].full(), x.full()[[2, 0, 2]])


@pytest.mark.parametrize("bad", [1.5, torch.tensor(1.0), torch.tensor([[0, 1]]), [], torch.tensor([True, False])])
def test_getitem_rejects_non_integer_indices(bad: Any) -> None:
    x = TensorTrain.random((3, 4), 2, generator=generator(0))
    with pytest.raises(IndexError, match=r"index\[0\]"):
        x[bad]
