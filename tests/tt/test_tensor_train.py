"""TensorTrain value type: construction, properties, conversions, constructors and full()."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import generator, reference, rtol, trains
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.testing import DTYPES, assert_dense_close, assert_tt_close, dense
from tnadapt.tt import TensorTrain


@given(trains())
def test_properties_follow_the_cores(x: TensorTrain) -> None:
    d = x.order
    assert x.ndim == d == len(x) == len(list(x))
    assert x.shape == tuple(c.shape[1] for c in x.cores)
    assert x.ranks == (1, *(c.shape[2] for c in x.cores))
    assert x.ranks[0] == x.ranks[-1] == 1
    assert x.bond_dims == x.ranks[1:-1]
    assert x.num_params == sum(x.ranks[k] * x.shape[k] * x.ranks[k + 1] for k in range(d))
    assert x.numel_dense == math.prod(x.shape)
    assert x.dtype == x.cores[0].dtype and x.device == x.cores[0].device
    assert f"shape={x.shape}" in repr(x) and f"ranks={x.ranks}" in repr(x)


@given(trains())
def test_full_matches_independent_dense_contraction(x: TensorTrain) -> None:
    full = x.full()
    assert full.shape == x.shape and full.dtype == x.dtype
    assert_dense_close(full, reference(x), rtol=rtol(x))


@given(trains(), st.integers(0, 2**32 - 1))
def test_full_is_entrywise_product_of_core_slices(x: TensorTrain, seed: int) -> None:
    # One entry recomputed as an explicit matrix product G_1[:, i_1, :] ... G_d[:, i_d, :].
    g = generator(seed)
    idx = [int(torch.randint(n, (1,), generator=g)) for n in x.shape]
    prod = x.cores[0][:, idx[0], :]
    for core, i in zip(x.cores[1:], idx[1:]):
        prod = prod @ core[:, i, :]
    expected = prod.reshape(())
    got = x.full()[tuple(idx)]
    scale = float(reference(x).abs().max()) + 1.0
    assert abs(complex(got) - complex(expected)) <= rtol(x) * scale


@given(trains(canonical=st.booleans()))
def test_clone_detach_to_keep_values_and_centre(x: TensorTrain) -> None:
    c = x.clone()
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(c.cores, x.cores))
    assert all(torch.equal(a, b) for a, b in zip(c.cores, x.cores)) and c.center == x.center
    d = x.detach()
    assert not d.requires_grad and d.center == x.center
    target = torch.complex128 if x.dtype.is_complex else torch.float64
    y = x.to(target)
    assert y.dtype == target and y.center == x.center
    assert_dense_close(y.full(), reference(x), rtol=rtol(x))
    w = x.with_cores(x.cores)
    assert w.center is None and w.shape == x.shape


def test_parameters_work_as_cores_and_gradients_flow() -> None:
    x = TensorTrain.random((3, 4, 2), 2, generator=generator(0), dtype=torch.float64)
    params = [torch.nn.Parameter(c.clone()) for c in x.cores]
    y = TensorTrain(params)
    assert y.requires_grad
    y.norm().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in params)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=6), st.integers(1, 4), st.sampled_from(DTYPES))
def test_constructors(shape: list[int], rank: int, dtype: torch.dtype) -> None:
    z = TensorTrain.zeros(shape, rank, dtype=dtype)
    assert z.dtype == dtype and z.shape == tuple(shape)
    assert bool((z.full() == 0).all())
    # Boundary cores are eye(n_1, r) and eye(r, n_d), interior slices eye(r, r): the entry is
    # e_{i_1}^T I ... I e_{i_d} = [i_1 == i_d < r] (an order-1 train is all ones).
    eye = TensorTrain.identity(shape, rank, dtype=dtype)
    if len(shape) == 1:
        expected = torch.ones(shape, dtype=dtype)
    else:
        first = torch.arange(shape[0]).reshape(-1, *([1] * (len(shape) - 1)))
        last = torch.arange(shape[-1]).reshape(*([1] * (len(shape) - 1)), -1)
        expected = ((first == last) & (first < rank)).expand(shape).to(dtype)
    assert torch.equal(eye.full(), expected)
    a = TensorTrain.random(shape, rank, generator=generator(7), dtype=dtype)
    b = TensorTrain.random(shape, rank, generator=generator(7), dtype=dtype)
    assert all(torch.equal(p, q) for p, q in zip(a.cores, b.cores))
    assert a.ranks == (1, *([rank] * (len(shape) - 1)), 1)


def test_random_does_not_touch_global_rng() -> None:
    state = torch.random.get_rng_state()
    TensorTrain.random((3, 3), 2, generator=generator(1))
    assert torch.equal(state, torch.random.get_rng_state())


@given(trains(minimal=True))
def test_from_dense_reproduces(x: TensorTrain) -> None:
    y = TensorTrain.from_dense(x.full())
    assert_tt_close(y, x)
    assert y.center == x.order - 1


def test_full_guard_names_the_limit() -> None:
    x = TensorTrain.random((10, 10, 10), 2, generator=generator(0))
    with pytest.raises(ValueError, match="max_elements=999"):
        x.full(max_elements=999)
    assert x.full(max_elements=1000).shape == (10, 10, 10)


def test_dense_helper_agrees_with_full_on_a_known_tensor() -> None:
    # A rank-1 train: outer product of three vectors.
    u, v, w = torch.arange(1.0, 3.0), torch.arange(1.0, 4.0), torch.tensor([2.0, -1.0])
    x = TensorTrain([u.reshape(1, 2, 1), v.reshape(1, 3, 1), w.reshape(1, 2, 1)])
    expected = torch.einsum("i,j,k->ijk", u, v, w)
    assert torch.equal(x.full(), expected) and torch.equal(dense(x), expected)
