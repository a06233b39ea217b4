"""Products with a :class:`~tnadapt.tt.matrix.TTMatrix`: operator × train, operator × operator,
Kronecker products, operator × dense batch, and rounded operator × train products.

Rank rules: ``A @ x`` (:func:`matvec`) and ``A @ B`` (:func:`matmul`) have ranks
``r_k(A) r_k(x)`` (core ``k`` contracts the column leg of ``A``'s core with the row leg or
mode of the other, bonds paired as ``(a, s)``, ``a`` major); :func:`kron` concatenates the
cores, so its ranks are ``(ranks(A), ranks(B))`` joined at a bond of rank 1.

Rounded products (:func:`matvec_round`) return a :class:`ProductReport`:

``method="exact"``
    the exact product, then TT-rounding (:func:`tnadapt.tt.round_tt`): the guarantee of
    rounding, ``||A x - y|| <= eps ||A x||``, and ``error`` *is* ``||A x - y||`` (the
    rounding's exact per-bond report), at cost ``O(d m (r_A r_x)^3)``.
``method="randomized"``
    the exact product, then randomized rounding (``round_tt(method="randomized")``):
    cheaper SVDs, same exact ``error`` report.
``method="zipup"``
    zip-up (Stoudenmire & White 2010): ``x`` and ``A`` (on its merged legs) are
    right-orthogonalised, then one left-to-right sweep contracts ``A``'s and ``x``'s cores
    into the carried remainder and truncates it by SVD — the product of ranks ``r_A r_x`` is never formed as a core or factorised.  Its
    truncations are not optimal (the rest of ``A x`` is not orthonormal), but the error
    is still measured exactly: the parts dropped at different bonds are orthogonal (each
    lies in the kept left basis times the complement of the next kept columns), so
    ``||A x - y||² = Σ_k ||D_k R_k||²`` where ``D_k`` is what bond ``k`` dropped and
    ``R_k`` the rest of ``A x``; ``||D_k R_k||`` comes from ``D_k`` and the Gram matrix of
    ``R_k``, contracted from the right once beforehand (no cancellation, unlike
    ``||A x||² - 2 Re <y, A x> + ||y||²``).  Cost ``O(d m n r_A² r_x² (r_A + r_x))`` for
    the Gram matrices plus the sweep's SVDs of ``(r_y m, r_A r_x)`` panels.  ``eps``
    budgets each bond's singular-value tail (as rounding does); since the rest is not
    orthonormal that is not a guarantee — check the reported ``error``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import torch

from . import linalg
from ._errors import check_finite, describe
from ._numerics import stable_norm
from ._sweeps import drop_redundant_ranks
from .batch import TTBatch
from .matrix import TTMatrix
from .tensor_train import TensorTrain
from .truncation import TruncationReport, truncate_spectrum

__all__ = ["ProductReport", "apply_dense", "kron", "matmul", "matmul_round", "matvec", "matvec_round"]


def _check_operand(name: str, a: TTMatrix, x: TensorTrain | TTBatch, *, batch: bool = False) -> None:
    if not isinstance(a, TTMatrix):
        raise TypeError(f"A: expected a TTMatrix, got {describe(a)}")
    if not isinstance(x, (TensorTrain, TTBatch) if batch else TensorTrain):
        kinds = "a TensorTrain or a TTBatch" if batch else "a TensorTrain"
        raise TypeError(f"{name}: expected {kinds}, got {describe(x)}")
    if x.shape != a.col_dims:
        raise ValueError(f"{name}: expected shape {a.col_dims} (A.col_dims), got shape {x.shape}")
    if x.dtype != a.dtype:
        raise ValueError(f"{name}: dtype {x.dtype} differs from A's dtype {a.dtype}")
    if x.device != a.device:
        raise ValueError(f"{name}: device {x.device} differs from A's device {a.device}")


def _matvec_core(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``(ra, m, n, rb) x (..., sa, n, sb) -> (..., ra sa, m, rb sb)`` (leading batch axes carried along)."""
    ra, m, _, rb = g.shape
    *lead, sa, _, sb = h.shape
    return torch.einsum("amnb,...snt->...asmbt", g, h).reshape(*lead, ra * sa, m, rb * sb)


@overload
def matvec(a: TTMatrix, x: TensorTrain) -> TensorTrain: ...


@overload
def matvec(a: TTMatrix, x: TTBatch) -> TTBatch: ...


def matvec(a: TTMatrix, x: TensorTrain | TTBatch) -> TensorTrain | TTBatch:
    """``A @ x`` exactly: a train of shape ``A.row_dims`` with ranks ``r_k(A) r_k(x)``.

    For a :class:`~tnadapt.tt.TTBatch` ``x``, every member at once (the batch of ``A @ x_b``).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain, TTMatrix
    >>> g = torch.Generator().manual_seed(0)
    >>> A = TTMatrix.random((2, 3), (4, 5), 2, generator=g, dtype=torch.float64)
    >>> x = TensorTrain.random((4, 5), 3, generator=g, dtype=torch.float64)
    >>> y = matvec(A, x)
    >>> y.ranks
    (1, 6, 1)
    >>> bool(torch.allclose(y.full().reshape(-1), A.full() @ x.full().reshape(-1)))
    True
    """
    _check_operand("x", a, x, batch=True)
    cores = [_matvec_core(g, h) for g, h in zip(a.cores, x.cores)]
    if isinstance(x, TTBatch):
        return TTBatch._trusted(cores)
    return TensorTrain._trusted(cores, None)


def _check_factors(a: TTMatrix, b: TTMatrix) -> None:
    if not isinstance(a, TTMatrix):
        raise TypeError(f"A: expected a TTMatrix, got {describe(a)}")
    if not isinstance(b, TTMatrix):
        raise TypeError(f"B: expected a TTMatrix, got {describe(b)}")
    if b.row_dims != a.col_dims:
        raise ValueError(f"B: expected row_dims {a.col_dims} (A.col_dims), got row_dims {b.row_dims}")
    if b.dtype != a.dtype or b.device != a.device:
        raise ValueError(f"B: dtype/device {b.dtype}/{b.device} differ from A's {a.dtype}/{a.device}")


def matmul(a: TTMatrix, b: TTMatrix) -> TTMatrix:
    """``A @ B`` exactly: row dims of ``A``, column dims of ``B``, ranks ``r_k(A) r_k(B)``.

    >>> import torch
    >>> from tnadapt.tt import TTMatrix
    >>> g = torch.Generator().manual_seed(0)
    >>> A = TTMatrix.random((2, 3), (4, 5), 2, generator=g, dtype=torch.float64)
    >>> B = TTMatrix.random((4, 5), (3, 3), 2, generator=g, dtype=torch.float64)
    >>> C = matmul(A, B)
    >>> C.row_dims, C.col_dims, C.ranks
    ((2, 3), (3, 3), (1, 4, 1))
    >>> bool(torch.allclose(C.full(), A.full() @ B.full()))
    True
    """
    _check_factors(a, b)
    cores = []
    for g, h in zip(a.cores, b.cores):
        ra, m, _, rb = g.shape
        sa, _, n, sb = h.shape
        cores.append(torch.einsum("amkb,sknt->asmnbt", g, h).reshape(ra * sa, m, n, rb * sb))
    return TTMatrix._trusted(cores)


@overload
def kron(a: TTMatrix, b: TTMatrix) -> TTMatrix: ...


@overload
def kron(a: TensorTrain, b: TensorTrain) -> TensorTrain: ...


def kron(a: TTMatrix | TensorTrain, b: TTMatrix | TensorTrain) -> TTMatrix | TensorTrain:
    """Kronecker product ``a ⊗ b`` of two TT-matrices (or of two trains): the cores of ``a`` then ``b``.

    With C-order indices (site 0 most significant), ``full(kron(A, B)) ==
    torch.kron(full(A), full(B))``; for trains, ``kron(x, y).full() == outer product`` of
    shape ``x.shape + y.shape``.  Exact and free (no arithmetic); order ``d_a + d_b``.

    >>> import torch
    >>> from tnadapt.tt import TTMatrix
    >>> g = torch.Generator().manual_seed(0)
    >>> A = TTMatrix.random((2,), (3,), 1, generator=g, dtype=torch.float64)
    >>> B = TTMatrix.random((2, 2), (2, 1), 2, generator=g, dtype=torch.float64)
    >>> bool(torch.allclose(kron(A, B).full(), torch.kron(A.full(), B.full())))
    True
    """
    if isinstance(a, TTMatrix) and isinstance(b, TTMatrix):
        if b.dtype != a.dtype or b.device != a.device:
            raise ValueError(f"b: dtype/device {b.dtype}/{b.device} differ from a's {a.dtype}/{a.device}")
        return TTMatrix._trusted((*a.cores, *b.cores))
    if isinstance(a, TensorTrain) and isinstance(b, TensorTrain):
        if b.dtype != a.dtype or b.device != a.device:
            raise ValueError(f"b: dtype/device {b.dtype}/{b.device} differ from a's {a.dtype}/{a.device}")
        return TensorTrain._trusted((*a.cores, *b.cores), None)
    raise TypeError(f"kron: expected two TTMatrix or two TensorTrain operands, got {describe(a)} and {describe(b)}")


def apply_dense(a: TTMatrix, batch: torch.Tensor) -> torch.Tensor:
    """``y[..., :] = full(A) @ batch[..., :]``: ``(..., prod n_k) -> (..., prod m_k)``, core by core.

    The dense matrix is never formed: site ``k`` contracts the batch's ``n_k`` leg and the
    incoming bond with core ``k``, so the largest intermediate has ``B prod(m_<k) r_k
    prod(n_>=k)`` entries and the cost is ``O(B sum_k prod(m_<=k) r_{k-1} r_k prod(n_>=k))`` —
    what a TT layer needs (``nn.Linear``'s ``x @ W.T`` with ``W = full(A)``).  The batch is
    promoted to a common dtype with the cores; differentiable in both.

    >>> import torch
    >>> from tnadapt.tt import TTMatrix
    >>> g = torch.Generator().manual_seed(0)
    >>> A = TTMatrix.random((2, 3), (4, 5), 2, generator=g, dtype=torch.float64)
    >>> v = torch.randn(7, 20, generator=g, dtype=torch.float64)
    >>> y = apply_dense(A, v)
    >>> y.shape
    torch.Size([7, 6])
    >>> bool(torch.allclose(y, v @ A.full().T))
    True
    """
    if not isinstance(a, TTMatrix):
        raise TypeError(f"A: expected a TTMatrix, got {describe(a)}")
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"batch: expected a torch.Tensor, got {describe(batch)}")
    rows, cols = a.shape
    if batch.ndim < 1 or batch.shape[-1] != cols:
        raise ValueError(
            f"batch: expected shape (..., {cols}) (last dimension prod(A.col_dims)), got {tuple(batch.shape)}"
        )
    if batch.device != a.device:
        raise ValueError(f"batch: device {batch.device} differs from A's device {a.device}")
    dtype = torch.promote_types(batch.dtype, a.dtype)
    lead = batch.shape[:-1]
    size = math.prod(lead)
    # t: (B, M_done, r, N_rest) with N_rest = prod of the column legs still to contract.
    t = batch.to(dtype).reshape(size, 1, 1, cols)
    for core in a.cores:
        r0, m, n, r1 = core.shape
        done = t.shape[1]
        t = t.reshape(size, done, r0, n, -1)
        t = torch.einsum("bdrnN,rmns->bdmsN", t, core.to(dtype)).reshape(size, done * m, r1, -1)
    return t.reshape(*lead, rows)


@dataclass(frozen=True)
class ProductReport(TruncationReport):
    """A :class:`~tnadapt.tt.TruncationReport` for a rounded product ``y ≈ A x`` (:func:`matvec_round`,
    :func:`matmul_round`).

    ``tt`` is ``y``; ``discarded``/``singular_values`` are the truncation's per bond;
    ``residual`` is ``||A x - y||`` (0-d real), exact up to round-off for every method (for
    ``"zipup"`` ``discarded`` holds the true per-bond error norms, see :mod:`tnadapt.tt.matvec`); ``reference_norm``
    is ``||A x||``; ``method`` the method used.  :attr:`error` is ``residual``.
    """

    residual: torch.Tensor
    method: str
    #: For :func:`matmul_round`, the product as a TT-matrix (``tt`` is its merged-leg train); else ``None``.
    matrix: TTMatrix | None = None

    @property
    def error(self) -> torch.Tensor:
        """``||A x - y||`` (see ``residual``)."""
        return self.residual


_METHODS = ("exact", "randomized", "zipup")


def matvec_round(
    a: TTMatrix,
    x: TensorTrain,
    *,
    max_rank: int | Sequence[int] | None = None,
    eps: float | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
    method: str = "exact",
) -> ProductReport:
    """``y ≈ A @ x`` with ranks capped by ``max_rank`` / ``eps`` / ``cutoff`` (the library's contract).

    ``method``: ``"exact"`` (the guarantee: ``||A x - y|| <= eps ||A x||``, error reported
    exactly), ``"randomized"``, or ``"zipup"`` (fast, no guarantee, error still reported exactly); see
    :mod:`tnadapt.tt.matvec`.

    >>> import torch
    >>> from tnadapt.tt import TensorTrain, TTMatrix
    >>> g = torch.Generator().manual_seed(0)
    >>> A = TTMatrix.random((3, 3, 3, 3), (3, 3, 3, 3), 3, generator=g, dtype=torch.float64)
    >>> x = TensorTrain.random((3, 3, 3, 3), 3, generator=g, dtype=torch.float64)
    >>> rep = matvec_round(A, x, max_rank=4)
    >>> rep.tt.ranks
    (1, 3, 4, 3, 1)
    >>> true = float((matvec(A, x) - rep.tt).norm())
    >>> abs(float(rep.error) - true) < 1e-10
    True
    >>> fast = matvec_round(A, x, max_rank=4, method="zipup")
    >>> fast.tt.ranks, abs(float(fast.error) - float((matvec(A, x) - fast.tt).norm())) < 1e-10
    ((1, 3, 4, 3, 1), True)
    """
    from .rounding import check_truncation_args, round_tt

    _check_operand("x", a, x)
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
    if method != "zipup":
        kind = "deterministic" if method == "exact" else "randomized"
        rep = round_tt(matvec(a, x), max_rank=max_rank, eps=eps, cutoff=cutoff, min_rank=min_rank, method=kind)
        return ProductReport(
            tt=rep.tt,
            discarded=rep.discarded,
            singular_values=rep.singular_values,
            ranks_before=rep.ranks_before,
            ranks_after=rep.ranks_after,
            reference_norm=rep.reference_norm,
            residual=stable_norm(rep.discarded),
            method=method,
        )
    caps = check_truncation_args(x, max_rank, eps, cutoff, min_rank, name="x")
    check_finite("A", list(a.cores))
    return _zipup(a, x, caps, eps, cutoff, min_rank)


def matmul_round(
    a: TTMatrix,
    b: TTMatrix,
    *,
    max_rank: int | Sequence[int] | None = None,
    eps: float | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
    method: str = "exact",
) -> ProductReport:
    """``C ≈ A @ B`` with ranks capped by ``max_rank`` / ``eps`` / ``cutoff``; ``error`` is ``||A B - C||_F``.

    The methods of :func:`matvec_round`, reused: ``B`` is a train on its merged legs
    ``(k, n)`` and ``A`` acts on it as ``A ⊗ I_n`` (core ``(r, m n, k n, r')``), so ``C``'s
    merged-leg train is ``(A ⊗ I) b``.  ``"exact"``: the exact product then rounding (the
    guarantee ``||A B - C|| <= eps ||A B||``); ``"zipup"``: fast, error reported exactly.
    The result is ``report.matrix`` (``report.tt`` its merged-leg train).

    >>> import torch
    >>> from tnadapt.tt import TTMatrix
    >>> g = torch.Generator().manual_seed(0)
    >>> A = TTMatrix.random((3, 3, 3), (3, 3, 3), 3, generator=g, dtype=torch.float64)
    >>> B = TTMatrix.random((3, 3, 3), (2, 2, 2), 3, generator=g, dtype=torch.float64)
    >>> rep = matmul_round(A, B, max_rank=4, method="zipup")
    >>> rep.matrix.ranks, rep.matrix.col_dims
    ((1, 4, 4, 1), (2, 2, 2))
    >>> dense = A.full() @ B.full()
    >>> abs(float(rep.error) - float(torch.linalg.norm(dense - rep.matrix.full()))) < 1e-10
    True
    """
    _check_factors(a, b)
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
    cores = []
    for g, n in zip(a.cores, b.col_dims):
        ra, m, k, rb = g.shape
        eye = torch.eye(n, dtype=g.dtype, device=g.device)
        cores.append(torch.einsum("amkb,jJ->amjkJb", g, eye).reshape(ra, m * n, k * n, rb))
    rep = matvec_round(
        TTMatrix._trusted(cores),
        b.to_tt(),
        max_rank=max_rank,
        eps=eps,
        cutoff=cutoff,
        min_rank=min_rank,
        method=method,
    )
    return dataclasses.replace(rep, matrix=TTMatrix.from_tt(rep.tt, a.row_dims, b.col_dims))


def _zipup(
    a: TTMatrix, x: TensorTrain, caps: list[int] | None, eps: float | None, cutoff: float | None, min_rank: int
) -> ProductReport:
    from .canonical import orthogonalize_unchecked

    d = a.order
    # Right-canonical operands (A on its merged legs) make the sweep's truncations closer to optimal.
    x = orthogonalize_unchecked(x, 0)
    a = a._like(orthogonalize_unchecked(a.to_tt(), 0))
    grams = _right_grams(a, x)
    ax_norm = grams[0].reshape(()).real.clamp_min(0).sqrt()
    abs_tol = None if eps is None or d == 1 else ax_norm * (eps / (d - 1) ** 0.5)
    carry = x.cores[0].new_ones(1, 1, 1)  # (p, a, s): y's bond, A's bond, x's bond
    cores: list[torch.Tensor] = []
    errors: list[torch.Tensor] = []
    spectra: list[torch.Tensor] = []
    for k, (g, h) in enumerate(zip(a.cores, x.cores)):
        t = torch.einsum("pas,snt->pant", carry, h)
        t = torch.einsum("pant,amnb->pmbt", t, g)
        p, m, b, bx = t.shape
        if k == d - 1:
            cores.append(t.reshape(p, m, 1))
            break
        u, s, vh = linalg.svd(t.reshape(p * m, b * bx))
        rank, _ = truncate_spectrum(
            s, max_rank=None if caps is None else caps[k], abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank
        )
        cores.append(u[:, :rank].reshape(p, m, rank))
        weighted = (s.to(vh.dtype) if vh.is_complex() else s).unsqueeze(1) * vh[: s.shape[0]]
        carry = weighted[:rank].reshape(rank, b, bx)
        # The dropped part's true norm: its rows weighted by the Gram of the rest of A x.
        gone = weighted[rank:]
        gram = grams[k + 1].reshape(b * bx, b * bx)
        errors.append(torch.einsum("iz,zw,iw->", gone.conj(), gram, gone).real.clamp_min(0).sqrt())
        spectra.append(s)
    drop_redundant_ranks(cores, d - 1)
    y = TensorTrain._trusted(cores, d - 1)
    real = ax_norm.dtype
    discarded = torch.stack(errors) if errors else torch.zeros(0, dtype=real, device=a.device)
    return ProductReport(
        tt=y,
        discarded=discarded,
        singular_values=tuple(spectra),
        ranks_before=tuple(ra * rx for ra, rx in zip(a.ranks, x.ranks)),
        ranks_after=y.ranks,
        reference_norm=ax_norm,
        residual=stable_norm(discarded) if errors else discarded.new_zeros(()),
        method="zipup",
    )


def _right_grams(a: TTMatrix, x: TensorTrain) -> list[torch.Tensor]:
    """Gram matrices of the right parts of ``A x``: ``grams[k][b', t', b, t] = <R_k(b', t'), R_k(b, t)>``.

    ``R_k(b, t)`` is the tensor sites ``k, ..., d-1`` of ``A x`` contract to with ``A``'s
    bond fixed to ``b`` and ``x``'s to ``t``; ``grams[0]`` is ``||A x||²`` (shape
    ``(1, 1, 1, 1)``), ``grams[d]`` is 1.  Contracted site by site, one operand at a time,
    at cost ``O(m n r_A² r_x² (r_A + r_x))`` per site — the product of ranks ``r_A r_x`` is
    never formed as a core.
    """
    env = x.cores[0].new_ones(1, 1, 1, 1)  # (c', u', c, u): conj A bond, conj x bond, A bond, x bond
    grams = [env]
    for g, h in zip(reversed(a.cores), reversed(x.cores)):
        # one operand at a time, in the order that keeps every intermediate at r_A² r_x² n entries
        t = torch.einsum("tnu,zwcu->zwctn", h, env)
        t = torch.einsum("bmnc,zwctn->zwbmt", g, t)
        t = torch.einsum("amqz,zwbmt->waqbt", g.conj(), t)
        env = torch.einsum("yqw,waqbt->aybt", h.conj(), t)
        grams.append(env)
    return grams[::-1]
