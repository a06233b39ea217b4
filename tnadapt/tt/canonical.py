"""Canonical forms: left/right orthonormalisation sweeps by thin QR.

A core ``G`` of shape ``(r_{k-1}, n_k, r_k)`` is *left-orthonormal* when its left
unfolding ``L = G.reshape(r_{k-1} n_k, r_k)`` satisfies ``Lᴴ L = I`` and
*right-orthonormal* when its right unfolding ``R = G.reshape(r_{k-1}, n_k r_k)``
satisfies ``R Rᴴ = I``.  A train is in *mixed canonical form with centre c* when cores
``< c`` are left- and cores ``> c`` right-orthonormal; then ``||X|| = ||G_c||_F``.

The sweeps never change the represented tensor (up to round-off) and can only
*decrease* ranks (``r_k`` becomes ``min(r_k, r_{k-1} n_k)`` on a left sweep).
The known centre of a train is reused: moving the centre from ``c0`` to ``c`` only
touches the cores in between.
"""

from __future__ import annotations

import torch

from . import linalg
from ._errors import check_finite, check_mode
from .tensor_train import TensorTrain

__all__ = [
    "is_left_orthonormal",
    "is_right_orthonormal",
    "left_qr_step",
    "orthogonalize",
    "right_qr_step",
]


def left_qr_step(core: torch.Tensor, nxt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Make ``core`` left-orthonormal, pushing the triangular factor into ``nxt``."""
    r0, n, r1 = core.shape
    q, r = linalg.tall_qr(core.reshape(r0 * n, r1))
    k = q.shape[1]
    new_next = (r @ nxt.reshape(r1, -1)).reshape(k, nxt.shape[1], nxt.shape[2])
    return q.reshape(r0, n, k), new_next


def right_qr_step(prev: torch.Tensor, core: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Make ``core`` right-orthonormal, pushing the triangular factor into ``prev``."""
    r0, n, r1 = core.shape
    q, r = linalg.tall_qr(core.reshape(r0, n * r1).mH)
    k = q.shape[1]
    new_prev = (prev.reshape(-1, r0) @ r.mH).reshape(prev.shape[0], prev.shape[1], k)
    return new_prev, q.mH.reshape(k, n, r1)


def orthogonalize(tt: TensorTrain, center: int = -1) -> TensorTrain:
    """Mixed canonical form of ``tt`` with orthogonality centre ``center`` (negative counts from the end).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((3, 4, 5), ranks=2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> y = orthogonalize(x, 1)
    >>> y.is_left_orthonormal(0), y.is_right_orthonormal(2), y.center
    (True, True, 1)
    >>> bool(torch.allclose(y.full(), x.full()))
    True

    Raises ``ValueError`` naming the cores that hold NaN or Inf, before any QR runs (one
    summation pass over the cores, a few percent of the sweep).
    """
    c = check_mode("center", center, tt.order)
    check_finite("tt", list(tt.cores))
    return orthogonalize_unchecked(tt, c)


def orthogonalize_unchecked(tt: TensorTrain, center: int) -> TensorTrain:
    """:func:`orthogonalize` without the finiteness check, for callers that validated already (or,
    like :func:`~tnadapt.tt.ops.norm`, let NaN propagate); ``center`` must be in ``[0, d)``."""
    if tt.center == center:
        return tt
    return TensorTrain._trusted(orthogonalize_cores(list(tt.cores), tt.center, center), center)


def orthogonalize_cores(cores: list[torch.Tensor], known: int | None, center: int) -> list[torch.Tensor]:
    """Move the orthogonality centre of ``cores`` from ``known`` (``None``: no canonical form) to ``center``.

    In place on the list (which is returned); only the cores between the two centres are
    touched.  No checks: for sweeps whose entry point validated the train.
    """
    d = len(cores)
    c = center
    # Cores [0, left_done) are already left-orthonormal; (right_done, d) right-orthonormal.
    left_done, right_done = (known, known) if known is not None else (0, d - 1)
    for k in range(min(left_done, c), c):
        cores[k], cores[k + 1] = left_qr_step(cores[k], cores[k + 1])
    for k in range(max(right_done, c), c, -1):
        cores[k - 1], cores[k] = right_qr_step(cores[k - 1], cores[k])
    return cores


def _default_atol(dtype: torch.dtype, size: int) -> float:
    real = dtype.to_real() if dtype.is_complex else dtype
    return 100.0 * max(size, 1) * torch.finfo(real).eps


def is_left_orthonormal(core: torch.Tensor, *, atol: float | None = None) -> bool:
    """Whether ``core.reshape(r0*n, r1)`` has orthonormal columns (to ``atol``)."""
    r0, n, r1 = core.shape
    mat = core.detach().reshape(r0 * n, r1)
    gram = mat.mH @ mat
    eye = torch.eye(r1, dtype=gram.dtype, device=gram.device)
    tol = _default_atol(core.dtype, r0 * n) if atol is None else atol
    return bool((gram - eye).abs().max() <= tol)


def is_right_orthonormal(core: torch.Tensor, *, atol: float | None = None) -> bool:
    """Whether ``core.reshape(r0, n*r1)`` has orthonormal rows (to ``atol``)."""
    r0, n, r1 = core.shape
    mat = core.detach().reshape(r0, n * r1)
    gram = mat @ mat.mH
    eye = torch.eye(r0, dtype=gram.dtype, device=gram.device)
    tol = _default_atol(core.dtype, n * r1) if atol is None else atol
    return bool((gram - eye).abs().max() <= tol)
