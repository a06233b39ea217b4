"""Randomized rounding and sum rounding: error reports vs dense, eps guarantee, ranks, seeds, validation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _helpers import as_float, reference, rtol, scaled, trains
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.testing import assert_canonical, assert_tt_close
from tnadapt.tt import TensorTrain, round_sum, round_tt

WIDE = [torch.float64, torch.complex128]


def dense_norm(x: TensorTrain) -> float:
    return float(torch.linalg.vector_norm(reference(x)))


def dense_sum(xs: list[TensorTrain]) -> torch.Tensor:
    return sum((reference(x) for x in xs[1:]), start=reference(xs[0]))


@st.composite
def summands(draw: st.DrawFn, dtypes: list[torch.dtype] = WIDE) -> list[TensorTrain]:
    """2..4 trains of one shape and dtype (independent random cores)."""
    first = draw(trains(orders=range(1, 6), dtypes=dtypes, max_numel=1024))
    count = draw(st.integers(1, 3))
    seeds = draw(st.lists(st.integers(0, 2**31), min_size=count, max_size=count))
    ranks = draw(st.lists(st.integers(1, 4), min_size=count, max_size=count))
    rest = [
        TensorTrain.random(first.shape, r, generator=torch.Generator().manual_seed(s), dtype=first.dtype)
        for s, r in zip(seeds, ranks)
    ]
    return [first, *rest]


def check_round(x: TensorTrain, rep, tol: float) -> float:  # type: ignore[no-untyped-def]
    """The reported error matches the dense error; shapes, ranks and reference norm as reported."""
    y = rep.tt
    assert y.shape == x.shape and y.dtype == x.dtype and rep.ranks_after == y.ranks
    assert rep.discarded.shape == (max(x.order - 1, 0),) and not rep.discarded.is_complex()
    err = float(torch.linalg.vector_norm(reference(x) - reference(y)))
    assert abs(as_float(rep.error) - err) <= tol
    assert abs(as_float(rep.reference_norm) - dense_norm(x)) <= tol
    return err


# ----------------------------------------------------------------------------- round_tt(method="randomized")


@given(trains(canonical=st.booleans()), st.integers(1, 4), st.integers(0, 4), st.integers(0, 2**31))
@scaled(0.5)
def test_randomized_max_rank_reports_the_exact_error(x: TensorTrain, cap: int, oversample: int, seed: int) -> None:
    rep = round_tt(x, max_rank=cap, method="randomized", oversample=oversample, generator=seed)
    assert all(r <= cap for r in rep.tt.bond_dims)
    assert_canonical(rep.tt, x.order - 1, atol=10 * rtol(x))
    check_round(x, rep, 10 * rtol(x) * dense_norm(x))


@given(trains(canonical=st.booleans()), st.sampled_from([1e-1, 1e-3, 1e-6]), st.integers(0, 2**31))
@scaled(0.5)
def test_randomized_eps_guarantee_holds(x: TensorTrain, eps: float, seed: int) -> None:
    eps = max(eps, 100 * rtol(x))
    rep = round_tt(x, eps=eps, method="randomized", oversample=1, generator=seed)
    nx = dense_norm(x)
    err = check_round(x, rep, 10 * rtol(x) * nx)
    assert err <= eps * nx + 10 * rtol(x) * nx
    assert as_float(rep.error) <= eps * as_float(rep.reference_norm) * (1 + 1e-6)


@given(trains(dtypes=WIDE, minimal=True))
@scaled(0.3)
def test_randomized_keeps_a_minimal_train_when_uncapped(x: TensorTrain) -> None:
    caps = list(x.bond_dims) or None
    rep = round_tt(x, max_rank=caps or 1, method="randomized")
    if caps:
        assert rep.tt.ranks == x.ranks
    assert_tt_close(rep.tt, x, rtol=1e-8)


@given(trains(dtypes=WIDE), st.integers(1, 3), st.integers(0, 2**31))
@scaled(0.3)
def test_randomized_rounding_is_reproducible_with_a_seed(x: TensorTrain, cap: int, seed: int) -> None:
    a = round_tt(x, max_rank=cap, method="randomized", generator=torch.Generator().manual_seed(seed))
    b = round_tt(x, max_rank=cap, method="randomized", generator=seed)
    assert all(torch.equal(p, q) for p, q in zip(a.tt.cores, b.tt.cores))
    assert torch.equal(a.discarded, b.discarded)
    c = x.round(max_rank=cap, method="randomized", generator=seed)
    assert all(torch.equal(p, q) for p, q in zip(a.tt.cores, c.cores))


# ----------------------------------------------------------------------------- round_sum


@given(summands(dtypes=[torch.float32, torch.float64, torch.complex128]), st.data())
@scaled(0.5)
def test_deterministic_round_sum_equals_rounding_the_formed_sum(xs: list[TensorTrain], data: st.DataObject) -> None:
    options: list[dict[str, Any]] = [{}, {"max_rank": 2}, {"eps": 1e-2}, {"cutoff": 1e-4}, {"max_rank": 3, "eps": 1e-6}]
    kw = data.draw(st.sampled_from(options))
    formed = xs[0]
    for x in xs[1:]:
        formed = formed + x
    rep = round_sum(xs, **kw)
    ref = round_tt(formed, **kw)
    tol = 10 * rtol(formed) * dense_norm(formed)
    assert rep.ranks_before == formed.ranks
    err = check_round(formed, rep, tol)
    assert abs(err - as_float(ref.error)) <= tol
    assert rep.tt.ranks == ref.tt.ranks or kw.get("max_rank") is None  # tolerance ties may differ by round-off
    assert_canonical(rep.tt, rep.tt.order - 1, atol=10 * rtol(formed))
    if "eps" in kw and "max_rank" not in kw:
        assert err <= kw["eps"] * dense_norm(formed) + tol


@given(summands(), st.integers(1, 4), st.integers(0, 2**31))
@scaled(0.5)
def test_randomized_round_sum_to_max_rank_reports_the_error(xs: list[TensorTrain], cap: int, seed: int) -> None:
    rep = round_sum(xs, max_rank=cap, method="randomized", oversample=2, generator=seed)
    assert all(r <= cap for r in rep.tt.bond_dims)
    scale = sum(dense_norm(x) ** 2 for x in xs) ** 0.5
    # Gram-based sketch errors: absolute accuracy ~ sqrt(u) times the summands' norms.
    y = reference(rep.tt)
    err = float(torch.linalg.vector_norm(dense_sum(xs) - y))
    assert abs(as_float(rep.error) - err) <= 1e-6 * scale
    assert abs(as_float(rep.reference_norm) - float(torch.linalg.vector_norm(dense_sum(xs)))) <= 1e-6 * scale


@given(summands(), st.sampled_from([1e-1, 1e-3, 1e-7, 1e-12]), st.integers(0, 2**31))
@scaled(0.5)
def test_randomized_round_sum_eps_guarantee_holds(xs: list[TensorTrain], eps: float, seed: int) -> None:
    rep = round_sum(xs, eps=eps, method="randomized", oversample=1, generator=seed)
    target = dense_sum(xs)
    nx = float(torch.linalg.vector_norm(target))
    err = float(torch.linalg.vector_norm(target - reference(rep.tt)))
    assert err <= eps * nx + 1e-12 * sum(dense_norm(x) for x in xs)
    assert rep.ranks_before == (1, *[sum(x.ranks[k] for x in xs) for k in range(1, xs[0].order)], 1)


def test_randomized_round_sum_is_reproducible_and_agrees_with_round_tt_for_one_train() -> None:
    g = torch.Generator().manual_seed(3)
    xs = [TensorTrain.random((4, 5, 4, 3), 3, generator=g, dtype=torch.float64) for _ in range(3)]
    a = round_sum(xs, max_rank=2, method="randomized", generator=7)
    b = round_sum(xs, max_rank=2, method="randomized", generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(p, q) for p, q in zip(a.tt.cores, b.tt.cores))
    one = round_sum(xs[:1], eps=1e-10, method="randomized")
    assert_tt_close(one.tt, xs[0], rtol=1e-9)


# ----------------------------------------------------------------------------- validation


def test_randomized_arguments_are_validated() -> None:
    x = TensorTrain.random((3, 3, 3), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="method: expected 'deterministic' or 'randomized', got 'svd'"):
        round_tt(x, max_rank=1, method="svd")
    with pytest.raises(ValueError, match="cutoff: not supported with method='randomized'"):
        round_tt(x, cutoff=1e-3, method="randomized")
    with pytest.raises(ValueError, match="needs max_rank or eps, got neither"):
        round_tt(x, method="randomized")
    with pytest.raises(ValueError, match="oversample: expected an int >= 0, got -1"):
        round_tt(x, max_rank=1, method="randomized", oversample=-1)
    with pytest.raises(TypeError, match=r"generator: expected a torch\.Generator, an int seed or None, got str"):
        round_tt(x, max_rank=1, method="randomized", generator="0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trains: expected at least one TensorTrain, got an empty sequence"):
        round_sum([])
    with pytest.raises(TypeError, match=r"trains\[1\]: expected a TensorTrain, got int"):
        round_sum([x, 1])  # type: ignore[list-item]
    y = TensorTrain.random((3, 3, 4), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="shapes differ"):
        round_sum([x, y])
    with pytest.raises(ValueError, match="method: expected 'deterministic' or 'randomized', got 'x'"):
        round_sum([x, x], method="x")
    with pytest.raises(ValueError, match="cutoff: not supported with method='randomized'"):
        round_sum([x, x], cutoff=1e-3, method="randomized")
