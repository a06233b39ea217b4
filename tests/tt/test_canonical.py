"""Canonical forms: orthonormal cores, unchanged tensor, tracked centre, rank rules."""

from __future__ import annotations

import pytest
import torch
from _helpers import as_float, generator, reference, rtol, trains
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.testing import (
    assert_canonical,
    assert_dense_close,
    assert_left_orthonormal,
    assert_right_orthonormal,
    assert_tt_close,
)
from tnadapt.tt import (
    TensorTrain,
    is_left_orthonormal,
    is_right_orthonormal,
    left_qr_step,
    orthogonalize,
    right_qr_step,
)


@given(trains(canonical=st.booleans()), st.data())
def test_orthogonalize_every_centre(x: TensorTrain, data: st.DataObject) -> None:
    fx = reference(x)
    center = data.draw(st.integers(-x.order, x.order - 1), label="center")
    y = orthogonalize(x, center)
    c = center % x.order
    assert y.center == c and y.shape == x.shape and y.dtype == x.dtype
    assert_canonical(y)
    assert_dense_close(y.full(), fx, rtol=rtol(x))
    # QR sweeps only shrink ranks: r_k -> min(r_k, r_{k-1} n_k) left of the centre and
    # min(r_k, n_{k+1} r_{k+1}) right of it (a fresh sweep covers every core).
    assert all(ry <= rx for ry, rx in zip(y.ranks, x.ranks))
    if x.center is None:
        for k in range(c):
            assert y.ranks[k + 1] == min(x.ranks[k + 1], y.ranks[k] * x.shape[k])
        for k in range(x.order - 1, c, -1):
            assert y.ranks[k] == min(x.ranks[k], x.shape[k] * y.ranks[k + 1])
    # ||x|| is the Frobenius norm of the centre core.
    expected = float(torch.linalg.vector_norm(fx))
    assert abs(float(torch.linalg.vector_norm(y.cores[c].to(torch.complex128))) - expected) <= rtol(x) * expected


@given(trains(), st.lists(st.integers(0, 6), min_size=1, max_size=4))
def test_moving_a_tracked_centre_matches_a_fresh_sweep(x: TensorTrain, centres: list[int]) -> None:
    y = x
    for c in centres:
        y = y.orthogonalize(c % x.order)
        assert y.center == c % x.order
        assert_canonical(y)
    assert_tt_close(y, x)
    assert y.orthogonalize(y.center) is y  # already there: no work, same object


@given(trains(minimal=True))
def test_left_and_right_orthogonalize_convenience(x: TensorTrain) -> None:
    left, right = x.left_orthogonalize(), x.right_orthogonalize()
    assert left.center == x.order - 1 and right.center == 0
    assert_left_orthonormal(left)
    assert_right_orthonormal(right)
    assert left.ranks == right.ranks == x.ranks  # minimal ranks are kept
    for k in range(x.order - 1):
        assert left.is_left_orthonormal(k) and is_left_orthonormal(left.cores[k])
    for k in range(1, x.order):
        assert right.is_right_orthonormal(k) and is_right_orthonormal(right.cores[k])


@given(trains(orders=range(2, 8)), st.data())
def test_qr_steps_preserve_the_two_site_product(x: TensorTrain, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, x.order - 2), label="k")
    a, b = x.cores[k], x.cores[k + 1]

    def product(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.einsum("anb,bmc->anmc", p, q)

    ref = product(a, b)
    qa, rb = left_qr_step(a, b)
    assert is_left_orthonormal(qa) and qa.shape[2] == min(a.shape[2], a.shape[0] * a.shape[1])
    assert_dense_close(product(qa, rb), ref, rtol=rtol(x))
    pa, qb = right_qr_step(a, b)
    assert is_right_orthonormal(qb) and qb.shape[0] == min(b.shape[0], b.shape[1] * b.shape[2])
    assert_dense_close(product(pa, qb), ref, rtol=rtol(x))


@given(trains(orders=range(2, 6)), st.sampled_from([torch.float16, torch.bfloat16]))
def test_low_precision_cores_are_upcast_and_keep_their_dtype(x: TensorTrain, low: torch.dtype) -> None:
    if x.dtype.is_complex:
        x = TensorTrain([c.real for c in x.cores])
    y = x.to(low)
    z = y.orthogonalize(0)
    assert z.dtype == low and z.center == 0
    assert_dense_close(z.full(), reference(y), rtol=rtol(low))
    assert_right_orthonormal(z, atol=rtol(low))
    n = z.norm()
    assert n.dtype == low
    expected = as_float(torch.linalg.vector_norm(reference(y)))
    assert abs(as_float(n) - expected) <= rtol(low) * expected


def test_orthonormality_checks_detect_violations() -> None:
    x = TensorTrain.random((3, 4, 5), 2, generator=generator(0), dtype=torch.float64).orthogonalize(1)
    assert x.is_left_orthonormal(0) and x.is_right_orthonormal(2)
    bad_left = TensorTrain([2 * x.cores[0], x.cores[1], x.cores[2]])
    bad_right = TensorTrain([x.cores[0], x.cores[1], 0.5 * x.cores[2]])
    assert not bad_left.is_left_orthonormal(0) and not bad_right.is_right_orthonormal(-1)
    assert_canonical(TensorTrain([x.cores[0], 5 * x.cores[1], x.cores[2]]), center=1)  # the centre is free
    with pytest.raises(AssertionError, match=r"core 0 .* not left-orthonormal: max \|G\^H G - I\| = 3"):
        assert_left_orthonormal(bad_left)
    with pytest.raises(AssertionError, match=r"core 2 .* not right-orthonormal"):
        assert_canonical(bad_right, center=1)
    with pytest.raises(AssertionError, match="no tracked orthogonality centre"):
        assert_canonical(bad_right)
