"""TT-SVD (from_dense): exactness, eps bound, rank caps, per-bond reports, hard inputs."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import (
    EXTREME_SCALES,
    as_float,
    dense_tt_svd_tails,
    generator,
    reference,
    rtol,
    trains,
    truncation_ranks,
    wide,
)
from hypothesis import given
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.testing import (
    assert_dense_close,
    assert_left_orthonormal,
    assert_tt_close,
    best_truncation_errors,
    minimal_ranks,
    tt_with_spectra,
    unfolding_singular_values,
)
from tnadapt.tt import TensorTrain, TruncationReport, tt_svd


@st.composite
def dense_tensors(draw: st.DrawFn) -> torch.Tensor:
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=6))
    dtype = draw(st.sampled_from(testing.DTYPES))
    return torch.randn(*shape, generator=generator(draw(st.integers(0, 2**32 - 1))), dtype=dtype)


def check_tt_svd(a: torch.Tensor, rep: TruncationReport) -> float:
    """Shared checks: left-orthonormal result, exact error report, dense sequential tails."""
    x = rep.tt
    na = float(torch.linalg.vector_norm(a.to(wide(a.dtype))))
    tol = rtol(a.dtype) * na
    assert x.shape == tuple(a.shape) and x.dtype == a.dtype and x.center == a.ndim - 1
    assert_left_orthonormal(x, atol=10 * rtol(a.dtype))
    err = float(torch.linalg.vector_norm(reference(x) - a.to(wide(a.dtype))))
    assert abs(as_float(rep.error) - err) <= tol
    assert x.ranks == minimal_ranks(x.shape, x.bond_dims)
    expected = dense_tt_svd_tails(a, truncation_ranks(rep.singular_values, rep.discarded), "right")
    gap = (rep.discarded.to(torch.float64) - expected).abs()
    assert gap.numel() == 0 or float(gap.max()) <= tol
    full = [min(math.prod(a.shape[: k + 1]), math.prod(a.shape[k + 1 :])) for k in range(a.ndim - 1)]
    assert rep.ranks_before == (1, *full, 1) and rep.ranks_after == x.ranks
    return err


@given(dense_tensors())
def test_tt_svd_without_truncation_is_exact(a: torch.Tensor) -> None:
    rep = tt_svd(a)
    check_tt_svd(a, rep)
    assert_dense_close(rep.tt.full(), a, rtol=rtol(a.dtype))
    # Bond ranks are the full unfolding ranks min(n_1..n_k, n_{k+1}..n_d).
    assert rep.tt.ranks == minimal_ranks(a.shape, [a.numel()] * (a.ndim - 1))


@given(dense_tensors(), st.data())
def test_tt_svd_eps_bound_and_max_rank(a: torch.Tensor, data: st.DataObject) -> None:
    eps = data.draw(st.sampled_from([0.5, 1e-1, 1e-2]), label="eps")
    cap = data.draw(st.integers(1, 4), label="max_rank")
    na = float(torch.linalg.vector_norm(a.to(wide(a.dtype))))
    rep = tt_svd(a, eps=eps)
    err = check_tt_svd(a, rep)
    assert err <= eps * na + rtol(a.dtype) * na
    assert as_float(rep.relative_error) <= eps * (1 + 1e-6)
    capped = tt_svd(a, max_rank=cap)
    assert max(capped.tt.ranks) <= cap
    err = check_tt_svd(a, capped)
    best = best_truncation_errors(a, [cap] * (a.ndim - 1))  # Oseledets' bound at the requested ranks
    assert err <= float(torch.linalg.vector_norm(best)) + rtol(a.dtype) * na


@given(trains(minimal=True))
def test_from_dense_of_full_reproduces_the_train(x: TensorTrain) -> None:
    eps = 1e-5 if x.dtype in (torch.float32, torch.complex64) else 1e-12
    y = TensorTrain.from_dense(x.full(), eps=eps)
    assert_tt_close(y, x, rtol=eps + rtol(x))
    # The recovered ranks never exceed the train's (minimal) ranks...
    assert all(ry <= rx for ry, rx in zip(y.ranks, x.ranks))
    # ... and equal them whenever every Schmidt value is clearly above the budget.
    spectra_ = unfolding_singular_values(reference(x))
    nx = float(torch.linalg.vector_norm(reference(x)))
    if all(float(s[r - 1]) > 100 * eps * nx for s, r in zip(spectra_, x.bond_dims)):
        assert y.ranks == x.ranks
    z = TensorTrain.from_dense(x.full(), max_rank=list(x.bond_dims) or None)
    assert z.ranks == x.ranks
    assert_tt_close(z, x)


@pytest.mark.parametrize(
    ("dtype", "spectrum"),
    [
        (torch.float64, [1.0, 1e-3, 1e-6, 1e-9]),
        (torch.complex128, [1.0, 1e-3, 1e-6, 1e-9]),
        (torch.float32, [1.0, 1e-2, 1e-4]),
    ],
)
def test_tt_svd_recovers_ranks_of_geometric_spectra(dtype: torch.dtype, spectrum: list[float]) -> None:
    x = tt_with_spectra([spectrum] * 3, generator=generator(0), dtype=dtype)
    a = x.full()
    for target in range(1, len(spectrum) + 1):
        hi = spectrum[target - 1]
        lo = spectrum[target] if target < len(spectrum) else hi * 1e-3
        s_norm = math.sqrt(sum(v * v for v in spectrum))
        eps = math.sqrt(hi * lo) / s_norm * math.sqrt(3)
        rep = tt_svd(a, eps=eps)
        assert rep.tt.bond_dims == (target,) * 3
        check_tt_svd(a, rep)


@pytest.mark.parametrize(
    ("dtype", "factor"),
    [
        (dtype, factor)
        for dtype in testing.DTYPES
        for factor in EXTREME_SCALES[dtype.to_real() if dtype.is_complex else dtype]
    ],
)
def test_tt_svd_tiny_and_huge_norms(dtype: torch.dtype, factor: float) -> None:
    x = tt_with_spectra([[1.0, 1e-2], [1.0, 0.5, 1e-3]], generator=generator(1), dtype=dtype)
    base = tt_svd(x.full(), eps=1e-2)
    big = tt_svd(x.full() * factor, eps=1e-2)
    assert big.tt.ranks == base.tt.ranks == (1, 2, 2, 1)
    assert abs(as_float(big.reference_norm) / factor - 1.0) <= rtol(dtype)
    assert abs(as_float(big.relative_error) - as_float(base.relative_error)) <= rtol(dtype)
    assert_tt_close(big.tt * (1 / factor), base.tt, rtol=10 * rtol(dtype))


@pytest.mark.parametrize("dtype", testing.DTYPES)
@pytest.mark.parametrize("shape", [(4,), (2, 3), (3, 1, 4, 2)])
def test_tt_svd_of_zero_tensor(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    a = torch.zeros(shape, dtype=dtype)
    for kwargs in ({"eps": 1e-3}, {"cutoff": 1e-3}, {"max_rank": 1}):
        rep = tt_svd(a, **kwargs)
        assert rep.tt.ranks == (1,) * (len(shape) + 1)
        assert bool((rep.tt.full() == 0).all()) and float(rep.error) == 0.0 and float(rep.relative_error) == 0.0
