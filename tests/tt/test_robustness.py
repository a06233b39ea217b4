"""Robustness of every factorizing operation: SVD failures fall back, half precision is upcast.

* A failing ``torch.linalg.svd`` (simulated by monkeypatching it to raise, as LAPACK does when it
  does not converge) must not change what rounding, TT-SVD, the two-site sweep and ``split``
  compute: the fallback chain (double precision, then a tiny seeded jitter) takes over.
* float16/bfloat16 trains: no QR/SVD/Cholesky ever sees a half-precision matrix, and results come
  back in the input dtype, as accurate as the same computation in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from _helpers import as_float, generator, reference

from tnadapt import testing
from tnadapt.testing import assert_tt_close, tt_with_spectra
from tnadapt.tt import TensorTrain, dmrg_sweep, linalg, orthogonalize, round_tt, split, truncated_svd, tt_svd

HALF = (torch.float16, torch.bfloat16)
SPECTRA = [[1.0, 0.3, 1e-2], [1.0, 0.5, 0.2, 1e-3], [1.0, 0.4]]


def _train(dtype: torch.dtype) -> TensorTrain:
    # Clear gaps after rank 2 at every bond: every criterion below picks the same ranks in any precision.
    return tt_with_spectra(SPECTRA, generator=generator(3), dtype=dtype)


def _tt_result(out: object) -> TensorTrain:
    if isinstance(out, TensorTrain):
        return out
    if isinstance(out, tuple):  # split: (left, right, TruncatedSVD) -> a two-core train
        left, right = out[0], out[1]
        return TensorTrain([left.reshape(1, -1, left.shape[-1]), right.reshape(right.shape[0], -1, 1)])
    return out.tt  # type: ignore[attr-defined,no-any-return]


OPS: dict[str, Callable[[TensorTrain], object]] = {
    "round max_rank": lambda x: round_tt(x, max_rank=2),
    "round eps": lambda x: round_tt(x, eps=5e-2),
    "round cutoff": lambda x: round_tt(x, cutoff=1e-3),
    "tt_svd": lambda x: tt_svd(x.full(), max_rank=2),
    "sweep": lambda x: dmrg_sweep(x, max_rank=2),
    "literal sweep": lambda x: dmrg_sweep(x, eps=5e-2, canonicalize=False),
    "split": lambda x: split(x.merge(1), max_rank=2, absorb="both"),
    "orthogonalize": lambda x: orthogonalize(x, 1),
}


@pytest.fixture
def flaky_svd(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], dict[str, int]]]:
    """``arm(failures)`` makes the next SVDs raise: the first ``failures`` attempts at each matrix fail."""
    real_svd = torch.linalg.svd

    def arm(failures: int) -> dict[str, int]:
        counts = {"calls": 0, "failed": 0}

        def svd(*args: object, **kwargs: object) -> object:
            counts["calls"] += 1
            if counts["calls"] % (failures + 1) != 0:
                counts["failed"] += 1
                raise torch.linalg.LinAlgError("simulated: the algorithm failed to converge")
            return real_svd(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(torch.linalg, "svd", svd)
        return counts

    yield arm
    monkeypatch.setattr(torch.linalg, "svd", real_svd)


@pytest.mark.parametrize(
    ("dtype", "failures"),
    [(torch.float64, 1), (torch.complex128, 1), (torch.float32, 1), (torch.float32, 2), (torch.complex64, 2)],
)
@pytest.mark.parametrize("op", [name for name in OPS if name != "orthogonalize"])
def test_svd_failures_fall_back_without_changing_the_result(
    flaky_svd: Callable[[int], dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    op: str,
    dtype: torch.dtype,
    failures: int,
) -> None:
    x = _train(dtype)
    expected = OPS[op](x)
    counts = flaky_svd(failures)
    got = OPS[op](x)
    monkeypatch.undo()
    assert counts["failed"] > 0 and counts["calls"] > counts["failed"]
    # One failure: the fallback is the same SVD in (double) precision.  Two (single precision):
    # the last resort factors A + E with a seeded jitter ||E||_F ~ 1e3 u ||A||_F (1e-4 relative).
    tol = 1e-3 if failures == 2 else testing.default_rtol(dtype)
    a, b = _tt_result(got), _tt_result(expected)
    assert a.ranks == b.ranks and a.dtype == b.dtype == dtype
    assert_tt_close(a, b, rtol=tol)
    if hasattr(got, "error") and op != "literal sweep":  # the report is still the measured error
        measured = float(torch.linalg.vector_norm(reference(x) - reference(a)))
        assert abs(as_float(got.error) - measured) <= tol * as_float(x.norm())  # type: ignore[attr-defined]
    if op == "split":
        t = got[2]  # type: ignore[index]
        assert abs(as_float(t.discarded) - as_float(expected[2].discarded)) <= tol * as_float(x.norm())  # type: ignore[index]


def test_truncated_svd_falls_back(flaky_svd: Callable[[int], dict[str, int]]) -> None:
    a = torch.randn(9, 5, generator=generator(0), dtype=torch.float64)
    counts = flaky_svd(1)
    t = truncated_svd(a, max_rank=3)
    assert counts["failed"] == 1
    best = torch.linalg.svdvals(a)
    assert abs(float(t.discarded) - float(torch.linalg.vector_norm(best[3:]))) <= 1e-10 * float(best[0])


@pytest.fixture
def factorization_dtypes(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """Records the dtype of every matrix handed to torch's QR, SVD and Cholesky."""
    seen: list[torch.dtype] = []
    for name in ("svd", "qr", "cholesky_ex", "svdvals", "eigh"):
        real = getattr(torch.linalg, name)

        def wrapped(mat: torch.Tensor, *args: object, _real: Callable[..., object] = real, **kwargs: object) -> object:
            seen.append(mat.dtype)
            return _real(mat, *args, **kwargs)

        monkeypatch.setattr(torch.linalg, name, wrapped)
    return seen


@pytest.mark.parametrize("low", HALF)
@pytest.mark.parametrize("op", list(OPS))
def test_half_precision_is_upcast_for_factorizations_and_cast_back(
    factorization_dtypes: list[torch.dtype], op: str, low: torch.dtype
) -> None:
    y = _train(torch.float32).to(low)
    factorization_dtypes.clear()  # building the input used float64 QRs
    got = _tt_result(OPS[op](y))
    assert factorization_dtypes, "no factorization ran"
    assert set(factorization_dtypes) <= {torch.float32}, factorization_dtypes
    assert got.dtype == low and all(c.dtype == low for c in got.cores)
    # As accurate as the same computation on the same (rounded) input in float32.
    ref = _tt_result(OPS[op](y.to(torch.float32)))
    assert got.ranks == ref.ranks
    assert_tt_close(got.to(torch.float32), ref, rtol=testing.default_rtol(low))


@pytest.mark.parametrize("low", HALF)
def test_half_precision_reports_are_real_and_finite(low: torch.dtype) -> None:
    y = _train(torch.float32).to(low)
    for rep in (round_tt(y, max_rank=1), dmrg_sweep(y, max_rank=1), tt_svd(y.full(), max_rank=1)):
        assert bool(torch.isfinite(rep.discarded).all()) and as_float(rep.error) > 0
        measured = float(torch.linalg.vector_norm(reference(y) - reference(rep.tt)))
        assert abs(as_float(rep.error) - measured) <= testing.default_rtol(low) * as_float(y.to(torch.float32).norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
@pytest.mark.parametrize("factor", [1e-30, 1e30])
def test_jitter_fallback_at_extreme_scales(
    flaky_svd: Callable[[int], dict[str, int]], dtype: torch.dtype, factor: float
) -> None:
    # Regression: the jitter was sized by an unscaled ||A||_F, which overflows for entries ~1e30 in
    # float32, so the last resort added inf and failed too.
    a = torch.randn(9, 5, generator=generator(1), dtype=torch.float64).to(dtype) * factor
    expected = torch.linalg.svdvals(a.to(torch.complex128 if dtype.is_complex else torch.float64))
    counts = flaky_svd(2)  # the single-precision SVD and its double-precision retry fail: jitter
    u, s, vh = linalg.svd(a)
    assert counts["failed"] == 2
    assert bool(torch.isfinite(s).all()) and s.dtype == torch.float32
    assert float((s.to(torch.float64) - expected).abs().max()) <= 1e-3 * float(expected[0])
    recon = (u * s.to(u.dtype)) @ vh
    assert (
        float(torch.linalg.vector_norm((recon - a).to(torch.complex128) / factor)) <= 1e-3 * float(expected[0]) / factor
    )
