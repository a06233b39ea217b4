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

#: Every integer dtype is an index dtype, for getitem and gather alike (uint8 included: positions, not a mask).
SIGNED_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8)
UNSIGNED_DTYPES = (torch.uint8, torch.uint16, torch.uint32, torch.uint64)
INDEX_DTYPES = SIGNED_DTYPES + UNSIGNED_DTYPES
NUMPY_INDEX_DTYPES = (np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16, np.uint32, np.uint64)


def _as_dtype(entries: list[int], n: int, dtype: torch.dtype) -> torch.Tensor:
    """``entries`` as a tensor of ``dtype``; unsigned dtypes cannot count from the end, so negatives become ``i % n``."""
    values = entries if dtype.is_signed else [i % n for i in entries]
    return torch.tensor(values, dtype=torch.int64).to(dtype)


@st.composite
def mode_index(draw: st.DrawFn, n: int) -> Any:
    """One per-mode index: int (maybe negative, numpy or 0-d tensor of any integer dtype), slice (any step), or an
    index list (Python, numpy or tensor, any integer dtype)."""
    kind = draw(st.sampled_from(["int", "np_int", "tensor_int", "slice", "list", "np_list", "tensor_list"]))
    if kind in ("int", "np_int", "tensor_int"):
        i = draw(st.integers(-n, n - 1))
        if kind == "int":
            return i
        if kind == "np_int":
            np_dtype = draw(st.sampled_from(NUMPY_INDEX_DTYPES))
            return np_dtype(i if np.issubdtype(np_dtype, np.signedinteger) else i % n)
        dtype = draw(st.sampled_from(INDEX_DTYPES))
        return _as_dtype([i], n, dtype).reshape(())
    if kind == "slice":
        step = draw(st.sampled_from([None, 1, 2, -1, -2]))
        start = draw(st.one_of(st.none(), st.integers(-n, n - 1)))
        stop = draw(st.one_of(st.none(), st.integers(-n - 1, n)))
        sl = slice(start, stop, step)
        if len(range(n)[sl]) == 0:  # empty selections are rejected by design (see test_validation)
            sl = slice(None, None, step)
        return sl
    entries = draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=4))
    if kind == "list":
        return entries
    if kind == "np_list":
        np_dtype = draw(st.sampled_from(NUMPY_INDEX_DTYPES))
        signed = np.issubdtype(np_dtype, np.signedinteger)
        return np.array(entries if signed else [i % n for i in entries], dtype=np_dtype)
    return _as_dtype(entries, n, draw(st.sampled_from(INDEX_DTYPES)))


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
        elif isinstance(item, (list, np.ndarray, torch.Tensor)) and np.ndim(item) == 1:
            out = out.index_select(axis, torch.as_tensor(np.asarray(item, dtype=np.int64)) % n)
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
    return not isinstance(item, (slice, list)) and np.ndim(item) == 0


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
    # Python lists and every signed integer dtype are accepted as well.
    assert torch.equal(gather(x, idx.tolist()) if batch else got, got)
    for dtype in SIGNED_DTYPES:
        assert torch.equal(gather(x, idx.to(dtype)), got)
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
    # A numpy index array next to '...' (finding '...' with list.index compared the array elementwise).
    assert_dense_close(x[np.array([2, 0]), ...].full(), x.full()[[2, 0]])
    assert_dense_close(x[..., np.array([3], dtype=np.uint8)].full(), x.full()[:, [3]])


@pytest.mark.parametrize("bad", [1.5, torch.tensor(1.0), torch.tensor([[0, 1]]), [], torch.tensor([True, False])])
def test_getitem_rejects_non_integer_indices(bad: Any) -> None:
    x = TensorTrain.random((3, 4), 2, generator=generator(0))
    with pytest.raises(IndexError, match=r"index\[0\]"):
        x[bad]


@given(trains(), st.sampled_from(INDEX_DTYPES), st.data())
def test_getitem_and_gather_accept_every_integer_dtype_alike(
    x: TensorTrain, dtype: torch.dtype, data: st.DataObject
) -> None:
    # Regression (B9): x[torch.tensor([0, 1], dtype=torch.uint8)] raised "entries out of range" (the bound check
    # compared uint8 with negative sizes) and int8/int16 reached index_select, which refuses them; gather took them.
    k = data.draw(st.integers(0, x.order - 1), label="mode")
    n = x.shape[k]
    entries = data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=4), label="entries")
    index = _as_dtype(entries, n, dtype)
    positions = torch.tensor([i % n for i in entries])
    got = x[(slice(None),) * k + (index,)]
    assert isinstance(got, TensorTrain)
    expected = reference(x).index_select(k, positions)
    scale = float(torch.linalg.vector_norm(reference(x)))
    assert_dense_close(got.full(), expected, rtol=0.0, atol=rtol(x) * scale)
    # gather reads the same tensor the same way: the entries at (positions[b], 0, ..., 0).
    multi = torch.zeros(len(entries), x.order, dtype=dtype)
    multi[:, k] = index
    gathered = gather(x, multi)
    dense_entries = reference(x).movedim(k, 0).reshape(n, -1)[positions, 0]
    assert_dense_close(gathered, dense_entries, rtol=0.0, atol=rtol(x) * scale)
    # A 0-d index of the same dtype fixes the mode.
    fixed = x[(slice(None),) * k + (index[0],)]
    expected_fixed = reference(x).select(k, int(positions[0]))
    got_fixed = fixed.full() if isinstance(fixed, TensorTrain) else fixed
    assert_dense_close(got_fixed, expected_fixed, rtol=0.0, atol=rtol(x) * scale)


@pytest.mark.parametrize(
    "mask", [torch.tensor([True, False, True]), np.array([True, False, True]), [True, False, True], True, np.True_]
)
def test_booleans_are_refused_by_getitem_and_gather_with_the_rule(mask: Any) -> None:
    # The documented rule: bool tensors/lists/scalars are not indices (unlike torch, where they are masks).
    x = TensorTrain.random((3, 4), 2, generator=generator(0), dtype=torch.float64)
    with pytest.raises(IndexError, match=r"index\[0\]: boolean indices are not supported: expected an int, .* got"):
        x[mask]
    with pytest.raises(ValueError, match=r"indices: expected an integer tensor of shape \(batch, 2\), got torch.bool"):
        gather(x, torch.ones(2, 2, dtype=torch.bool))


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (torch.tensor([0, 3], dtype=torch.uint8), r"expected 0 <= i < 3 for torch.uint8 entries"),
        (torch.tensor([2**63], dtype=torch.uint64), r"expected 0 <= i < 3 for torch.uint64 entries"),
        (torch.tensor([-4], dtype=torch.int8), r"expected -3 <= i < 3 for torch.int8 entries"),
        (np.array([5], dtype=np.uint16), r"expected 0 <= i < 3 for torch.uint16 entries"),
    ],
)
def test_out_of_range_index_tensors_name_the_bound_and_the_dtype(index: Any, message: str) -> None:
    # An unsigned entry above 2**63 - 1 must not wrap to a negative, in-range int64.
    x = TensorTrain.random((3, 4), 2, generator=generator(0), dtype=torch.float64)
    with pytest.raises(IndexError, match=rf"index\[0\]: entries out of range for mode 0 of size 3: .* \({message}\)"):
        x[index]
    multi = torch.zeros(1, 2, dtype=torch.as_tensor(index).dtype)
    multi[0, 0] = torch.as_tensor(index)[-1]  # the out-of-range entry
    with pytest.raises(IndexError, match=r"indices: entries out of range for shape \(3, 4\)"):
        gather(x, multi)
