"""The :class:`TTMatrix` value type: a linear operator in TT format (a.k.a. MPO).

Conventions
-----------
A TT-matrix of order ``d`` represents the ``(prod m_k, prod n_k)`` matrix

    A[(i_1, ..., i_d), (j_1, ..., j_d)] = G_1[:, i_1, j_1, :] @ ... @ G_d[:, i_d, j_d, :]

with cores ``G_k`` of shape ``(r_{k-1}, m_k, n_k, r_k)`` and ``r_0 = r_d = 1``.  The row
index of :meth:`TTMatrix.full` is the C-order (site 0 most significant) flattening of
``(i_1, ..., i_d)``, the column index likewise of ``(j_1, ..., j_d)``: the same order as
``TensorTrain.full().reshape(-1)``, so ``(A @ x).full().reshape(-1) == A.full() @
x.full().reshape(-1)``.  ``row_dims = (m_1, ..., m_d)``, ``col_dims = (n_1, ..., n_d)``.

A ``TTMatrix`` is immutable like :class:`~tnadapt.tt.TensorTrain`: every operation returns
a new one.  Operations that do not care about the row/column split (norm, dot, rounding,
canonical forms, sums) run the ``TensorTrain`` code on the *merged legs*: core
``(r, m, n, r')`` viewed as ``(r, m n, r')`` (:meth:`TTMatrix.to_tt`), and back
(:meth:`TTMatrix.from_tt`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ._errors import as_int, describe
from .tensor_train import DEFAULT_MAX_DENSE_ELEMENTS, TensorTrain

__all__ = ["TTMatrix", "check_dims"]


def _validate_cores(cores: Sequence[torch.Tensor]) -> None:
    if len(cores) == 0:
        raise ValueError("cores: expected at least one core, got an empty sequence")
    first = cores[0]
    for k, core in enumerate(cores):
        if not isinstance(core, torch.Tensor):
            raise TypeError(f"cores[{k}]: expected a torch.Tensor, got {type(core).__name__}")
        if core.ndim != 4:
            raise ValueError(
                f"cores[{k}]: expected a 4-D core of shape (r_{{k-1}}, m_k, n_k, r_k), got shape {tuple(core.shape)}"
            )
        if core.dtype != first.dtype:
            raise ValueError(f"cores[{k}]: dtype {core.dtype} differs from cores[0] dtype {first.dtype}")
        if core.device != first.device:
            raise ValueError(f"cores[{k}]: device {core.device} differs from cores[0] device {first.device}")
        if not (core.dtype.is_floating_point or core.dtype.is_complex):
            raise ValueError(f"cores[{k}]: expected a floating or complex dtype, got {core.dtype}")
        if min(core.shape) < 1:
            raise ValueError(f"cores[{k}]: every dimension must be >= 1, got shape {tuple(core.shape)}")
        if k > 0 and cores[k - 1].shape[3] != core.shape[0]:
            raise ValueError(
                f"cores[{k}]: left rank {core.shape[0]} does not match the right rank "
                f"{cores[k - 1].shape[3]} of cores[{k - 1}]"
            )
    if first.shape[0] != 1:
        raise ValueError(f"cores[0]: boundary rank r_0 must be 1, got shape {tuple(first.shape)}")
    if cores[-1].shape[3] != 1:
        raise ValueError(f"cores[{len(cores) - 1}]: boundary rank r_d must be 1, got shape {tuple(cores[-1].shape)}")


def check_dims(name: str, dims: object, order: int | None = None) -> tuple[int, ...]:
    """``dims`` as a tuple of ints >= 1 (of length ``order`` when given), else a clear error naming ``name``."""
    if isinstance(dims, (str, bytes)) or as_int(dims) is not None:
        raise TypeError(f"{name}: expected a sequence of ints >= 1, got {describe(dims)}")
    try:
        items = list(dims)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name}: expected a sequence of ints >= 1, got {describe(dims)}") from None
    values = [as_int(v) for v in items]
    if not values or any(v is None or v < 1 for v in values):
        raise ValueError(f"{name}: expected a non-empty sequence of ints >= 1, got {items!r}")
    out = tuple(int(v) for v in values)  # type: ignore[arg-type]
    if order is not None and len(out) != order:
        raise ValueError(f"{name}: expected {order} dimensions, got {len(out)}: {out}")
    return out


def _dims_pair(row_dims: object, col_dims: object) -> tuple[tuple[int, ...], tuple[int, ...]]:
    rows = check_dims("row_dims", row_dims)
    return rows, check_dims("col_dims", col_dims, len(rows))


class TTMatrix:
    """A matrix in TT format: cores ``G_k`` of shape ``(r_{k-1}, m_k, n_k, r_k)``, ``r_0 = r_d = 1``.

    Parameters
    ----------
    cores:
        The cores, one per site, one dtype and device.

    Examples
    --------
    >>> import torch
    >>> from tnadapt.tt import TensorTrain, TTMatrix
    >>> g = torch.Generator().manual_seed(0)
    >>> dense = torch.randn(6, 12, generator=g, dtype=torch.float64)
    >>> A = TTMatrix.from_dense(dense, row_dims=(2, 3), col_dims=(3, 4))
    >>> A.row_dims, A.col_dims, A.ranks
    ((2, 3), (3, 4), (1, 6, 1))
    >>> bool(torch.allclose(A.full(), dense))
    True
    >>> x = TensorTrain.random((3, 4), 2, generator=g, dtype=torch.float64)
    >>> y = A @ x
    >>> y.shape, y.ranks
    ((2, 3), (1, 12, 1))
    >>> bool(torch.allclose(y.full().reshape(-1), dense @ x.full().reshape(-1)))
    True
    """

    __slots__ = ("_cores",)

    #: numpy defers to the reflected operators instead of broadcasting an operator as an object array.
    __array_ufunc__ = None

    def __init__(self, cores: Sequence[torch.Tensor]) -> None:
        cores = tuple(cores)
        _validate_cores(cores)
        self._cores: tuple[torch.Tensor, ...] = cores

    @classmethod
    def _trusted(cls, cores: Sequence[torch.Tensor]) -> TTMatrix:
        """A TT-matrix from cores built by library code from validated operands (internal, unchecked)."""
        out = cls.__new__(cls)
        out._cores = tuple(cores)
        return out

    # ------------------------------------------------------------------ constructors
    @classmethod
    def zeros(
        cls,
        row_dims: Sequence[int],
        col_dims: Sequence[int],
        ranks: int | Sequence[int] = 1,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TTMatrix:
        """The zero operator with the given interior ``ranks`` (int or ``d-1`` bonds)."""
        rows, cols = _dims_pair(row_dims, col_dims)
        merged = TensorTrain.zeros([m * n for m, n in zip(rows, cols)], ranks, dtype=dtype, device=device)
        return cls.from_tt(merged, rows, cols)

    @classmethod
    def random(
        cls,
        row_dims: Sequence[int],
        col_dims: Sequence[int],
        ranks: int | Sequence[int] = 1,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        std: float | None = None,
    ) -> TTMatrix:
        """Gaussian cores (those of :meth:`TensorTrain.random` on the merged legs): entries of ``full()`` O(1)."""
        rows, cols = _dims_pair(row_dims, col_dims)
        merged = TensorTrain.random(
            [m * n for m, n in zip(rows, cols)], ranks, generator=generator, dtype=dtype, device=device, std=std
        )
        return cls.from_tt(merged, rows, cols)

    @classmethod
    def identity(
        cls,
        dims: Sequence[int],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TTMatrix:
        """The identity on ``prod dims`` (rank 1, cores ``eye(n_k)``).

        >>> import torch
        >>> TTMatrix.identity((2, 3), dtype=torch.float64).full().equal(torch.eye(6, dtype=torch.float64))
        True
        """
        sizes = check_dims("dims", dims)
        return cls._trusted([torch.eye(n, dtype=dtype, device=device).reshape(1, n, n, 1) for n in sizes])

    # ------------------------------------------------------------------ properties
    @property
    def cores(self) -> tuple[torch.Tensor, ...]:
        """The cores ``G_k``, shape ``(r_{k-1}, m_k, n_k, r_k)`` (do not modify in place)."""
        return self._cores

    @property
    def row_dims(self) -> tuple[int, ...]:
        """Row mode sizes ``(m_1, ..., m_d)``."""
        return tuple(int(c.shape[1]) for c in self._cores)

    @property
    def col_dims(self) -> tuple[int, ...]:
        """Column mode sizes ``(n_1, ..., n_d)``."""
        return tuple(int(c.shape[2]) for c in self._cores)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the dense matrix, ``(prod m_k, prod n_k)``."""
        return math.prod(self.row_dims), math.prod(self.col_dims)

    @property
    def ranks(self) -> tuple[int, ...]:
        """TT ranks ``(r_0, ..., r_d)`` including ``r_0 = r_d = 1``."""
        return (1, *(int(c.shape[3]) for c in self._cores))

    @property
    def order(self) -> int:
        """Number of sites ``d``."""
        return len(self._cores)

    @property
    def num_params(self) -> int:
        """Total number of stored entries, ``sum_k r_{k-1} m_k n_k r_k``."""
        return sum(c.numel() for c in self._cores)

    @property
    def dtype(self) -> torch.dtype:
        return self._cores[0].dtype

    @property
    def device(self) -> torch.device:
        return self._cores[0].device

    @property
    def requires_grad(self) -> bool:
        return any(c.requires_grad for c in self._cores)

    def __len__(self) -> int:
        return self.order

    def __repr__(self) -> str:
        return (
            f"TTMatrix(row_dims={self.row_dims}, col_dims={self.col_dims}, ranks={self.ranks}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_dense(
        cls,
        matrix: torch.Tensor,
        row_dims: Sequence[int],
        col_dims: Sequence[int],
        *,
        max_rank: int | Sequence[int] | None = None,
        eps: float | None = None,
    ) -> TTMatrix:
        """TT-SVD of a dense ``(prod row_dims, prod col_dims)`` matrix (row/column indices in C order).

        ``max_rank``/``eps`` truncate as in :func:`tnadapt.tt.tt_svd` (``||A - full|| <= eps ||A||``).
        """
        from .decompositions import tt_svd

        if not isinstance(matrix, torch.Tensor):
            raise TypeError(f"matrix: expected a torch.Tensor, got {describe(matrix)}")
        rows, cols = _dims_pair(row_dims, col_dims)
        expected = (math.prod(rows), math.prod(cols))
        if matrix.ndim != 2 or tuple(matrix.shape) != expected:
            raise ValueError(
                f"matrix: expected shape {expected} (prod row_dims, prod col_dims), got {tuple(matrix.shape)}"
            )
        d = len(rows)
        perm = [p for k in range(d) for p in (k, d + k)]
        merged = matrix.reshape(*rows, *cols).permute(perm).reshape([m * n for m, n in zip(rows, cols)])
        return cls.from_tt(tt_svd(merged, max_rank=max_rank, eps=eps).tt, rows, cols)

    @classmethod
    def from_tt(cls, tt: TensorTrain, row_dims: Sequence[int], col_dims: Sequence[int]) -> TTMatrix:
        """Split the merged legs of a train of shape ``(m_1 n_1, ..., m_d n_d)`` into ``(m_k, n_k)`` (row index major)."""
        if not isinstance(tt, TensorTrain):
            raise TypeError(f"tt: expected a TensorTrain, got {describe(tt)}")
        rows = check_dims("row_dims", row_dims, tt.order)
        cols = check_dims("col_dims", col_dims, tt.order)
        merged = tuple(m * n for m, n in zip(rows, cols))
        if merged != tt.shape:
            raise ValueError(f"tt: expected shape {merged} (row_dims[k] * col_dims[k] per site), got shape {tt.shape}")
        return cls._trusted([c.reshape(c.shape[0], m, n, c.shape[2]) for c, m, n in zip(tt.cores, rows, cols)])

    def to_tt(self) -> TensorTrain:
        """The train of shape ``(m_1 n_1, ..., m_d n_d)`` with merged legs (a view of the same cores)."""
        return TensorTrain._trusted([c.reshape(c.shape[0], -1, c.shape[3]) for c in self._cores], None)

    def to(self, *args: Any, **kwargs: Any) -> TTMatrix:
        """Like ``torch.Tensor.to`` applied to every core."""
        return TTMatrix([c.to(*args, **kwargs) for c in self._cores])

    def detach(self) -> TTMatrix:
        return TTMatrix._trusted([c.detach() for c in self._cores])

    def clone(self) -> TTMatrix:
        return TTMatrix._trusted([c.clone() for c in self._cores])

    def full(self, *, max_elements: int = DEFAULT_MAX_DENSE_ELEMENTS) -> torch.Tensor:
        """The dense ``(prod m_k, prod n_k)`` matrix (C-order row and column indices).

        Raises ``ValueError`` when it would have more than ``max_elements`` entries.
        """
        rows, cols = self.shape
        if rows * cols > max_elements:
            raise ValueError(
                f"full(): the dense matrix of shape {(rows, cols)} has {rows * cols:,} entries, "
                f"above max_elements={max_elements:,}; apply the operator to a train or a batch instead, "
                f"or raise max_elements"
            )
        first = self._cores[0]
        result = first.reshape(first.shape[1], first.shape[2], first.shape[3])  # (M, N, r)
        for core in self._cores[1:]:
            big_m, big_n, _ = result.shape
            _, m, n, r1 = core.shape
            result = torch.einsum("MNa,amnb->MmNnb", result, core).reshape(big_m * m, big_n * n, r1)
        return result.reshape(rows, cols)

    # ------------------------------------------------------------------ products
    def __matmul__(self, other: Any) -> Any:
        """``A @ x`` for a :class:`TensorTrain` ``x`` (exact, ranks multiply)."""
        from .matvec import matvec

        if isinstance(other, TensorTrain):
            return matvec(self, other)
        return NotImplemented
