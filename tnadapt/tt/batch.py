"""Batches of tensor trains of one shape and one set of ranks: :class:`TTBatch`.

A ``TTBatch`` of ``B`` members holds cores of shape ``(B, r_{k-1}, n_k, r_k)``: member
``b`` is the train with cores ``cores[k][b]``.  Every operation is vectorised over the
batch (one batched matmul, QR or SVD per core instead of ``B`` small ones) — what
per-task and per-sample code needs.  Like :class:`~tnadapt.tt.TensorTrain` a batch is
immutable.

* :meth:`TTBatch.stack` builds a batch from trains of equal shape and ranks (``pad=True``
  zero-pads different ranks to the largest, exactly: :func:`tnadapt.tt.pad_ranks`);
  ``batch[i]`` is a :class:`~tnadapt.tt.TensorTrain`, ``batch[1:3]`` / ``batch[[0, 2]]`` a
  smaller batch, :meth:`TTBatch.unstack` all members (the inverse of :meth:`TTBatch.stack`).
* :meth:`TTBatch.full` (with the size guard of ``TensorTrain.full``), :meth:`TTBatch.gather`.
* ``+``, ``-``, negation, scalar or per-member ``(B,)`` multiples; :meth:`TTBatch.dot`
  (pairwise with another batch, or every member against one train), :meth:`TTBatch.norm`
  (batched QR sweep, accurate for differences).
* :meth:`TTBatch.round` (:func:`round_batch`): batched TT-rounding, every member to the
  same ranks — ``max_rank`` caps them, ``eps`` takes at each bond the largest rank any
  member needs, so every member meets ``||x_b - round(x_b)|| <= eps ||x_b||`` — with exact
  per-member errors in a :class:`BatchTruncationReport`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._chain import CoreChain, validate_chain
from ._errors import as_int, check_min_rank, check_positive_float, check_rank_spec, check_scalar, describe
from .ops import sum_cores
from .tensor_train import DEFAULT_MAX_DENSE_ELEMENTS, TensorTrain

__all__ = ["BatchTruncationReport", "TTBatch", "round_batch"]


class TTBatch(CoreChain):
    """``B`` tensor trains of one shape and ranks; cores ``(B, r_{k-1}, n_k, r_k)``.

    Examples
    --------
    >>> import torch
    >>> from tnadapt.tt import TensorTrain, TTBatch
    >>> g = torch.Generator().manual_seed(0)
    >>> xs = [TensorTrain.random((3, 4, 5), 2, generator=g, dtype=torch.float64) for _ in range(6)]
    >>> batch = TTBatch.stack(xs)
    >>> len(batch), batch.shape, batch.ranks
    (6, (3, 4, 5), (1, 2, 2, 1))
    >>> bool(torch.allclose(batch.norm(), torch.stack([x.norm() for x in xs])))
    True
    >>> bool(torch.allclose(batch[2].full(), xs[2].full()))
    True
    """

    __slots__ = ("_cores",)

    #: numpy defers to the reflected operators instead of broadcasting a batch as an object array.
    __array_ufunc__ = None

    def __init__(self, cores: Sequence[torch.Tensor]) -> None:
        cores = tuple(cores)
        validate_chain(cores, layout="(B, r_{k-1}, n_k, r_k)", left=1, right=3, batch=True)
        self._cores: tuple[torch.Tensor, ...] = cores

    @classmethod
    def _trusted(cls, cores: Sequence[torch.Tensor]) -> TTBatch:
        out = cls.__new__(cls)
        out._cores = tuple(cores)
        return out

    # ------------------------------------------------------------------ construction
    @classmethod
    def stack(cls, trains: Sequence[TensorTrain], *, pad: bool = False) -> TTBatch:
        """The batch of ``trains`` (one shape, dtype and device; equal ranks unless ``pad=True``,
        which zero-pads every bond to the largest rank among them — exact, see :func:`tnadapt.tt.pad_ranks`)."""
        from .padding import pad_ranks

        items = list(trains) if not isinstance(trains, TensorTrain) else None
        if not items:
            raise ValueError(f"trains: expected a non-empty sequence of TensorTrain, got {describe(trains)}")
        first = items[0]
        for i, x in enumerate(items):
            if not isinstance(x, TensorTrain):
                raise TypeError(f"trains[{i}]: expected a TensorTrain, got {describe(x)}")
            if x.shape != first.shape or x.dtype != first.dtype or x.device != first.device:
                raise ValueError(
                    f"trains[{i}]: shape/dtype/device {x.shape}/{x.dtype}/{x.device} differ from trains[0]'s "
                    f"{first.shape}/{first.dtype}/{first.device}"
                )
        if pad and first.order > 1:
            target = [max(col) for col in zip(*(x.bond_dims for x in items))]
            items = [pad_ranks(x, target) for x in items]
            first = items[0]
        for i, x in enumerate(items):
            if x.ranks != first.ranks:
                raise ValueError(
                    f"trains[{i}]: ranks {x.ranks} differ from trains[0]'s {first.ranks} (pass pad=True to zero-pad)"
                )
        return cls._trusted([torch.stack(cs) for cs in zip(*(x.cores for x in items))])

    @classmethod
    def random(
        cls,
        size: int,
        shape: Sequence[int],
        ranks: int | Sequence[int] = 1,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TTBatch:
        """``size`` independent :meth:`TensorTrain.random` trains, stacked."""
        n = as_int(size)
        if n is None or n < 1:
            raise ValueError(f"size: expected an int >= 1, got {size!r}")
        return cls.stack(
            [TensorTrain.random(shape, ranks, generator=generator, dtype=dtype, device=device) for _ in range(n)]
        )

    # ------------------------------------------------------------------ properties
    @property
    def cores(self) -> tuple[torch.Tensor, ...]:
        """The cores, shape ``(B, r_{k-1}, n_k, r_k)`` (do not modify in place)."""
        return self._cores

    @property
    def batch_size(self) -> int:
        return int(self._cores[0].shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """Mode sizes ``(n_1, ..., n_d)`` of every member."""
        return tuple(int(c.shape[2]) for c in self._cores)

    def __len__(self) -> int:
        return self.batch_size

    def __iter__(self) -> Iterator[TensorTrain]:
        return iter(self.unstack())

    def __repr__(self) -> str:
        return (
            f"TTBatch(batch_size={self.batch_size}, shape={self.shape}, ranks={self.ranks}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    def to(self, *args: Any, **kwargs: Any) -> TTBatch:
        """Like ``torch.Tensor.to`` applied to every core."""
        return TTBatch([c.to(*args, **kwargs) for c in self._cores])

    def detach(self) -> TTBatch:
        return TTBatch._trusted([c.detach() for c in self._cores])

    # ------------------------------------------------------------------ members
    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> TensorTrain | TTBatch:
        """``batch[i]`` is member ``i`` (a :class:`TensorTrain`); a slice, list or 1-D index tensor gives a batch."""
        single = as_int(index)
        if single is not None:
            b = self.batch_size
            if not -b <= single < b:
                raise IndexError(f"index: member {single} is out of range for a batch of {b}")
            return TensorTrain._trusted([c[single] for c in self._cores], None)
        if isinstance(index, slice):
            cores = [c[index] for c in self._cores]
        else:
            idx = torch.as_tensor(index)
            if idx.ndim != 1 or idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
                raise TypeError(f"index: expected an int, a slice or a 1-D list of ints, got {describe(index)}")
            try:
                cores = [c[idx.to(c.device)] for c in self._cores]
            except IndexError:
                raise IndexError(f"index: {idx.tolist()} is out of range for a batch of {self.batch_size}") from None
        if cores[0].shape[0] == 0:
            raise IndexError(f"index: {index!r} selects no member of a batch of {self.batch_size}")
        return TTBatch._trusted(cores)

    def unstack(self) -> list[TensorTrain]:
        """Every member as a :class:`TensorTrain` (views of the batched cores)."""
        per_core = [c.unbind(0) for c in self._cores]
        return [TensorTrain._trusted(cs, None) for cs in zip(*per_core)]

    def full(self, *, max_elements: int = DEFAULT_MAX_DENSE_ELEMENTS) -> torch.Tensor:
        """The dense members, shape ``(B, n_1, ..., n_d)``; refuses more than ``max_elements`` entries."""
        total = self.batch_size * math.prod(self.shape)
        if total > max_elements:
            raise ValueError(
                f"full(): the dense batch of shape {(self.batch_size, *self.shape)} has {total:,} entries, "
                f"above max_elements={max_elements:,}; raise max_elements or index members instead"
            )
        b = self.batch_size
        result = self._cores[0].reshape(b, -1, self._cores[0].shape[3])
        for core in self._cores[1:]:
            result = torch.bmm(result, core.reshape(b, core.shape[1], -1)).reshape(b, -1, core.shape[3])
        return result.reshape(b, *self.shape)

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """Entries per member: ``indices`` ``(P, d)`` (the same points for every member) or ``(B, P, d)``
        (per member) → ``(B, P)``.  Negative entries count from the end; differentiable in the cores."""
        if not isinstance(indices, torch.Tensor):
            indices = torch.as_tensor(indices)
        b, d = self.batch_size, self.order
        ok_dtype = not (indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool)
        shared = indices.ndim == 2 and indices.shape[1] == d
        per_member = indices.ndim == 3 and indices.shape[0] == b and indices.shape[2] == d
        if not ok_dtype or not (shared or per_member):
            raise ValueError(
                f"indices: expected an integer tensor of shape (P, {d}) or ({b}, P, {d}), "
                f"got {indices.dtype} {tuple(indices.shape)}"
            )
        idx = indices.to(self.device, torch.long)
        sizes = torch.tensor(self.shape, device=self.device)
        if bool(((idx < -sizes) | (idx >= sizes)).any()):
            raise IndexError(f"indices: entries out of range for shape {self.shape} (expected -n_k <= i < n_k)")
        idx = torch.remainder(idx, sizes)
        if shared:
            idx = idx.unsqueeze(0).expand(b, -1, -1)
        rows = torch.arange(b, device=self.device).unsqueeze(1)
        env = self._cores[0].new_ones(b, idx.shape[1], 1, 1)
        for k, core in enumerate(self._cores):
            slices = core.permute(0, 2, 1, 3)[rows, idx[:, :, k]]  # (B, P, r0, r1)
            env = env @ slices
        return env.reshape(b, -1)

    # ------------------------------------------------------------------ algebra
    def _check_same(self, other: object, op: str) -> TTBatch:
        if not isinstance(other, TTBatch):
            raise TypeError(f"other ({op}): expected a TTBatch, got {describe(other)}")
        if (other.batch_size, other.shape, other.dtype, other.device) != (
            self.batch_size,
            self.shape,
            self.dtype,
            self.device,
        ):
            raise ValueError(
                f"other ({op}): expected {self.batch_size} members of shape {self.shape} ({self.dtype}, "
                f"{self.device}), got {other.batch_size} of shape {other.shape} ({other.dtype}, {other.device})"
            )
        return other

    def __add__(self, other: TTBatch) -> TTBatch:
        """Member-wise sum with block-diagonal cores (ranks add), as :func:`tnadapt.tt.add`."""
        if not isinstance(other, TTBatch):
            return NotImplemented
        return TTBatch._trusted(sum_cores(self._cores, self._check_same(other, "x + y").cores))

    def __sub__(self, other: TTBatch) -> TTBatch:
        if not isinstance(other, TTBatch):
            return NotImplemented
        return self + (-self._check_same(other, "x - y"))

    def __neg__(self) -> TTBatch:
        return self._scaled(-1.0)

    def __mul__(self, other: Any) -> TTBatch:
        """``batch * c``: a scalar, or a ``(B,)`` tensor scaling each member by its own factor."""
        return self._scaled(other)

    def __rmul__(self, other: Any) -> TTBatch:
        return self._scaled(other)

    def _scaled(self, factor: Any) -> TTBatch:
        if isinstance(factor, torch.Tensor) and factor.ndim == 1:
            if factor.shape[0] != self.batch_size:
                raise ValueError(
                    f"other (batch * other): expected a scalar or a ({self.batch_size},) tensor, "
                    f"got shape {tuple(factor.shape)}"
                )
            alpha: Any = factor.to(self.device).reshape(-1, 1, 1, 1)
        else:
            alpha = check_scalar("other (batch * other)", factor, expected="a scalar or a (B,) tensor")
        first = self._cores[0] * alpha
        cores = [c.to(first.dtype) for c in self._cores]
        cores[0] = first
        return TTBatch._trusted(cores)

    def dot(self, other: TTBatch | TensorTrain) -> torch.Tensor:
        """``<x_b, y_b> = sum conj(x_b) y_b`` per member (``(B,)``); ``other`` is a batch (pairwise) or one
        train (every member against it).  Left-to-right batched contraction, cost ``O(B d n r^3)``."""
        if isinstance(other, TensorTrain):
            if (other.shape, other.dtype, other.device) != (self.shape, self.dtype, self.device):
                raise ValueError(
                    f"other (x.dot(y)): expected a train of shape {self.shape} ({self.dtype}, {self.device}), "
                    f"got {other.shape} ({other.dtype}, {other.device})"
                )
            theirs = [c.unsqueeze(0).expand(self.batch_size, -1, -1, -1) for c in other.cores]
        else:
            theirs = list(self._check_same(other, "x.dot(y)").cores)
        b = self.batch_size
        env = self._cores[0].new_ones(b, 1, 1)
        for ga, gb in zip(self._cores, theirs):
            _, ra0, n, ra1 = ga.shape
            rb1 = gb.shape[3]
            tmp = torch.bmm(env, gb.reshape(b, gb.shape[1], n * rb1)).reshape(b, ra0 * n, rb1)
            env = torch.bmm(ga.reshape(b, ra0 * n, ra1).mH, tmp)
        return env.reshape(b)

    def norm(self) -> torch.Tensor:
        """Frobenius norm per member (``(B,)`` real) by a batched QR sweep: accurate for differences too."""
        cores = _left_sweep(list(self._cores))
        return torch.linalg.vector_norm(cores[-1].reshape(self.batch_size, -1), dim=1)

    def pad_ranks(self, ranks: int | Sequence[int]) -> TTBatch:
        """Grow every member's bonds to ``ranks`` (int or per bond) with zeros, exactly (see :func:`tnadapt.tt.pad_ranks`)."""
        targets = check_rank_spec("ranks", ranks, self.order - 1) or []
        full = [1, *(max(t, r) for t, r in zip(targets, self.ranks[1:-1])), 1]
        if tuple(full) == self.ranks:
            return self
        cores = []
        for k, core in enumerate(self._cores):
            b, r0, n, r1 = core.shape
            out = core.new_zeros((b, full[k], n, full[k + 1]))
            out[:, :r0, :, :r1] = core
            cores.append(out)
        return TTBatch._trusted(cores)

    def round(
        self, *, max_rank: int | Sequence[int] | None = None, eps: float | None = None, min_rank: int = 1
    ) -> TTBatch:
        """Batched TT-rounding to common ranks; see :func:`round_batch`."""
        return round_batch(self, max_rank=max_rank, eps=eps, min_rank=min_rank).batch


def _left_sweep(cores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Batched left-orthonormalisation (thin QR), centre at the last core; ranks may shrink."""
    for k in range(len(cores) - 1):
        b, r0, n, r1 = cores[k].shape
        q, r = torch.linalg.qr(cores[k].reshape(b, r0 * n, r1))
        nxt = cores[k + 1]
        cores[k] = q.reshape(b, r0, n, q.shape[2])
        cores[k + 1] = torch.bmm(r, nxt.reshape(b, r1, -1)).reshape(b, q.shape[2], nxt.shape[2], nxt.shape[3])
    return cores


def _right_sweep(cores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Batched right-orthonormalisation (thin QR of the transposed unfoldings), centre at core 0."""
    for k in range(len(cores) - 1, 0, -1):
        b, r0, n, r1 = cores[k].shape
        q, r = torch.linalg.qr(cores[k].reshape(b, r0, n * r1).mH)
        prev = cores[k - 1]
        cores[k] = q.mH.reshape(b, q.shape[2], n, r1)
        cores[k - 1] = torch.bmm(prev.reshape(b, -1, r0), r.mH).reshape(b, prev.shape[1], prev.shape[2], q.shape[2])
    return cores


@dataclass(frozen=True)
class BatchTruncationReport:
    """What :func:`round_batch` did, member by member.

    Attributes
    ----------
    batch:
        The rounded batch (common ranks ``ranks_after``).
    discarded:
        Real ``(B, d-1)``: the norm of the singular values member ``b`` lost at bond ``k``.
    ranks_before, ranks_after:
        Ranks ``(1, r_1, ..., r_{d-1}, 1)`` of every member before and after.
    reference_norm:
        ``||x_b||`` per member, ``(B,)``.
    """

    batch: TTBatch
    discarded: torch.Tensor
    ranks_before: tuple[int, ...]
    ranks_after: tuple[int, ...]
    reference_norm: torch.Tensor

    @property
    def error(self) -> torch.Tensor:
        """``||x_b - round(x_b)||`` per member (``(B,)``), exact: one canonical truncation pass."""
        return torch.linalg.vector_norm(self.discarded, dim=1)

    @property
    def relative_error(self) -> torch.Tensor:
        """``error / ||x_b||`` per member (0 for a zero member)."""
        ref = self.reference_norm
        return torch.where(ref > 0, self.error / torch.where(ref > 0, ref, torch.ones_like(ref)), torch.zeros_like(ref))


def round_batch(
    batch: TTBatch, *, max_rank: int | Sequence[int] | None = None, eps: float | None = None, min_rank: int = 1
) -> BatchTruncationReport:
    """Round every member of ``batch`` to common ranks with one batched SVD per bond.

    The algorithm of :func:`tnadapt.tt.round_tt` (right-to-left QR sweep, then a
    left-to-right truncated-SVD sweep), vectorised: at bond ``k`` every member keeps the same
    number of singular values — at most ``max_rank`` (int or per bond), at least
    ``min_rank``, and with ``eps`` the largest count any member needs for its own budget
    ``eps ||x_b|| / sqrt(d-1)``, so every member satisfies ``||x_b - round(x_b)|| <= eps
    ||x_b||``.  The per-member errors are exact.

    >>> import torch
    >>> from tnadapt.tt import TTBatch
    >>> x = TTBatch.random(4, (3, 3, 3, 3), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> rep = round_batch(x + x, max_rank=2)
    >>> rep.batch.ranks, rep.error.shape, bool((rep.error < 1e-10).all())
    ((1, 2, 2, 2, 1), torch.Size([4]), True)
    """
    if not isinstance(batch, TTBatch):
        raise TypeError(f"batch: expected a TTBatch, got {describe(batch)}")
    check_positive_float("eps", eps)
    check_min_rank(min_rank)
    d = batch.order
    caps = check_rank_spec("max_rank", max_rank, d - 1)
    b = batch.batch_size
    cores = _right_sweep(list(batch.cores))
    ref = torch.linalg.vector_norm(cores[0].reshape(b, -1), dim=1)
    budget = None if eps is None or d == 1 else ref * (eps / (d - 1) ** 0.5)
    real = ref.dtype
    discarded = torch.zeros(b, max(d - 1, 0), dtype=real, device=batch.device)
    for k in range(d - 1):
        _, r0, n, r1 = cores[k].shape
        u, s, vh = torch.linalg.svd(cores[k].reshape(b, r0 * n, r1), full_matrices=False)
        # tails[:, j] = ||s[:, j:]||: the error of keeping j values, per member
        tails = torch.flip(torch.cumsum(torch.flip(s.square(), (1,)), 1), (1,)).sqrt()
        tails = torch.cat([tails, tails.new_zeros(b, 1)], dim=1)
        rank = s.shape[1]
        if budget is not None:
            need = (tails > budget.unsqueeze(1)).sum(dim=1)  # smallest j with tails[j] <= budget
            rank = int(need.max())
        if caps is not None:
            rank = min(rank, caps[k])
        rank = max(rank, min(min_rank, s.shape[1]), 1)
        discarded[:, k] = tails[:, rank]
        cores[k] = u[:, :, :rank].reshape(b, r0, n, rank)
        sv = s[:, :rank].to(vh.dtype) if vh.is_complex() else s[:, :rank]
        nxt = cores[k + 1]
        carry = sv.unsqueeze(2) * vh[:, :rank]
        cores[k + 1] = torch.bmm(carry, nxt.reshape(b, r1, -1)).reshape(b, rank, nxt.shape[2], nxt.shape[3])
    out = TTBatch._trusted(cores)
    return BatchTruncationReport(
        batch=out, discarded=discarded, ranks_before=batch.ranks, ranks_after=out.ranks, reference_norm=ref
    )
