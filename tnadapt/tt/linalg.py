"""Robust dense linear-algebra kernels used by every TT algorithm.

* Low-precision inputs (``float16``/``bfloat16``) are upcast to ``float32`` for QR/SVD
  and the factors are cast back, because LAPACK/cuSOLVER do not support them.
* :func:`svd` always computes a *thin* SVD (``full_matrices=False``) and never forms a
  Gram matrix.  If the solver fails to converge (ill-conditioned input), it retries
  with another driver (CUDA), then in double precision, then with a tiny relative
  jitter, so a training run is never killed by a single bad SVD.
* :func:`qr` is a thin Householder QR; :func:`cholesky_qr2` is the GEMM-rich
  alternative for tall-skinny panels (two Cholesky-QR passes, falling back to
  Householder when the Gram matrix is not numerically positive definite).
"""

from __future__ import annotations

import torch

__all__ = ["cholesky_qr2", "compute_dtype", "qr", "svd"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype factorizations run in for inputs of ``dtype`` (fp16/bf16 → fp32)."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def qr(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR of ``mat`` of shape ``(..., m, n)``: ``Q (..., m, k)``, ``R (..., k, n)``, ``k=min(m, n)``."""
    work = mat.to(compute_dtype(mat.dtype))
    q, r = torch.linalg.qr(work, mode="reduced")
    return q.to(mat.dtype), r.to(mat.dtype)


def cholesky_qr2(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR of a tall matrix ``(m, n)``, ``m >= n``, by CholeskyQR2.

    Two passes of ``R = chol(AᴴA)ᴴ, Q = A R⁻¹`` restore orthogonality to working
    precision whenever ``cond(A) < u^{-1/2}``.  Falls back to Householder QR when the
    Cholesky factorisation fails or the input is wide.  Not differentiable-stable for
    rank-deficient input: used only inside no-grad kernels.
    """
    m, n = mat.shape[-2], mat.shape[-1]
    if m < n:
        return qr(mat)
    work = mat.to(compute_dtype(mat.dtype))
    q = work
    r_total: torch.Tensor | None = None
    for _ in range(2):
        gram = q.mH @ q
        chol, info = torch.linalg.cholesky_ex(gram)
        if bool((info != 0).any()):
            return qr(mat)
        r = chol.mH
        q = torch.linalg.solve_triangular(r, q, upper=True, left=False)
        r_total = r if r_total is None else r @ r_total
    assert r_total is not None
    if not bool(torch.isfinite(q).all()):
        return qr(mat)
    return q.to(mat.dtype), r_total.to(mat.dtype)


def _svd_candidates(work: torch.Tensor):  # type: ignore[no-untyped-def]
    """Yield ``(matrix, driver)`` pairs to try, cheapest first; later ones are built lazily."""
    yield work, None
    if work.device.type == "cuda":
        yield work, "gesvd"
    if work.dtype in (torch.float32, torch.complex64):
        yield work.to(torch.complex128 if work.is_complex() else torch.float64), None
    eps = torch.finfo(work.real.dtype if work.is_complex() else work.dtype).eps
    scale = torch.linalg.matrix_norm(work).amax().clamp_min(1e-300 if work.dtype == torch.float64 else 1e-30)
    generator = torch.Generator(device=work.device).manual_seed(0)
    jitter = torch.randn(work.shape, dtype=work.dtype, device=work.device, generator=generator)
    yield work + jitter * (scale * 1e3 * eps), None


def svd(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``mat = U diag(S) Vh`` of ``(..., m, n)`` with a graceful fallback chain.

    Returns ``U (..., m, k)``, ``S (..., k)`` (real, descending), ``Vh (..., k, n)``
    with ``k = min(m, n)``, in the input's dtype (``S`` in the matching real dtype).
    The jitter fallback is seeded, so results stay deterministic.
    """
    out_dtype = mat.dtype
    real_dtype = torch.empty((), dtype=out_dtype).real.dtype if out_dtype.is_complex else out_dtype
    work = mat.to(compute_dtype(out_dtype))
    last_error: Exception | None = None
    for candidate, driver in _svd_candidates(work):
        try:
            if driver is None:
                u, s, vh = torch.linalg.svd(candidate, full_matrices=False)
            else:
                u, s, vh = torch.linalg.svd(candidate, full_matrices=False, driver=driver)
        except (RuntimeError, torch.linalg.LinAlgError) as exc:  # pragma: no cover - solver dependent
            last_error = exc
            continue
        return u.to(out_dtype), s.to(real_dtype), vh.to(out_dtype)
    raise RuntimeError(f"svd: all fallbacks failed for a matrix of shape {tuple(mat.shape)}") from last_error
