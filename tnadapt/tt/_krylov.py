"""Matrix-free Krylov solvers for the local problems of ALS/AMEn/DMRG (internal).

* :func:`lanczos_lowest`: the lowest eigenpair of a Hermitian operator by Lanczos with full
  reorthogonalisation, explicitly restarted from the current Ritz vector (the sweep's
  current block is an excellent start, so a few dozen products usually suffice).  An
  optional orthogonal projector restricts the search to the complement of given vectors
  (excited states in DMRG).
* :func:`conjugate_gradient`: CG for Hermitian positive-definite systems.

Vectors are flat 1-D tensors; ``matvec`` maps such a vector to one of the same size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["conjugate_gradient", "lanczos_lowest"]

MatVec = Callable[[torch.Tensor], torch.Tensor]


def _real_dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.vdot(a, b).real)


def lanczos_lowest(
    matvec: MatVec,
    v0: torch.Tensor,
    *,
    tol: float,
    krylov_dim: int = 30,
    max_restarts: int = 20,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, torch.Tensor, bool]:
    """Lowest eigenpair ``(θ, v)`` of the Hermitian ``matvec``, ``||v|| = 1``, and whether it converged.

    Converged means ``||H v - θ v|| <= tol * max(1, |θ|)`` (the Lanczos residual estimate
    ``β_j |y_j|``).  ``project`` (an orthogonal projector) keeps every Krylov vector in its
    range, so the result is the lowest eigenpair of ``P H P`` on that range.
    """
    n = v0.numel()
    dim = max(1, min(krylov_dim, n))
    v = v0 if project is None else project(v0)
    norm = float(torch.linalg.vector_norm(v))
    if not norm > 0 or norm != norm:
        gen = torch.Generator(device="cpu").manual_seed(n)
        v = torch.randn(n, generator=gen, dtype=v0.real.dtype).to(device=v0.device, dtype=v0.dtype)
        v = v if project is None else project(v)
        norm = float(torch.linalg.vector_norm(v))
    v = v / norm
    theta = _real_dot(v, matvec(v))
    for _ in range(max_restarts + 1):
        basis = torch.empty(dim, n, dtype=v0.dtype, device=v0.device)
        alphas: list[float] = []
        betas: list[float] = []
        basis[0] = v
        residual = float("inf")
        y = np.ones(1)
        j = 0
        for j in range(dim):
            w = matvec(basis[j])
            if project is not None:
                w = project(w)
            alphas.append(_real_dot(basis[j], w))
            block = basis[: j + 1]
            w = w - block.mT @ (block.conj() @ w)  # full reorthogonalisation, twice is enough
            w = w - block.mT @ (block.conj() @ w)
            beta = float(torch.linalg.vector_norm(w))
            # The tridiagonal projection is tiny: numpy's eigh costs ~20 us there, torch's ~0.5 ms.
            t = np.diag(alphas)
            if betas:
                t += np.diag(betas, 1) + np.diag(betas, -1)
            evals, evecs = np.linalg.eigh(t)
            theta, y = float(evals[0]), evecs[:, 0]
            residual = beta * abs(float(y[-1]))
            scale = max(1.0, abs(theta))
            if residual <= tol * scale or beta <= 1e-14 * scale or j == dim - 1 or j == n - 1:
                break
            betas.append(beta)
            basis[j + 1] = w / beta
        v = torch.from_numpy(y).to(dtype=v0.dtype, device=v0.device) @ basis[: j + 1]
        v = v / torch.linalg.vector_norm(v)
        if residual <= tol * max(1.0, abs(theta)) or j == n - 1:
            return theta, v, True
    return theta, v, False


def conjugate_gradient(
    matvec: MatVec, rhs: torch.Tensor, x0: torch.Tensor, *, tol: float, max_iter: int
) -> tuple[torch.Tensor, float, int]:
    """CG for a Hermitian positive-definite ``matvec``: ``(x, ||A x - rhs|| / ||rhs||, iterations)``."""
    ref = float(torch.linalg.vector_norm(rhs))
    if ref == 0.0:
        return torch.zeros_like(rhs), 0.0, 0
    x = x0.clone()
    r = rhs - matvec(x)
    p = r.clone()
    rr = _real_dot(r, r)
    it = 0
    for it in range(1, max_iter + 1):
        if rr**0.5 <= tol * ref:
            return x, rr**0.5 / ref, it - 1
        ap = matvec(p)
        denom = _real_dot(p, ap)
        if not denom > 0:  # not positive definite on this direction (or breakdown): stop here
            break
        alpha = rr / denom
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = _real_dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, float(torch.linalg.vector_norm(rhs - matvec(x))) / ref, it
