"""TTMatrix: construction, validation, conversions, merged-leg algebra, rounding, slicing — against dense references."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import generator, rtol, scaled
from _matrix_helpers import dense_matrix, tt_matrices
from hypothesis import given
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.testing import assert_dense_close
from tnadapt.tt import MatrixTruncationReport, TensorTrain, TTMatrix, round_matrix


def _frob(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


# ---------------------------------------------------------------------------- construction and validation
def test_properties_and_repr() -> None:
    a = TTMatrix.random((2, 3, 4), (5, 1, 2), [2, 3], generator=generator(0), dtype=torch.float64)
    assert a.row_dims == (2, 3, 4) and a.col_dims == (5, 1, 2) and a.ranks == (1, 2, 3, 1)
    assert a.order == len(a) == 3 and a.shape == (24, 10) and a.dtype == torch.float64
    assert a.device == torch.device("cpu") and a.center is None and not a.requires_grad
    assert isinstance(a.cores, tuple) and [tuple(c.shape) for c in a.cores] == [
        (1, 2, 5, 2),
        (2, 3, 1, 3),
        (3, 4, 2, 1),
    ]
    assert a.num_params == sum(c.numel() for c in a.cores)
    assert "TTMatrix(row_dims=(2, 3, 4)" in repr(a)


@pytest.mark.parametrize(
    ("cores", "error", "match"),
    [
        ([], ValueError, r"cores: expected at least one core"),
        ([torch.zeros(1, 2, 1)], ValueError, r"cores\[0\]: expected a 4-D core .* got shape \(1, 2, 1\)"),
        ([torch.zeros(2, 2, 2, 1)], ValueError, r"cores\[0\]: boundary rank r_0 must be 1"),
        ([torch.zeros(1, 2, 2, 3)], ValueError, r"cores\[0\]: boundary rank r_d must be 1"),
        ([torch.zeros(1, 2, 2, 2), torch.zeros(3, 2, 2, 1)], ValueError, r"cores\[1\]: left rank 3 does not match"),
        ([torch.zeros(1, 2, 2, 1), torch.zeros(1, 2, 2, 1, dtype=torch.float64)], ValueError, r"cores\[1\]: dtype"),
        ([torch.zeros(1, 2, 2, 1, dtype=torch.int64)], ValueError, r"cores\[0\]: expected a floating or complex"),
        ([torch.zeros(1, 0, 2, 1)], ValueError, r"cores\[0\]: every dimension must be >= 1"),
        (["core"], TypeError, r"cores\[0\]: expected a torch.Tensor, got str"),
    ],
)
def test_constructor_rejects_bad_cores(cores: list[object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        TTMatrix(cores)  # type: ignore[arg-type]


def test_from_dense_and_dims_errors_name_the_argument() -> None:
    m = torch.zeros(6, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"matrix: expected shape \(6, 6\) .* got \(6, 4\)"):
        TTMatrix.from_dense(m, (2, 3), (3, 2))
    with pytest.raises(ValueError, match=r"col_dims: expected 2 dimensions, got 1"):
        TTMatrix.from_dense(m, (2, 3), (4,))
    with pytest.raises(ValueError, match=r"row_dims: expected a non-empty sequence of ints >= 1"):
        TTMatrix.from_dense(m, (2, 0), (2, 2))
    with pytest.raises(TypeError, match=r"row_dims: expected a sequence of ints"):
        TTMatrix.from_dense(m, 6, (4,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"matrix: expected a torch.Tensor"):
        TTMatrix.from_dense([[1.0]], (1,), (1,))  # type: ignore[arg-type]
    x = TensorTrain.random((6, 4), 2, generator=generator(0))
    with pytest.raises(ValueError, match=r"tt: expected shape \(4, 6\)"):
        TTMatrix.from_tt(x, (2, 2), (2, 3))


@scaled(0.5)
@given(tt_matrices())
def test_full_matches_the_reference_and_from_dense_inverts_it(a: TTMatrix) -> None:
    ref = dense_matrix(a)
    assert_dense_close(a.full(), ref, rtol=rtol(a.dtype))
    b = TTMatrix.from_dense(ref.to(a.dtype), a.row_dims, a.col_dims)
    assert (b.row_dims, b.col_dims) == (a.row_dims, a.col_dims)
    assert_dense_close(b.full(), ref, rtol=rtol(a.dtype))
    # The merged-leg train is the same data: conversions both ways are exact.
    back = TTMatrix.from_tt(a.to_tt(), a.row_dims, a.col_dims)
    assert all(torch.equal(x, y) for x, y in zip(a.cores, back.cores))


@scaled(0.5)
@given(tt_matrices(dtype=torch.float64), st.sampled_from([1e-1, 1e-3]))
def test_from_dense_with_eps_meets_the_bound(a: TTMatrix, eps: float) -> None:
    ref = dense_matrix(a)
    b = TTMatrix.from_dense(ref, a.row_dims, a.col_dims, eps=eps)
    assert _frob(b.full() - ref) <= eps * _frob(ref) * (1 + 1e-8) + 1e-12


def test_full_size_guard() -> None:
    a = TTMatrix.identity((4, 4, 4), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"full\(\): the dense matrix of shape \(64, 64\) has 4,096 entries"):
        a.full(max_elements=4000)


def test_zeros_identity_random() -> None:
    z = TTMatrix.zeros((2, 3), (3, 2), 2, dtype=torch.complex128)
    assert z.ranks == (1, 2, 1) and z.dtype == torch.complex128 and not z.full().any()
    eye = TTMatrix.identity((2, 3, 2), dtype=torch.float64)
    assert eye.ranks == (1, 1, 1, 1) and torch.equal(eye.full(), torch.eye(12, dtype=torch.float64))
    r1 = TTMatrix.random((2, 3), (3, 2), 2, generator=generator(5), dtype=torch.float64)
    r2 = TTMatrix.random((2, 3), (3, 2), 2, generator=generator(5), dtype=torch.float64)
    assert torch.equal(r1.full(), r2.full())


# ---------------------------------------------------------------------------- algebra on merged legs
@scaled(0.5)
@given(tt_matrices(), st.integers(0, 2**32 - 1), st.floats(-3, 3))
def test_linear_combinations_transposes_dot_and_norm(a: TTMatrix, seed: int, alpha: float) -> None:
    b = TTMatrix.random(a.row_dims, a.col_dims, 2, generator=generator(seed), dtype=a.dtype)
    fa, fb = dense_matrix(a), dense_matrix(b)
    scale = _frob(fa) + _frob(fb)
    tol = rtol(a.dtype)
    for got, want in (
        (a + b, fa + fb),
        (a - b, fa - fb),
        (-a, -fa),
        (alpha * a, alpha * fa),
        (a * alpha, alpha * fa),
        (a / 2.0, fa / 2),
    ):
        assert isinstance(got, TTMatrix) and got.dtype == a.dtype
        assert_dense_close(got.full(), want, atol=tol * scale * (1 + abs(alpha)), rtol=0.0)
    assert (a + b).ranks == tuple(x + y if 0 < k < a.order else 1 for k, (x, y) in enumerate(zip(a.ranks, b.ranks)))
    assert_dense_close(a.T.full(), fa.T, rtol=tol)
    assert_dense_close(a.transpose().full(), fa.T, rtol=tol)
    assert_dense_close(a.mH.full(), fa.mH, rtol=tol)
    assert_dense_close(a.adjoint().full(), fa.mH, rtol=tol)
    assert a.T.row_dims == a.col_dims and a.T.col_dims == a.row_dims
    dot = a.dot(b)
    assert abs(complex(dot) - complex((fa.conj() * fb).sum())) <= tol * _frob(fa) * _frob(fb) + 1e-30
    assert abs(float(a.norm()) - _frob(fa)) <= tol * _frob(fa)
    assert abs(float(a.norm(method="gram")) - _frob(fa)) <= tol * _frob(fa)


def test_complex_scalar_promotes_and_mismatches_name_the_operand() -> None:
    a = TTMatrix.random((2, 3), (3, 2), 2, generator=generator(0), dtype=torch.float64)
    c = 1j * a
    assert c.dtype == torch.complex128
    assert_dense_close(c.full(), 1j * a.full())
    b = TTMatrix.random((3, 2), (3, 2), 2, generator=generator(1), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"other \(A \+ B\): expected row_dims \(2, 3\) and col_dims \(3, 2\), got"):
        a + b
    with pytest.raises(TypeError, match=r"other \(A \* other\): expected a scalar"):
        a * b  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"other \(A.dot\(B\)\): expected a TTMatrix"):
        a.dot(a.to_tt())  # type: ignore[arg-type]


@scaled(0.5)
@given(tt_matrices(dtype=torch.float64) | tt_matrices(dtype=torch.complex128), st.sampled_from([1e-1, 1e-2, 1e-6]))
def test_round_meets_eps_and_reports_the_true_error(a: TTMatrix, eps: float) -> None:
    b = a + 0.5 * a  # redundant ranks
    ref = dense_matrix(b)
    rep = round_matrix(b, eps=eps)
    assert isinstance(rep, MatrixTruncationReport) and isinstance(rep.matrix, TTMatrix)
    assert rep.matrix.row_dims == a.row_dims and rep.matrix.col_dims == a.col_dims
    true = _frob(dense_matrix(rep.matrix) - ref)
    assert true <= eps * _frob(ref) * (1 + 1e-8) + 1e-12
    assert abs(float(rep.error) - true) <= 1e-9 * _frob(ref) + 1e-12
    assert all(r <= s for r, s in zip(rep.matrix.ranks, a.ranks))
    capped = b.round(max_rank=1)
    assert max(capped.ranks) == 1


@scaled(0.5)
@given(tt_matrices(), st.data())
def test_orthogonalize_reuses_the_train_canonical_form(a: TTMatrix, data: st.DataObject) -> None:
    c = data.draw(st.integers(0, a.order - 1))
    o = a.orthogonalize(c)
    assert o.center == c
    testing.assert_canonical(o.to_tt(), c)
    assert_dense_close(o.full(), dense_matrix(a), rtol=rtol(a.dtype))
    # transposes keep the merged-leg canonical form (a permutation within each merged leg)
    testing.assert_canonical(o.mH.to_tt(), c)


# ---------------------------------------------------------------------------- indexing
def test_getitem_row_and_column_against_dense() -> None:
    a = TTMatrix.random((2, 3, 2), (3, 1, 4), 2, generator=generator(2), dtype=torch.float64)
    dense = a.full().reshape(2, 3, 2, 3, 1, 4)
    sub = a[(slice(None), [2, 0], -1), (1, 0, slice(1, 3))]
    assert sub.row_dims == (2, 2, 1) and sub.col_dims == (1, 1, 2)
    want = dense[:, [2, 0]][:, :, [-1]][..., [1], :, :][..., [0], :][..., 1:3]
    assert_dense_close(sub.full(), want.reshape(4, 2))
    assert torch.equal(a[..., ...].full(), a.full())
    row = a.row((1, 2, 0))
    assert isinstance(row, TensorTrain) and row.shape == a.col_dims
    assert_dense_close(row.full(), dense[1, 2, 0])
    col = a.column((2, 0, 3))
    assert col.shape == a.row_dims
    assert_dense_close(col.full(), dense[:, :, :, 2, 0, 3])
    with pytest.raises(IndexError, match=r"index\[1\]: index 3 is out of range for a leg of size 3"):
        a.row((0, 3, 0))
    with pytest.raises(IndexError, match=r"cols\[2\]: index 7 is not valid for a leg of size 4"):
        a[..., (0, 0, 7)]
    with pytest.raises(TypeError, match=r"rows: expected \.\.\. or a sequence of 3 per-site indices"):
        a[(0, 0), ...]
    with pytest.raises(TypeError, match=r"index: expected A\[rows, cols\]"):
        a[0]  # type: ignore[index]


# ---------------------------------------------------------------------------- dtype, device, autograd
def test_to_detach_clone_and_gradients() -> None:
    a = TTMatrix.random((2, 3), (3, 2), 2, generator=generator(3), dtype=torch.float32)
    b = a.to(torch.complex128)
    assert b.dtype == torch.complex128 and b.ranks == a.ranks
    assert_dense_close(b.full(), a.full(), rtol=1e-6)
    leaf = TTMatrix([c.detach().clone().requires_grad_(True) for c in a.to(torch.float64).cores])
    assert leaf.requires_grad and not leaf.detach().requires_grad
    value = leaf.norm() ** 2 + (leaf.T.full() ** 2).sum()
    grads = torch.autograd.grad(value, list(leaf.cores))
    # d/dG ||A||² twice: by the dense chain rule through full()
    ref = [torch.autograd.grad(2 * (TTMatrix(list(leaf.cores)).full() ** 2).sum(), [c])[0] for c in leaf.cores]
    for g, r in zip(grads, ref):
        assert_dense_close(g, r, rtol=1e-10)
    assert math.isclose(float(leaf.clone().norm().detach()), float(leaf.norm().detach()))
