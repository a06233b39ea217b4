"""Autograd: torch.autograd.gradcheck (float64, complex128) through the differentiable TT ops, and gradients
against dense references at degenerate trains (zero cores, zero-padded ranks) where QR-based code gave NaN."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _helpers import core_grads, degenerate_trains, extreme_scales, generator, leaf_copy, rtol, scaled
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.testing import dense
from tnadapt.tt import TensorTrain, contract, dot, gather, getitem, hadamard, norm, pad_ranks

SHAPE = (2, 3, 2)


def _cores(dtype: torch.dtype, seed: int, ranks: int | list[int] = 2) -> list[torch.Tensor]:
    x = TensorTrain.random(SHAPE, ranks, generator=generator(seed), dtype=dtype)
    return [c.detach().clone().requires_grad_(True) for c in x.cores]


def _check(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor]) -> None:
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


DTYPES = [torch.float64, torch.complex128]


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradcheck_full(dtype: torch.dtype) -> None:
    _check(lambda *c: TensorTrain(c).full(), _cores(dtype, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradcheck_dot(dtype: torch.dtype) -> None:
    a, b = _cores(dtype, 1), _cores(dtype, 2, ranks=[1, 3])
    _check(lambda *c: dot(TensorTrain(c[:3]), TensorTrain(c[3:])), a + b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ranks", [2, [2, 3], [1, 1]])
def test_gradcheck_norm(dtype: torch.dtype, ranks: int | list[int]) -> None:
    # Through the QR sweep, including wide unfoldings (r_{k-1} n_k < r_k).
    _check(lambda *c: norm(TensorTrain(c)), _cores(dtype, 3, ranks))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", [(1, 2, 0), (1, slice(None), -1), (..., [1, 0]), (slice(0, 2), torch.tensor([2, 0]))])
def test_gradcheck_indexing(dtype: torch.dtype, index: tuple[object, ...]) -> None:
    def fn(*c: torch.Tensor) -> torch.Tensor:
        out = TensorTrain(c)[index]
        return out.full() if isinstance(out, TensorTrain) else out

    _check(fn, _cores(dtype, 5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradcheck_gather(dtype: torch.dtype) -> None:
    idx = torch.tensor([[0, 0, 0], [1, 2, 1], [1, 0, 1], [0, 2, 0]])
    _check(lambda *c: gather(TensorTrain(c), idx), _cores(dtype, 6))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["vectors", "matrix", "mixed"])
def test_gradcheck_contract(dtype: torch.dtype, kind: str) -> None:
    g = generator(7)
    if kind == "vectors":
        factors = [torch.randn(n, generator=g, dtype=torch.float64).to(dtype) for n in SHAPE]
        modes = [0, 1, 2]
    elif kind == "matrix":
        factors, modes = [torch.randn(4, SHAPE[1], generator=g, dtype=torch.float64).to(dtype)], [1]
    else:
        factors = [torch.randn(SHAPE[0], generator=g, dtype=torch.float64).to(dtype)]
        factors.append(torch.randn(3, SHAPE[2], generator=g, dtype=torch.float64).to(dtype))
        modes = [0, 2]
    factors = [f.requires_grad_(True) for f in factors]

    def fn(*inputs: torch.Tensor) -> torch.Tensor:
        out = contract(TensorTrain(inputs[:3]), dict(zip(modes, inputs[3:])))
        return out.full() if isinstance(out, TensorTrain) else out

    _check(fn, _cores(dtype, 8) + factors)


# ---------------------------------------------------------------------------- gradients at degenerate trains
GRAD_DTYPES = [torch.float64, torch.complex128]


def _grad_atol(x: TensorTrain, k: int, factor: float = 1.0) -> float:
    """A bound on round-off in the gradient with respect to core ``k``: ``rtol * factor * prod_{j != k} ||G_j||``."""
    others = math.prod(float(torch.linalg.vector_norm(c.detach())) for j, c in enumerate(x.cores) if j != k)
    return rtol(x) * factor * max(others, 1.0)


def _assert_grads_match(x: TensorTrain, got: list[torch.Tensor], expected: list[torch.Tensor], factor: float) -> None:
    for k, (g, e) in enumerate(zip(got, expected)):
        assert bool(torch.isfinite(g).all()), f"core {k}: non-finite gradient {g}"
        err = float(torch.linalg.vector_norm(g - e))
        assert err <= _grad_atol(x, k, factor), f"core {k}: gradient off by {err:.3e}"


@given(degenerate_trains(dtypes=GRAD_DTYPES))
def test_norm_gradient_matches_dense_vector_norm(x: TensorTrain) -> None:
    # Regression (B5): the QR sweep's backward gave NaN for a zero core (MetaTT's init) or zero-padded ranks, and a
    # tracked centre sent the whole gradient to the centre core. Reference: torch's norm of the dense tensor,
    # gradient X / ||X|| (0 at X = 0, torch's subgradient).
    value, got = core_grads(norm, x)
    ref_value, expected = core_grads(lambda t: torch.linalg.vector_norm(dense(t)), x)
    assert abs(float(value) - float(ref_value)) <= rtol(x) * float(ref_value)
    _assert_grads_match(x, got, expected, factor=1.0)
    if float(ref_value) == 0:
        assert all(bool((g == 0).all()) for g in got)


@st.composite
def _dot_operands(draw: st.DrawFn) -> tuple[TensorTrain, TensorTrain]:
    """A degenerate train and a second one of its shape: random, or with a zero core."""
    x = draw(degenerate_trains(dtypes=GRAD_DTYPES))
    y = TensorTrain.random(x.shape, 2, generator=generator(draw(st.integers(0, 2**32 - 1))), dtype=x.dtype)
    if draw(st.booleans()):
        cores = list(y.cores)
        k = draw(st.integers(0, x.order - 1))
        cores[k] = torch.zeros_like(cores[k])
        y = TensorTrain(cores)
    return x, y


def _weighted_real(z: torch.Tensor, w: complex) -> torch.Tensor:
    """``Re(w z)``: a real loss whose gradient sees both the real and the imaginary part of ``z``."""
    return (z * w).real if z.is_complex() else z * w.real


@given(_dot_operands(), st.complex_numbers(min_magnitude=0.5, max_magnitude=2.0))
def test_dot_gradient_matches_dense_at_degenerate_trains(xy: tuple[TensorTrain, TensorTrain], w: complex) -> None:
    x, y = xy

    def loss(a: TensorTrain, b: TensorTrain, inner: Callable[[Any, Any], torch.Tensor]) -> torch.Tensor:
        return _weighted_real(inner(a, b), w) + _weighted_real(inner(a, a), w)

    lx, ly = leaf_copy(x), leaf_copy(y)
    got = torch.autograd.grad(loss(lx, ly, dot), [*lx.cores, *ly.cores])
    dx, dy = leaf_copy(x), leaf_copy(y)
    ref = loss(dx, dy, lambda a, b: (dense(a).conj() * dense(b)).sum())
    expected = torch.autograd.grad(ref, [*dx.cores, *dy.cores])
    factor = 4 * (1 + float(torch.linalg.vector_norm(dense(x))) + float(torch.linalg.vector_norm(dense(y))))
    _assert_grads_match(x, list(got[: x.order]), list(expected[: x.order]), factor)
    _assert_grads_match(y, list(got[x.order :]), list(expected[x.order :]), factor)


def _contract_all(a: torch.Tensor, vectors: list[torch.Tensor]) -> torch.Tensor:
    out = a
    for v in vectors:
        out = torch.tensordot(out, v, dims=([0], [0]))
    return out


#: Polynomial ops (contractions) as ``name -> (op(train, weights), the same op on the dense tensor)``; the
#: weights ``w`` have the train's shape, each op reduces to a real 0-d loss.
POLYNOMIAL_OPS: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "full": (lambda t, w: (t.full() * w).sum().real, lambda a, w: (a * w).sum().real),
    "getitem": (
        lambda t, w: (getitem(t, (-1, ...), dense=True) * w[-1]).sum().real,
        lambda a, w: (a[-1] * w[-1]).sum().real,
    ),
    "gather": (
        lambda t, w: (gather(t, _corners(t.shape)) * 3).sum().real,
        lambda a, w: (a[tuple(_corners(a.shape).T)] * 3).sum().real,
    ),
    "contract": (
        lambda t, w: contract(t, dict(enumerate(_mode_vectors(w)))).real,
        lambda a, w: _contract_all(a, _mode_vectors(w)).real,
    ),
    "hadamard": (lambda t, w: (hadamard(t, t).full() * w).sum().real, lambda a, w: (a * a * w).sum().real),
}


def _corners(shape: tuple[int, ...]) -> torch.Tensor:
    """Multi-indices ``(0, ..., 0)`` and ``(-1, ..., -1)``, ``(2, d)``."""
    return torch.tensor([[0] * len(shape), [-1] * len(shape)])


def _mode_vectors(w: torch.Tensor) -> list[torch.Tensor]:
    """One vector per mode of ``w``: its first fibre along that mode."""
    return [w.movedim(k, 0).reshape(n, -1)[:, 0] for k, n in enumerate(w.shape)]


@pytest.mark.parametrize("op", sorted(POLYNOMIAL_OPS))
@scaled(0.4)
@given(x=degenerate_trains(dtypes=GRAD_DTYPES), seed=st.integers(0, 2**32 - 1))
def test_polynomial_op_gradients_match_dense_at_degenerate_trains(op: str, x: TensorTrain, seed: int) -> None:
    tt_fn, dense_fn = POLYNOMIAL_OPS[op]
    w = torch.randn(x.shape, generator=generator(seed), dtype=torch.float64).to(x.dtype)
    _, got = core_grads(lambda t: tt_fn(t, w), x)
    _, expected = core_grads(lambda t: dense_fn(dense(t), w), x)
    factor = 10 * (1 + float(torch.linalg.vector_norm(w))) ** 2 * (1 + float(torch.linalg.vector_norm(dense(x))))
    _assert_grads_match(x, got, expected, factor)


@given(degenerate_trains(dtypes=torch.float64, canonical=False), st.integers(0, 3), st.data())
def test_norm_gradient_is_exact_at_extreme_scales(x: TensorTrain, k: int, data: st.DataObject) -> None:
    # ||X||^2 out of range (1e+-600): the gradient (scale-free for the scaled core, times s for the others)
    # must not over- or underflow either.
    s = data.draw(extreme_scales(x.dtype), label="scale")
    k = k % x.order
    _, base = core_grads(norm, x)
    cores = list(x.cores)
    cores[k] = cores[k] * s
    value, got = core_grads(norm, TensorTrain(cores))
    expected_value = float(torch.linalg.vector_norm(dense(x))) * s
    assert abs(float(value) - expected_value) <= rtol(x) * expected_value
    for j, (g, b) in enumerate(zip(got, base)):
        unscaled = g if j == k else g / s
        assert bool(torch.isfinite(unscaled).all())
        assert float(torch.linalg.vector_norm(unscaled - b)) <= _grad_atol(x, j)


def test_adamw_step_from_the_metatt_init_stays_finite() -> None:
    # Regression (B5, the audit's reproducer): first core zeros, the others identity (MetaTT's default init);
    # norm().backward() gave NaN gradients and one AdamW step turned the cores NaN.
    init = TensorTrain.identity((4, 3, 2, 4), 3, dtype=torch.float64)
    params = [torch.nn.Parameter(c.clone()) for c in init.cores]
    with torch.no_grad():
        params[0].zero_()
    opt = torch.optim.AdamW(params, lr=1e-2)
    norm(TensorTrain(params)).backward()
    assert all(p.grad is not None and bool((p.grad == 0).all()) for p in params)  # torch's subgradient at 0
    opt.step()
    assert all(bool(torch.isfinite(p).all()) for p in params)


@pytest.mark.parametrize("center", [0, 1, 2])
def test_norm_gradient_with_a_tracked_centre_reaches_every_core(center: int) -> None:
    # Regression: with a known centre norm() was stable_norm(cores[centre]), so the other cores got no gradient
    # (None), although the norm of the represented tensor depends on all of them.
    x = TensorTrain.random((3, 4, 2), 2, generator=generator(4), dtype=torch.float64).orthogonalize(center)
    _, got = core_grads(norm, x)
    _, expected = core_grads(lambda t: torch.linalg.vector_norm(dense(t)), x)
    assert all(float(torch.linalg.vector_norm(e)) > 0.1 for e in expected)
    _assert_grads_match(x, got, expected, factor=1.0)


def test_norm_gradient_of_a_zero_padded_train_matches_the_unpadded_one() -> None:
    # A non-zero tensor with rank-deficient unfoldings: the norm is smooth there, so no NaN either.
    x = TensorTrain.random((3, 4, 5), 2, generator=generator(0), dtype=torch.float64)
    padded = pad_ranks(x, 4)
    _, got = core_grads(norm, padded)
    _, small = core_grads(norm, x)
    for g, s in zip(got, small):
        assert bool(torch.isfinite(g).all())
        sub = g[: s.shape[0], :, : s.shape[2]]
        assert torch.allclose(sub, s, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("center", [None, 1])
def test_norm_of_a_non_finite_train_propagates_to_the_gradient(value: float, center: int | None) -> None:
    # Real NaNs are not masked: the value is NaN (Inf for an Inf entry) and the gradient is not finite, as for
    # torch.linalg.vector_norm of the dense tensor.
    x = TensorTrain.random((3, 4, 2), 2, generator=generator(1), dtype=torch.float64).orthogonalize(1)
    cores = [c.clone() for c in x.cores]
    cores[2 if center is None else 1][0, 1, 0] = value
    got, grads = core_grads(norm, TensorTrain(cores, center=center))
    assert math.isnan(float(got)) if math.isnan(value) else float(got) == math.inf
    assert not all(bool(torch.isfinite(g).all()) for g in grads)


def test_norm_supports_first_derivatives_only() -> None:
    # The backward differentiates ||P X|| for a fixed canonical basis P: exact to first order, not second, so
    # differentiating it again raises instead of returning a wrong Hessian.
    leaf = leaf_copy(TensorTrain.random((3, 4), 2, generator=generator(2), dtype=torch.float64))
    (g,) = torch.autograd.grad(norm(leaf) ** 2, [leaf.cores[0]], create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.sum().backward()


def test_norm_without_grad_builds_no_graph() -> None:
    leaf = leaf_copy(TensorTrain.random((3, 4), 2, generator=generator(3), dtype=torch.float64))
    with torch.no_grad():
        assert norm(leaf).grad_fn is None
    assert norm(leaf.detach()).grad_fn is None
    assert norm(leaf).grad_fn is not None
