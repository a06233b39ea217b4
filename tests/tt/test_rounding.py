"""TT-rounding: rank caps, eps bound, quasi-optimality, cutoff semantics, per-bond reports, hard inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _helpers import (
    as_float,
    dense_tt_svd_tails,
    extreme_scales,
    reference,
    rtol,
    scaled,
    trains,
    truncation_ranks,
)
from hypothesis import assume, given
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.testing import (
    assert_canonical,
    assert_dense_close,
    assert_tt_close,
    best_truncation_errors,
    gauge_transform,
    minimal_ranks,
    tensor_trains_with_spectra,
    tt_with_spectra,
    unfolding_singular_values,
)
from tnadapt.tt import TensorTrain, TruncationReport, round_tt


def dense_error(x: TensorTrain, y: TensorTrain) -> float:
    """``||x - y||`` measured densely in double precision."""
    return float(torch.linalg.vector_norm(reference(x) - reference(y)))


def dense_norm(x: TensorTrain) -> float:
    return float(torch.linalg.vector_norm(reference(x)))


def sweep_direction(rep: TruncationReport) -> str:
    """Rounding sweeps towards the end it finishes at (centre d-1: left to right)."""
    return "right" if rep.tt.center == rep.tt.order - 1 else "left"


def check_report(x: TensorTrain, rep: TruncationReport) -> float:
    """Properties every rounding report must have; returns the measured error.

    * ranks and the result's canonical form are as reported;
    * ``error`` (the root sum of squares of the per-bond discarded norms) equals the
      measured ``||x - round(x)||``;
    * the result's ranks are minimal (no bond exceeds what its neighbours can carry);
    * the per-bond discarded norms equal the tails of a dense sequential TT-SVD truncating
      to the same ranks, swept in the same direction (so each is the exact bond error);
    * each bond's reported discarded norm is the tail of its reported spectrum.
    """
    y = rep.tt
    d = x.order
    nx = dense_norm(x)
    tol = rtol(x) * nx
    assert y.dtype == x.dtype and y.shape == x.shape
    assert rep.ranks_before == x.ranks and rep.ranks_after == y.ranks
    assert rep.discarded.shape == (d - 1,) and len(rep.singular_values) == d - 1
    assert not rep.discarded.is_complex() and bool((rep.discarded >= 0).all())
    assert abs(as_float(rep.reference_norm) - nx) <= tol
    assert_canonical(y, atol=10 * rtol(x))
    assert y.ranks == minimal_ranks(y.shape, y.bond_dims)  # no redundant bond is left over
    err = dense_error(x, y)
    assert abs(as_float(rep.error) - err) <= tol
    used = truncation_ranks(rep.singular_values, rep.discarded)
    expected_tails = dense_tt_svd_tails(reference(x), used, sweep_direction(rep))
    gap = (rep.discarded.to(torch.float64) - expected_tails).abs()
    assert gap.numel() == 0 or float(gap.max()) <= tol
    # Each discarded norm is a tail of its spectrum, at the truncation rank (not the final rank,
    # which is lower where a redundant bond was dropped afterwards without changing the tensor).
    for k, (s, r) in enumerate(zip(rep.singular_values, used)):
        assert abs(as_float(torch.linalg.vector_norm(s[r:].to(torch.float64))) - as_float(rep.discarded[k])) <= tol
    return err


# ----------------------------------------------------------------------------- max_rank


@st.composite
def rank_caps(draw: st.DrawFn, order: int) -> int | list[int]:
    if draw(st.booleans()):
        return draw(st.integers(1, 4))
    return draw(st.lists(st.integers(1, 4), min_size=order - 1, max_size=order - 1))


@given(trains(canonical=st.booleans()), st.data())
def test_max_rank_is_never_exceeded_and_rounding_is_quasi_optimal(x: TensorTrain, data: st.DataObject) -> None:
    cap = data.draw(rank_caps(x.order), label="max_rank")
    caps = [cap] * (x.order - 1) if isinstance(cap, int) else cap
    rep = round_tt(x, max_rank=cap)
    assert all(r <= c for r, c in zip(rep.tt.bond_dims, caps))
    err = check_report(x, rep)
    # Oseledets: ||x - round(x, r)|| <= sqrt(sum_k best_k^2), best_k the error of the best rank-r_k
    # approximation of unfolding k (dense SVD), r_k the requested caps (the final ranks may be lower).
    best = best_truncation_errors(reference(x), caps)
    assert err <= float(torch.linalg.vector_norm(best)) + rtol(x) * dense_norm(x)
    # ... and no bond can do better than its own optimum at the rank it kept.
    kept = best_truncation_errors(reference(x), rep.tt.bond_dims)
    assert bool((rep.discarded.to(torch.float64) <= kept + rtol(x) * dense_norm(x)).all())
    assert x.round(max_rank=cap).ranks == rep.tt.ranks


@given(trains(), st.data())
def test_rounding_to_max_rank_is_idempotent(x: TensorTrain, data: st.DataObject) -> None:
    cap = data.draw(rank_caps(x.order), label="max_rank")
    y = x.round(max_rank=cap)
    z = round_tt(y, max_rank=cap)
    assert z.tt.ranks == y.ranks
    assert_tt_close(z.tt, y)
    assert as_float(z.error) <= rtol(x) * dense_norm(y)


@given(trains(minimal=True))
def test_rounding_is_exact_when_ranks_are_already_minimal(x: TensorTrain) -> None:
    for rep in (round_tt(x), round_tt(x, max_rank=list(x.bond_dims) or None)):
        assert rep.tt.ranks == x.ranks
        assert_tt_close(rep.tt, x)
        assert as_float(rep.error) <= rtol(x) * dense_norm(x)


@given(trains(dtypes=[torch.float64, torch.complex128]), st.integers(1, 3))
def test_rounding_is_gauge_invariant(x: TensorTrain, cap: int) -> None:
    # Needs a clear gap at each cut, otherwise the kept subspace is not unique.
    gaps = unfolding_singular_values(reference(x))
    assume(all(len(s) <= cap or float(s[cap - 1] - s[cap]) > 1e-3 * float(s[0]) for s in gaps))
    y = gauge_transform(x, generator=torch.Generator().manual_seed(2))
    assert_tt_close(round_tt(y, max_rank=cap).tt, round_tt(x, max_rank=cap).tt, rtol=1e-6)


# ----------------------------------------------------------------------------- eps and cutoff

EPS = {torch.float32: [1e-1, 1e-2, 1e-3], torch.float64: [1e-1, 1e-4, 1e-8]}


def _eps_for(x: TensorTrain) -> st.SearchStrategy[float]:
    return st.sampled_from(EPS[x.dtype.to_real() if x.dtype.is_complex else x.dtype])


def _tail(s: torch.Tensor, r: int) -> float:
    return float(torch.linalg.vector_norm(s[r:].to(torch.float64)))


@given(trains(canonical=st.booleans()), st.data())
def test_eps_bound_holds_and_each_rank_is_the_smallest_within_budget(x: TensorTrain, data: st.DataObject) -> None:
    eps = data.draw(_eps_for(x), label="eps")
    rep = round_tt(x, eps=eps)
    err = check_report(x, rep)
    nx = dense_norm(x)
    assert err <= eps * nx + rtol(x) * nx
    if x.order > 1:
        budget = eps * as_float(rep.reference_norm) / math.sqrt(x.order - 1)
        for k, (s, r) in enumerate(zip(rep.singular_values, rep.tt.bond_dims)):
            assert as_float(rep.discarded[k]) <= budget * (1 + 1e-6)
            if r > 1:  # one fewer would exceed the budget
                assert _tail(s, r - 1) > budget * (1 - 1e-6)


@given(trains(canonical=st.booleans()), st.sampled_from([1e-1, 1e-2, 1e-4]))
def test_cutoff_bounds_the_relative_discarded_weight_per_bond(x: TensorTrain, cutoff: float) -> None:
    rep = round_tt(x, cutoff=cutoff)
    check_report(x, rep)
    for k, (s, r) in enumerate(zip(rep.singular_values, rep.tt.bond_dims)):
        total = _tail(s, 0) ** 2
        assert as_float(rep.discarded[k]) ** 2 <= cutoff * total * (1 + 1e-6) + 1e-300
        if r > 1:
            assert _tail(s, r - 1) ** 2 > cutoff * total * (1 - 1e-6)


@given(trains(), st.data())
def test_criteria_combine_rank_is_smallest_satisfying_all(x: TensorTrain, data: st.DataObject) -> None:
    eps = data.draw(_eps_for(x), label="eps")
    cap = data.draw(st.integers(1, 4), label="max_rank")
    floor = data.draw(st.integers(1, 4), label="min_rank")
    rep = round_tt(x, eps=eps, max_rank=cap, min_rank=floor)
    check_report(x, rep)
    alone = round_tt(x, eps=eps)
    for k, r in enumerate(rep.tt.bond_dims):
        available = len(rep.singular_values[k])
        assert r <= cap
        assert r >= min(floor, cap, available)
        if floor <= r < cap:  # neither bound was active: eps decided
            budget = eps * as_float(rep.reference_norm) / math.sqrt(x.order - 1)
            assert as_float(rep.discarded[k]) <= budget * (1 + 1e-6)
    if floor == 1 and cap >= 4:
        assert rep.tt.ranks == alone.tt.ranks


@given(trains(minimal=True))
def test_rounding_x_plus_x_returns_to_the_ranks_of_x(x: TensorTrain) -> None:
    eps = 1e-4 if x.dtype in (torch.float32, torch.complex64) else 1e-9
    # Needs every Schmidt value of x well above the per-bond budget (a generic train).
    spectra_ = unfolding_singular_values(reference(x))
    nx = dense_norm(x)
    assume(all(float(s[r - 1]) > 100 * eps * nx for s, r in zip(spectra_, x.bond_dims)))
    y = round_tt(x + x, eps=eps)
    assert y.tt.ranks == x.ranks
    assert_tt_close(y.tt, 2 * x, rtol=eps + rtol(x))


# ----------------------------------------------------------------------------- known spectra


@given(tensor_trains_with_spectra(orders=range(2, 6)), st.data())
def test_max_rank_error_is_exact_for_known_spectra(ex: testing.TTWithSpectra, data: st.DataObject) -> None:
    x, spectra_ = ex
    caps = [data.draw(st.integers(1, len(s)), label=f"cap{k}") for k, s in enumerate(spectra_)]
    rep = round_tt(x, max_rank=caps)
    assert rep.tt.bond_dims == tuple(caps)
    check_report(x, rep)
    # The bonds of tt_with_spectra are independent: the kept weight multiplies across bonds.
    kept = math.prod(1 - (_tail(s, r) / _tail(s, 0)) ** 2 for s, r in zip(spectra_, caps))
    expected = math.sqrt(max(1 - kept, 0.0))
    assert abs(dense_error(x, rep.tt) - expected) <= 10 * rtol(x)


@pytest.mark.parametrize(
    ("dtype", "spectrum"),
    [
        (torch.float64, [1.0, 1e-3, 1e-6, 1e-9]),
        (torch.complex128, [1.0, 1e-3, 1e-6, 1e-9]),
        (torch.float32, [1.0, 1e-2, 1e-4]),
        (torch.complex64, [1.0, 1e-2, 1e-4]),
    ],
)
@pytest.mark.parametrize("order", [2, 3, 4])
def test_geometric_spectra_recover_the_right_ranks_at_matching_eps(
    dtype: torch.dtype, spectrum: list[float], order: int
) -> None:
    x = tt_with_spectra([spectrum] * (order - 1), generator=torch.Generator().manual_seed(order), dtype=dtype)
    s = torch.tensor(spectrum, dtype=torch.float64)
    s = s / torch.linalg.vector_norm(s)
    for target in range(1, len(spectrum) + 1):
        # Per-bond budget eps/sqrt(d-1) halfway (geometrically) between the tails at target and target-1.
        hi = _tail(s, target - 1)
        lo = max(_tail(s, target), hi * 1e-3)
        eps = math.sqrt(hi * lo) * math.sqrt(order - 1)
        rep = round_tt(x, eps=eps)
        assert rep.tt.bond_dims == (target,) * (order - 1), (target, eps)
        assert dense_error(x, rep.tt) <= eps + rtol(dtype)
        check_report(x, rep)
        cut = round_tt(x, cutoff=(hi * lo))  # same threshold in cutoff (squared, relative) terms
        assert cut.tt.bond_dims == (target,) * (order - 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128, torch.float32])
def test_degenerate_spectra(dtype: torch.dtype) -> None:
    spectrum = [1.0, 1.0, 1e-3, 1e-3]
    x = tt_with_spectra([spectrum, spectrum], generator=torch.Generator().manual_seed(3), dtype=dtype)
    # A cut between the two clusters is unambiguous.
    rep = round_tt(x, eps=1e-2)
    assert rep.tt.bond_dims == (2, 2)
    check_report(x, rep)
    # A cut inside a cluster: any choice is optimal; the error and report are still exact.
    rep1 = round_tt(x, max_rank=[1, 3])
    assert rep1.tt.bond_dims == (1, 3)
    err = dense_error(x, rep1.tt)
    assert abs(as_float(rep1.error) - err) <= rtol(dtype)
    best = best_truncation_errors(reference(x), [1, 3])
    assert err <= float(torch.linalg.vector_norm(best)) + rtol(dtype)


# ----------------------------------------------------------------------------- hard inputs


@given(trains(orders=range(1, 6), dtypes=testing.DTYPES), st.data())
def test_tiny_and_huge_norms_round_like_unit_norms(x: TensorTrain, data: st.DataObject) -> None:
    factor = data.draw(extreme_scales(x.dtype), label="factor")
    eps = 1e-2
    base = round_tt(x, eps=eps)
    big = round_tt(x * factor, eps=eps)
    assert big.tt.ranks == base.tt.ranks
    assert math.isfinite(as_float(big.reference_norm)) and as_float(big.reference_norm) > 0
    assert abs(as_float(big.relative_error) - as_float(base.relative_error)) <= 10 * rtol(x)
    assert_tt_close(big.tt * (1 / factor), base.tt, rtol=10 * rtol(x))
    nx = dense_norm(x) * factor
    assert abs(as_float(big.tt.norm()) - as_float(base.tt.norm()) * factor) <= 10 * rtol(x) * nx


@pytest.mark.parametrize("dtype", testing.DTYPES)
@pytest.mark.parametrize("shape", [(3,), (2, 3), (3, 1, 4, 2)])
def test_zero_tensor_rounds_to_rank_one(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    z = TensorTrain.zeros(shape, 3, dtype=dtype)
    assert float(z.norm()) == 0.0
    for kwargs in ({"eps": 1e-3}, {"cutoff": 1e-3}, {"max_rank": 1}):
        rep = round_tt(z, **kwargs)
        assert rep.tt.ranks == (1,) * (len(shape) + 1), kwargs
        assert bool((rep.tt.full() == 0).all())
        assert float(rep.error) == 0.0 and float(rep.relative_error) == 0.0
        assert float(rep.tt.norm()) == 0.0


@given(trains(orders=range(2, 6), dtypes=testing.REAL_DTYPES), st.sampled_from([torch.float16, torch.bfloat16]))
@scaled(0.5)
def test_low_precision_rounding_upcasts_and_returns_the_input_dtype(x: TensorTrain, low: torch.dtype) -> None:
    y = x.to(low)
    rep = round_tt(y, max_rank=2)
    assert rep.tt.dtype == low and all(r <= 2 for r in rep.tt.ranks)
    ref = reference(y)
    best = best_truncation_errors(ref, rep.tt.bond_dims)
    err = float(torch.linalg.vector_norm(ref - reference(rep.tt)))
    assert err <= float(torch.linalg.vector_norm(best)) + 2 * rtol(low) * float(torch.linalg.vector_norm(ref))
    assert_dense_close(round_tt(y, eps=1e-1).tt.full(), ref, rtol=0.1 + 2 * rtol(low))


def test_round_method_and_function_agree() -> None:
    x = TensorTrain.random((4, 3, 5, 2), 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = x.round(eps=1e-2, max_rank=3, cutoff=1e-6, min_rank=2)
    b = round_tt(x, eps=1e-2, max_rank=3, cutoff=1e-6, min_rank=2).tt
    assert all(torch.equal(p, q) for p, q in zip(a.cores, b.cores))


def test_rank_caps_accept_numpy_and_tensor_integers() -> None:
    x = TensorTrain.random((4, 3, 5), 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = x.round(max_rank=2).ranks
    for cap in (np.int64(2), torch.tensor(2), [np.int32(2), 2], torch.tensor([2, 2]), np.array([2, 2])):
        assert x.round(max_rank=cap).ranks == expected, cap


def test_redundant_ranks_are_dropped_without_losing_accuracy() -> None:
    # Cutting bond 1 to rank 1 leaves bond 0 (n_1 = 1) unable to carry rank 2: the result
    # must come out minimal, and exactly as accurate as the plain sequential truncation.
    x = TensorTrain.random((2, 1, 1, 1, 2), 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    rep = round_tt(x, max_rank=[2, 1, 1, 1])
    assert rep.tt.ranks == (1, 1, 1, 1, 1, 1)
    assert_canonical(rep.tt)
    tails = dense_tt_svd_tails(reference(x), [2, 1, 1, 1], "right")
    assert abs(dense_error(x, rep.tt) - float(torch.linalg.vector_norm(tails))) <= 1e-12
    again = round_tt(rep.tt, max_rank=[2, 1, 1, 1])
    assert again.tt.ranks == rep.tt.ranks
