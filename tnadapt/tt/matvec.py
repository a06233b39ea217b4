"""Products with a :class:`~tnadapt.tt.matrix.TTMatrix`: operator × train (exact).

Rank rule: ``A @ x`` has ranks ``r_k(A) * r_k(x)`` (core ``k`` is the contraction of the
column leg of ``A``'s core with the mode of ``x``'s core, bonds paired as ``(a, s)``).
"""

from __future__ import annotations

import torch

from ._errors import describe
from .matrix import TTMatrix
from .tensor_train import TensorTrain

__all__ = ["matvec"]


def _check_operand(name: str, a: TTMatrix, x: TensorTrain) -> None:
    if not isinstance(a, TTMatrix):
        raise TypeError(f"A: expected a TTMatrix, got {describe(a)}")
    if not isinstance(x, TensorTrain):
        raise TypeError(f"{name}: expected a TensorTrain, got {describe(x)}")
    if x.shape != a.col_dims:
        raise ValueError(f"{name}: expected shape {a.col_dims} (A.col_dims), got shape {x.shape}")
    if x.dtype != a.dtype:
        raise ValueError(f"{name}: dtype {x.dtype} differs from A's dtype {a.dtype}")
    if x.device != a.device:
        raise ValueError(f"{name}: device {x.device} differs from A's device {a.device}")


def _matvec_core(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``(ra, m, n, rb) x (sa, n, sb) -> (ra sa, m, rb sb)``."""
    ra, m, _, rb = g.shape
    sa, _, sb = h.shape
    return torch.einsum("amnb,snt->asmbt", g, h).reshape(ra * sa, m, rb * sb)


def matvec(a: TTMatrix, x: TensorTrain) -> TensorTrain:
    """``A @ x`` exactly: a train of shape ``A.row_dims`` with ranks ``r_k(A) r_k(x)``.

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
    _check_operand("x", a, x)
    return TensorTrain._trusted([_matvec_core(g, h) for g, h in zip(a.cores, x.cores)], None)
