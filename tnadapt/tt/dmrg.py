"""Ground states (and a few lowest states) of a Hermitian TT-matrix by two-site DMRG: :func:`dmrg_eigsh`.

The algorithm is the textbook one (White 1992; Schollwöck 2011, §6): the state is kept
in mixed canonical form, the left and right environments ``<x|H|x>`` of every site are
cached (one :func:`~tnadapt.tt.environments.left_step` or ``right_step`` per visited bond), and
at each bond the two-site block is replaced by the lowest eigenvector of the projected
operator ``L ⊗ W_k ⊗ W_{k+1} ⊗ R`` — by dense ``torch.linalg.eigh`` when the block has at
most ``dense_max`` entries, otherwise by matrix-free Lanczos started from the current block —
then split by a truncated SVD (``max_rank`` / ``cutoff``, the library's contract).  Because
the frame is orthonormal, the local Ritz value is the energy of the new state and the
discarded norm is the exact error of that truncation.

Excited states: state ``j`` is found by the same sweep restricted, at each bond, to the
orthogonal complement of the projections of the states already found (``<x_j|x_i> = 0``
is a *linear* condition on the block, since the frame is orthonormal).  This is exact
deflation — no penalty weight to tune — and gives the ``j``-th eigenpair when the earlier
ones are converged.

A *sweep* is one pass left to right and one back (each bond visited twice).  The sweeps
stop when the energy changes by at most ``tol · max(1, |E|)`` between two sweeps, or after
``max_sweeps`` (then ``converged=False`` and a :class:`RuntimeWarning`).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from . import environments as env
from . import linalg
from ._errors import check_int_rank, check_positive_float, describe
from ._krylov import lanczos_lowest
from ._numerics import stable_norm
from ._threads import factorization_threads
from ._unit_sites import UnitSites
from .canonical import orthogonalize_unchecked
from .matrix import TTMatrix
from .tensor_train import TensorTrain
from .truncation import truncate_spectrum

__all__ = ["EigenSweep", "EigshReport", "dmrg_eigsh"]


@dataclass(frozen=True)
class EigenSweep:
    """One DMRG sweep: energy after it, change from the previous sweep (``inf`` for the first),
    the largest discarded norm of the (normalised) state at any bond, ranks after it, wall time."""

    sweep: int
    energy: float
    energy_change: float
    max_discarded: float
    ranks: tuple[int, ...]
    seconds: float


@dataclass(frozen=True)
class EigshReport:
    """Result of :func:`dmrg_eigsh`: ``energies`` ascending with their unit-norm ``states``.

    ``sweeps[j]`` are the per-sweep reports of state ``j``; ``converged`` is true when every
    state met the energy tolerance.
    """

    energies: tuple[float, ...]
    states: tuple[TensorTrain, ...]
    converged: bool
    sweeps: tuple[tuple[EigenSweep, ...], ...]

    @property
    def energy(self) -> float:
        """The lowest energy."""
        return self.energies[0]

    @property
    def state(self) -> TensorTrain:
        """The lowest state (unit norm, right-canonical; its centre, ``state.center``, is its first site of size > 1)."""
        return self.states[0]


def _merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.tensordot(a, b, dims=([2], [0]))


class _Deflation:
    """Projections of found states onto the current frame: ``<x|ψ_i>`` environments per site."""

    def __init__(self, found: list[TensorTrain], eye: list[torch.Tensor], d: int, one: torch.Tensor) -> None:
        self.found = [list(s.cores) for s in found]
        self.eye = eye
        self.left = [[one] * (d + 1) for _ in found]
        self.right = [[one] * (d + 1) for _ in found]

    def push_left(self, cores: list[torch.Tensor], k: int) -> None:
        for i, psi in enumerate(self.found):
            self.left[i][k + 1] = env.left_step(self.left[i][k], cores[k], self.eye[k], psi[k])

    def push_right(self, cores: list[torch.Tensor], k: int) -> None:
        for i, psi in enumerate(self.found):
            self.right[i][k - 1] = env.right_step(self.right[i][k], cores[k], self.eye[k], psi[k])

    def projector(self, k: int, shape: tuple[int, ...]) -> torch.Tensor | None:
        """Orthonormal basis (as rows, ``(m, N)``) of the found states' local projections at bond ``k`` (``None`` if no states)."""
        if not self.found:
            return None
        rows = []
        for i, psi in enumerate(self.found):
            block = _merge(psi[k], psi[k + 1]) if len(shape) == 4 else psi[k]
            ops = self.eye[k : k + len(shape) - 2]
            p = env.apply_local(self.left[i][k], ops, self.right[i][k + len(shape) - 3], block)
            rows.append(p.reshape(-1))
        q, _ = linalg.qr(torch.stack(rows, dim=1))
        return q.mT.contiguous()


def _lowest(
    left: torch.Tensor,
    ops: list[torch.Tensor],
    right: torch.Tensor,
    guess: torch.Tensor,
    basis: torch.Tensor | None,
    *,
    dense_max: int,
    tol: float,
    krylov_dim: int,
) -> tuple[float, torch.Tensor]:
    """Lowest eigenpair of the projected operator (in the complement of ``basis`` rows, if given)."""
    shape = guess.shape
    size = guess.numel()
    op = [env.merge_operators(ops)]  # the block's sites as one leg: one operator step per product
    if size <= dense_max:
        mat = env.dense_local(left, op, right)
        mat = 0.5 * (mat + mat.mH)
        comp = None
        if basis is not None:  # an orthonormal basis of the complement of the found states' projections
            full, _ = linalg.qr(torch.cat([basis.mT, torch.eye(size, dtype=mat.dtype, device=mat.device)], 1))
            comp = full[:, basis.shape[0] :]
            mat = comp.mH @ mat @ comp
        with factorization_threads(mat):
            evals, evecs = torch.linalg.eigh(mat)
        vec = evecs[:, 0] if comp is None else comp @ evecs[:, 0]
        return float(evals[0]), vec.reshape(shape)
    merged = (shape[0], size // (shape[0] * shape[-1]), shape[-1])

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return env.apply_local(left, op, right, v.reshape(merged)).reshape(-1)

    project = None
    if basis is not None:
        b = basis

        def project(v: torch.Tensor) -> torch.Tensor:
            return v - b.mT @ (b.conj() @ v)

    theta, vec, _ = lanczos_lowest(matvec, guess.reshape(-1), tol=tol, krylov_dim=krylov_dim, project=project)
    return theta, vec.reshape(shape)


def _without_unit_sites(eigsh: Callable[..., EigshReport]) -> Callable[..., EigshReport]:
    """Run ``eigsh`` with ``H``'s size-1 sites folded away, then put them back (see :mod:`._unit_sites`)."""

    @functools.wraps(eigsh)
    def wrapper(H: TTMatrix, *, x0: TensorTrain | None = None, **kwargs: Any) -> EigshReport:
        units = UnitSites.of(H, x0=x0)
        if units is None:
            return eigsh(H, x0=x0, **kwargs)
        rep = eigsh(units.operator(H), x0=units.train(x0), **kwargs)
        sweeps = tuple(tuple(replace(s, ranks=units.ranks(s.ranks)) for s in state) for state in rep.sweeps)
        return replace(rep, states=tuple(units.unfold(x) for x in rep.states), sweeps=sweeps)

    return wrapper


@_without_unit_sites
def dmrg_eigsh(
    H: TTMatrix,
    *,
    k: int = 1,
    x0: TensorTrain | None = None,
    max_rank: int | None = 64,
    cutoff: float | None = 1e-12,
    tol: float = 1e-10,
    max_sweeps: int = 20,
    init_rank: int = 4,
    seed: int = 0,
    dense_max: int = 64,
    krylov_dim: int = 30,
    lanczos_tol: float | None = None,
) -> EigshReport:
    """The ``k`` lowest eigenpairs of a Hermitian TT-matrix ``H`` by two-site DMRG.

    Parameters
    ----------
    H:
        Hermitian :class:`~tnadapt.tt.matrix.TTMatrix` with ``row_dims == col_dims``
        (real symmetric or complex Hermitian; Hermiticity is assumed, not checked).
    k:
        Number of lowest states (each one after the other, deflated against the previous).
    x0:
        Initial state for the lowest one; by default a seeded random train of rank
        ``init_rank`` (seed ``seed + j`` for state ``j``).
    max_rank, cutoff:
        Bond truncation: rank cap and per-bond discarded weight ``Σ_{dropped} s² / Σ s²``.
    tol, max_sweeps:
        Stop when ``|E_sweep − E_previous| <= tol · max(1, |E|)``; at most ``max_sweeps`` sweeps.
    dense_max, krylov_dim, lanczos_tol:
        Local eigensolver: dense ``eigh`` up to ``dense_max`` unknowns, else Lanczos with
        ``krylov_dim`` vectors per restart to residual ``lanczos_tol · max(1, |θ|)``
        (default ``0.1 sqrt(tol)``: the energy error is quadratic in the residual).

    Returns an :class:`EigshReport` (energies ascending, unit-norm states).

    >>> import torch
    >>> from tnadapt.tt import heisenberg_mpo
    >>> H = heisenberg_mpo(6, dtype=torch.float64)
    >>> rep = dmrg_eigsh(H, max_rank=8)
    >>> exact = float(torch.linalg.eigvalsh(H.full())[0])
    >>> rep.converged, abs(rep.energy - exact) < 1e-10
    (True, True)
    """
    if not isinstance(H, TTMatrix):
        raise TypeError(f"H: expected a TTMatrix, got {describe(H)}")
    if tuple(H.row_dims) != tuple(H.col_dims):
        raise ValueError(f"H: expected a square operator per site, got row dims {H.row_dims} and col dims {H.col_dims}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    if x0 is not None and (not isinstance(x0, TensorTrain) or x0.shape != tuple(H.col_dims)):
        raise ValueError(f"x0: expected a TensorTrain of shape {tuple(H.col_dims)}, got {describe(x0)}")
    check_int_rank("max_rank", max_rank)
    check_positive_float("cutoff", cutoff)
    check_positive_float("tol", tol, allow_zero=False)
    check_positive_float("lanczos_tol", lanczos_tol, allow_zero=False)
    if isinstance(max_sweeps, bool) or not isinstance(max_sweeps, int) or max_sweeps < 1:
        raise ValueError(f"max_sweeps: expected an int >= 1, got {max_sweeps!r}")
    local_tol = 0.1 * math.sqrt(tol) if lanczos_tol is None else lanczos_tol
    energies: list[float] = []
    states: list[TensorTrain] = []
    reports: list[tuple[EigenSweep, ...]] = []
    converged = True
    for j in range(k):
        if j == 0 and x0 is not None:
            start = x0.detach().to(dtype=H.dtype, device=H.device)
        else:
            gen = torch.Generator().manual_seed(seed + j)
            start = TensorTrain.random(tuple(H.col_dims), init_rank, generator=gen, dtype=H.dtype).to(H.device)
        energy, state, sweeps, ok = _dmrg_one(
            H, start, states, max_rank, cutoff, tol, max_sweeps, dense_max, krylov_dim, local_tol
        )
        energies.append(energy)
        states.append(state)
        reports.append(sweeps)
        converged = converged and ok
        if not ok:
            warnings.warn(
                f"dmrg_eigsh: state {j} not converged after {max_sweeps} sweeps: last energy change "
                f"{sweeps[-1].energy_change:.3e} > tol * max(1, |E|) = {tol * max(1.0, abs(energy)):.3e}",
                RuntimeWarning,
                stacklevel=2,
            )
    order = sorted(range(k), key=lambda i: energies[i])
    return EigshReport(
        energies=tuple(energies[i] for i in order),
        states=tuple(states[i] for i in order),
        converged=converged,
        sweeps=tuple(reports[i] for i in order),
    )


def _dmrg_one(
    H: TTMatrix,
    start: TensorTrain,
    found: list[TensorTrain],
    max_rank: int | None,
    cutoff: float | None,
    tol: float,
    max_sweeps: int,
    dense_max: int,
    krylov_dim: int,
    local_tol: float,
) -> tuple[float, TensorTrain, tuple[EigenSweep, ...], bool]:
    """Sweeps for one state, deflated against ``found``: ``(energy, state, sweeps, converged)``."""
    d = H.order
    ops = list(H.cores)
    x = orthogonalize_unchecked(start, 0)
    cores = list(x.cores)
    cores[0] = cores[0] / stable_norm(cores[0])
    one = torch.ones(1, 1, 1, dtype=H.dtype, device=H.device)
    left, right = [one] * (d + 1), [one] * (d + 1)
    eye = env.identity_cores(H.col_dims, dtype=H.dtype, device=H.device)
    defl = _Deflation(found, eye, d, one)

    def push_right(k: int) -> None:
        right[k - 1] = env.right_step(right[k], cores[k], ops[k], cores[k])
        defl.push_right(cores, k)

    def push_left(k: int) -> None:
        left[k + 1] = env.left_step(left[k], cores[k], ops[k], cores[k])
        defl.push_left(cores, k)

    def bond_step(b: int, absorb: str, guess: torch.Tensor) -> tuple[float, float]:
        """Lowest block at bond ``b``, truncated split, environments pushed: ``(energy, relative discarded)``."""
        energy, vec = _lowest(
            left[b], ops[b : b + 2], right[b + 1], guess, defl.projector(b, tuple(guess.shape)),
            dense_max=dense_max, tol=local_tol, krylov_dim=krylov_dim,
        )  # fmt: skip
        r0, n0, n1, r2 = vec.shape
        u, s, vh = linalg.svd(vec.reshape(r0 * n0, n1 * r2))
        rank, gone = truncate_spectrum(s, max_rank=max_rank, cutoff=cutoff)
        total = stable_norm(s)
        kept = s[:rank] / stable_norm(s[:rank])
        kept = kept.to(u.dtype)
        if absorb == "right":
            cores[b] = u[:, :rank].reshape(r0, n0, rank)
            cores[b + 1] = (kept.unsqueeze(1) * vh[:rank]).reshape(rank, n1, r2)
            push_left(b)
        else:
            cores[b] = (u[:, :rank] * kept).reshape(r0, n0, rank)
            cores[b + 1] = vh[:rank].reshape(rank, n1, r2)
            push_right(b + 1)
        return energy, float(gone / total) if float(total) > 0 else 0.0

    for site in range(d - 1, 0, -1):
        push_right(site)
    visits = [(b, "right") for b in range(d - 2)] + [(b, "left") for b in range(d - 2, -1, -1)]
    history: list[EigenSweep] = []
    previous = math.inf
    energy = math.inf
    for sweep in range(1, max_sweeps + 1):
        begin = time.perf_counter()
        worst = 0.0
        if d == 1:
            energy, vec = _lowest(
                left[0], ops[:1], right[0], cores[0], defl.projector(0, tuple(cores[0].shape)),
                dense_max=dense_max, tol=local_tol, krylov_dim=krylov_dim,
            )  # fmt: skip
            cores[0] = vec / stable_norm(vec)
        for b, absorb in visits:
            guess = _merge(cores[b], cores[b + 1])
            with env.sweep_threads(cores[b : b + 2]):
                energy, gone = bond_step(b, absorb, guess)
            worst = max(worst, gone)
        # The energy of the truncated state: the last block is the centre of an orthonormal frame.
        if d > 1:
            block = _merge(cores[0], cores[1])
            applied = env.apply_local(left[0], ops[:2], right[1], block)
            energy = float(torch.vdot(block.reshape(-1), applied.reshape(-1)).real)
        change = abs(energy - previous)
        ranks = (1, *(int(c.shape[2]) for c in cores))
        history.append(EigenSweep(sweep, energy, change, worst, ranks, time.perf_counter() - begin))
        if change <= tol * max(1.0, abs(energy)):
            return energy, TensorTrain(cores, center=0), tuple(history), True
        previous = energy
    return energy, TensorTrain(cores, center=0), tuple(history), False
