"""Size-1 sites of a TT-matrix, folded into a neighbour before a sweep and put back after it.

A site whose row and column sizes are both 1 blocks rank growth in a sweep: a two-site block
(DMRG, ALS) or an AMEn enrichment at such a site cannot raise its bonds above the rank on the
other side, so a sweep started below the solution's rank stalls there.  Folding the site's bond
matrix into its nearest kept neighbour is exact — ``A' x' = b'`` iff ``A x = b`` and
``H' x' = λ x'`` iff ``H x = λ x``, with ``x`` = ``x'`` plus identity cores ``(r, 1, r)`` — so the
sweeps run only over sites of size >= 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .matrix import TTMatrix
from .tensor_train import TensorTrain

__all__ = ["UnitSites"]


class UnitSites:
    """The size-1 sites of an operator of order ``order``: fold cores, unfold trains and ranks."""

    def __init__(self, units: frozenset[int], order: int) -> None:
        self.units = units
        self.order = order
        self.kept = [k for k in range(order) if k not in units]

    @classmethod
    def of(cls, A: object, *, b: object = None, x0: object = None) -> UnitSites | None:
        """The unit sites of ``A`` if there are some to fold (not all) and ``b`` / ``x0`` (when given) fit
        ``A``'s row / column dims; otherwise ``None`` — invalid input then reaches the caller's own checks."""
        if not isinstance(A, TTMatrix):
            return None
        units = frozenset(k for k, (m, n) in enumerate(zip(A.row_dims, A.col_dims)) if m == 1 and n == 1)
        if not units or len(units) == A.order:
            return None
        for train, dims in ((b, A.row_dims), (x0, A.col_dims)):
            if train is not None and not (isinstance(train, TensorTrain) and train.shape == tuple(dims)):
                return None
        return cls(units, A.order)

    def fold(self, cores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Multiply every unit site's core (its middle legs have size 1) into its nearest kept neighbour.

        Leading unit sites go into the first kept core's left bond, the others into the right bond
        of the kept core before them.  Cores of any number of middle legs (trains and TT-matrices).
        """
        kept: list[torch.Tensor] = []
        pending: torch.Tensor | None = None  # product of the leading unit sites' bond matrices
        for k, core in enumerate(cores):
            if k in self.units:
                mat = core.reshape(core.shape[0], core.shape[-1])
                if kept:
                    last = kept[-1]
                    kept[-1] = (last.reshape(-1, last.shape[-1]) @ mat).reshape(*last.shape[:-1], mat.shape[1])
                else:
                    pending = mat if pending is None else pending @ mat
                continue
            if pending is not None:
                core = (pending @ core.reshape(core.shape[0], -1)).reshape(pending.shape[0], *core.shape[1:])
                pending = None
            kept.append(core)
        return kept

    def operator(self, A: TTMatrix) -> TTMatrix:
        return TTMatrix(self.fold(A.cores))

    def train(self, x: TensorTrain | None) -> TensorTrain | None:
        return None if x is None else TensorTrain(self.fold(x.cores))

    def unfold(self, x: TensorTrain) -> TensorTrain:
        """``x`` with identity cores ``(r, 1, r)`` re-inserted at the unit sites (the centre, if known, kept)."""
        reduced = iter(x.cores)
        cores: list[torch.Tensor] = []
        for k in range(self.order):
            if k in self.units:
                r = cores[-1].shape[2] if cores else 1
                cores.append(torch.eye(r, dtype=x.dtype, device=x.device).reshape(r, 1, r))
            else:
                cores.append(next(reduced))
        # An identity core is both left- and right-orthonormal, so a canonical centre stays one.
        return TensorTrain(cores, center=None if x.center is None else self.kept[x.center])

    def ranks(self, ranks: Sequence[int]) -> tuple[int, ...]:
        """The ranks of the unfolded train: a unit site repeats the bond on its left."""
        full, j = [1], 0
        for k in range(self.order):
            if k in self.units:
                full.append(full[-1])
            else:
                j += 1
                full.append(int(ranks[j]))
        return tuple(full)
