"""``tt_from_lowrank``: the TT of stacked low-rank slices, checked against the dense tensor it avoids."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import scaled
from hypothesis import given
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.tt import tt_svd
from tnadapt.tt.lowrank import stack_factors, tt_from_lowrank

F64 = torch.float64


def random_slices(seed, d_in, d_out, index_shape, ranks, dtype=F64, missing=()):
    """Per-slice factors with per-slice ranks (``ranks`` cycles); slices in ``missing`` are None."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(math.prod(index_shape)):
        r = ranks[k % len(ranks)]
        if k in missing:
            out.append(None)
            continue
        a = torch.randn(d_in, r, generator=g, dtype=F64).to(dtype)
        b = torch.randn(d_out, r, generator=g, dtype=F64).to(dtype)
        out.append((a, b))
    return out


def dense_stack(slices, d_in, d_out, index_shape):
    """The dense tensor ``X (D_in, *index_shape, D_out)`` (float64)."""
    mats = [torch.zeros(d_in, d_out, dtype=F64) if p is None else p[0].to(F64) @ p[1].to(F64).T for p in slices]
    return torch.stack(mats).reshape(*index_shape, d_in, d_out).movedim(-2, 0)


def per_slice_errors(full, ref, index_shape):
    diff = (full.to(F64) - ref).movedim(0, -2).reshape(math.prod(index_shape), -1)
    return torch.linalg.vector_norm(diff, dim=1).reshape(index_shape)


@pytest.mark.parametrize(
    "d_in, d_out, index_shape, ranks",
    [
        (7, 5, (4,), [2]),
        (12, 9, (3, 2), [1, 3, 2]),
        (6, 11, (2, 3, 2), [2]),
        (5, 4, (3, 2), [4]),  # K r > D on both ends: end bonds saturate at D
    ],
)
def test_exact_when_ranks_allow(d_in, d_out, index_shape, ranks):
    slices = random_slices(0, d_in, d_out, index_shape, ranks)
    ref = dense_stack(slices, d_in, d_out, index_shape)
    rep = tt_from_lowrank(slices, index_shape)
    full = testing.dense(rep.tt)
    assert rep.tt.shape == (d_in, *index_shape, d_out)
    assert float((full - ref).norm() / ref.norm()) < 1e-13
    assert float(rep.relative_error) < 1e-13
    assert torch.allclose(rep.slice_norms, per_slice_errors(ref, torch.zeros_like(ref), index_shape))
    testing.assert_canonical(rep.tt, len(index_shape), atol=1e-12)


def test_end_spectra_are_the_exact_schmidt_values():
    index_shape = (3, 2)
    slices = random_slices(1, 9, 8, index_shape, [2, 1])
    ref = dense_stack(slices, 9, 8, index_shape)
    rep = tt_from_lowrank(slices, index_shape, eps=1e-12)
    dense_spectra = testing.unfolding_singular_values(ref)
    for ours, theirs in ((rep.singular_values[0], dense_spectra[0]), (rep.singular_values[-1], dense_spectra[-1])):
        n = min(ours.shape[0], theirs.shape[0])
        assert torch.allclose(ours[:n], theirs[:n], atol=1e-12 * float(theirs[0]))
    # minimal ranks equal the numerical ranks of the dense unfoldings
    numerical = [int((s > 1e-10 * s[0]).sum()) for s in dense_spectra]
    assert list(rep.tt.ranks[1:-1]) == numerical


@pytest.mark.parametrize(
    "criteria", [{"max_rank": 3}, {"max_rank": [4, 2, 3]}, {"eps": 0.2}, {"cutoff": 1e-2}, {"max_rank": 2, "eps": 0.5}]
)
def test_truncated_errors_are_reported_exactly(criteria):
    index_shape = (4, 2)
    slices = random_slices(2, 10, 8, index_shape, [2, 3], missing={3})
    ref = dense_stack(slices, 10, 8, index_shape)
    rep = tt_from_lowrank(slices, index_shape, **criteria)
    full = testing.dense(rep.tt)
    true = per_slice_errors(full, ref, index_shape)
    assert torch.allclose(rep.slice_errors, true, rtol=1e-10, atol=1e-12)
    assert float(rep.error) == pytest.approx(float((full - ref).norm()), rel=1e-10)
    assert float(rep.slice_norms[1, 1]) == 0.0  # slice 3 is absent (zero)
    # never above the per-bond bound, and every cap respected
    assert float(rep.error) <= float(rep.discarded.norm()) * (1 + 1e-10) + 1e-12
    if "max_rank" in criteria:
        caps = criteria["max_rank"]
        caps = [caps] * 3 if isinstance(caps, int) else caps
        assert all(r <= c for r, c in zip(rep.tt.ranks[1:-1], caps))
    if "eps" in criteria and "max_rank" not in criteria:  # a binding cap overrides eps
        assert float(rep.relative_error) <= criteria["eps"] * (1 + 1e-10)


def test_quasi_optimal_against_dense_tt_svd():
    """With ``max_rank`` the error obeys Oseledets' bound ``sqrt(Σ best_k²)`` and is close to dense TT-SVD's."""
    index_shape = (3, 3)
    slices = random_slices(3, 12, 10, index_shape, [3])
    ref = dense_stack(slices, 12, 10, index_shape)
    for cap in (2, 4, 6):
        rep = tt_from_lowrank(slices, index_shape, max_rank=cap)
        best = testing.best_truncation_errors(ref, list(rep.tt.ranks[1:-1]))
        assert float(rep.error) <= float(best.norm()) * (1 + 1e-10)
        dense_err = float(tt_svd(ref, max_rank=cap).error)
        assert float(rep.error) <= 1.5 * dense_err + 1e-12


@given(
    seed=st.integers(0, 2**31 - 1),
    d_in=st.integers(1, 9),
    d_out=st.integers(1, 9),
    index_shape=st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple),
    rank=st.integers(1, 4),
    cap=st.one_of(st.none(), st.integers(1, 5)),
)
@scaled(0.5)
def test_property_matches_dense(seed, d_in, d_out, index_shape, rank, cap):
    slices = random_slices(seed, d_in, d_out, index_shape, [rank])
    ref = dense_stack(slices, d_in, d_out, index_shape)
    rep = tt_from_lowrank(slices, index_shape, max_rank=cap)
    full = testing.dense(rep.tt)
    true = per_slice_errors(full, ref, index_shape)
    scale = float(ref.norm()) + 1e-300
    assert float((rep.slice_errors - true).abs().max()) <= 1e-10 * scale
    if cap is None:
        assert float((full - ref).norm()) <= 1e-12 * scale


def test_mapping_input_and_absent_slices_are_zero():
    index_shape = (2, 3)
    slices = random_slices(4, 6, 5, index_shape, [2], missing={0, 4})
    mapping = {divmod(k, 3): p for k, p in enumerate(slices) if p is not None}
    ref = dense_stack(slices, 6, 5, index_shape)
    a = tt_from_lowrank(slices, index_shape)
    b = tt_from_lowrank(mapping, index_shape)
    assert torch.allclose(testing.dense(a.tt), ref, atol=1e-12)
    assert torch.allclose(testing.dense(b.tt), ref, atol=1e-12)
    one_mode = tt_from_lowrank({1: slices[1]}, (2,))
    assert torch.allclose(testing.dense(one_mode.tt)[:, 0], torch.zeros(6, 5, dtype=F64))


def test_float32_and_half_inputs():
    index_shape = (3, 2)
    slices = random_slices(5, 8, 6, index_shape, [2], dtype=torch.float32)
    ref = dense_stack(slices, 8, 6, index_shape)
    rep = tt_from_lowrank(slices, index_shape)
    assert rep.tt.dtype == torch.float32
    assert float((testing.dense(rep.tt).to(F64) - ref).norm() / ref.norm()) < 1e-5
    half = [(a.to(torch.bfloat16), b.to(torch.bfloat16)) for a, b in slices]
    assert tt_from_lowrank(half, index_shape).tt.dtype == torch.float32


def test_stack_factors_pads_ranks():
    slices = random_slices(6, 4, 3, (3,), [1, 3, 2])
    a, b, present = stack_factors(slices, (3,))
    assert a.shape == (3, 4, 3) and b.shape == (3, 3, 3) and bool(present.all())
    for k, (ak, bk) in enumerate(slices):
        assert torch.equal(a[k] @ b[k].T, ak @ bk.T)


@pytest.mark.parametrize(
    "factors, index_shape, match",
    [
        ([None, None], (2,), "every slice is None"),
        ([(torch.ones(3, 2), torch.ones(4, 2))], (2,), r"prod\(index_shape\) = 2"),
        ({(0, 5): (torch.ones(3, 2), torch.ones(4, 2))}, (2, 2), "not a valid index"),
        ([(torch.ones(3, 2), torch.ones(4, 3))], (1,), "same rank"),
        ([(torch.ones(3, 2), torch.ones(4, 2)), (torch.ones(5, 2), torch.ones(4, 2))], (2,), "expected A with 3 rows"),
        ([(torch.ones(3, 2, dtype=torch.int64), torch.ones(4, 2))], (1,), "real floating"),
        ([(torch.ones(3), torch.ones(4))], (1,), "2-D tensors"),
        ([(torch.ones(3, 2), torch.ones(4, 2))], (), "non-empty"),
    ],
)
def test_bad_input_is_named(factors, index_shape, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tt_from_lowrank(factors, index_shape)


def test_bad_criteria_are_named():
    slices = random_slices(7, 4, 3, (2,), [1])
    with pytest.raises(ValueError, match="max_rank"):
        tt_from_lowrank(slices, (2,), max_rank=[1, 2, 3])
    with pytest.raises(ValueError, match="eps"):
        tt_from_lowrank(slices, (2,), eps=-1.0)
    with pytest.raises(ValueError, match="min_rank"):
        tt_from_lowrank(slices, (2,), min_rank=0)
    bad = [(torch.full((4, 1), float("nan"), dtype=F64), torch.ones(3, 1, dtype=F64))] * 2
    with pytest.raises(ValueError, match="finite"):
        tt_from_lowrank(bad, (2,))


@pytest.mark.parametrize("factor", [1e-12, 1e12])
@pytest.mark.parametrize("criteria", [{"max_rank": 2}, {"eps": 0.3}, {"cutoff": 0.05}])
def test_tiny_and_huge_float32_factors(factor, criteria):
    # Slices A B^T of size ~1e-24 / 1e24: representable in float32, but their squares are not.
    # Regression: unscaled norms reported error 0 (tiny; eps then truncated nothing) or NaN (huge).
    index_shape = (4, 2)
    slices = random_slices(8, 9, 7, index_shape, [3], dtype=torch.float32)
    base = tt_from_lowrank(slices, index_shape, **criteria)
    big = tt_from_lowrank([(a * factor, b * factor) for a, b in slices], index_shape, **criteria)
    assert big.tt.ranks == base.tt.ranks
    assert float(base.relative_error) > 1e-2
    assert float(big.relative_error) == pytest.approx(float(base.relative_error), rel=1e-4)
    assert torch.allclose(big.slice_errors / factor**2, base.slice_errors, rtol=1e-4)
    assert torch.allclose(big.slice_norms / factor**2, base.slice_norms, rtol=1e-4)
    ref = dense_stack([(a * factor, b * factor) for a, b in slices], 9, 7, index_shape)
    measured = float((testing.dense(big.tt).to(F64) - ref).norm())
    assert float(big.error) == pytest.approx(measured, rel=1e-4)


@pytest.mark.parametrize("index_shape", [(4, 3), (2, 3, 2)])
@pytest.mark.parametrize("criteria", [{}, {"max_rank": 3}, {"eps": 0.3}, {"cutoff": 1e-2}])
def test_inner_bonds_by_sum_rounding_match_tt_svd(monkeypatch, index_shape, criteria):
    """Both ways of truncating the inner bonds (rounding the sum of slice trains, TT-SVD of the
    projected core) give the same ranks, the same discarded norms and the same exact slice errors."""
    import tnadapt.tt.lowrank as lowrank

    slices = random_slices(5, 9, 7, index_shape, [2, 1], missing={1})
    reports = {}
    for as_sum in (True, False):
        monkeypatch.setattr(lowrank, "_round_as_sum", lambda sum_rank, columns, as_sum=as_sum: as_sum)
        reports[as_sum] = tt_from_lowrank(slices, index_shape, **criteria)
    by_sum, by_svd = reports[True], reports[False]
    assert by_sum.tt.ranks == by_svd.tt.ranks
    assert torch.allclose(by_sum.discarded, by_svd.discarded, rtol=1e-9, atol=1e-12)
    assert torch.allclose(by_sum.slice_errors, by_svd.slice_errors, rtol=1e-9, atol=1e-12)
    assert torch.allclose(testing.dense(by_sum.tt), testing.dense(by_svd.tt), rtol=1e-9, atol=1e-12)
    testing.assert_canonical(by_sum.tt, len(index_shape), atol=1e-12)
