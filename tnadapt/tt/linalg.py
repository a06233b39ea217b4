"""Robust dense linear-algebra kernels used by every TT algorithm.

* Low-precision inputs (``float16``/``bfloat16``) are upcast to ``float32`` for QR/SVD
  and the factors are cast back, because LAPACK/cuSOLVER do not support them.
* :func:`svd` always computes a *thin* SVD (``full_matrices=False``) and never forms a
  Gram matrix.  Wide matrices are factored through their (conjugate) transpose, which
  LAPACK handles faster.  If the solver fails to converge (ill-conditioned input), it
  retries with another driver (CUDA), then in double precision, then with a tiny
  seeded jitter ``E`` (``||E||_F ≈ 1e3 u ||A||_F``, ``u`` the unit round-off), so a
  training run is never killed by a single bad SVD.
* :func:`qr` is a thin Householder QR; :func:`cholesky_qr2` is the GEMM-rich
  alternative for tall-skinny panels (two Cholesky-QR passes, falling back to
  Householder whenever the result would not be orthonormal to working precision);
  :func:`tall_qr` picks between them and is what the orthogonalisation sweeps use.
* On CPU, the QR/SVD of small matrices runs single-threaded (see
  :mod:`tnadapt.tt._threads`): MKL's panel factorizations are slower with more threads.
"""

from __future__ import annotations

import itertools

import torch

from ._numerics import stable_norm
from ._threads import factorization_threads

__all__ = ["cholesky_qr2", "compute_dtype", "left_svd", "qr", "svd", "svd_of_product", "tall_qr"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)

#: :func:`tall_qr` uses CholeskyQR2 for panels with at least this many rows per column ...
CHOLESKY_QR_MIN_ASPECT = 4
#: ... and at least this many entries (smaller panels: MKL's Householder QR measured faster).
CHOLESKY_QR_MIN_ELEMENTS = 1 << 16


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype factorizations run in for inputs of ``dtype`` (fp16/bf16 → fp32)."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _unit_roundoff(dtype: torch.dtype) -> float:
    real = dtype.to_real() if dtype.is_complex else dtype
    return torch.finfo(real).eps / 2


def qr(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin Householder QR of ``mat`` of shape ``(..., m, n)``: ``Q (..., m, k)``, ``R (..., k, n)``, ``k=min(m, n)``.

    >>> q, r = qr(torch.randn(6, 3, dtype=torch.float64))
    >>> q.shape, r.shape, bool(torch.allclose(q.mT @ q, torch.eye(3, dtype=torch.float64)))
    (torch.Size([6, 3]), torch.Size([3, 3]), True)
    """
    if mat.dtype in _LOW_PRECISION:
        q, r = qr(mat.to(torch.float32))
        return q.to(mat.dtype), r.to(mat.dtype)
    # No dtype round trip otherwise: three no-op ``.to`` calls cost ~7 µs, a third of a 320x40 QR's overhead.
    with factorization_threads(mat):
        q, r = torch.linalg.qr(mat, mode="reduced")
    return q, r


def _cholesky_pass(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Cholesky-QR pass: ``Q = A R⁻¹`` with ``R = chol(AᴴA)ᴴ``; returns ``Q, R, AᴴA, info``.

    ``R⁻¹`` is formed explicitly (a small triangular solve) and applied with one GEMM:
    measured faster than a right-sided ``solve_triangular`` on the tall panel, which
    also copies it.  Accuracy is guarded by the orthogonality check of the caller.
    """
    gram = a.mH @ a
    chol, info = torch.linalg.cholesky_ex(gram)
    r = chol.mH
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    r_inv = torch.linalg.solve_triangular(r, eye, upper=True)
    if a.mT.is_contiguous() and not a.is_contiguous():
        # A column-major panel (a transposed core unfolding, as the right-to-left sweep hands over):
        # the same product as Qᵀ = R⁻ᵀ Aᵀ on the row-major Aᵀ, ~5x faster than ``a @ r_inv`` (MKL, AMD EPYC).
        return (r_inv.mT @ a.mT).mT, r, gram, info
    return a @ r_inv, r, gram, info


def cholesky_qr2(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR of a 2-D tall matrix ``(m, n)``, ``m >= n``, by CholeskyQR2, falling back to Householder.

    Two passes of ``R = chol(AᴴA)ᴴ, Q = A R⁻¹`` give a ``Q`` orthonormal to working
    precision whenever ``cond(A)`` is below about ``u^{-1/2}`` (``1e8`` in float64,
    ``3e3`` in float32); the cost is GEMMs and a triangular solve instead of Householder's
    panel updates.  Outside that range — rank-deficient or ill-conditioned panels, Gram
    matrices that over- or underflow, non-finite values — the check below detects it and
    the Householder QR is returned instead, so the result is always as accurate as
    :func:`qr`.  The check costs at most two host synchronisations: after the first
    Cholesky (the factorisation failed, or ``max|r_ii| / min|r_ii|`` already shows a
    condition number out of range: only one Gram product is wasted) and at the end
    (``||Q₁ᴴQ₁ - I||_F <= 1/2``, i.e. the second pass started from a nearly orthonormal
    ``Q₁``, which makes its result orthonormal to working precision).  Wide inputs go
    straight to Householder.  Use it outside autograd (the fallback is data dependent).

    >>> a = torch.randn(50, 4, dtype=torch.float64)
    >>> q, r = cholesky_qr2(a)
    >>> bool(torch.allclose(q @ r, a)), bool(torch.allclose(q.mT @ q, torch.eye(4, dtype=torch.float64)))
    (True, True)
    """
    m, n = mat.shape[-2], mat.shape[-1]
    if mat.ndim != 2 or m < n:
        return qr(mat)
    work = mat.to(compute_dtype(mat.dtype))
    q1, r1, _, info1 = _cholesky_pass(work)
    diag = r1.diagonal().abs()
    limit = _unit_roundoff(work.dtype) ** -0.5 / 8
    if not bool((info1 == 0) & (diag.amax() < diag.amin() * limit)):
        return qr(mat)
    q, r2, gram2, info2 = _cholesky_pass(q1)
    eye = torch.eye(n, dtype=gram2.dtype, device=gram2.device)
    if not bool((info2 == 0) & (torch.linalg.matrix_norm(gram2 - eye) <= 0.5)):
        return qr(mat)
    return q.to(mat.dtype), (r2 @ r1).to(mat.dtype)


#: CPU GEMMs at AVX-512 width: CholeskyQR2's GEMMs then beat single-threaded Householder.
_WIDE_SIMD = "AVX512" in torch.backends.cpu.get_cpu_capability()


def _gemm_qr_pays(mat: torch.Tensor) -> bool:
    """Whether CholeskyQR2's GEMMs are faster than Householder here: off the CPU, with AVX-512, or
    with several threads (the small Householder QRs run single-threaded, the GEMMs do not).

    Measured at 1 thread: 2048x64 panels 20-25% faster on an AVX-512 Xeon, 9-19% slower in the
    d=8 sweeps on an AVX2 EPYC (docs/benchmarks.md).
    """
    return mat.device.type != "cpu" or _WIDE_SIMD or torch.get_num_threads() > 1


def tall_qr(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR for orthogonalisation sweeps: :func:`cholesky_qr2` for tall panels, else :func:`qr`.

    CholeskyQR2 is used for 2-D panels with at least ``CHOLESKY_QR_MIN_ASPECT`` rows per
    column and ``CHOLESKY_QR_MIN_ELEMENTS`` entries when no gradient has to flow through
    the factorisation and its GEMMs pay (:func:`_gemm_qr_pays`); Householder otherwise
    (square-ish or small panels, where it measured faster, single-threaded CPUs without
    AVX-512, and autograd, where ``torch.linalg.qr``'s backward is the well-tested path).

    >>> q, r = tall_qr(torch.randn(64, 8, dtype=torch.float64))
    >>> q.shape, r.shape
    (torch.Size([64, 8]), torch.Size([8, 8]))
    """
    m, n = mat.shape[-2], mat.shape[-1]
    big = m >= CHOLESKY_QR_MIN_ASPECT * n and m * n >= CHOLESKY_QR_MIN_ELEMENTS
    if mat.ndim == 2 and big and not (mat.requires_grad and torch.is_grad_enabled()) and _gemm_qr_pays(mat):
        return cholesky_qr2(mat)
    return qr(mat)


def _svd_candidates(work: torch.Tensor):  # type: ignore[no-untyped-def]
    """Yield ``(matrix, driver)`` pairs to try, cheapest first; later ones are built lazily."""
    yield work, None
    if work.device.type == "cuda":
        yield work, "gesvd"
    if work.dtype in (torch.float32, torch.complex64):
        yield work.to(torch.complex128 if work.is_complex() else torch.float64), None
    info = torch.finfo(work.real.dtype if work.is_complex() else work.dtype)
    eps = info.eps
    # The largest ||A||_F of the batch, scaled so that it neither over- nor underflows.
    scale = stable_norm(work.reshape(-1, work.shape[-2] * work.shape[-1]), dim=1).amax().clamp_min(info.tiny)
    generator = torch.Generator(device=work.device).manual_seed(0)
    jitter = torch.randn(work.shape, dtype=work.dtype, device=work.device, generator=generator)
    # Entries N(0, 1) scaled so that ||E||_F ≈ 1e3 eps ||A||_F.
    yield work + jitter * (scale * 1e3 * eps / work.shape[-2:].numel() ** 0.5), None


def _tall_svd(work: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    try:  # the common case, without building the fallback chain
        with factorization_threads(work):
            u, s, vh = torch.linalg.svd(work, full_matrices=False)
        return u, s, vh
    except (RuntimeError, torch.linalg.LinAlgError) as exc:  # pragma: no cover - solver dependent
        last_error: Exception = exc
    if not bool(torch.isfinite(work).all()):  # pragma: no cover - solver dependent
        # No driver, precision or jitter can factor NaN/Inf: say so instead of retrying.
        raise ValueError(
            f"svd: expected a finite matrix, but the {tuple(work.shape)} input contains NaN or Inf"
        ) from last_error
    for candidate, driver in itertools.islice(_svd_candidates(work), 1, None):  # pragma: no cover
        try:
            with factorization_threads(candidate):
                if driver is None:
                    return torch.linalg.svd(candidate, full_matrices=False)
                return torch.linalg.svd(candidate, full_matrices=False, driver=driver)
        except (RuntimeError, torch.linalg.LinAlgError) as exc:
            last_error = exc
    raise RuntimeError(f"svd: all fallbacks failed for a matrix of shape {tuple(work.shape)}") from last_error


def svd(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``mat = U diag(S) Vh`` of ``(..., m, n)`` with a graceful fallback chain.

    Returns ``U (..., m, k)``, ``S (..., k)`` (real, descending), ``Vh (..., k, n)``
    with ``k = min(m, n)``, in the input's dtype (``S`` in the matching real dtype).
    The jitter fallback is seeded, so results stay deterministic.

    >>> a = torch.randn(3, 7, dtype=torch.float64)
    >>> u, s, vh = svd(a)
    >>> u.shape, s.shape, vh.shape, bool(torch.allclose(u @ torch.diag(s) @ vh, a))
    (torch.Size([3, 3]), torch.Size([3]), torch.Size([3, 7]), True)
    """
    out_dtype = mat.dtype
    work = mat.to(torch.float32) if out_dtype in _LOW_PRECISION else mat
    if work.shape[-2] < work.shape[-1]:
        v, s, uh = _tall_svd(work.mH)
        u, vh = uh.mH, v.mH
    else:
        u, s, vh = _tall_svd(work)
    if u.dtype == out_dtype:  # no round trip (the fallbacks may have upcast)
        return u, s, vh
    return u.to(out_dtype), s.to(out_dtype.to_real() if out_dtype.is_complex else out_dtype), vh.to(out_dtype)


#: :func:`left_svd` takes the R-only QR route for matrices with at least this many columns per row.
LEFT_SVD_MIN_ASPECT = 2


def left_svd(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and singular values of a 2-D ``(m, n)`` matrix, without ``Vh``.

    Returns ``U (m, k)``, ``S (k,)`` with ``k = min(m, n)``.  For wide matrices
    (``n >= 2m``, the unfoldings of TT-SVD) this is a Householder QR of ``matᴴ`` that
    keeps only ``R`` (no ``Q`` is formed) followed by the SVD of the small ``(m, m)``
    ``Rᴴ`` — backward stable like a full SVD, never a Gram matrix, and several times
    faster than LAPACK's SVD of the wide matrix.  Callers get the right factor they need
    with one GEMM, ``diag(S) Vh = Uᴴ mat``.  Other shapes, and inputs that need
    gradients (``mode="r"`` QR has no backward), use :func:`svd`.

    >>> a = torch.randn(3, 40, dtype=torch.float64)
    >>> u, s = left_svd(a)
    >>> bool(torch.allclose(s, torch.linalg.svdvals(a))), bool(torch.allclose(u @ (u.mT @ a), a))
    (True, True)
    """
    m, n = mat.shape
    if n < LEFT_SVD_MIN_ASPECT * m or (mat.requires_grad and torch.is_grad_enabled()):
        u, s, _ = svd(mat)
        return u, s
    work = mat.to(compute_dtype(mat.dtype))
    with factorization_threads(work):
        r = torch.linalg.qr(work.mH, mode="r")[1]  # mat = Rᴴ Qᴴ
    u, s, _ = svd(r.mH)
    return u.to(mat.dtype), s.to(mat.dtype.to_real() if mat.dtype.is_complex else mat.dtype)


def svd_of_product(
    a: torch.Tensor, b: torch.Tensor, *, a_orthonormal: bool = False, b_orthonormal: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``a @ b`` (``a (m, r)``, ``b (r, n)``) without forming the ``(m, n)`` product when ``r`` is small.

    Returns ``U (m, p)``, ``S (p,)``, ``Vh (p, n)`` with ``p = min(m, r, n)`` — the
    product has rank at most ``r``, so the singular values beyond ``p`` are exactly zero
    (a full SVD of the product would return round-off there).  With
    ``b_orthonormal=True`` (rows of ``b`` orthonormal: a right-orthonormal TT core) it
    is the SVD of ``a`` with ``Vh`` mapped through ``b``; with ``a_orthonormal=True``
    the mirror image; otherwise thin QRs of ``a`` and ``bᴴ`` reduce it to an
    ``(r, r)`` SVD.  When ``r >= min(m, n)`` nothing is saved and the product is
    factored directly.  Accuracy matches the direct SVD: both are backward stable with
    respect to ``||a|| ||b||``, the rounding error of forming ``a @ b``.

    >>> a, b = torch.randn(30, 3, dtype=torch.float64), torch.randn(3, 20, dtype=torch.float64)
    >>> u, s, vh = svd_of_product(a, b)
    >>> s.shape, bool(torch.allclose((u * s) @ vh, a @ b))
    (torch.Size([3]), True)
    """
    m, r = a.shape
    n = b.shape[1]
    if r >= min(m, n):
        return svd(a @ b)
    if b_orthonormal:
        u, s, vh = svd(a)
        return u, s, vh @ b
    if a_orthonormal:
        u, s, vh = svd(b)
        return a @ u, s, vh
    qa, ra = tall_qr(a)
    qb, rb = tall_qr(b.mH)
    u, s, vh = svd(ra @ rb.mH)
    return qa @ u, s, vh @ qb.mH
