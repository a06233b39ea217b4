"""TT-cross and element-wise functions of trains, against dense references on known low-rank functions."""

from __future__ import annotations

import pytest
import torch
from _helpers import scaled
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.tt import TensorTrain, apply, cross, maxvol

shapes = st.lists(st.integers(2, 7), min_size=1, max_size=4)


def dense_of(fn, shape: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    grid = torch.cartesian_prod(*[torch.arange(n) for n in shape]).reshape(-1, len(shape))
    return fn(grid).reshape(shape)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def check(rep, fn, shape: list[int], tol: float) -> None:  # type: ignore[no-untyped-def]
    assert rep.tt.shape == tuple(shape)
    err = rel(rep.tt.full(), dense_of(fn, shape))
    assert rep.converged and rep.estimated_relative_error <= tol
    assert err <= 100 * tol
    assert rep.evaluations > 0


@given(shapes, st.integers(0, 2**31))
@scaled(0.5)
def test_cross_recovers_sums_of_separable_functions(shape: list[int], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    tables = [torch.randn(n, generator=g, dtype=torch.float64) for n in shape]

    def fn(i: torch.Tensor) -> torch.Tensor:
        return sum((t[i[:, k]] for k, t in enumerate(tables)), start=torch.zeros(i.shape[0], dtype=torch.float64)) + 3

    rep = cross(fn, shape, tol=1e-10, generator=seed)
    check(rep, fn, shape, 1e-10)
    assert max(rep.tt.ranks) <= max(2, max(shape))


@given(shapes, st.floats(1.0, 5.0))
@scaled(0.5)
def test_cross_recovers_the_hilbert_tensor(shape: list[int], shift: float) -> None:
    def fn(i: torch.Tensor) -> torch.Tensor:
        return 1.0 / (i.sum(1).double() + shift)

    check(cross(fn, shape, tol=1e-8), fn, shape, 1e-8)


def test_cross_on_a_larger_hilbert_tensor_uses_few_evaluations() -> None:
    shape = [16] * 6
    rep = cross(lambda i: 1.0 / (i.sum(1).double() + 1), shape, tol=1e-8)
    idx = torch.randint(0, 16, (2000, 6), generator=torch.Generator().manual_seed(1))
    from tnadapt.tt import gather

    ref = 1.0 / (idx.sum(1).double() + 1)
    assert rel(gather(rep.tt, idx), ref) <= 1e-6
    assert rep.evaluations < 16**6 // 10


def test_cross_stops_at_the_evaluation_budget() -> None:
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(8, 8, 8, 8, generator=g, dtype=torch.float64)
    rep = cross(lambda i: noise[i[:, 0], i[:, 1], i[:, 2], i[:, 3]], [8] * 4, tol=1e-12, max_rank=4, max_evals=3000)
    assert not rep.converged and rep.evaluations <= 3000 + 512 + 8 * 4 * 4 * 4


def sum_train(shape: list[int], seed: int, shift: float = 0.0) -> TensorTrain:
    """The rank-2 train of ``Σ_k a_k[i_k] + shift``."""
    g = torch.Generator().manual_seed(seed)
    a = [torch.rand(n, generator=g, dtype=torch.float64) for n in shape]
    a[0] = a[0] + shift
    d = len(shape)
    if d == 1:
        return TensorTrain([a[0].reshape(1, -1, 1)])
    cores = [torch.stack([a[0], torch.ones_like(a[0])], dim=1).reshape(1, -1, 2)]
    for k in range(1, d - 1):
        c = torch.zeros(2, shape[k], 2, dtype=torch.float64)
        c[0, :, 0] = 1
        c[1, :, 0] = a[k]
        c[1, :, 1] = 1
        cores.append(c)
    cores.append(torch.stack([torch.ones_like(a[-1]), a[-1]], dim=0).reshape(2, -1, 1))
    return TensorTrain(cores)


@given(shapes, st.integers(0, 2**31), st.sampled_from(["exp", "sqrt", "reciprocal", "callable"]))
@scaled(0.5)
def test_apply_matches_the_dense_elementwise_function(shape: list[int], seed: int, name: str) -> None:
    x = sum_train(shape, seed, shift=1.0)  # entries in [1, d + 1]: sqrt and 1/x are smooth there
    fn = {
        "exp": torch.exp,
        "sqrt": torch.sqrt,
        "reciprocal": torch.reciprocal,
        "callable": lambda v: torch.sin(v) / v,
    }[name]
    rep = apply(x, fn, tol=1e-9)
    expected = fn(x.full())
    assert rel(rep.tt.full(), expected) <= 1e-7
    assert rep.converged and rep.tt.dtype == x.dtype
    if name == "exp":  # exp of a sum of separable functions is separable: rank 1
        assert max(rep.tt.ranks) <= 2


def test_maxvol_picks_a_dominant_submatrix() -> None:
    a = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = maxvol(a)
    assert len(set(rows.tolist())) == 4
    assert float(torch.linalg.solve(a[rows], a, left=False).abs().max()) <= 1.05 + 1e-12


def test_cross_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match=r"shape: expected a non-empty sequence of positive mode sizes, got \[\]"):
        cross(lambda i: i.sum(1).double(), [])
    with pytest.raises(ValueError, match="max_rank: expected an int >= 1, got 0"):
        cross(lambda i: i.sum(1).double(), [3, 3], max_rank=0)
    with pytest.raises(ValueError, match="tol: expected a positive float, got 0"):
        cross(lambda i: i.sum(1).double(), [3, 3], tol=0)
    with pytest.raises(ValueError, match="fn: expected 512 values for a batch of that many indices, got 1"):
        cross(lambda i: torch.zeros(1), [3, 3])
    with pytest.raises(ValueError, match=r"a: expected a tall matrix \(m >= r\), got shape \(2, 3\)"):
        maxvol(torch.zeros(2, 3))
