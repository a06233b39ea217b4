"""Linear systems ``A x = b`` in TT format: two-site ALS (:func:`als_solve`) and AMEn (:func:`amen_solve`).

Both sweep over the sites of ``x`` and, at each step, solve the *local* problem: the
global system projected onto the current frame ``X_≠`` of ``x`` (the orthonormal
interfaces of every core but the one(s) being updated).  What is projected is chosen by
``projection``:

``"galerkin"`` (for Hermitian positive-definite ``A``)
    ``X_≠ᴴ A X_≠ v = X_≠ᴴ b``: each step minimises the energy functional
    ``xᴴ A x − 2 Re xᴴ b`` over the frame, i.e. the error in the ``A``-norm, so the error
    decreases monotonically.  For a general ``A`` this local matrix can be singular or
    indefinite and the sweep need not converge.
``"minres"`` (for any non-singular ``A``, square or not)
    ``X_≠ᴴ AᴴA X_≠ v = X_≠ᴴ Aᴴ b``: the local *normal equations*, so each step minimises the
    residual ``||A x − b||`` over the frame and the residual decreases monotonically.  It
    sweeps over ``AᴴA`` (operator rank ``q²``, formed exactly, never densely) and squares
    the local condition number.

Both local matrices are Hermitian positive definite, so a local problem is solved by a
dense ``torch.linalg.solve`` when it has at most ``dense_max`` unknowns and otherwise by
matrix-free conjugate gradients (at most ``local_iters`` products, started from the
current block) on the projected operator — never by forming the global matrix.

Truncation: with ``cutoff`` the library's per-bond relative discarded weight
(``Σ_{dropped} s² / Σ s² <= cutoff``, see :mod:`tnadapt.tt.truncation`) applies to the new
bond; without it, the bond is cut to the smallest rank whose *local residual* stays within
``max(tol / sqrt(d), residual of the untruncated block)`` of the local right-hand side
(the residual-based rule of the TT-Toolbox's ``amen_solve2``).  ``max_rank`` caps both.

The stopping test is the exact relative residual ``||A x − b|| / ||b||`` computed after every
sweep (``A @ x`` formed exactly, then a QR-sweep norm); the solvers stop when it is
``<= tol`` or after ``max_sweeps`` sweeps, in which case the report says ``converged=False``
and a :class:`RuntimeWarning` is emitted.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from . import environments as env
from . import linalg
from ._errors import check_int_rank, check_positive_float, describe
from ._krylov import conjugate_gradient
from ._numerics import stable_norm
from ._threads import factorization_threads
from ._unit_sites import UnitSites
from .canonical import orthogonalize_unchecked, right_qr_step
from .matrix import TTMatrix
from .tensor_train import TensorTrain
from .truncation import truncate_spectrum

__all__ = ["PROJECTIONS", "SolveReport", "SolveSweep", "als_solve", "amen_solve"]

PROJECTIONS = ("galerkin", "minres")


@dataclass(frozen=True)
class SolveSweep:
    """One sweep of :func:`als_solve` / :func:`amen_solve`.

    ``residual`` is the exact ``||A x − b|| / ||b||`` after the sweep; ``max_discarded`` the
    largest relative discarded norm ``||s_dropped|| / ||s||`` of the sweep's bond
    truncations; ``ranks`` the TT ranks of ``x`` after it; ``seconds`` its wall time
    (the residual included).
    """

    sweep: int
    residual: float
    max_discarded: float
    ranks: tuple[int, ...]
    seconds: float


@dataclass(frozen=True)
class SolveReport:
    """Result of a TT linear solve: the solution ``x``, whether ``residual <= tol``, and one :class:`SolveSweep` per sweep."""

    x: TensorTrain
    converged: bool
    residual: float
    sweeps: tuple[SolveSweep, ...]
    method: str

    @property
    def num_sweeps(self) -> int:
        return len(self.sweeps)


def relative_residual(A: TTMatrix, x: TensorTrain, b: TensorTrain) -> float:
    """``||A x − b|| / ||b||`` exactly (``A @ x`` has ranks multiplied; QR-sweep norm, accurate near cancellation)."""
    ref = float(b.norm())
    res = float((A @ x - b).norm())
    return res / ref if ref > 0 else res


class _System:
    """The projected system and its cached environments for one solve.

    ``op`` are the cores of the swept operator (``A`` or ``AᴴA``), ``rop`` those applied
    to ``b`` on the right-hand side (identity or ``Aᴴ``).  ``left[k]``/``right[k]`` hold the
    environments of sites ``< k`` / ``> k`` for ``<x|op|x>``; ``bleft``/``bright`` for
    ``<x|rop|b>``.
    """

    def __init__(self, A: TTMatrix, b: TensorTrain, projection: str) -> None:
        cores = list(A.cores)
        if projection == "galerkin":
            self.op = cores
            self.rop = env.identity_cores(b.shape, dtype=b.dtype, device=b.device)
        else:
            adj = A.adjoint()
            self.op = list((adj @ A).cores)  # AᴴA exactly, rank q²
            self.rop = list(adj.cores)
        self.b = list(b.cores)
        d = len(cores)
        one = torch.ones(1, 1, 1, dtype=b.dtype, device=b.device)
        self.left = [one] * (d + 1)
        self.right = [one] * (d + 1)
        self.bleft = [one] * (d + 1)
        self.bright = [one] * (d + 1)

    def push_left(self, cores: list[torch.Tensor], k: int) -> None:
        """Environments of sites ``< k+1`` from those of ``< k`` and the (left-orthonormal) core ``k``."""
        self.left[k + 1] = env.left_step(self.left[k], cores[k], self.op[k], cores[k])
        self.bleft[k + 1] = env.left_step(self.bleft[k], cores[k], self.rop[k], self.b[k])

    def push_right(self, cores: list[torch.Tensor], k: int) -> None:
        """Environments of sites ``> k-1`` from those of ``> k`` and the (right-orthonormal) core ``k``."""
        self.right[k - 1] = env.right_step(self.right[k], cores[k], self.op[k], cores[k])
        self.bright[k - 1] = env.right_step(self.bright[k], cores[k], self.rop[k], self.b[k])

    def local(self, k: int, s: int) -> tuple[_Local, torch.Tensor]:
        """The local operator on sites ``k .. k+s-1`` and its right-hand side (shaped like the block)."""
        block = self.b[k]
        for core in self.b[k + 1 : k + s]:
            block = torch.tensordot(block, core, dims=([block.ndim - 1], [0]))
        rhs = env.apply_local(self.bleft[k], self.rop[k : k + s], self.bright[k + s - 1], block)
        return _Local(self.left[k], self.op[k : k + s], self.right[k + s - 1]), rhs


class _Local:
    """A projected operator ``L ⊗ W_k ⊗ ... ⊗ R`` acting on blocks of a fixed shape."""

    def __init__(self, left: torch.Tensor, ops: Sequence[torch.Tensor], right: torch.Tensor) -> None:
        self.left, self.ops, self.right = left, list(ops), right

    def __call__(self, block: torch.Tensor) -> torch.Tensor:
        return env.apply_local(self.left, self.ops, self.right, block)

    def dense(self) -> torch.Tensor:
        return env.dense_local(self.left, self.ops, self.right)


@dataclass
class _Options:
    tol: float
    max_rank: int | None
    cutoff: float | None
    dense_max: int
    local_iters: int
    order: int


def _solve_local(op: _Local, rhs: torch.Tensor, guess: torch.Tensor, opts: _Options) -> tuple[torch.Tensor, float]:
    """Solve the local system: ``(block, relative local residual)``."""
    flat = rhs.reshape(-1)
    ref = float(torch.linalg.vector_norm(flat))
    if ref == 0.0:
        return torch.zeros_like(rhs), 0.0
    if flat.numel() <= opts.dense_max:
        mat = op.dense()
        with factorization_threads(mat):
            sol = torch.linalg.solve(mat, flat).reshape(rhs.shape)
        res = float(torch.linalg.vector_norm((op(sol) - rhs).reshape(-1))) / ref
        return sol, res
    shape = rhs.shape

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return op(v.reshape(shape)).reshape(-1)

    local_tol = 0.1 * opts.tol / math.sqrt(opts.order)
    sol, res, _ = conjugate_gradient(matvec, flat, guess.reshape(-1), tol=local_tol, max_iter=opts.local_iters)
    return sol.reshape(shape), res


def _truncate(
    mat: torch.Tensor, op: _Local, rhs: torch.Tensor, shape: tuple[int, ...], res_full: float, opts: _Options
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Cut the bond of ``mat = U S Vh`` (the solved block unfolded): ``(U_k, S_k, Vh_k, relative discarded norm)``.

    ``cutoff`` → the library's discarded-weight rule; otherwise the smallest rank whose
    local residual ``||op(U_k S_k Vh_k) − rhs||`` is within the target (binary search,
    assuming the residual falls with the rank, as it does for a converging sweep).
    """
    u, s, vh = linalg.svd(mat)
    top = min(s.shape[0], opts.max_rank or s.shape[0])
    if opts.cutoff is not None:
        rank, _ = truncate_spectrum(s, max_rank=top, cutoff=opts.cutoff)
    else:
        ref = float(torch.linalg.vector_norm(rhs.reshape(-1)))
        target = max(opts.tol / math.sqrt(opts.order), res_full) * ref

        def fits(r: int) -> bool:
            trial = ((u[:, :r] * s[:r].to(u.dtype)) @ vh[:r]).reshape(shape)
            return float(torch.linalg.vector_norm((op(trial) - rhs).reshape(-1))) <= target

        lo, hi = 1, top
        if not fits(hi):  # even the largest rank misses the target: keep it
            rank = hi
        elif fits(lo):
            rank = lo
        else:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if fits(mid) else (mid, hi)
            rank = hi
    total = stable_norm(s)
    gone = float(stable_norm(s[rank:]) / total) if rank < s.shape[0] and float(total) > 0 else 0.0
    return u[:, :rank], s[:rank].to(u.dtype), vh[:rank], gone


def _check_inputs(
    A: object, b: object, x0: object, projection: str, tol: float, max_sweeps: int, max_rank: int | None
) -> tuple[TTMatrix, TensorTrain]:
    if not isinstance(A, TTMatrix):
        raise TypeError(f"A: expected a TTMatrix, got {describe(A)}")
    if not isinstance(b, TensorTrain):
        raise TypeError(f"b: expected a TensorTrain, got {describe(b)}")
    if projection not in PROJECTIONS:
        raise ValueError(f"projection: expected one of {PROJECTIONS}, got {projection!r}")
    if tuple(A.row_dims) != b.shape:
        raise ValueError(f"b: expected shape {tuple(A.row_dims)} (the row dims of A), got {b.shape}")
    if projection == "galerkin" and tuple(A.row_dims) != tuple(A.col_dims):
        raise ValueError(
            f"A: projection='galerkin' needs a square operator per site, got row dims {tuple(A.row_dims)} "
            f"and col dims {tuple(A.col_dims)}; use projection='minres'"
        )
    if A.dtype != b.dtype or A.device != b.device:
        raise ValueError(f"b: dtype/device {b.dtype}/{b.device} differ from A's {A.dtype}/{A.device}")
    if x0 is not None:
        if not isinstance(x0, TensorTrain):
            raise TypeError(f"x0: expected a TensorTrain or None, got {describe(x0)}")
        if x0.shape != tuple(A.col_dims) or x0.dtype != A.dtype:
            raise ValueError(
                f"x0: expected shape {tuple(A.col_dims)} and dtype {A.dtype}, got {x0.shape} and {x0.dtype}"
            )
    check_positive_float("tol", tol, allow_zero=False)
    if isinstance(max_sweeps, bool) or not isinstance(max_sweeps, int) or max_sweeps < 1:
        raise ValueError(f"max_sweeps: expected an int >= 1, got {max_sweeps!r}")
    check_int_rank("max_rank", max_rank)
    return A, b


def _initial(A: TTMatrix, x0: TensorTrain | None, rank: int, seed: int) -> TensorTrain:
    if x0 is not None:
        return x0.detach()
    gen = torch.Generator().manual_seed(seed)
    x = TensorTrain.random(tuple(A.col_dims), rank, generator=gen, dtype=A.dtype)
    return x.to(A.device)


def _without_unit_sites(solve: Callable[..., SolveReport]) -> Callable[..., SolveReport]:
    """Run ``solve`` with the system's size-1 sites folded away, then put them back (see :mod:`._unit_sites`)."""

    @functools.wraps(solve)
    def wrapper(A: TTMatrix, b: TensorTrain, *, x0: TensorTrain | None = None, **kwargs: Any) -> SolveReport:
        units = UnitSites.of(A, b=b, x0=x0)
        if units is None:
            return solve(A, b, x0=x0, **kwargs)
        rep = solve(units.operator(A), units.train(b), x0=units.train(x0), **kwargs)
        sweeps = tuple(replace(s, ranks=units.ranks(s.ranks)) for s in rep.sweeps)
        return replace(rep, x=units.unfold(rep.x), sweeps=sweeps)

    return wrapper


def _finish(method: str, x: TensorTrain, sweeps: list[SolveSweep], tol: float, max_sweeps: int) -> SolveReport:
    residual = sweeps[-1].residual
    converged = residual <= tol
    if not converged:
        warnings.warn(
            f"{method}: not converged after {max_sweeps} sweeps: relative residual {residual:.3e} > tol {tol:.3e}",
            RuntimeWarning,
            stacklevel=3,
        )
    return SolveReport(x=x, converged=converged, residual=residual, sweeps=tuple(sweeps), method=method)


@_without_unit_sites
def als_solve(
    A: TTMatrix,
    b: TensorTrain,
    *,
    x0: TensorTrain | None = None,
    tol: float = 1e-8,
    max_sweeps: int = 20,
    max_rank: int | None = None,
    cutoff: float | None = None,
    projection: str = "galerkin",
    init_rank: int = 2,
    seed: int = 0,
    dense_max: int = 512,
    local_iters: int = 500,
) -> SolveReport:
    """Solve ``A x = b`` by two-site ALS (DMRG-style): merge two cores, solve, split by truncated SVD.

    ``A`` is a square-per-site :class:`~tnadapt.tt.matrix.TTMatrix` (``"minres"`` also accepts
    rectangular ones), ``b`` a :class:`~tnadapt.tt.tensor_train.TensorTrain` of shape
    ``A.row_dims``; the result has shape ``A.col_dims``.  One sweep visits the bonds left
    to right and back; ranks adapt (two-site blocks can grow a bond up to ``max_rank``).
    The start is ``x0`` or a seeded random train of rank ``init_rank``.  See the module
    docstring for ``projection``, truncation and the stopping rule.

    >>> import torch
    >>> from tnadapt.tt import TensorTrain, laplacian_mpo
    >>> A = laplacian_mpo([2] * 6, dtype=torch.float64)
    >>> b = TensorTrain([torch.ones(1, 2, 1, dtype=torch.float64)] * 6)
    >>> rep = als_solve(A, b, tol=1e-10)
    >>> rep.converged, rep.residual < 1e-10
    (True, True)
    """
    A, b = _check_inputs(A, b, x0, projection, tol, max_sweeps, max_rank)
    check_positive_float("cutoff", cutoff)
    d = A.order
    opts = _Options(tol, max_rank, cutoff, dense_max, local_iters, d)
    x = orthogonalize_unchecked(_initial(A, x0, init_rank, seed), 0)
    cores = list(x.cores)
    system = _System(A, b, projection)
    for k in range(d - 1, 0, -1):
        system.push_right(cores, k)
    if d == 1:
        visits: list[tuple[int, str]] = []
    else:
        visits = [(k, "right") for k in range(d - 2)] + [(k, "left") for k in range(d - 2, -1, -1)]
    sweeps: list[SolveSweep] = []
    for sweep in range(1, max_sweeps + 1):
        with env.sweep_threads(cores):
            start = time.perf_counter()
            worst = 0.0
            if d == 1:
                op, rhs = system.local(0, 1)
                cores[0], _ = _solve_local(op, rhs, cores[0], opts)
            for k, absorb in visits:
                op, rhs = system.local(k, 2)
                guess = torch.tensordot(cores[k], cores[k + 1], dims=([2], [0]))
                sol, res = _solve_local(op, rhs, guess, opts)
                r0, n0, n1, r2 = sol.shape
                u, s, vh, gone = _truncate(sol.reshape(r0 * n0, n1 * r2), op, rhs, tuple(sol.shape), res, opts)
                worst = max(worst, gone)
                rank = u.shape[1]
                if absorb == "right":  # U (left-orthonormal) in core k, S Vh moves on
                    cores[k], cores[k + 1] = u.reshape(r0, n0, rank), (s.unsqueeze(1) * vh).reshape(rank, n1, r2)
                    system.push_left(cores, k)
                else:  # Vh (right-orthonormal) in core k+1, U S moves on
                    cores[k], cores[k + 1] = (u * s).reshape(r0, n0, rank), vh.reshape(rank, n1, r2)
                    system.push_right(cores, k + 1)
            x = TensorTrain(cores, center=0)
            residual = relative_residual(A, x, b)
        sweeps.append(SolveSweep(sweep, residual, worst, x.ranks, time.perf_counter() - start))
        if residual <= tol:
            break
    return _finish("als_solve", x, sweeps, tol, max_sweeps)


@_without_unit_sites
def amen_solve(
    A: TTMatrix,
    b: TensorTrain,
    *,
    x0: TensorTrain | None = None,
    tol: float = 1e-8,
    max_sweeps: int = 20,
    max_rank: int | None = None,
    cutoff: float | None = None,
    projection: str = "galerkin",
    kickrank: int = 4,
    init_rank: int = 2,
    seed: int = 0,
    dense_max: int = 512,
    local_iters: int = 500,
) -> SolveReport:
    """Solve ``A x = b`` by AMEn (Dolgov & Savostyanov 2014): one-site updates plus residual enrichment.

    Each sweep first right-orthogonalises ``x`` and a rank-``kickrank`` train ``z`` that
    tracks the residual, then goes left to right.  At site ``k``: solve the one-site local
    problem, truncate the new bond, update ``z``'s core to the projection of the current
    residual onto ``z``'s frame, and *enrich* the core of ``x`` with the residual projected
    onto ``x``'s left frame and ``z``'s right frame (``kickrank`` more columns, zero
    coefficients in the next core, so ``x`` is unchanged but the next local problem can
    correct the directions the residual points to).  This gives one-site cost with the
    rank adaptivity of two-site ALS.  Arguments as in :func:`als_solve`; with
    ``"minres"`` the tracked residual is the normal-equations residual ``Aᴴ(b − A x)``.

    >>> import torch
    >>> from tnadapt.tt import TensorTrain, laplacian_mpo
    >>> A = laplacian_mpo([2] * 8, dtype=torch.float64)
    >>> b = TensorTrain([torch.ones(1, 2, 1, dtype=torch.float64)] * 8)
    >>> rep = amen_solve(A, b, tol=1e-10)
    >>> rep.converged, max(rep.x.ranks) <= 8
    (True, True)
    """
    A, b = _check_inputs(A, b, x0, projection, tol, max_sweeps, max_rank)
    check_positive_float("cutoff", cutoff)
    check_int_rank("kickrank", kickrank)
    d = A.order
    opts = _Options(tol, max_rank, cutoff, dense_max, local_iters, d)
    cores = list(_initial(A, x0, init_rank, seed).cores)
    gen = torch.Generator().manual_seed(seed + 1)
    zt = TensorTrain.random(tuple(A.col_dims), kickrank, generator=gen, dtype=A.dtype).to(A.device)
    zcores = list(zt.cores)
    system = _System(A, b, projection)
    one = system.left[0]
    # Environments between z (bra) and x / b (kets): the residual projected onto z's frames.
    zleft, zright = [one] * (d + 1), [one] * (d + 1)
    zbleft, zbright = [one] * (d + 1), [one] * (d + 1)
    sweeps: list[SolveSweep] = []
    for sweep in range(1, max_sweeps + 1):
        with env.sweep_threads(cores):
            start = time.perf_counter()
            worst = 0.0
            for k in range(d - 1, 0, -1):  # right-orthogonalise x and z, building their right environments
                cores[k - 1], cores[k] = right_qr_step(cores[k - 1], cores[k])
                zcores[k - 1], zcores[k] = right_qr_step(zcores[k - 1], zcores[k])
                system.push_right(cores, k)
                zright[k - 1] = env.right_step(zright[k], zcores[k], system.op[k], cores[k])
                zbright[k - 1] = env.right_step(zbright[k], zcores[k], system.rop[k], system.b[k])
            for k in range(d):
                op, rhs = system.local(k, 1)
                sol, res = _solve_local(op, rhs, cores[k], opts)
                if k == d - 1:
                    cores[k] = sol
                    break
                r0, n, r1 = sol.shape
                u, s, vh, gone = _truncate(sol.reshape(r0 * n, r1), op, rhs, tuple(sol.shape), res, opts)
                worst = max(worst, gone)
                svh = s.unsqueeze(1) * vh
                kept = (u @ svh).reshape(r0, n, r1)
                bk, opk, ropk = system.b[k], system.op[k], system.rop[k]
                # z_k: the residual projected onto z's left and right frames, orthonormalised.
                znew = env.apply_local(zbleft[k], [ropk], zbright[k], bk) - env.apply_local(
                    zleft[k], [opk], zright[k], kept
                )
                rz0, _, rz1 = znew.shape
                zq, _ = linalg.tall_qr(znew.reshape(rz0 * n, rz1))
                zcores[k] = zq.reshape(rz0, n, -1)
                if zcores[k].shape[2] != rz1:  # a thin QR lost columns: keep z's next core compatible
                    zcores[k + 1] = zcores[k + 1][: zcores[k].shape[2]]
                # Enrichment: the residual on x's left frame and z's right frame.
                extra = env.apply_local(system.bleft[k], [ropk], zbright[k], bk) - env.apply_local(
                    system.left[k], [opk], zright[k], kept
                )
                kick = extra.shape[2] if max_rank is None else max(0, min(extra.shape[2], max_rank - u.shape[1]))
                basis = torch.cat([u, extra.reshape(r0 * n, -1)[:, :kick]], dim=1)
                q, r = linalg.tall_qr(basis)
                coeff = r[:, : u.shape[1]] @ svh  # basis @ [svh; 0] = u @ svh
                cores[k] = q.reshape(r0, n, -1)
                nxt = cores[k + 1]
                cores[k + 1] = (coeff @ nxt.reshape(r1, -1)).reshape(-1, nxt.shape[1], nxt.shape[2])
                system.push_left(cores, k)
                zleft[k + 1] = env.left_step(zleft[k], zcores[k], opk, cores[k])
                zbleft[k + 1] = env.left_step(zbleft[k], zcores[k], ropk, bk)
            x = TensorTrain(cores, center=d - 1)
            residual = relative_residual(A, x, b)
        sweeps.append(SolveSweep(sweep, residual, worst, x.ranks, time.perf_counter() - start))
        if residual <= tol:
            break
    return _finish("amen_solve", x, sweeps, tol, max_sweeps)
