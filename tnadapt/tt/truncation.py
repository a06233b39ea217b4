"""Truncation contract shared by every SVD-based TT algorithm.

A truncated SVD keeps the ``k`` largest singular values of a bond.  ``k`` is chosen as
the smallest rank that satisfies *all* of the requested criteria, in the spirit of
ITensor's ``maxdim``/``cutoff``/``mindim``:

``max_rank``
    hard upper bound on ``k``;
``abs_tol``
    absolute Frobenius budget: the discarded tail must satisfy
    ``sqrt(sum_{j>=k} s_j**2) <= abs_tol`` (used by TT-SVD / rounding with a relative
    ``eps``, which is converted to ``eps * ||x|| / sqrt(d - 1)`` per bond);
``cutoff``
    per-bond *relative discarded weight* (ITensor/quimb ``cutoff``):
    ``sum_{j>=k} s_j**2 / sum_j s_j**2 <= cutoff``;
``min_rank``
    lower bound on ``k`` (never above the number of singular values); at least 1.

The rank is computed on the tensor's device with a couple of reductions; slicing the
factors then needs its value on the host, which is a single synchronisation per bond
and only when a data-dependent criterion (``abs_tol``/``cutoff``) is active.  With only
``max_rank`` the rank is known statically and no synchronisation happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from . import linalg
from ._errors import check_finite, check_int_rank, check_min_rank, check_positive_float
from ._numerics import stable_norm

if TYPE_CHECKING:
    from .tensor_train import TensorTrain

__all__ = [
    "TruncatedSVD",
    "TruncationReport",
    "check_truncation_criteria",
    "select_rank",
    "truncate_spectrum",
    "truncated_svd",
]


def _tail_weights(s: torch.Tensor) -> torch.Tensor:
    """``tail[k] = sum_{j>=k} s_j**2`` for ``k = 0..len(s)`` (last entry 0), in ``s``'s dtype."""
    sq = s**2
    tail = torch.flip(torch.cumsum(torch.flip(sq, (0,)), 0), (0,))
    return torch.cat([tail, tail.new_zeros(1)])


def _work_dtype(device: torch.device) -> torch.dtype:
    """Tail sums run in float64 on every device that has it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def select_rank(
    s: torch.Tensor,
    *,
    max_rank: int | None = None,
    abs_tol: float | torch.Tensor | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
) -> int:
    """Smallest rank satisfying the truncation criteria for descending singular values ``s``.

    >>> import torch
    >>> select_rank(torch.tensor([1.0, 1e-3, 1e-6]), abs_tol=1e-2)
    1
    >>> select_rank(torch.tensor([1.0, 1e-3, 1e-6]), cutoff=1e-10)
    2
    """
    check_truncation_criteria(max_rank=max_rank, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank)
    return _select_rank(s, max_rank=max_rank, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank)


def _select_rank(
    s: torch.Tensor,
    *,
    max_rank: int | None,
    abs_tol: float | torch.Tensor | None,
    cutoff: float | None,
    min_rank: int,
) -> int:
    """:func:`select_rank` without the criteria checks: the per-bond step of sweeps whose entry point validated."""
    n = s.shape[-1]
    upper = n if max_rank is None else min(max_rank, n)
    lower = max(1, min(min_rank, upper))
    if abs_tol is None and cutoff is None:
        return upper
    # Work relative to the largest singular value so no square over- or underflows
    # (s ~ 1e-200 in float64, or a float32 tail on MPS); comparisons are scale-free.
    work = s.detach().to(_work_dtype(s.device))
    top = work.abs().amax()
    scale = torch.where(top > 0, top, torch.ones_like(top))
    tail = _tail_weights(work / scale)
    counts = []
    if abs_tol is not None:
        # dtype given: a Python float must not pass through torch's default (float32) dtype.
        tol = torch.as_tensor(abs_tol, dtype=work.dtype, device=s.device).detach() / scale
        counts.append((tail > tol * tol).sum())
    if cutoff is not None:
        counts.append((tail > cutoff * tail[0]).sum())
    k = torch.stack(counts).max()
    return int(k.clamp(lower, upper))


@dataclass(frozen=True)
class TruncatedSVD:
    """Result of :func:`truncated_svd`: ``mat ≈ U diag(S) Vh`` with rank ``len(S)``.

    ``discarded`` is the Frobenius norm of the dropped tail ``sqrt(sum s_j**2, j >= k)``
    (a 0-d real tensor on the input's device); ``singular_values`` the full spectrum.
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    discarded: torch.Tensor
    singular_values: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.S.shape[-1])


def truncated_svd(
    mat: torch.Tensor,
    *,
    max_rank: int | None = None,
    abs_tol: float | torch.Tensor | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
) -> TruncatedSVD:
    """Thin SVD of a 2-D ``mat`` truncated by the criteria of :func:`select_rank`.

    >>> import torch
    >>> m = torch.diag(torch.tensor([3.0, 2.0, 1e-9], dtype=torch.float64))
    >>> t = truncated_svd(m, abs_tol=1e-6)
    >>> t.rank, float(t.discarded) < 1e-8
    (2, True)
    """
    if not isinstance(mat, torch.Tensor) or mat.ndim != 2:
        got = tuple(mat.shape) if isinstance(mat, torch.Tensor) else type(mat).__name__
        raise ValueError(f"mat: expected a 2-D tensor, got {got}")
    check_truncation_criteria(max_rank=max_rank, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank)
    check_finite("mat", mat)
    return _truncated_svd(mat, max_rank=max_rank, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank)


def check_truncation_criteria(
    *, max_rank: int | None, abs_tol: float | torch.Tensor | None, cutoff: float | None, min_rank: int
) -> None:
    """Validate the criteria of one truncated SVD (a single ``max_rank``; ``abs_tol`` a float or 0-d tensor)."""
    check_int_rank("max_rank", max_rank)
    if not isinstance(abs_tol, torch.Tensor):
        check_positive_float("abs_tol", abs_tol)
    check_positive_float("cutoff", cutoff)
    check_min_rank(min_rank)


def _truncated_svd(
    mat: torch.Tensor,
    *,
    max_rank: int | None,
    abs_tol: float | torch.Tensor | None,
    cutoff: float | None,
    min_rank: int,
) -> TruncatedSVD:
    """:func:`truncated_svd` without the input checks (callers validated already)."""
    u, s, vh = linalg.svd(mat)
    k, discarded = truncate_spectrum(s, max_rank=max_rank, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank)
    return TruncatedSVD(U=u[:, :k], S=s[:k], Vh=vh[:k, :], discarded=discarded, singular_values=s)


def truncate_spectrum(
    s: torch.Tensor,
    *,
    max_rank: int | None = None,
    abs_tol: float | torch.Tensor | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
) -> tuple[int, torch.Tensor]:
    """Rank ``k`` chosen by :func:`select_rank` and the discarded norm ``sqrt(sum_{j>=k} s_j**2)``.

    For algorithms that compute the singular values their own way (TT-SVD without
    ``Vh``, the factored two-site split) and then slice the factors themselves; the caller
    validates the criteria once (this runs per bond and does not re-check them).

    >>> import torch
    >>> k, gone = truncate_spectrum(torch.tensor([3.0, 4.0e-3, 3.0e-3]), max_rank=1)
    >>> k, round(float(gone), 6)
    (1, 0.005)
    """
    k = _select_rank(s, max_rank=max_rank, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank)
    tail = s[k:]
    return k, stable_norm(tail) if tail.numel() else s.new_zeros(())


@dataclass(frozen=True)
class TruncationReport:
    """What a TT truncation (TT-SVD, rounding, two-site sweep) did, bond by bond.

    Attributes
    ----------
    tt:
        The truncated train.
    discarded:
        Real tensor ``(d-1,)``: Frobenius norm of the singular values dropped at each bond
        ``k`` (between cores ``k`` and ``k+1``).  For a sweep with several passes, the sum
        over passes of squares, square-rooted.
    singular_values:
        The full spectrum seen at each bond before truncation (last pass).
    ranks_before, ranks_after:
        TT ranks ``(1, r_1, ..., r_{d-1}, 1)`` before and after.
    reference_norm:
        ``||x||`` of the input (0-d real tensor), used for relative errors.
    """

    tt: TensorTrain
    discarded: torch.Tensor
    singular_values: tuple[torch.Tensor, ...]
    ranks_before: tuple[int, ...]
    ranks_after: tuple[int, ...]
    reference_norm: torch.Tensor

    @property
    def error(self) -> torch.Tensor:
        """``sqrt(sum_k discarded_k**2)``: the exact error ``||x - tt||`` for one-pass
        canonical truncations (TT-SVD, rounding), an upper bound otherwise."""
        return stable_norm(self.discarded)

    @property
    def relative_error(self) -> torch.Tensor:
        """``error / ||x||`` (0 for the zero tensor)."""
        ref = self.reference_norm
        return torch.where(ref > 0, self.error / torch.where(ref > 0, ref, torch.ones_like(ref)), torch.zeros_like(ref))

    @property
    def num_params(self) -> int:
        return self.tt.num_params
