"""The public property-testing toolkit (:mod:`tnadapt.testing`) keeps the promises the other tests rely on."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import generator, reference, scaled
from hypothesis import given
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.testing import (
    assert_canonical,
    assert_dense_close,
    assert_tt_close,
    best_truncation_errors,
    gauge_transform,
    minimal_ranks,
    tensor_trains,
    tensor_trains_with_spectra,
    tt_with_spectra,
    unfolding_singular_values,
)
from tnadapt.tt import TensorTrain


@given(
    tensor_trains(
        orders=range(3, 5),
        mode_sizes=range(3, 6),
        ranks=range(6, 8),
        dtypes=torch.complex64,
        max_numel=10_000,
        canonical=st.booleans(),
    )
)
def test_tensor_trains_respect_their_parameters(x: TensorTrain) -> None:
    # Ranges that exclude the defaults' values, so a strategy that ignored a parameter fails here.
    assert x.order in (3, 4) and all(3 <= n <= 5 for n in x.shape)
    assert x.dtype == torch.complex64 and x.device.type == "cpu"
    if x.center is None:  # not minimal: ranks above what the modes support stay
        assert all(r in (6, 7) for r in x.bond_dims)
    else:  # the orthogonalising QRs can only drop redundant rank
        assert all(r <= 7 for r in x.bond_dims)
        assert_canonical(x, atol=10 * testing.default_rtol(x.dtype))


@given(tensor_trains(orders=range(3, 5), mode_sizes=range(4, 6), max_numel=30))
def test_tensor_trains_shrink_modes_to_max_numel(x: TensorTrain) -> None:
    # 4^3 = 64 > 30 already: the modes are always reduced, never below 1.
    assert x.numel_dense <= 30 and min(x.shape) >= 1 and min(x.shape) < 4


@given(tensor_trains(orders=range(1, 6), ranks=range(1, 8), dtypes=torch.float64, minimal=True))
def test_minimal_trains_have_minimal_ranks(x: TensorTrain) -> None:
    assert x.ranks == minimal_ranks(x.shape, x.bond_dims)
    # ... and they are minimal in fact: every unfolding has full rank r_k (generic Gaussian cores).
    for s, r in zip(unfolding_singular_values(reference(x)), x.bond_dims):
        assert len(s) >= r and float(s[r - 1]) > 1e-10 * float(s[0])


@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.data())
def test_minimal_ranks_are_the_largest_feasible(shape: list[int], data: st.DataObject) -> None:
    ranks = data.draw(st.lists(st.integers(1, 40), min_size=len(shape) - 1, max_size=len(shape) - 1))
    got = minimal_ranks(shape, ranks)
    assert got[0] == got[-1] == 1 and all(g <= r for g, r in zip(got[1:-1], ranks))
    for k in range(1, len(shape)):
        assert got[k] <= got[k - 1] * shape[k - 1] and got[k] <= shape[k] * got[k + 1]
    # Maximal: no bond can grow (within its request) without breaking a neighbour's bound.
    for k in range(1, len(shape)):
        if got[k] < ranks[k - 1]:
            assert got[k] + 1 > got[k - 1] * shape[k - 1] or got[k] + 1 > shape[k] * got[k + 1]


@given(tensor_trains_with_spectra(orders=range(2, 6), norms=st.sampled_from([1.0, 1e-3, 50.0])))
@scaled(0.5)
def test_tensor_trains_with_spectra_have_exactly_those_spectra(ex: testing.TTWithSpectra) -> None:
    x, spectra = ex
    assert len(spectra) == x.order - 1 and x.bond_dims == tuple(len(s) for s in spectra)
    tol = 10 * testing.default_rtol(x.dtype)
    norm = float(torch.linalg.vector_norm(spectra[0]))
    for s, dense_s in zip(spectra, unfolding_singular_values(x.full())):
        # The prescribed values, then zeros: the bond's unfolding has exactly rank len(s).
        assert_dense_close(dense_s[: len(s)], s, rtol=tol)
        assert all(float(v) <= tol * norm for v in dense_s[len(s) :])
        assert math.isclose(float(torch.linalg.vector_norm(s)), norm, rel_tol=1e-12)


@given(testing.spectra(max_len=6, ratios=(1e-1, 1e-3)))
def test_spectra_are_descending_positive_and_start_at_one(s: torch.Tensor) -> None:
    assert s.dtype == torch.float64 and float(s[0]) == 1.0
    assert bool((s >= 1e-3**5).all()) and bool((s[:-1] >= s[1:]).all())  # positive down to q_min^(n-1)


@given(testing.spectra(max_len=4, min_len=2, kinds=["geometric"], ratios=(1e-1, 1e-3)))
def test_geometric_spectra_follow_one_of_the_ratios(s: torch.Tensor) -> None:
    assert 2 <= len(s) <= 4
    q = float(s[1])
    assert q in (1e-1, 1e-3)
    assert_dense_close(s, torch.tensor([q**j for j in range(len(s))], dtype=torch.float64), rtol=1e-14)


def test_tt_with_spectra_norm_and_mode_sizes() -> None:
    x = tt_with_spectra([[3.0, 4.0]], mode_sizes=[5, 2], norm=7.0, generator=generator(0))
    assert x.shape == (5, 2) and x.ranks == (1, 2, 1)
    assert math.isclose(float(torch.linalg.vector_norm(x.full())), 7.0, rel_tol=1e-12)
    assert_dense_close(unfolding_singular_values(x.full())[0], torch.tensor([5.6, 4.2], dtype=torch.float64))


@given(tensor_trains(orders=range(2, 5), dtypes=[torch.float64, torch.complex128]), st.integers(0, 2**32 - 1))
def test_gauge_transform_changes_every_bond_but_not_the_tensor(x: TensorTrain, seed: int) -> None:
    y = gauge_transform(x, generator=generator(seed), condition=100.0)
    assert y.ranks == x.ranks and y.dtype == x.dtype
    assert_dense_close(y.full(), reference(x), rtol=1e-9)
    for k in range(x.order - 1):  # the bond matrix G_k -> G_k A_k really changes
        assert not torch.allclose(y.cores[k], x.cores[k])


@given(tensor_trains(orders=range(1, 5), dtypes=testing.DTYPES), st.sampled_from([0.25, 4.0]))
def test_assert_tt_close_honours_rtol(x: TensorTrain, ratio: float) -> None:
    tol = 1e-2 * ratio
    nx = float(torch.linalg.vector_norm(reference(x)))
    delta = TensorTrain.random(x.shape, 1, generator=generator(0), dtype=x.dtype)
    delta = delta * (1e-2 * nx / float(torch.linalg.vector_norm(reference(delta))))  # ||delta|| = 1e-2 ||x||
    y = x + delta
    bound = tol * max(nx, float(torch.linalg.vector_norm(reference(y))))
    if 1e-2 * nx <= 0.99 * bound:
        assert_tt_close(y, x, rtol=tol)
    elif 1e-2 * nx >= 1.01 * bound:
        with pytest.raises(AssertionError, match="tensor trains differ"):
            assert_tt_close(y, x, rtol=tol)


@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_best_truncation_errors_are_the_dense_svd_tails(shape: list[int], seed: int, rank: int) -> None:
    a = torch.randn(*shape, generator=generator(seed), dtype=torch.float64)
    best = best_truncation_errors(a, [rank] * (len(shape) - 1))
    for k in range(len(shape) - 1):
        mat = a.reshape(math.prod(shape[: k + 1]), -1)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        approx = (u[:, :rank] * s[:rank]) @ vh[:rank]  # Eckart-Young: the best rank-r approximation
        assert math.isclose(float(best[k]), float(torch.linalg.vector_norm(mat - approx)), rel_tol=1e-9, abs_tol=1e-12)
