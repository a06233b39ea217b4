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

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import torch

from ._chain import CoreChain, validate_chain
from ._errors import as_int, check_mode, check_scalar, describe
from .tensor_train import DEFAULT_MAX_DENSE_ELEMENTS, TensorTrain
from .truncation import TruncationReport

if TYPE_CHECKING:
    from .batch import TTBatch

__all__ = ["MatrixTruncationReport", "TTMatrix", "check_dims", "round_matrix"]


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


class TTMatrix(CoreChain):
    """A matrix in TT format: cores ``G_k`` of shape ``(r_{k-1}, m_k, n_k, r_k)``, ``r_0 = r_d = 1``.

    Parameters
    ----------
    cores:
        The cores, one per site, one dtype and device.
    center:
        Optional orthogonality centre of the merged-leg train the caller *guarantees*
        (as for :class:`~tnadapt.tt.TensorTrain`); normally set only by library routines.

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

    __slots__ = ("_center", "_cores")

    #: numpy defers to the reflected operators instead of broadcasting an operator as an object array.
    __array_ufunc__ = None

    def __init__(self, cores: Sequence[torch.Tensor], *, center: int | None = None) -> None:
        cores = tuple(cores)
        validate_chain(cores, layout="(r_{k-1}, m_k, n_k, r_k)", left=0, right=3)
        if center is not None:
            center = check_mode("center", center, len(cores))
        self._cores: tuple[torch.Tensor, ...] = cores
        self._center = center

    @classmethod
    def _trusted(cls, cores: Sequence[torch.Tensor], center: int | None = None) -> TTMatrix:
        """A TT-matrix from cores built by library code from validated operands (internal, unchecked)."""
        out = cls.__new__(cls)
        out._cores = tuple(cores)
        out._center = center
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
    def center(self) -> int | None:
        """Known orthogonality centre of the merged-leg train (see :meth:`orthogonalize`), or ``None``."""
        return self._center

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

    def __len__(self) -> int:
        return self.order

    def __repr__(self) -> str:
        return (
            f"TTMatrix(row_dims={self.row_dims}, col_dims={self.col_dims}, ranks={self.ranks}, "
            f"dtype={self.dtype}, device={self.device}{'' if self._center is None else f', center={self._center}'})"
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
        cores = [c.reshape(c.shape[0], m, n, c.shape[2]) for c, m, n in zip(tt.cores, rows, cols)]
        return cls._trusted(cores, tt.center)

    def to_tt(self) -> TensorTrain:
        """The train of shape ``(m_1 n_1, ..., m_d n_d)`` with merged legs (a view of the same cores)."""
        return TensorTrain._trusted([c.reshape(c.shape[0], -1, c.shape[3]) for c in self._cores], self._center)

    def _like(self, tt: TensorTrain) -> TTMatrix:
        """``tt`` (merged legs, same site sizes as ``self``) back as a TT-matrix of ``self``'s row/column dims."""
        return TTMatrix.from_tt(tt, self.row_dims, self.col_dims)

    def to(self, *args: Any, **kwargs: Any) -> TTMatrix:
        """Like ``torch.Tensor.to`` applied to every core (keeps the canonical centre)."""
        return TTMatrix([c.to(*args, **kwargs) for c in self._cores], center=self._center)

    def detach(self) -> TTMatrix:
        return TTMatrix._trusted([c.detach() for c in self._cores], self._center)

    def clone(self) -> TTMatrix:
        return TTMatrix._trusted([c.clone() for c in self._cores], self._center)

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

    # ------------------------------------------------------------------ indexing
    def __getitem__(self, index: tuple[Any, Any]) -> TTMatrix:
        """``A[rows, cols]``: restrict row and column legs site by site (the result stays a TT-matrix).

        ``rows`` and ``cols`` are each ``...``/``slice(None)`` (all) or a sequence of ``d``
        per-site indices: an int (kept as a leg of size 1), a slice, or a list / 1-D integer
        tensor of positions (negative ones count from the end).  For a single row or column as
        a train use :meth:`row` / :meth:`column`.

        >>> import torch
        >>> A = TTMatrix.random((2, 3), (4, 5), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> B = A[(1, slice(0, 2)), ...]
        >>> B.row_dims, B.col_dims
        ((1, 2), (4, 5))
        >>> dense = A.full().reshape(2, 3, 4, 5)[1:2, 0:2].reshape(2, 20)
        >>> bool(torch.allclose(B.full(), dense))
        True
        """
        if not isinstance(index, tuple) or len(index) != 2:
            raise TypeError(f"index: expected A[rows, cols] (a pair of per-site index tuples), got {describe(index)}")
        rows = _site_indices("rows", index[0], self.row_dims, self.device)
        cols = _site_indices("cols", index[1], self.col_dims, self.device)
        cores = [c.index_select(1, i).index_select(2, j) for c, i, j in zip(self._cores, rows, cols)]
        return TTMatrix._trusted(cores)

    def row(self, index: Sequence[int]) -> TensorTrain:
        """Row ``(i_1, ..., i_d)`` of the matrix as a train of shape ``col_dims`` (``full(A)[i] == A.row(i).full()``)."""
        picks = _multi_index("index", index, self.row_dims)
        return TensorTrain._trusted([c[:, i] for c, i in zip(self._cores, picks)], None)

    def column(self, index: Sequence[int]) -> TensorTrain:
        """Column ``(j_1, ..., j_d)`` as a train of shape ``row_dims``."""
        picks = _multi_index("index", index, self.col_dims)
        return TensorTrain._trusted([c[:, :, j] for c, j in zip(self._cores, picks)], None)

    # ------------------------------------------------------------------ algebra (merged legs)
    def _check_same(self, other: object, op: str) -> TTMatrix:
        if not isinstance(other, TTMatrix):
            raise TypeError(f"other ({op}): expected a TTMatrix, got {describe(other)}")
        if (other.row_dims, other.col_dims) != (self.row_dims, self.col_dims):
            raise ValueError(
                f"other ({op}): expected row_dims {self.row_dims} and col_dims {self.col_dims}, "
                f"got {other.row_dims} and {other.col_dims}"
            )
        return other

    def __add__(self, other: TTMatrix) -> TTMatrix:
        """``A + B`` exactly (ranks add), by :func:`tnadapt.tt.add` on the merged legs."""
        if not isinstance(other, TTMatrix):
            return NotImplemented
        return self._like(self.to_tt() + self._check_same(other, "A + B").to_tt())

    def __sub__(self, other: TTMatrix) -> TTMatrix:
        """``A - B`` exactly (ranks add)."""
        if not isinstance(other, TTMatrix):
            return NotImplemented
        return self._like(self.to_tt() - self._check_same(other, "A - B").to_tt())

    def __neg__(self) -> TTMatrix:
        return self._like(-self.to_tt())

    def __mul__(self, other: Any) -> TTMatrix:
        """``A * c`` for a scalar ``c`` (a Python/numpy number or a 0-d tensor; ranks unchanged)."""
        return self._like(self.to_tt() * check_scalar("other (A * other)", other))

    def __rmul__(self, other: Any) -> TTMatrix:
        return self._like(check_scalar("other (other * A)", other) * self.to_tt())

    def __truediv__(self, other: Any) -> TTMatrix:
        return self._like(self.to_tt() / check_scalar("other (A / other)", other, expected="a scalar divisor"))

    def dot(self, other: TTMatrix) -> torch.Tensor:
        """Frobenius inner product ``sum conj(A) * B`` (0-d tensor), :func:`tnadapt.tt.dot` on the merged legs."""
        return self.to_tt().dot(self._check_same(other, "A.dot(B)").to_tt())

    def norm(self, *, method: str = "qr") -> torch.Tensor:
        """Frobenius norm (0-d real tensor); see :func:`tnadapt.tt.norm` for ``method`` and the gradient."""
        return self.to_tt().norm(method=method)

    def orthogonalize(self, center: int = -1) -> TTMatrix:
        """Mixed-canonical form of the merged-leg train with centre ``center`` (see :func:`tnadapt.tt.orthogonalize`)."""
        from .canonical import orthogonalize

        return self._like(orthogonalize(self.to_tt(), center))

    def round(
        self,
        *,
        max_rank: int | Sequence[int] | None = None,
        eps: float | None = None,
        cutoff: float | None = None,
        min_rank: int = 1,
        method: str = "deterministic",
    ) -> TTMatrix:
        """TT-rounding of the operator; see :func:`round_matrix` for the guarantees and the report."""
        return round_matrix(self, max_rank=max_rank, eps=eps, cutoff=cutoff, min_rank=min_rank, method=method).matrix

    # ------------------------------------------------------------------ transposes
    def transpose(self) -> TTMatrix:
        """``A^T``: row and column legs swapped on every core (ranks and canonical centre unchanged)."""
        return TTMatrix._trusted([c.transpose(1, 2) for c in self._cores], self._center)

    def adjoint(self) -> TTMatrix:
        """``A^H``: the conjugate transpose (``transpose()`` for real dtypes)."""
        return TTMatrix._trusted([c.transpose(1, 2).conj() for c in self._cores], self._center)

    @property
    def T(self) -> TTMatrix:
        """:meth:`transpose`."""
        return self.transpose()

    @property
    def mH(self) -> TTMatrix:
        """:meth:`adjoint`."""
        return self.adjoint()

    # ------------------------------------------------------------------ products
    @overload
    def __matmul__(self, other: TensorTrain) -> TensorTrain: ...

    @overload
    def __matmul__(self, other: TTMatrix) -> TTMatrix: ...

    @overload
    def __matmul__(self, other: TTBatch) -> TTBatch: ...

    @overload
    def __matmul__(self, other: torch.Tensor) -> torch.Tensor: ...

    def __matmul__(self, other: Any) -> Any:
        """``A @ x``: a :class:`TensorTrain` or a :class:`~tnadapt.tt.TTBatch` of them (exact, ranks
        multiply, :func:`matvec`), a :class:`TTMatrix` (exact, :func:`matmul`), or a dense tensor
        ``(prod n,)`` / ``(prod n, k)`` (:func:`apply_dense`)."""
        from .batch import TTBatch
        from .matvec import apply_dense, matmul, matvec

        if isinstance(other, (TensorTrain, TTBatch)):
            return matvec(self, other)
        if isinstance(other, TTMatrix):
            return matmul(self, other)
        if isinstance(other, torch.Tensor):
            if other.ndim == 1:
                return apply_dense(self, other)
            if other.ndim == 2:
                return apply_dense(self, other.mT).mT
            raise ValueError(
                f"other (A @ other): expected a 1-D (prod n,) or 2-D (prod n, k) tensor, got shape "
                f"{tuple(other.shape)}; use apply_dense for batches (..., prod n)"
            )
        return NotImplemented

    def apply(self, batch: torch.Tensor) -> torch.Tensor:
        """``batch (..., prod n_k) -> (..., prod m_k)`` core by core, never forming the dense matrix (:func:`apply_dense`)."""
        from .matvec import apply_dense

        return apply_dense(self, batch)


@dataclass(frozen=True)
class MatrixTruncationReport(TruncationReport):
    """A :class:`~tnadapt.tt.TruncationReport` for a TT-matrix: ``matrix`` is the rounded operator.

    ``tt`` is its merged-leg train (:meth:`TTMatrix.to_tt`); ``error`` is ``||A - matrix||_F``
    exactly (one canonical rounding pass) and ``reference_norm`` is ``||A||_F``.
    """

    matrix: TTMatrix


def round_matrix(
    a: TTMatrix,
    *,
    max_rank: int | Sequence[int] | None = None,
    eps: float | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
    method: str = "deterministic",
) -> MatrixTruncationReport:
    """Round a TT-matrix by :func:`tnadapt.tt.round_tt` on its merged legs (the same contract:
    ``eps`` gives ``||A - round(A)||_F <= eps ||A||_F``, ``max_rank`` caps the ranks quasi-optimally).

    >>> import torch
    >>> A = TTMatrix.random((2, 2, 2), (2, 2, 2), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> rep = round_matrix(A + A, eps=1e-12)
    >>> rep.matrix.ranks, float(rep.relative_error) < 1e-12
    ((1, 2, 2, 1), True)
    """
    from .rounding import round_tt

    if not isinstance(a, TTMatrix):
        raise TypeError(f"a: expected a TTMatrix, got {describe(a)}")
    rep = round_tt(a.to_tt(), max_rank=max_rank, eps=eps, cutoff=cutoff, min_rank=min_rank, method=method)
    fields = {f.name: getattr(rep, f.name) for f in dataclasses.fields(rep)}
    return MatrixTruncationReport(**fields, matrix=a._like(rep.tt))


def _site_indices(name: str, index: Any, dims: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
    """Per-site positions (1-D int64 tensors) for a ``rows``/``cols`` argument of :meth:`TTMatrix.__getitem__`."""
    if index is Ellipsis or (isinstance(index, slice) and index == slice(None)):
        return [torch.arange(n, device=device) for n in dims]
    if not isinstance(index, (tuple, list)) or len(index) != len(dims):
        raise TypeError(f"{name}: expected ... or a sequence of {len(dims)} per-site indices, got {describe(index)}")
    out = []
    for k, (idx, n) in enumerate(zip(index, dims)):
        positions = torch.arange(n)
        single = as_int(idx)
        try:
            if single is not None:
                picked = positions[single].reshape(1)
            elif isinstance(idx, slice):
                picked = positions[idx]
            else:
                picked = positions[torch.as_tensor(idx, dtype=torch.long).reshape(-1)]
        except (IndexError, TypeError, ValueError, RuntimeError):
            raise IndexError(f"{name}[{k}]: index {idx!r} is not valid for a leg of size {n}") from None
        if picked.numel() == 0:
            raise IndexError(f"{name}[{k}]: index {idx!r} selects nothing from a leg of size {n}")
        out.append(picked.to(device))
    return out


def _multi_index(name: str, index: object, dims: tuple[int, ...]) -> list[int]:
    """A full multi-index (one int per site, negative from the end) checked against ``dims``."""
    items = list(index) if isinstance(index, (tuple, list)) else None
    if items is None or len(items) != len(dims) or any(as_int(i) is None for i in items):
        raise TypeError(f"{name}: expected a tuple of {len(dims)} ints, got {describe(index)}")
    out = []
    for k, (i, n) in enumerate(zip(items, dims)):
        v = as_int(i)
        assert v is not None
        if not -n <= v < n:
            raise IndexError(f"{name}[{k}]: index {v} is out of range for a leg of size {n}")
        out.append(v % n)
    return out
