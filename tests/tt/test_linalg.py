"""Dense kernels (QR, SVD with fallbacks, CholeskyQR2) and the truncation rule."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import generator, rtol
from hypothesis import given
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.testing import assert_dense_close
from tnadapt.tt import linalg, select_rank, truncated_svd

LOW = (torch.float16, torch.bfloat16)


@st.composite
def matrices(draw: st.DrawFn, dtypes: tuple[torch.dtype, ...] = testing.DTYPES) -> torch.Tensor:
    m, n = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    dtype = draw(st.sampled_from(dtypes))
    a = torch.randn(m, n, generator=generator(draw(st.integers(0, 2**32 - 1))), dtype=torch.float64)
    if dtype.is_complex:
        a = torch.complex(a, torch.randn(m, n, generator=generator(draw(st.integers(0, 99))), dtype=torch.float64))
    rank = draw(st.integers(1, min(m, n)))  # possibly rank deficient
    if rank < min(m, n):
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        a = (u[:, :rank] * s[:rank].to(u.dtype)) @ vh[:rank]
    return a.to(dtype)


def _eye(k: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(k, dtype=like.dtype, device=like.device)


@given(matrices(testing.DTYPES + LOW))
def test_qr_is_a_thin_orthonormal_factorization(a: torch.Tensor) -> None:
    q, r = linalg.qr(a)
    k = min(a.shape)
    assert q.shape == (a.shape[0], k) and r.shape == (k, a.shape[1]) and q.dtype == r.dtype == a.dtype
    assert_dense_close(q @ r, a, rtol=rtol(a.dtype))
    assert_dense_close(q.mH @ q, _eye(k, q), rtol=0.0, atol=rtol(a.dtype) * math.sqrt(k))
    assert bool((torch.tril(r, -1) == 0).all())


@given(matrices(testing.DTYPES + LOW))
def test_svd_is_thin_sorted_and_reconstructs(a: torch.Tensor) -> None:
    u, s, vh = linalg.svd(a)
    k = min(a.shape)
    real = a.dtype.to_real() if a.dtype.is_complex else a.dtype
    assert u.shape == (a.shape[0], k) and s.shape == (k,) and vh.shape == (k, a.shape[1])
    assert u.dtype == vh.dtype == a.dtype and s.dtype == real
    assert bool((s[:-1] >= s[1:]).all()) and bool((s >= 0).all())
    assert_dense_close((u * s.to(u.dtype)) @ vh, a, rtol=rtol(a.dtype))
    ref = torch.linalg.svdvals(a.to(torch.complex128 if a.dtype.is_complex else torch.float64))
    assert_dense_close(s, ref, rtol=rtol(a.dtype))


@given(matrices(testing.DTYPES))
def test_cholesky_qr2_matches_householder_accuracy(a: torch.Tensor) -> None:
    q, r = linalg.cholesky_qr2(a)
    k = min(a.shape)
    assert q.shape == (a.shape[0], k) and r.shape == (k, a.shape[1])
    assert_dense_close(q @ r, a, rtol=rtol(a.dtype))
    # Orthonormal even for rank-deficient / ill-conditioned panels (falls back to Householder).
    assert_dense_close(q.mH @ q, _eye(k, q), rtol=0.0, atol=rtol(a.dtype) * math.sqrt(k))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("cond", [1.0, 1e6])
def test_cholesky_qr2_on_column_major_panels(dtype: torch.dtype, cond: float) -> None:
    """A transposed core unfolding (the right-to-left sweep's panel) takes the ``Qᵀ = R⁻ᵀ Aᵀ`` product:
    same accuracy as on a row-major copy, on well and ill-conditioned panels."""
    g = generator(3)
    u, _ = torch.linalg.qr(torch.randn(300, 20, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    a = (u * torch.logspace(0, -math.log10(cond), 20, dtype=torch.float64)) @ v.mT
    a = a.to(dtype)
    panel = a.mT.contiguous().mT  # column-major storage
    assert not panel.is_contiguous()
    for mat in (panel, panel.contiguous()):
        q, r = linalg.cholesky_qr2(mat)
        assert_dense_close(q @ r, a, rtol=rtol(dtype))
        assert_dense_close(q.mH @ q, _eye(20, q), rtol=0.0, atol=rtol(dtype) * math.sqrt(20))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_svd_falls_back_when_the_solver_fails(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    real_svd = torch.linalg.svd
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.linalg.LinAlgError("simulated: the algorithm failed to converge")
        return real_svd(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    a = torch.randn(7, 4, generator=generator(0), dtype=dtype)
    u, s, vh = linalg.svd(a)
    assert calls["n"] >= 2
    assert u.dtype == vh.dtype == s.dtype == dtype
    assert_dense_close((u * s) @ vh, a, rtol=rtol(dtype))
    assert_dense_close(u.mT @ u, _eye(4, u), rtol=0.0, atol=rtol(dtype))
    assert_dense_close(s, real_svd(a.double(), full_matrices=False)[1], rtol=rtol(dtype))


def test_svd_reports_when_every_fallback_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise torch.linalg.LinAlgError("simulated failure")

    monkeypatch.setattr(torch.linalg, "svd", broken)
    with pytest.raises(RuntimeError, match=r"svd: all fallbacks failed for a matrix of shape \(5, 3\)"):
        linalg.svd(torch.randn(5, 3, dtype=torch.float64))


def test_compute_dtype_upcasts_only_half_precision() -> None:
    assert linalg.compute_dtype(torch.bfloat16) == linalg.compute_dtype(torch.float16) == torch.float32
    for dtype in testing.DTYPES:
        assert linalg.compute_dtype(dtype) == dtype


# ----------------------------------------------------------------------------- truncation rule


@st.composite
def spectra_and_criteria(draw: st.DrawFn) -> tuple[torch.Tensor, dict[str, object]]:
    s = draw(testing.spectra(max_len=6, ratios=(1e-1, 1e-3, 1e-6)))
    s = s * draw(st.sampled_from([1.0, 1e-30, 1e30, 1e-200, 1e200]))
    if draw(st.booleans()):
        s = torch.cat([s, torch.zeros(draw(st.integers(1, 2)), dtype=s.dtype)])
    norm = float(s.max()) * float(torch.linalg.vector_norm(s / s.max()))  # scaled: ||s|| ~ 1e200 stays finite
    crit: dict[str, object] = {}
    if draw(st.booleans()):
        crit["max_rank"] = draw(st.integers(1, 8))
    if draw(st.booleans()):
        crit["abs_tol"] = draw(st.sampled_from([0.0, 1e-7, 1e-3, 0.1, 0.9, 2.0])) * norm
    if draw(st.booleans()):
        crit["cutoff"] = draw(st.sampled_from([0.0, 1e-12, 1e-4, 1e-2, 0.5]))
    crit["min_rank"] = draw(st.integers(1, 3))
    return s, crit


def _brute_force_rank(s: torch.Tensor, crit: dict[str, object], slack: float = 1 + 1e-9) -> int:
    n = len(s)
    upper = n if crit.get("max_rank") is None else min(int(crit["max_rank"]), n)  # type: ignore[call-overload]
    lower = max(1, min(int(crit["min_rank"]), upper))  # type: ignore[call-overload]
    if "abs_tol" not in crit and "cutoff" not in crit:
        return upper
    top = float(s.max()) or 1.0  # work relative to the largest value: no under/overflow
    total = sum((float(v) / top) ** 2 for v in s)
    for k in range(n + 1):
        tail = sum((float(v) / top) ** 2 for v in s[k:])
        ok = True
        if "abs_tol" in crit:
            ok &= math.sqrt(tail) <= float(crit["abs_tol"]) / top * slack  # type: ignore[arg-type]
        if "cutoff" in crit:
            ok &= tail <= float(crit["cutoff"]) * total * slack  # type: ignore[arg-type]
        if ok:
            return min(max(k, lower), upper)
    return upper


@given(spectra_and_criteria())
def test_select_rank_is_the_smallest_rank_meeting_every_criterion(case: tuple[torch.Tensor, dict[str, object]]) -> None:
    s, crit = case
    # A tail within 1e-9 (relative) of a threshold is a tie that round-off may break either way.
    loose, strict = _brute_force_rank(s, crit, 1 + 1e-9), _brute_force_rank(s, crit, 1 - 1e-9)
    assert loose <= select_rank(s, **crit) <= strict  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_select_rank_takes_python_float_tolerances_at_any_scale(scale: float) -> None:
    # Regression: a Python-float abs_tol went through torch's default dtype (float32) first, so
    # 1e-201 became 0 (nothing truncated) and 1e193 became inf (everything truncated).
    s = torch.tensor([1.0, 0.1, 1e-4], dtype=torch.float64) * scale
    assert select_rank(s, abs_tol=0.05 * scale) == 2
    assert select_rank(s, abs_tol=1e-6 * scale) == 3
    assert select_rank(s, abs_tol=0.5 * scale) == 1
    t = truncated_svd(torch.diag(s), abs_tol=0.05 * scale)
    assert t.rank == 2 and math.isclose(float(t.discarded), 1e-4 * scale, rel_tol=1e-12)


@given(matrices(testing.DTYPES), st.integers(1, 12), st.sampled_from([None, 1e-3, 0.3]))
def test_truncated_svd_keeps_the_largest_and_reports_the_tail(a: torch.Tensor, cap: int, rel: float | None) -> None:
    na = float(torch.linalg.vector_norm(a.to(torch.complex128)))
    t = truncated_svd(a, max_rank=cap, abs_tol=None if rel is None else rel * na)
    assert t.rank <= cap and t.U.shape[1] == t.S.shape[0] == t.Vh.shape[0] == t.rank
    err = float(torch.linalg.vector_norm(((t.U * t.S.to(t.U.dtype)) @ t.Vh - a).to(torch.complex128)))
    assert abs(float(t.discarded) - err) <= rtol(a.dtype) * na
    assert abs(float(t.discarded) - float(torch.linalg.vector_norm(t.singular_values[t.rank :]))) <= rtol(a.dtype) * na


def test_tall_qr_uses_cholesky_qr2_only_where_its_gemms_pay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Big tall CPU panels: CholeskyQR2 with AVX-512 or several threads, Householder on one AVX2 thread."""
    panel = torch.randn(4096, 32, generator=generator(4), dtype=torch.float64)
    used: list[str] = []
    real = linalg.cholesky_qr2

    def recording(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        used.append("cholesky")
        return real(m)

    monkeypatch.setattr(linalg, "cholesky_qr2", recording)
    previous = torch.get_num_threads()
    try:
        for wide, threads, expected in ((False, 1, []), (True, 1, ["cholesky"]), (False, 2, ["cholesky"])):
            monkeypatch.setattr(linalg, "_WIDE_SIMD", wide)
            torch.set_num_threads(threads)
            used.clear()
            q, r = linalg.tall_qr(panel)
            assert used == expected, (wide, threads)
            assert_dense_close(q @ r, panel, rtol=rtol(panel.dtype))
    finally:
        torch.set_num_threads(previous)
