"""Algebra: +, -, scalar *, /, negation, Hadamard, dot, norm, contract — against dense references."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from _helpers import as_float, extreme_scales, generator, reference, rtol, trains, wide
from hypothesis import given
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.testing import assert_dense_close, assert_tt_close, gauge_transform
from tnadapt.tt import TensorTrain, add, contract, dot, hadamard, norm, scale


@st.composite
def pairs(draw: st.DrawFn, **overrides: object) -> tuple[TensorTrain, TensorTrain]:
    """Two trains with the same shape, dtype and device but independent ranks and values."""
    x = draw(trains(**overrides))
    ranks = [draw(st.integers(1, 4)) for _ in range(x.order - 1)]
    y = TensorTrain.random(x.shape, ranks, generator=generator(draw(st.integers(0, 2**32 - 1))), dtype=x.dtype)
    return x, y.to(x.device)


def _sum_ranks(a: TensorTrain, b: TensorTrain) -> tuple[int, ...]:
    if a.order == 1:
        return (1, 1)
    return (1, *(ra + rb for ra, rb in zip(a.bond_dims, b.bond_dims)), 1)


@given(pairs())
def test_add_and_sub_agree_with_dense_and_ranks_add(xy: tuple[TensorTrain, TensorTrain]) -> None:
    x, y = xy
    fx, fy = reference(x), reference(y)
    scale_ = float(torch.linalg.vector_norm(fx) + torch.linalg.vector_norm(fy))
    for z, expected in ((x + y, fx + fy), (x - y, fx - fy), (add(x, y), fx + fy)):
        assert z.ranks == _sum_ranks(x, y) and z.dtype == x.dtype
        assert_dense_close(z.full(), expected, atol=rtol(x) * scale_, rtol=0.0)


@given(trains(canonical=st.booleans()), st.one_of(st.just(0.0), st.floats(1e-3, 1e3), st.floats(-1e3, -1e-3)))
def test_scalar_multiplication_and_negation(x: TensorTrain, real_alpha: float) -> None:
    fx = reference(x)
    for z, expected in ((real_alpha * x, real_alpha * fx), (x * real_alpha, real_alpha * fx), (-x, -fx)):
        assert z.ranks == x.ranks and z.dtype == x.dtype
        assert z.center == x.center
        assert_dense_close(z.full(), expected, rtol=rtol(x), atol=rtol(x) * abs(real_alpha))
    if real_alpha != 0:
        assert_dense_close((x / real_alpha).full(), fx / real_alpha, rtol=rtol(x))
    # Tensor scalars behave like Python scalars.
    t = torch.tensor(real_alpha, dtype=x.dtype.to_real() if x.dtype.is_complex else x.dtype)
    assert_dense_close((t * x).full(), real_alpha * fx, rtol=rtol(x), atol=rtol(x) * abs(real_alpha))


@given(trains(dtypes=testing.DTYPES), st.complex_numbers(min_magnitude=1e-3, max_magnitude=1e3))
def test_complex_scalar_promotes_to_a_complex_train(x: TensorTrain, alpha: complex) -> None:
    z = x * alpha
    expected_dtype = torch.complex64 if x.dtype in (torch.float32, torch.complex64) else torch.complex128
    assert z.dtype == expected_dtype and z.ranks == x.ranks
    assert_dense_close(z.full(), alpha * reference(x), rtol=rtol(x))
    w = x * torch.tensor(alpha, dtype=torch.complex128)  # 0-d tensors promote only to a higher category
    assert w.dtype == expected_dtype
    assert_dense_close(w.full(), alpha * reference(x), rtol=rtol(x))


@given(pairs())
def test_hadamard_agrees_with_dense_and_ranks_multiply(xy: tuple[TensorTrain, TensorTrain]) -> None:
    x, y = xy
    for z in (x * y, hadamard(x, y)):
        assert z.ranks == tuple(ra * rb for ra, rb in zip(x.ranks, y.ranks))
        assert_dense_close(z.full(), reference(x) * reference(y), rtol=rtol(x))


@given(pairs())
def test_dot_agrees_with_dense_and_is_sesquilinear(xy: tuple[TensorTrain, TensorTrain]) -> None:
    x, y = xy
    fx, fy = reference(x), reference(y)
    expected = (fx.conj() * fy).sum()
    bound = rtol(x) * float(torch.linalg.vector_norm(fx) * torch.linalg.vector_norm(fy))
    got = dot(x, y)
    assert got.dtype == x.dtype and got.shape == ()
    assert abs(complex(got) - complex(expected)) <= bound
    assert abs(complex(x.dot(y)) - complex(dot(y, x)).conjugate()) <= bound
    if x.dtype.is_complex:
        # conj-linear in the first argument, linear in the second.
        c = 0.5 - 2j
        assert abs(complex(dot(c * x, y)) - c.conjugate() * complex(got)) <= 3 * bound
        assert abs(complex(dot(x, c * y)) - c * complex(got)) <= 3 * bound


@given(trains(canonical=st.booleans()))
def test_norm_agrees_with_dense(x: TensorTrain) -> None:
    expected = float(torch.linalg.vector_norm(reference(x)))
    got = norm(x)
    assert got.dtype == (x.dtype.to_real() if x.dtype.is_complex else x.dtype) and got.shape == ()
    assert abs(as_float(got) - expected) <= rtol(x) * expected
    assert abs(as_float(x.norm()) - expected) <= rtol(x) * expected


@given(trains(dtypes=testing.REAL_DTYPES + testing.COMPLEX_DTYPES, canonical=st.booleans()), st.data())
def test_norm_neither_underflows_nor_overflows(x: TensorTrain, data: st.DataObject) -> None:
    # ||x||^2 is 1e+-60 (out of float32's range) or 1e+-600 (out of float64's): squaring (dot(x, x)) would fail.
    factor = data.draw(extreme_scales(x.dtype), label="factor")
    expected = float(torch.linalg.vector_norm(reference(x))) * factor
    for y in (x * factor, TensorTrain([c * factor ** (1 / x.order) for c in x.cores])):  # one core or all scaled
        got = as_float(y.norm())
        assert abs(got - expected) <= rtol(x) * expected


@given(trains())
def test_gauge_transform_leaves_full_dot_and_norm_invariant(x: TensorTrain) -> None:
    y = gauge_transform(x, generator=generator(1), condition=10.0)
    fx = reference(x)
    nx = float(torch.linalg.vector_norm(fx))
    assert_dense_close(y.full(), fx, rtol=10 * rtol(x))
    assert abs(as_float(y.norm()) - nx) <= 10 * rtol(x) * nx
    assert abs(complex(dot(y, x)) - nx**2) <= 10 * rtol(x) * nx**2
    assert abs(complex(dot(y, y)) - nx**2) <= 10 * rtol(x) * nx**2


@st.composite
def contraction_factors(draw: st.DrawFn) -> tuple[TensorTrain, dict[int, torch.Tensor]]:
    x = draw(trains(orders=range(1, 6)))
    g = generator(draw(st.integers(0, 2**32 - 1)))
    modes = draw(st.lists(st.integers(0, x.order - 1), unique=True))
    factors: dict[int, torch.Tensor] = {}
    for k in modes:
        kind = draw(st.sampled_from(["vector", "matrix"]))
        shape = (x.shape[k],) if kind == "vector" else (draw(st.integers(1, 3)), x.shape[k])
        factors[k - x.order if draw(st.booleans()) else k] = torch.randn(*shape, generator=g, dtype=x.dtype)
    return x, factors


def _dense_contract(a: torch.Tensor, factors: dict[int, torch.Tensor]) -> torch.Tensor:
    """Mode products on the dense tensor, highest mode first so lower axes keep their positions."""
    d = a.ndim
    dtype = functools.reduce(torch.promote_types, (f.dtype for f in factors.values()), a.dtype)
    by_mode = {m % d: f.to(dtype) for m, f in factors.items()}
    out = a.to(dtype)
    for k in sorted(by_mode, reverse=True):
        f = by_mode[k]
        if f.ndim == 1:
            out = torch.tensordot(out, f, dims=([k], [0]))
        else:
            out = torch.movedim(torch.tensordot(out, f, dims=([k], [1])), -1, k)
    return out


@given(contraction_factors())
def test_contract_agrees_with_dense_mode_products(case: tuple[TensorTrain, dict[int, torch.Tensor]]) -> None:
    x, factors = case
    got = contract(x, factors)
    expected = _dense_contract(reference(x), factors)
    # Frobenius norms bound the mode products: ||X x_k F_k|| <= ||X|| prod_k ||F_k||.
    scale_ = float(torch.linalg.vector_norm(reference(x)))
    for f in factors.values():
        scale_ *= float(torch.linalg.vector_norm(f.to(wide(f.dtype))))
    if isinstance(got, TensorTrain):
        assert got.dtype == x.dtype
        assert_dense_close(got.full(), expected, rtol=0.0, atol=rtol(x) * scale_ + 1e-30)
        assert x.contract(factors).shape == got.shape
    else:
        assert got.shape == () and expected.ndim == 0
        assert abs(complex(got) - complex(expected)) <= rtol(x) * scale_ + 1e-30


@pytest.mark.parametrize(
    ("tt_dtype", "factor_dtype", "expected"),
    [
        (torch.float32, torch.float64, torch.float64),
        (torch.float64, torch.float32, torch.float64),
        (torch.float32, torch.complex64, torch.complex64),
        (torch.float64, torch.complex64, torch.complex128),
    ],
)
@pytest.mark.parametrize("kind", ["one vector", "one matrix", "all vectors"])
def test_contract_promotes_mixed_dtypes(
    tt_dtype: torch.dtype, factor_dtype: torch.dtype, expected: torch.dtype, kind: str
) -> None:
    x = TensorTrain.random((3, 4, 2), 2, generator=generator(0), dtype=tt_dtype)
    g = generator(1)
    if kind == "one vector":
        factors = {1: torch.randn(4, generator=g, dtype=torch.float64).to(factor_dtype)}
    elif kind == "one matrix":
        factors = {1: torch.randn(5, 4, generator=g, dtype=torch.float64).to(factor_dtype)}
    else:
        factors = {k: torch.randn(n, generator=g, dtype=torch.float64).to(factor_dtype) for k, n in enumerate(x.shape)}
    got = contract(x, factors)
    assert got.dtype == expected
    ref = _dense_contract(reference(x), {k: f.to(wide(expected)) for k, f in factors.items()})
    dense_got = got.full() if isinstance(got, TensorTrain) else got
    assert_dense_close(dense_got, ref, rtol=rtol(tt_dtype), atol=rtol(tt_dtype))


def test_scale_function_keeps_centre_and_multiplies_the_centre_core() -> None:
    x = TensorTrain.random((3, 4, 5), 2, generator=generator(0), dtype=torch.float64).orthogonalize(1)
    y = scale(x, 3.0)
    assert y.center == 1 and torch.equal(y.cores[0], x.cores[0]) and torch.equal(y.cores[2], x.cores[2])
    assert_tt_close(y, 3.0 * TensorTrain(x.cores))


@pytest.mark.parametrize(("value", "expected"), [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "inf")])
@pytest.mark.parametrize("dtype", testing.DTYPES)
def test_norm_of_a_non_finite_train_is_not_finite(dtype: torch.dtype, value: float, expected: str) -> None:
    # Regression: a NaN leading entry of a QR panel leaves R finite (the NaN stays in Q), so the
    # centre core of the sweep looked finite and norm() returned a finite number.
    cores = [c.clone() for c in TensorTrain.random((2, 1), 1, generator=generator(0), dtype=dtype).cores]
    cores[0][0, 0, 0] = value
    got = float(TensorTrain(cores).norm())
    assert math.isnan(got) if expected == "nan" else got == math.inf


#: Scalar operands of every accepted kind, as ``name -> build(value)``; numpy ones become the Python number.
SCALAR_KINDS: dict[str, Callable[[float], object]] = {
    "int": lambda v: int(v),
    "float": float,
    "complex": lambda v: complex(v, -v / 2),
    "np.int64": lambda v: np.int64(int(v)),
    "np.int32": lambda v: np.int32(int(v)),
    "np.uint8": lambda v: np.uint8(abs(int(v)) % 256),
    "np.float64": np.float64,
    "np.float32": np.float32,
    "np.complex64": lambda v: np.complex64(complex(v, v)),
    "np 0-d array": lambda v: np.array(v),
    "0-d float64 tensor": lambda v: torch.tensor(v, dtype=torch.float64),
    "0-d float32 tensor": lambda v: torch.tensor(v, dtype=torch.float32),
    "0-d int tensor": lambda v: torch.tensor(int(v)),
    "0-d complex tensor": lambda v: torch.tensor(complex(v, 1.0)),
}


def _scalar_value(alpha: object) -> complex:
    """The number an accepted scalar stands for."""
    if isinstance(alpha, torch.Tensor):
        return complex(alpha.item())
    return complex(alpha.item() if isinstance(alpha, (np.generic, np.ndarray)) else alpha)  # type: ignore[arg-type]


def _expected_dtype(x: TensorTrain, alpha: object) -> torch.dtype:
    """torch's promotion of a core with the scalar (numpy scalars as the Python number they hold)."""
    operand = alpha.item() if isinstance(alpha, (np.generic, np.ndarray)) else alpha
    return torch.result_type(torch.empty(1, dtype=x.dtype), operand)  # type: ignore[arg-type]


@given(
    trains(canonical=st.booleans()),
    st.sampled_from(sorted(SCALAR_KINDS)),
    st.one_of(st.floats(1.0, 1e3), st.floats(-1e3, -1.0)),
)
def test_scalars_of_every_kind_multiply_and_divide_on_either_side(x: TensorTrain, kind: str, value: float) -> None:
    # Regression: x * np.int64(2) and np.float64(2) * x failed cryptically (numpy broadcast the train as an object
    # array), and a numpy complex scalar was cast to real.
    alpha = SCALAR_KINDS[kind](value)
    number = _scalar_value(alpha)
    fx = reference(x)
    dtype = _expected_dtype(x, alpha)
    atol = rtol(x) * abs(number) * float(torch.linalg.vector_norm(fx))
    for z in (x * alpha, alpha * x, scale(x, alpha)):  # type: ignore[operator]
        assert isinstance(z, TensorTrain) and z.ranks == x.ranks and z.center == x.center and z.dtype == dtype
        assert_dense_close(z.full(), fx * number, rtol=0.0, atol=atol + 1e-30)
    if number != 0:
        q = x / alpha
        assert q.ranks == x.ranks and q.center == x.center and q.dtype == dtype
        assert_dense_close(q.full(), fx / number, rtol=0.0, atol=atol / abs(number) ** 2 + 1e-30)


def test_a_zero_d_tensor_scalar_receives_a_gradient() -> None:
    x = TensorTrain.random((3, 4), 2, generator=generator(0), dtype=torch.float64)
    alpha = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    ((x * alpha).full().sum() + (alpha * x).full().sum() + (x / alpha).full().sum()).backward()
    s = float(x.full().sum())
    assert alpha.grad is not None and abs(float(alpha.grad) - (2 * s - s / 4)) <= 1e-12 * abs(s)


NON_SCALARS: list[object] = [
    torch.ones(3),
    torch.ones(1),
    np.ones(2),
    [1.0, 2.0],
    (2,),
    "2",
    None,
    {1: 2},
    np.array(["a"]),
]


@pytest.mark.parametrize("other", NON_SCALARS, ids=lambda o: type(o).__name__)
def test_non_scalar_operands_raise_a_type_error_naming_them(other: object) -> None:
    x = TensorTrain.random((3, 4), 2, generator=generator(0), dtype=torch.float64)
    kind = re.escape(type(other).__name__)
    scalar = r"\(a Python or numpy number, or a 0-d tensor\), got "
    with pytest.raises(TypeError, match=rf"other \(x \* other\): expected a TensorTrain or a scalar {scalar}{kind}"):
        x * other
    with pytest.raises(TypeError, match=rf"other \(other \* x\): expected a TensorTrain or a scalar {scalar}{kind}"):
        other * x  # type: ignore[operator]
    with pytest.raises(TypeError, match=rf"other \(x / other\): expected a scalar divisor {scalar}{kind}"):
        x / other
    with pytest.raises(TypeError, match=rf"alpha: expected a scalar {scalar}{kind}"):
        scale(x, other)  # type: ignore[arg-type]
    if isinstance(other, (torch.Tensor, np.ndarray)):  # arrays are described by shape and dtype
        with pytest.raises(TypeError, match=rf"of shape {re.escape(str(tuple(other.shape)))} and dtype"):
            x * other


def test_division_by_a_train_is_refused() -> None:
    x = TensorTrain.random((3, 4), 2, generator=generator(0), dtype=torch.float64)
    with pytest.raises(TypeError, match=r"other \(x / other\): expected a scalar divisor .* got TensorTrain"):
        x / x
