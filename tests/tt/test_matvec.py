"""TTMatrix products: A @ x, A @ B, kron, dense batches, rounded products — against dense references."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import generator, rtol, scaled
from _matrix_helpers import dense_matrix, dense_vector, dims_for, train_for, tt_matrices
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.testing import assert_dense_close
from tnadapt.tt import (
    ProductReport,
    TensorTrain,
    TTBatch,
    TTMatrix,
    apply_dense,
    kron,
    matmul,
    matmul_round,
    matvec,
    matvec_round,
)

seeds = st.integers(0, 2**32 - 1)


def _frob(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


def _abs_scale(a: TTMatrix, x: TensorTrain) -> float:
    """``|| |A| |x| ||``: the scale of the round-off of a product of the two (no cancellation assumed)."""
    return _frob(dense_matrix(a).abs() @ dense_vector(x).abs()) + 1e-30


@st.composite
def operator_and_train(draw: st.DrawFn, **kwargs: object) -> tuple[TTMatrix, TensorTrain]:
    a = draw(tt_matrices(**kwargs))  # type: ignore[arg-type]
    return a, train_for(a.col_dims, a.dtype, draw(seeds))


@scaled(0.5)
@given(operator_and_train())
def test_matvec_matches_dense_and_ranks_multiply(ax: tuple[TTMatrix, TensorTrain]) -> None:
    a, x = ax
    for y in (a @ x, matvec(a, x)):
        assert isinstance(y, TensorTrain) and y.shape == a.row_dims and y.dtype == a.dtype
        assert y.ranks == tuple(p * q for p, q in zip(a.ranks, x.ranks))
        want = dense_matrix(a) @ dense_vector(x)
        assert_dense_close(y.full().reshape(-1), want, atol=rtol(a.dtype) * _abs_scale(a, x), rtol=0.0)


@scaled(0.5)
@given(tt_matrices(), st.data())
def test_matmul_associates_with_matvec(a: TTMatrix, data: st.DataObject) -> None:
    cols = data.draw(dims_for(a.order))
    b = data.draw(tt_matrices(row_dims=a.col_dims, col_dims=cols, dtype=a.dtype))
    x = train_for(cols, a.dtype, data.draw(seeds))
    ab = a @ b
    assert isinstance(ab, TTMatrix) and ab.row_dims == a.row_dims and ab.col_dims == cols
    assert ab.ranks == tuple(p * q for p, q in zip(a.ranks, b.ranks))
    fa, fb = dense_matrix(a), dense_matrix(b)
    scale = _frob(fa.abs() @ fb.abs())
    assert_dense_close(matmul(a, b).full(), fa @ fb, atol=rtol(a.dtype) * scale, rtol=0.0)
    # (A B) x = A (B x)
    left, right = (ab @ x).full(), (a @ (b @ x)).full()
    assert_dense_close(left, right, atol=rtol(a.dtype) * scale * _frob(dense_vector(x)) * 4, rtol=0.0)


@scaled(0.5)
@given(tt_matrices(), seeds, seeds)
def test_adjoint_identity(a: TTMatrix, s1: int, s2: int) -> None:
    """``<A x, y> = <x, A^H y>`` (inner products conjugate the first argument)."""
    x, y = train_for(a.col_dims, a.dtype, s1), train_for(a.row_dims, a.dtype, s2)
    lhs, rhs = complex((a @ x).dot(y)), complex(x.dot(a.mH @ y))
    scale = _frob(dense_matrix(a).abs()) * _frob(dense_vector(x)) * _frob(dense_vector(y))
    assert abs(lhs - rhs) <= 4 * rtol(a.dtype) * scale
    dense = complex((dense_matrix(a) @ dense_vector(x)).conj() @ dense_vector(y))
    assert abs(lhs - dense) <= 4 * rtol(a.dtype) * scale


@scaled(0.4)
@given(st.data())
def test_kron_mixed_product_identity(data: st.DataObject) -> None:
    """``(A ⊗ B)(C ⊗ D) = AC ⊗ BD`` and ``full(A ⊗ B) = torch.kron(full(A), full(B))``."""
    dtype = data.draw(st.sampled_from([torch.float64, torch.complex128]))
    a = data.draw(tt_matrices(order=data.draw(st.integers(1, 2)), dtype=dtype))
    b = data.draw(tt_matrices(order=data.draw(st.integers(1, 2)), dtype=dtype))
    c = data.draw(tt_matrices(row_dims=a.col_dims, col_dims=data.draw(dims_for(a.order)), dtype=dtype))
    e = data.draw(tt_matrices(row_dims=b.col_dims, col_dims=data.draw(dims_for(b.order)), dtype=dtype))
    ab = kron(a, b)
    assert isinstance(ab, TTMatrix) and ab.order == a.order + b.order
    assert_dense_close(ab.full(), torch.kron(dense_matrix(a), dense_matrix(b)))
    lhs = kron(a, b) @ kron(c, e)
    rhs = kron(a @ c, b @ e)
    assert isinstance(lhs, TTMatrix) and isinstance(rhs, TTMatrix)
    assert_dense_close(lhs.full(), rhs.full(), atol=1e-10 * (1 + _frob(rhs.full())), rtol=0.0)
    x, y = train_for(a.col_dims, dtype, 1), train_for(b.col_dims, dtype, 2)
    xy = kron(x, y)
    assert isinstance(xy, TensorTrain) and xy.shape == x.shape + y.shape
    assert_dense_close(xy.full(), torch.einsum("i,j->ij", dense_vector(x), dense_vector(y)).reshape(xy.shape))
    # (A ⊗ B)(x ⊗ y) = Ax ⊗ By
    assert_dense_close((ab @ xy).full(), kron(a @ x, b @ y).full(), atol=1e-10 * (1 + _frob(xy.full())), rtol=0.0)


def test_kron_rejects_mixed_operands() -> None:
    a = TTMatrix.identity((2,), dtype=torch.float64)
    x = TensorTrain.random((2,), 1, generator=generator(0), dtype=torch.float64)
    with pytest.raises(TypeError, match=r"kron: expected two TTMatrix or two TensorTrain operands"):
        kron(a, x)
    with pytest.raises(ValueError, match=r"b: dtype/device"):
        kron(a, a.to(torch.float32))


@scaled(0.5)
@given(tt_matrices(), seeds, st.sampled_from([(), (3,), (2, 4)]))
def test_apply_dense_matches_full(a: TTMatrix, seed: int, lead: tuple[int, ...]) -> None:
    g = generator(seed)
    real = a.dtype.to_real() if a.dtype.is_complex else a.dtype
    v = torch.randn(*lead, a.shape[1], generator=g, dtype=real).to(a.dtype)
    y = apply_dense(a, v)
    assert y.shape == (*lead, a.shape[0]) and y.dtype == a.dtype
    fa = dense_matrix(a)
    want = v.to(fa.dtype) @ fa.T
    scale = _frob(v.abs().to(torch.float64) @ fa.abs().T) + 1e-30
    assert_dense_close(y, want, atol=rtol(a.dtype) * scale, rtol=0.0)
    assert_dense_close(a.apply(v), want, atol=rtol(a.dtype) * scale, rtol=0.0)
    # matrix semantics for A @ tensor: a vector, or the columns of a (prod n, k) matrix
    vec = v.reshape(-1, a.shape[1])[0]
    assert_dense_close(a @ vec, fa @ vec.to(fa.dtype), atol=rtol(a.dtype) * scale, rtol=0.0)
    cols = v.reshape(-1, a.shape[1]).mT
    assert_dense_close(a @ cols, fa @ cols.to(fa.dtype), atol=rtol(a.dtype) * scale, rtol=0.0)


def test_apply_dense_is_differentiable_and_promotes() -> None:
    a = TTMatrix.random((2, 3), (3, 2), 2, generator=generator(0), dtype=torch.float64)
    leaf = TTMatrix([c.detach().clone().requires_grad_(True) for c in a.cores])
    v = torch.randn(5, 6, generator=generator(1), dtype=torch.float64, requires_grad=True)
    out = (apply_dense(leaf, v) ** 2).sum()
    grads = torch.autograd.grad(out, [*leaf.cores, v])
    ref_out = ((v @ leaf.full().T) ** 2).sum()
    ref = torch.autograd.grad(ref_out, [*leaf.cores, v])
    for g, r in zip(grads, ref):
        assert_dense_close(g, r, rtol=1e-10)
    assert apply_dense(a, v.detach().to(torch.float32)).dtype == torch.float64
    assert apply_dense(a, v.detach().to(torch.complex64)).dtype == torch.complex128


def test_product_errors_name_the_argument() -> None:
    a = TTMatrix.random((2, 3), (3, 4), 2, generator=generator(0), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x: expected shape \(3, 4\) \(A.col_dims\), got shape \(4, 3\)"):
        a @ TensorTrain.random((4, 3), 2, generator=generator(1), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x: dtype torch.float32 differs from A's dtype torch.float64"):
        matvec(a, TensorTrain.random((3, 4), 2, generator=generator(1)))
    with pytest.raises(ValueError, match=r"B: expected row_dims \(3, 4\) \(A.col_dims\), got row_dims \(2, 3\)"):
        a @ a
    with pytest.raises(ValueError, match=r"batch: expected shape \(\.\.\., 12\) .* got \(5, 6\)"):
        apply_dense(a, torch.zeros(5, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"other \(A @ other\): expected a 1-D"):
        a @ torch.zeros(2, 12, 1, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"A: expected a TTMatrix"):
        matvec(a.to_tt(), a.to_tt())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"method: expected one of"):
        matvec_round(a, TensorTrain.random((3, 4), 2, generator=generator(1), dtype=torch.float64), method="fit")


@scaled(0.4)
@given(
    tt_matrices(order=4, dtype=torch.float64, max_rank=3) | tt_matrices(order=3, dtype=torch.complex128),
    seeds,
    st.sampled_from(["exact", "randomized", "zipup"]),
    st.sampled_from([("max_rank", 2), ("max_rank", 3), ("eps", 1e-1), ("eps", 1e-3)]),
)
def test_rounded_products_report_the_true_error(
    a: TTMatrix, seed: int, method: str, criterion: tuple[str, float]
) -> None:
    if method == "randomized" and criterion[0] == "eps":
        criterion = ("max_rank", 2)  # randomized rounding takes eps too, but the combination is slower
    x = train_for(a.col_dims, a.dtype, seed)
    rep = matvec_round(a, x, method=method, **{criterion[0]: criterion[1]})  # type: ignore[arg-type]
    assert isinstance(rep, ProductReport) and rep.method == method
    y = rep.tt
    assert y.shape == a.row_dims and y.dtype == a.dtype
    exact = dense_matrix(a) @ dense_vector(x)
    true = _frob(dense_vector(y) - exact)
    ref = _frob(exact)
    assert abs(float(rep.reference_norm) - ref) <= 1e-8 * ref + 1e-300
    # exact reports: a canonical rounding's per-bond tails; zip-up's orthogonal per-bond errors
    assert abs(float(rep.error) - true) <= 1e-9 * ref + 1e-12
    if criterion[0] == "max_rank":
        assert max(y.ranks) <= criterion[1]
    elif method == "exact":
        assert true <= criterion[1] * ref * (1 + 1e-8) + 1e-12


def test_zipup_is_close_to_optimal_on_a_smooth_operator() -> None:
    """On a low-rank problem zip-up loses little against the exact product then rounding."""
    g = generator(3)
    a = TTMatrix.random((3,) * 6, (3,) * 6, 3, generator=g, dtype=torch.float64)
    x = TensorTrain.random((3,) * 6, 4, generator=g, dtype=torch.float64)
    exact = matvec_round(a, x, max_rank=12)
    fast = matvec_round(a, x, max_rank=12, method="zipup")
    assert fast.tt.ranks == exact.tt.ranks
    assert float(fast.error) <= 2 * float(exact.error) + 1e-12
    full = matvec_round(a, x, method="zipup")
    assert float(full.relative_error) < 1e-6 and math.isclose(float(full.reference_norm), float((a @ x).norm()))


@scaled(0.3)
@given(
    tt_matrices(order=3, dtype=torch.float64) | tt_matrices(order=2, dtype=torch.complex128),
    st.data(),
    st.sampled_from(["exact", "zipup"]),
    st.sampled_from([("max_rank", 2), ("eps", 1e-2)]),
)
def test_matmul_round_reports_the_true_error(
    a: TTMatrix, data: st.DataObject, method: str, criterion: tuple[str, float]
) -> None:
    b = data.draw(tt_matrices(row_dims=a.col_dims, col_dims=data.draw(dims_for(a.order)), dtype=a.dtype))
    rep = matmul_round(a, b, method=method, **{criterion[0]: criterion[1]})  # type: ignore[arg-type]
    c = rep.matrix
    assert isinstance(c, TTMatrix) and c.row_dims == a.row_dims and c.col_dims == b.col_dims
    exact = dense_matrix(a) @ dense_matrix(b)
    true, ref = _frob(dense_matrix(c) - exact), _frob(exact)
    assert abs(float(rep.error) - true) <= 1e-9 * ref + 1e-12
    if criterion[0] == "max_rank":
        assert max(c.ranks) <= criterion[1]
    elif method == "exact":
        assert true <= criterion[1] * ref * (1 + 1e-8) + 1e-12


def test_products_are_differentiable() -> None:
    """Gradients of the exact and rounded products equal those through the dense matrix."""
    g = generator(7)
    a = TTMatrix.random((2, 3, 2), (2, 2, 3), 2, generator=g, dtype=torch.float64)
    x = TensorTrain.random((2, 2, 3), 2, generator=g, dtype=torch.float64)
    leaves = [c.detach().clone().requires_grad_(True) for c in (*a.cores, *x.cores)]
    la, lx = TTMatrix(leaves[:3]), TensorTrain(leaves[3:])
    for value in (
        (la @ lx).full().square().sum(),
        matvec_round(la, lx, max_rank=8).tt.full().square().sum(),  # no truncation: the same function
    ):
        grads = torch.autograd.grad(value, leaves)
        dense = ((la.full() @ lx.full().reshape(-1)) ** 2).sum()
        ref = torch.autograd.grad(dense, leaves)
        for got, want in zip(grads, ref):
            assert_dense_close(got, want, rtol=1e-8)


@scaled(0.3)
@given(tt_matrices(), seeds, st.integers(1, 3))
def test_matvec_of_a_batch_is_the_batch_of_matvecs(a: TTMatrix, seed: int, size: int) -> None:
    g = generator(seed)
    members = [TensorTrain.random(a.col_dims, 2, generator=g, dtype=a.dtype) for _ in range(size)]
    out = a @ TTBatch.stack(members)
    assert isinstance(out, TTBatch) and len(out) == size and out.shape == a.row_dims
    for y, x in zip(out.unstack(), members):
        assert y.ranks == (a @ x).ranks
        assert_dense_close(y.full(), (a @ x).full(), rtol=rtol(a.dtype), atol=rtol(a.dtype) * _abs_scale(a, x))
    with pytest.raises(ValueError, match=r"x: expected shape"):
        a @ TTBatch.stack([TensorTrain.random((*a.col_dims, 2), 1, generator=g, dtype=a.dtype)])
