"""Two-site operations: merge neighbouring cores, split a supercore, and the DMRG-style sweep.

``merge(tt, k)`` contracts cores ``k`` and ``k+1`` into the supercore
``W[a, i, j, b] = Σ_c G_k[a, i, c] G_{k+1}[c, j, b]`` of shape
``(r_{k-1}, n_k, n_{k+1}, r_{k+1})``.  :func:`split` factors it back by a truncated SVD
of the matrix ``W.reshape(r_{k-1} n_k, n_{k+1} r_{k+1}) = U S Vh`` and puts the
singular values to the ``"left"`` (``U S``, ``Vh``), ``"right"`` (``U``, ``S Vh``) or
``"both"`` (``U √S``, ``√S Vh``).

:func:`dmrg_sweep` is the MetaTT paper's Algorithm 1 (left-to-right then right-to-left
merge → truncated SVD → split) as a pure function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import linalg
from ._errors import as_int, check_finite, check_positive_float
from ._numerics import stable_norm
from .canonical import orthogonalize_unchecked
from .rounding import check_truncation_args
from .tensor_train import TensorTrain
from .truncation import TruncatedSVD, TruncationReport, _truncated_svd, check_truncation_criteria, truncate_spectrum

__all__ = ["ABSORB_CHOICES", "SweepReport", "dmrg_sweep", "merge", "replace_two_site", "split"]

ABSORB_CHOICES = ("left", "right", "both")


def _check_bond(k: int, order: int) -> int:
    """Normalise a (possibly negative) bond index ``k`` (an integer scalar, as for modes): the bond between cores ``k`` and ``k+1``."""
    i = as_int(k)
    if i is None:
        raise TypeError(f"k: expected an int bond index, got {type(k).__name__} {k!r}")
    if not -(order - 1) <= i < order - 1:
        raise IndexError(f"k: bond {i} is out of range for a tensor train of order {order} (bonds 0..{order - 2})")
    return i % (order - 1)


def merge(tt: TensorTrain, k: int) -> torch.Tensor:
    """Supercore of cores ``k`` and ``k+1``, shape ``(r_{k-1}, n_k, n_{k+1}, r_{k+1})``."""
    if tt.order < 2:
        raise ValueError(f"merge: needs a train of order >= 2, got order {tt.order}")
    k = _check_bond(k, tt.order)
    a, b = tt.cores[k], tt.cores[k + 1]
    r0, n0, r1 = a.shape
    _, n1, r2 = b.shape
    return (a.reshape(r0 * n0, r1) @ b.reshape(r1, n1 * r2)).reshape(r0, n0, n1, r2)


def split(
    supercore: torch.Tensor,
    *,
    max_rank: int | None = None,
    eps: float | None = None,
    abs_tol: float | torch.Tensor | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
    absorb: str = "right",
) -> tuple[torch.Tensor, torch.Tensor, TruncatedSVD]:
    """Split a ``(r0, n0, n1, r2)`` supercore into cores ``(r0, n0, k)`` and ``(k, n1, r2)``.

    ``eps`` is relative to the supercore's Frobenius norm (the error of the whole train
    when the supercore is the orthogonality centre), ``abs_tol`` absolute; ``cutoff`` and
    ``max_rank``/``min_rank`` as in :mod:`tnadapt.tt.truncation`.  Returns the two cores
    and the :class:`~tnadapt.tt.truncation.TruncatedSVD` (``.discarded`` is the
    Frobenius norm of what was dropped).

    >>> import torch
    >>> w = torch.randn(1, 3, 4, 1, dtype=torch.float64)
    >>> a, b, t = split(w)
    >>> bool(torch.allclose(torch.einsum("aib,bjc->aijc", a, b), w)), t.rank
    (True, 3)
    """
    if not isinstance(supercore, torch.Tensor) or supercore.ndim != 4:
        got = tuple(supercore.shape) if isinstance(supercore, torch.Tensor) else type(supercore).__name__
        raise ValueError(f"supercore: expected a 4-D tensor (r_left, n_k, n_k+1, r_right), got {got}")
    if absorb not in ABSORB_CHOICES:
        raise ValueError(f"absorb: expected one of {ABSORB_CHOICES}, got {absorb!r}")
    check_positive_float("eps", eps)
    check_truncation_criteria(max_rank=max_rank, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank)
    check_finite("supercore", supercore)
    r0, n0, n1, r2 = supercore.shape
    mat = supercore.reshape(r0 * n0, n1 * r2)
    tol = abs_tol
    if eps is not None:
        rel = stable_norm(mat) * eps
        tol = rel if tol is None else torch.minimum(torch.as_tensor(tol, dtype=rel.dtype, device=rel.device), rel)
    t = _truncated_svd(mat, max_rank=max_rank, abs_tol=tol, cutoff=cutoff, min_rank=min_rank)
    left, right = _absorb(t.U, t.S, t.Vh, absorb)
    return left.reshape(r0, n0, t.rank), right.reshape(t.rank, n1, r2), t


def _absorb(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, absorb: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of ``U diag(S) Vh`` with the singular values put ``absorb``-wards."""
    s = s.to(u.dtype)
    if absorb == "left":
        return u * s.unsqueeze(0), vh
    if absorb == "right":
        return u, s.unsqueeze(1) * vh
    root = s.sqrt()
    return u * root.unsqueeze(0), root.unsqueeze(1) * vh


def replace_two_site(
    tt: TensorTrain,
    k: int,
    supercore: torch.Tensor,
    *,
    max_rank: int | None = None,
    eps: float | None = None,
    cutoff: float | None = None,
    absorb: str = "right",
) -> tuple[TensorTrain, TruncatedSVD]:
    """A copy of ``tt`` with cores ``k, k+1`` replaced by the truncated split of ``supercore``.

    The supercore must keep the outer ranks ``(r_{k-1}, ..., r_{k+1})`` and the mode
    sizes.  If ``tt``'s orthogonality centre was ``k`` or ``k+1`` the result's centre is
    tracked (``k+1`` for ``absorb="right"``, ``k`` for ``"left"``).
    """
    if tt.order < 2:
        raise ValueError(f"split: needs a train of order >= 2, got order {tt.order}")
    k = _check_bond(k, tt.order)
    expected = (tt.ranks[k], tt.shape[k], tt.shape[k + 1], tt.ranks[k + 2])
    if not isinstance(supercore, torch.Tensor) or tuple(supercore.shape) != expected:
        got = tuple(supercore.shape) if isinstance(supercore, torch.Tensor) else type(supercore).__name__
        raise ValueError(f"supercore: expected shape {expected} for sites ({k}, {k + 1}), got {got}")
    left, right, t = split(supercore, max_rank=max_rank, eps=eps, cutoff=cutoff, absorb=absorb)
    cores = list(tt.cores)
    cores[k], cores[k + 1] = left, right
    center = None
    if tt.center in (k, k + 1) and absorb != "both":
        center = k + 1 if absorb == "right" else k
    return TensorTrain(cores, center=center), t


@dataclass(frozen=True)
class SweepReport(TruncationReport):
    """A :class:`TruncationReport` for :func:`dmrg_sweep` with the per-pass discarded norms.

    ``passes[0]`` is the left-to-right pass, ``passes[1]`` the right-to-left pass, each a
    ``(d-1,)`` tensor of per-bond discarded norms; ``discarded`` combines them
    (``sqrt(p0² + p1²)``).  With ``canonicalize=True`` every truncation happens at the
    orthogonality centre, so ``||x - result|| = ||passes[0]||`` up to round-off (the second
    pass only re-gauges).  With ``canonicalize=False`` the first pass truncates supercores
    whose right environment (the raw cores ``k+2, ...``) is not orthonormal, so its
    discarded norms are *not* the error (which can be larger or smaller); the second pass
    sees orthonormal environments on both sides, so its norms are exact.  ``pass_spectra[p][k]`` is the full
    spectrum pass ``p`` saw at bond ``k`` (``singular_values`` is the last pass's); with
    ``canonicalize=True`` the first pass does the truncating, so ``pass_spectra[0]`` holds the
    pre-truncation spectra.
    """

    passes: tuple[torch.Tensor, ...] = ()
    pass_spectra: tuple[tuple[torch.Tensor, ...], ...] = ()


def dmrg_sweep(
    tt: TensorTrain,
    *,
    max_rank: int | Sequence[int] | None = None,
    eps: float | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
    canonicalize: bool = True,
) -> SweepReport:
    """The DMRG-inspired two-site sweep of MetaTT's Algorithm 1.

    Left to right, for each bond ``k``: merge cores ``k, k+1``, truncated SVD, keep
    ``U`` in core ``k`` and ``S Vh`` in core ``k+1``; then right to left: merge, truncated
    SVD, ``U S`` into core ``k`` and ``Vh`` into core ``k+1``.

    ``canonicalize=True`` (default) first moves the orthogonality centre to core 0 so
    every merged supercore is the centre: each truncation is then optimal for its bond,
    the reported discarded norms are the exact errors, and ``eps`` guarantees
    ``||x - result|| <= eps ||x||`` (budget ``eps ||x|| / sqrt(d-1)`` per bond, spent in
    the first pass; the second pass keeps the ranks and only re-gauges, so the result
    ends right-canonical with centre 0).  ``canonicalize=False`` runs the paper's
    algorithm literally on the raw cores, applying the criteria in both passes; its
    reported discarded norms then measure the supercore truncations, not the error
    (see :class:`SweepReport`).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((5, 3, 2, 5), 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> rep = dmrg_sweep(x, max_rank=2)
    >>> max(rep.tt.ranks), bool(torch.isclose(rep.error, (x - rep.tt).norm(), rtol=1e-6))
    (2, True)
    """
    caps = check_truncation_args(tt, max_rank, eps, cutoff, min_rank)
    d = tt.order
    x = orthogonalize_unchecked(tt, 0) if canonicalize else tt
    ref = stable_norm(x.cores[0]) if canonicalize else tt.norm()
    abs_tol = None if eps is None or d == 1 else ref * (eps / (d - 1) ** 0.5)
    cores = list(x.cores)
    real = ref.dtype
    first = [ref.new_zeros(())] * (d - 1)
    second = [ref.new_zeros(())] * (d - 1)
    spectra: list[torch.Tensor] = [ref.new_zeros(0)] * (d - 1)

    def step(k: int, absorb: str, cap: int | None, tol: torch.Tensor | None, cut: float | None) -> torch.Tensor:
        # merge -> truncated SVD -> split, with the SVD of the supercore W = A B computed
        # from its two factors (rank W <= r1; in canonical form one factor is orthonormal
        # and only the other is factored) instead of from the (r0 n0, n1 r2) merged matrix.
        a, b = cores[k], cores[k + 1]
        r0, n0, r1 = a.shape
        _, n1, r2 = b.shape
        mat_a, mat_b = a.reshape(r0 * n0, r1), b.reshape(r1, n1 * r2)
        u, s, vh = linalg.svd_of_product(
            mat_a,
            mat_b,
            a_orthonormal=canonicalize and absorb == "left",
            b_orthonormal=canonicalize and absorb == "right",
        )
        full = torch.cat([s, s.new_zeros(min(r0 * n0, n1 * r2) - s.shape[0])])  # exact zeros beyond rank W
        keep, gone = truncate_spectrum(full, max_rank=cap, abs_tol=tol, cutoff=cut, min_rank=min_rank)
        if keep > s.shape[0]:
            # The rank grows past rank(W) (zero singular values kept): the extra singular
            # vectors are an orthonormal completion, which the SVD of the merged W supplies.
            u, full, vh = linalg.svd(mat_a @ mat_b)
            keep, gone = truncate_spectrum(full, max_rank=cap, abs_tol=tol, cutoff=cut, min_rank=min_rank)
        left, right = _absorb(u[:, :keep], full[:keep], vh[:keep], absorb)
        cores[k], cores[k + 1] = left.reshape(r0, n0, keep), right.reshape(keep, n1, r2)
        spectra[k] = full
        return gone.to(real)

    for k in range(d - 1):
        first[k] = step(k, "right", None if caps is None else caps[k], abs_tol, cutoff)
    first_spectra = tuple(spectra)
    for k in range(d - 2, -1, -1):
        if canonicalize:
            second[k] = step(k, "left", cores[k].shape[2], None, None)
        else:
            second[k] = step(k, "left", None if caps is None else caps[k], abs_tol, cutoff)
    out = TensorTrain(cores, center=0 if canonicalize else None)
    p0 = torch.stack(first) if d > 1 else ref.new_zeros(0)
    p1 = torch.stack(second) if d > 1 else ref.new_zeros(0)
    return SweepReport(
        tt=out,
        discarded=torch.hypot(p0, p1),  # sqrt(p0² + p1²) without squaring: no under- or overflow
        singular_values=tuple(spectra),
        ranks_before=tt.ranks,
        ranks_after=out.ranks,
        reference_norm=ref,
        passes=(p0, p1),
        pass_spectra=(first_spectra, tuple(spectra)),
    )
