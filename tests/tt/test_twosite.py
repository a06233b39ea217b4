"""Two-site merge/split and the DMRG-style sweep (MetaTT Algorithm 1)."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import as_float, dense_tt_svd_tails, extreme_scales, reference, rtol, scaled, trains
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.testing import (
    assert_canonical,
    assert_dense_close,
    assert_left_orthonormal,
    assert_right_orthonormal,
    assert_tt_close,
    best_truncation_errors,
    tt_with_spectra,
)
from tnadapt.tt import SweepReport, TensorTrain, dmrg_sweep, merge, replace_two_site, round_tt, split


def dense_error(x: TensorTrain, y: TensorTrain) -> float:
    return float(torch.linalg.vector_norm(reference(x) - reference(y)))


def dense_norm(x: TensorTrain) -> float:
    return float(torch.linalg.vector_norm(reference(x)))


def two_site(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.einsum("aib,bjc->aijc", a, b)


@given(trains(orders=range(2, 8), canonical=st.booleans()), st.data())
def test_merge_is_the_two_site_product(x: TensorTrain, data: st.DataObject) -> None:
    k = data.draw(st.integers(-(x.order - 1), x.order - 2), label="k")
    w = merge(x, k)
    kk = k % (x.order - 1)
    assert w.shape == (x.ranks[kk], x.shape[kk], x.shape[kk + 1], x.ranks[kk + 2])
    assert_dense_close(w, two_site(x.cores[kk], x.cores[kk + 1]), rtol=rtol(x))
    assert torch.equal(x.merge(k), w)


@given(trains(orders=range(2, 8), canonical=st.booleans()), st.data())
def test_merge_then_split_without_truncation_is_exact(x: TensorTrain, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, x.order - 2), label="k")
    absorb = data.draw(st.sampled_from(["left", "right", "both"]), label="absorb")
    w = merge(x, k)
    left, right, t = split(w, absorb=absorb)
    r0, n0, n1, r2 = w.shape
    assert t.rank == min(r0 * n0, n1 * r2) and left.shape == (r0, n0, t.rank) and right.shape == (t.rank, n1, r2)
    assert float(t.discarded) == 0.0
    assert_dense_close(two_site(left, right), w, rtol=rtol(x))
    # Where the singular values went.
    probe = TensorTrain([left.reshape(1, r0 * n0, t.rank), right.reshape(t.rank, n1 * r2, 1)])
    if absorb == "right":
        assert_left_orthonormal(probe, 0, atol=10 * rtol(x))
    elif absorb == "left":
        assert_right_orthonormal(probe, 1, atol=10 * rtol(x))
    else:  # U sqrt(S) and sqrt(S) Vh: both Gram matrices are diag(S)
        s = t.S.to(torch.float64)
        gl = left.reshape(-1, t.rank).mH @ left.reshape(-1, t.rank)
        gr = right.reshape(t.rank, -1) @ right.reshape(t.rank, -1).mH
        scale = float(s.max()) if s.numel() else 1.0
        for g in (gl, gr):
            assert (
                float((g.to(torch.complex128) - torch.diag(s).to(torch.complex128)).abs().max()) <= 10 * rtol(x) * scale
            )
    y, t2 = replace_two_site(x, k, w, absorb=absorb)
    assert_tt_close(y, x)
    assert float(t2.discarded) == 0.0
    z, _ = x.split(k, w, absorb=absorb)
    assert_tt_close(z, x)


@given(trains(orders=range(2, 8)), st.data())
def test_split_discarded_is_the_frobenius_error(x: TensorTrain, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, x.order - 2), label="k")
    w = merge(x, k)
    cap = data.draw(st.integers(1, 3), label="max_rank")
    eps = data.draw(st.sampled_from([None, 0.5, 0.1]), label="eps")
    left, right, t = split(w, max_rank=cap, eps=eps)
    assert t.rank <= cap
    err = float(torch.linalg.vector_norm((two_site(left, right) - w).to(torch.complex128)))
    nw = float(torch.linalg.vector_norm(w.to(torch.complex128)))
    assert abs(as_float(t.discarded) - err) <= rtol(x) * nw
    best = best_truncation_errors(w.reshape(w.shape[0] * w.shape[1], -1), [t.rank])
    assert abs(err - float(best[0])) <= rtol(x) * nw  # Eckart-Young: the split is optimal
    if eps is not None and t.rank < cap:
        assert err <= eps * nw * (1 + 1e-6)


@given(trains(orders=range(2, 6)), st.data())
def test_replace_two_site_tracks_the_centre(x: TensorTrain, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, x.order - 2), label="k")
    c = data.draw(st.sampled_from([k, k + 1]), label="centre")
    y = x.orthogonalize(c)
    for absorb, expected in (("right", k + 1), ("left", k), ("both", None)):
        z, _ = replace_two_site(y, k, merge(y, k), absorb=absorb, max_rank=2)
        assert z.center == expected
        if expected is not None:
            assert_canonical(z, atol=10 * rtol(x))
    far = x.orthogonalize(0) if k > 0 else None
    if far is not None:
        assert replace_two_site(far, k, merge(far, k))[0].center is None


# ----------------------------------------------------------------------------- the sweep


def scheduled_ranks(x: TensorTrain, caps: list[int] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Ranks after each pass of the canonical sweep.

    Left to right, bond ``k`` gets ``min(cap_k, r_{k-1} n_k, n_{k+1} r_{k+1})``: the split of
    the ``(r_{k-1} n_k, n_{k+1} r_{k+1})`` supercore keeps ``cap_k`` singular values, as in
    Algorithm 1's ``tSVD(M; r)``, even past the bond's current rank (the extra ones are
    zero, so the tensor is unchanged).  Right to left, ranks can only drop to the new
    two-site bound.
    """
    y = x.orthogonalize(0)
    d = x.order
    first = [1]
    for k in range(d - 1):
        bound = min(first[k] * x.shape[k], x.shape[k + 1] * y.ranks[k + 2])
        first.append(bound if caps is None else min(caps[k], bound))
    first.append(1)
    second = list(first)
    for k in range(d - 2, -1, -1):
        second[k + 1] = min(first[k + 1], first[k] * x.shape[k], x.shape[k + 1] * second[k + 2])
    return tuple(first), tuple(second)


def check_sweep(x: TensorTrain, rep: SweepReport) -> float:
    """Report bookkeeping shared by every sweep; returns the measured error ``||x - sweep(x)||``."""
    y = rep.tt
    assert y.dtype == x.dtype and y.shape == x.shape
    assert rep.ranks_before == x.ranks and rep.ranks_after == y.ranks
    assert len(rep.passes) == 2 and all(p.shape == (x.order - 1,) for p in rep.passes)
    combined = torch.sqrt(rep.passes[0] ** 2 + rep.passes[1] ** 2)
    assert torch.allclose(rep.discarded, combined)
    return dense_error(x, y)


@given(trains(orders=range(1, 7), canonical=st.booleans()), st.data())
def test_canonical_sweep_reports_the_exact_error_and_scheduled_ranks(x: TensorTrain, data: st.DataObject) -> None:
    caps = data.draw(st.lists(st.integers(1, 4), min_size=x.order - 1, max_size=x.order - 1), label="max_rank")
    rep = dmrg_sweep(x, max_rank=caps)
    err = check_sweep(x, rep)
    nx = dense_norm(x)
    first_ranks, final_ranks = scheduled_ranks(x, caps)
    assert rep.tt.ranks == final_ranks
    assert rep.tt.center == 0
    assert_canonical(rep.tt, atol=10 * rtol(x))
    # Reported discarded weight equals the measured error ||x - sweep(x)||.
    assert abs(as_float(rep.error) - err) <= rtol(x) * nx
    # The first pass is a right-going TT-SVD of x: the dense sequential tails, bond by bond.
    expected = dense_tt_svd_tails(reference(x), first_ranks[1:-1], "right")
    gap = (rep.passes[0].to(torch.float64) - expected).abs()
    assert gap.numel() == 0 or float(gap.max()) <= rtol(x) * nx
    # The second pass only re-gauges.
    assert x.order == 1 or float(rep.passes[1].max()) <= rtol(x) * nx
    # Same truncation as rounding to the first pass's ranks.
    rounded = round_tt(TensorTrain(x.cores), max_rank=list(first_ranks[1:-1]) or None).tt
    assert_tt_close(rep.tt, rounded, rtol=max(10 * rtol(x), 1e-6))


@given(trains(orders=range(2, 7)), st.sampled_from([0.3, 1e-1, 1e-2]))
def test_canonical_sweep_eps_bound(x: TensorTrain, eps: float) -> None:
    rep = dmrg_sweep(x, eps=eps)
    err = check_sweep(x, rep)
    nx = dense_norm(x)
    assert err <= eps * nx + rtol(x) * nx
    assert abs(as_float(rep.error) - err) <= rtol(x) * nx
    budget = eps * as_float(rep.reference_norm) / math.sqrt(x.order - 1)
    assert bool((rep.passes[0] <= budget * (1 + 1e-6)).all())


@given(trains(orders=range(2, 7)), st.data())
def test_literal_sweep_caps_ranks_and_its_second_pass_is_exact(x: TensorTrain, data: st.DataObject) -> None:
    cap = data.draw(st.integers(1, 4), label="max_rank")
    rep = dmrg_sweep(x, max_rank=cap, canonicalize=False)
    check_sweep(x, rep)
    assert max(rep.tt.ranks) <= cap
    assert rep.tt.center is None
    nx = dense_norm(x)
    # On a right-canonical input the literal sweep coincides with the canonical one: exact reports.
    rc = TensorTrain(x.orthogonalize(0).cores)
    rep_rc = dmrg_sweep(rc, max_rank=cap, canonicalize=False)
    err_rc = check_sweep(rc, rep_rc)
    assert abs(as_float(torch.linalg.vector_norm(rep_rc.passes[0])) - err_rc) <= rtol(x) * nx
    assert_tt_close(rep_rc.tt, dmrg_sweep(x, max_rank=cap).tt, rtol=max(10 * rtol(x), 1e-6))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128, torch.float32])
def test_sweep_of_zero_tensor(dtype: torch.dtype) -> None:
    z = TensorTrain.zeros((3, 2, 4), 2, dtype=dtype)
    for kwargs in ({"eps": 1e-2}, {"cutoff": 1e-2}, {"max_rank": 1}):
        rep = dmrg_sweep(z, **kwargs)
        assert rep.tt.ranks == (1, 1, 1, 1)
        assert float(rep.error) == 0.0 and bool((rep.tt.full() == 0).all())


@st.composite
def tolerances(draw: st.DrawFn, x: TensorTrain) -> dict[str, float]:
    """``eps`` and/or ``cutoff`` (at least one).

    No ``min_rank``: the sweep's ``tSVD(M; r)`` may grow a bond past its current rank to honour
    it (zero singular values), which rounding cannot.
    """
    single = x.dtype in (torch.float32, torch.complex64)
    kwargs: dict[str, float] = {}
    choice = draw(st.sampled_from(["eps", "cutoff", "both"]))
    if choice in ("eps", "both"):
        kwargs["eps"] = draw(st.sampled_from([0.3, 1e-1, 1e-2] if single else [0.3, 1e-2, 1e-6]))
    if choice in ("cutoff", "both"):
        kwargs["cutoff"] = draw(st.sampled_from([1e-1, 1e-3] if single else [1e-1, 1e-4, 1e-10]))
    return kwargs


@given(trains(orders=range(1, 7), canonical=st.booleans()), st.data())
@scaled(0.7)
def test_canonical_sweep_with_tolerances_is_a_rounding(x: TensorTrain, data: st.DataObject) -> None:
    kwargs = data.draw(tolerances(x), label="criteria")
    rep = dmrg_sweep(x, **kwargs)  # type: ignore[arg-type]
    ref = round_tt(TensorTrain(x.cores), **kwargs)  # type: ignore[arg-type]
    err = check_sweep(x, rep)
    nx = dense_norm(x)
    # Same spectra at every bond, same rank decisions, same tensor.
    assert rep.tt.ranks == ref.tt.ranks
    assert_tt_close(rep.tt, ref.tt, rtol=max(10 * rtol(x), 1e-6))
    gap = (rep.passes[0].to(torch.float64) - ref.discarded.to(torch.float64)).abs()
    assert gap.numel() == 0 or float(gap.max()) <= rtol(x) * nx
    assert abs(as_float(rep.error) - err) <= rtol(x) * nx
    if "eps" in kwargs:
        assert err <= float(kwargs["eps"]) * nx + rtol(x) * nx
    if "cutoff" in kwargs:  # per-bond relative discarded weight of the bond's own spectrum
        for k, s in enumerate(rep.pass_spectra[0]):
            total = float(torch.linalg.vector_norm(s.to(torch.float64))) ** 2
            assert as_float(rep.passes[0][k]) ** 2 <= float(kwargs["cutoff"]) * total * (1 + 1e-6) + 1e-300


@given(trains(orders=range(2, 6)), st.data())
@scaled(0.5)
def test_sweep_tiny_and_huge_norms(x: TensorTrain, data: st.DataObject) -> None:
    factor = data.draw(extreme_scales(x.dtype), label="factor")
    for canonicalize in (True, False):
        base = dmrg_sweep(x, eps=1e-2, canonicalize=canonicalize)
        big = dmrg_sweep(x * factor, eps=1e-2, canonicalize=canonicalize)
        assert big.tt.ranks == base.tt.ranks
        assert math.isfinite(as_float(big.reference_norm)) and as_float(big.reference_norm) > 0
        assert abs(as_float(big.relative_error) - as_float(base.relative_error)) <= 10 * rtol(x)
        assert_tt_close(big.tt * (1 / factor), base.tt, rtol=10 * rtol(x))


@pytest.mark.parametrize(
    ("dtype", "factor"),
    [(torch.float32, 1e-30), (torch.float32, 1e30), (torch.float64, 1e-300), (torch.float64, 1e300)],
)
@pytest.mark.parametrize("canonicalize", [True, False])
def test_sweep_report_neither_underflows_nor_overflows(dtype: torch.dtype, factor: float, canonicalize: bool) -> None:
    # Regression: the per-pass norms were combined as sqrt(p0² + p1²) in the working precision,
    # so a discarded norm of 1e-32 (float32) reported 0 and one of 1e28 reported inf.
    x = tt_with_spectra([[1.0, 0.1], [1.0, 0.2]], generator=torch.Generator().manual_seed(0), dtype=dtype)
    base = dmrg_sweep(x, max_rank=1, canonicalize=canonicalize)
    big = dmrg_sweep(x * factor, max_rank=1, canonicalize=canonicalize)
    assert as_float(base.relative_error) > 0.1
    for k in range(x.order - 1):
        assert math.isclose(as_float(big.discarded[k]) / factor, as_float(base.discarded[k]), rel_tol=10 * rtol(x))
    assert math.isclose(as_float(big.error) / factor, as_float(base.error), rel_tol=10 * rtol(x))
    assert math.isclose(as_float(big.relative_error), as_float(base.relative_error), rel_tol=10 * rtol(x))
