"""The :class:`TensorTrain` value type.

Conventions
-----------
A tensor train (TT, a.k.a. matrix product state) of order ``d`` represents

    X[i_1, ..., i_d] = G_1[:, i_1, :] @ G_2[:, i_2, :] @ ... @ G_d[:, i_d, :]

with cores ``G_k`` of shape ``(r_{k-1}, n_k, r_k)`` and boundary ranks
``r_0 = r_d = 1``.  ``shape = (n_1, ..., n_d)``, ``ranks = (r_0, ..., r_d)``.

A ``TensorTrain`` is immutable by convention: every operation returns a new train and
never writes into the cores it was given.  Cores may be plain tensors or
``nn.Parameter`` objects; all differentiable operations (contraction, indexing,
arithmetic, QR/SVD based ones in the usual torch sense) let autograd flow to them.

The train optionally records its *orthogonality centre* ``c``: cores ``< c`` are
left-orthonormal and cores ``> c`` right-orthonormal.  Algorithms that need a canonical
form (norm, rounding) skip the sweep when the train already has the right centre.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ._chain import CoreChain
from ._errors import check_mode, check_scalar

if TYPE_CHECKING:
    from .truncation import TruncatedSVD

__all__ = ["DEFAULT_MAX_DENSE_ELEMENTS", "TensorTrain"]

#: ``full()`` refuses to build dense tensors with more elements than this (2**28 ≈ 268M).
DEFAULT_MAX_DENSE_ELEMENTS = 2**28

Index = int | slice | Sequence[int] | torch.Tensor


def _validate_cores(cores: Sequence[torch.Tensor]) -> None:
    if len(cores) == 0:
        raise ValueError("cores: expected at least one core, got an empty sequence")
    first = cores[0]
    for k, core in enumerate(cores):
        if not isinstance(core, torch.Tensor):
            raise TypeError(f"cores[{k}]: expected a torch.Tensor, got {type(core).__name__}")
        if core.ndim != 3:
            raise ValueError(
                f"cores[{k}]: expected a 3-D core of shape (r_{{k-1}}, n_k, r_k), got shape {tuple(core.shape)}"
            )
        if core.dtype != first.dtype:
            raise ValueError(f"cores[{k}]: dtype {core.dtype} differs from cores[0] dtype {first.dtype}")
        if core.device != first.device:
            raise ValueError(f"cores[{k}]: device {core.device} differs from cores[0] device {first.device}")
        if core.dtype.is_floating_point is False and not core.dtype.is_complex:
            raise ValueError(f"cores[{k}]: expected a floating or complex dtype, got {core.dtype}")
        if min(core.shape) < 1:
            raise ValueError(f"cores[{k}]: every dimension must be >= 1, got shape {tuple(core.shape)}")
        if k > 0 and cores[k - 1].shape[2] != core.shape[0]:
            raise ValueError(
                f"cores[{k}]: left rank {core.shape[0]} does not match the right rank "
                f"{cores[k - 1].shape[2]} of cores[{k - 1}]"
            )
    if first.shape[0] != 1:
        raise ValueError(f"cores[0]: boundary rank r_0 must be 1, got shape {tuple(first.shape)}")
    if cores[-1].shape[2] != 1:
        raise ValueError(f"cores[{len(cores) - 1}]: boundary rank r_d must be 1, got shape {tuple(cores[-1].shape)}")


class TensorTrain(CoreChain):
    """A tensor in TT format: a list of cores ``G_k`` of shape ``(r_{k-1}, n_k, r_k)``.

    Parameters
    ----------
    cores:
        The cores, one per mode, ``r_0 = r_d = 1``; one dtype and device.
    center:
        Optional orthogonality centre the caller *guarantees* (cores before it
        left-orthonormal, after it right-orthonormal).  Normally set only by
        library routines.

    Examples
    --------
    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> g = torch.Generator().manual_seed(0)
    >>> x = TensorTrain.random((4, 5, 6), ranks=3, generator=g, dtype=torch.float64)
    >>> x.shape, x.ranks
    ((4, 5, 6), (1, 3, 3, 1))
    >>> bool(torch.allclose((x + x).full(), 2 * x.full()))
    True
    """

    __slots__ = ("_center", "_cores")

    #: numpy defers to :meth:`__rmul__` instead of broadcasting a train as an object array (``np.float64(2) * x``).
    __array_ufunc__ = None

    def __init__(self, cores: Sequence[torch.Tensor], *, center: int | None = None) -> None:
        cores = tuple(cores)
        _validate_cores(cores)
        if center is not None:
            center = check_mode("center", center, len(cores))
        self._cores: tuple[torch.Tensor, ...] = cores
        self._center = center

    @classmethod
    def _trusted(cls, cores: Sequence[torch.Tensor], center: int | None) -> TensorTrain:
        """A train from cores a library sweep produced from a validated train (internal).

        Skips :func:`_validate_cores`: the sweeps only replace cores by factors of the same
        dtype and device whose ranks match by construction (QR/SVD of an unfolding, pushed
        into the neighbour), so re-checking them cost ~4 µs per core on every call.
        ``center`` must be in ``[0, d)`` or ``None``.
        """
        out = cls.__new__(cls)
        out._cores = tuple(cores)
        out._center = center
        return out

    # ------------------------------------------------------------------ constructors
    @classmethod
    def zeros(
        cls,
        shape: Sequence[int],
        ranks: int | Sequence[int] = 1,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TensorTrain:
        """The zero tensor with the given interior ``ranks`` (int or ``d-1`` bonds)."""
        from . import init

        return cls(init.make_cores(shape, ranks, "zeros", dtype=dtype, device=device))

    @classmethod
    def random(
        cls,
        shape: Sequence[int],
        ranks: int | Sequence[int] = 1,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        std: float | None = None,
    ) -> TensorTrain:
        """Gaussian random cores, scaled so entries of ``full()`` have O(1) variance.

        ``std`` overrides the per-core standard deviation (default ``1/sqrt(r_{k-1})``).
        Seed through ``generator`` for reproducibility (no global RNG state is touched
        when one is given).
        """
        from . import init

        return cls(init.make_cores(shape, ranks, "normal", std=std, generator=generator, dtype=dtype, device=device))

    @classmethod
    def identity(
        cls,
        shape: Sequence[int],
        ranks: int | Sequence[int] = 1,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TensorTrain:
        """Identity cores as in MetaTT's ``id`` init: interior slices ``eye(r_{k-1}, r_k)``, boundary cores ``eye(n_1, r_1)`` / ``eye(r_{d-1}, n_d)`` (see :mod:`tnadapt.tt.init`)."""
        from . import init

        return cls(init.make_cores(shape, ranks, "identity", dtype=dtype, device=device))

    @classmethod
    def from_dense(
        cls,
        tensor: torch.Tensor,
        *,
        max_rank: int | Sequence[int] | None = None,
        eps: float | None = None,
    ) -> TensorTrain:
        """TT-SVD of a dense tensor; see :func:`tnadapt.tt.decompositions.tt_svd`."""
        from .decompositions import tt_svd

        return tt_svd(tensor, max_rank=max_rank, eps=eps).tt

    # ------------------------------------------------------------------ properties
    @property
    def cores(self) -> tuple[torch.Tensor, ...]:
        """The cores ``G_k``, shape ``(r_{k-1}, n_k, r_k)`` (do not modify in place)."""
        return self._cores

    @property
    def center(self) -> int | None:
        """Known orthogonality centre, or ``None`` if the train is not known to be canonical."""
        return self._center

    @property
    def shape(self) -> tuple[int, ...]:
        """Mode sizes ``(n_1, ..., n_d)``."""
        return tuple(int(c.shape[1]) for c in self._cores)

    @property
    def bond_dims(self) -> tuple[int, ...]:
        """Interior ranks ``(r_1, ..., r_{d-1})``."""
        return self.ranks[1:-1]

    ndim = CoreChain.order

    @property
    def numel_dense(self) -> int:
        """Number of entries of the dense tensor, ``prod_k n_k``."""
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.order

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self._cores)

    def __repr__(self) -> str:
        return (
            f"TensorTrain(shape={self.shape}, ranks={self.ranks}, dtype={self.dtype}, "
            f"device={self.device}{'' if self._center is None else f', center={self._center}'})"
        )

    # ------------------------------------------------------------------ conversions
    def to(self, *args: Any, **kwargs: Any) -> TensorTrain:
        """Like ``torch.Tensor.to`` applied to every core (keeps the canonical centre)."""
        return TensorTrain([c.to(*args, **kwargs) for c in self._cores], center=self._center)

    def detach(self) -> TensorTrain:
        return TensorTrain([c.detach() for c in self._cores], center=self._center)

    def clone(self) -> TensorTrain:
        return TensorTrain([c.clone() for c in self._cores], center=self._center)

    def with_cores(self, cores: Sequence[torch.Tensor], *, center: int | None = None) -> TensorTrain:
        """A new train with the given cores (validated), e.g. after replacing two sites."""
        return TensorTrain(cores, center=center)

    def full(self, *, max_elements: int = DEFAULT_MAX_DENSE_ELEMENTS) -> torch.Tensor:
        """Contract to the dense tensor of shape ``self.shape``.

        Raises ``ValueError`` when the dense tensor would have more than
        ``max_elements`` entries (pass a larger value to force it).
        """
        if self.numel_dense > max_elements:
            raise ValueError(
                f"full(): the dense tensor of shape {self.shape} has {self.numel_dense:,} entries, "
                f"above max_elements={max_elements:,}; contract or index the train instead, or raise max_elements"
            )
        result = self._cores[0].reshape(self._cores[0].shape[1], -1)
        for core in self._cores[1:]:
            result = (result @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[2])
        return result.reshape(self.shape)

    # ------------------------------------------------------------------ indexing
    def __getitem__(self, index: Index | tuple[Index | type(Ellipsis), ...]) -> TensorTrain | torch.Tensor:  # type: ignore[valid-type]
        """``x[i, j, ...]``: ints fix a mode, slices/index lists restrict it.

        Indices of every integer dtype are accepted (a ``uint8`` tensor is positions, not a
        mask); booleans are refused (see :mod:`tnadapt.tt.indexing`).
        Returns a 0-d tensor when every mode is fixed, otherwise a smaller
        ``TensorTrain`` (fixed modes are absorbed into a neighbouring core); for a dense
        result use :func:`tnadapt.tt.getitem` with ``dense=True`` (or ``.full()`` on it).
        """
        from .indexing import getitem

        return getitem(self, index)

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """Entries ``X[indices[b, 0], ..., indices[b, d-1]]`` for an integer tensor ``(batch, d)`` (any integer dtype)."""
        from .indexing import gather

        return gather(self, indices)

    # ------------------------------------------------------------------ algebra
    def __add__(self, other: TensorTrain) -> TensorTrain:
        """``self + other`` exactly; interior ranks add (``r_k + r'_k``), :meth:`round` to compress."""
        from .ops import add

        if not isinstance(other, TensorTrain):
            return NotImplemented
        return add(self, other)

    def __sub__(self, other: TensorTrain) -> TensorTrain:
        """``self - other`` exactly; interior ranks add."""
        from .ops import add

        if not isinstance(other, TensorTrain):
            return NotImplemented
        return add(self, -other)

    def __neg__(self) -> TensorTrain:
        """``-self`` (ranks unchanged)."""
        from .ops import scale

        return scale(self, -1.0)

    def __mul__(self, other: Any) -> TensorTrain:
        """``self * other``: a scalar multiple (ranks unchanged) or, for a train, the Hadamard product (ranks multiply).

        Scalars are Python and numpy numbers and 0-d tensors (see :func:`tnadapt.tt.scale`);
        anything else raises ``TypeError`` naming the operand.
        """
        from .ops import hadamard, scale_unchecked

        if isinstance(other, TensorTrain):
            return hadamard(self, other)
        return scale_unchecked(self, check_scalar("other (x * other)", other, expected="a TensorTrain or a scalar"))

    def __rmul__(self, other: Any) -> TensorTrain:
        """``other * self`` for a scalar ``other`` (``2 * x``, ``np.float32(2) * x``, ``torch.tensor(2.0) * x``)."""
        from .ops import scale_unchecked

        return scale_unchecked(self, check_scalar("other (other * x)", other, expected="a TensorTrain or a scalar"))

    def __truediv__(self, other: Any) -> TensorTrain:
        """``self / other`` for a scalar ``other`` (ranks unchanged); the centre core is divided by it."""
        from .ops import scale_unchecked

        return scale_unchecked(self, check_scalar("other (x / other)", other, expected="a scalar divisor"), divide=True)

    def dot(self, other: TensorTrain) -> torch.Tensor:
        """Inner product ``<self, other> = sum conj(self) * other`` (0-d tensor)."""
        from .ops import dot

        return dot(self, other)

    def norm(self, *, method: str = "qr") -> torch.Tensor:
        """Frobenius norm (0-d real tensor): ``"qr"`` through orthogonalisation, ``"gram"`` by the
        scaled Gram contraction (faster; see :func:`tnadapt.tt.ops.norm` for the accuracy trade-off).

        Its gradient is that of ``torch.linalg.vector_norm(self.full())`` (``0`` for the zero
        tensor), see :func:`tnadapt.tt.ops.norm`.
        """
        from .ops import norm

        return norm(self, method=method)

    def contract(self, factors: Mapping[int, torch.Tensor]) -> TensorTrain | torch.Tensor:
        """Mode products; see :func:`tnadapt.tt.ops.contract`."""
        from .ops import contract

        return contract(self, factors)

    # ------------------------------------------------------------------ canonical forms
    def orthogonalize(self, center: int = -1) -> TensorTrain:
        """Mixed-canonical form with the orthogonality centre at core ``center``."""
        from .canonical import orthogonalize

        return orthogonalize(self, center)

    def left_orthogonalize(self) -> TensorTrain:
        """All cores but the last left-orthonormal (centre ``d-1``)."""
        return self.orthogonalize(self.order - 1)

    def right_orthogonalize(self) -> TensorTrain:
        """All cores but the first right-orthonormal (centre ``0``)."""
        return self.orthogonalize(0)

    def is_left_orthonormal(self, k: int, *, atol: float | None = None) -> bool:
        from .canonical import is_left_orthonormal

        return is_left_orthonormal(self._cores[check_mode("k", k, self.order)], atol=atol)

    def is_right_orthonormal(self, k: int, *, atol: float | None = None) -> bool:
        from .canonical import is_right_orthonormal

        return is_right_orthonormal(self._cores[check_mode("k", k, self.order)], atol=atol)

    # ------------------------------------------------------------------ truncation
    def round(
        self,
        *,
        max_rank: int | Sequence[int] | None = None,
        eps: float | None = None,
        cutoff: float | None = None,
        min_rank: int = 1,
        method: str = "deterministic",
        oversample: int = 10,
        generator: torch.Generator | int | None = None,
    ) -> TensorTrain:
        """TT-rounding (Oseledets, or randomized with ``method="randomized"``); see
        :func:`tnadapt.tt.rounding.round_tt` for the options and the report."""
        from .rounding import round_tt

        return round_tt(
            self,
            max_rank=max_rank,
            eps=eps,
            cutoff=cutoff,
            min_rank=min_rank,
            method=method,
            oversample=oversample,
            generator=generator,
        ).tt

    def merge(self, k: int) -> torch.Tensor:
        """Two-site supercore of cores ``k, k+1``: shape ``(r_{k-1}, n_k, n_{k+1}, r_{k+1})``."""
        from .twosite import merge

        return merge(self, k)

    def split(
        self,
        k: int,
        supercore: torch.Tensor,
        *,
        max_rank: int | None = None,
        eps: float | None = None,
        cutoff: float | None = None,
        absorb: str = "right",
    ) -> tuple[TensorTrain, TruncatedSVD]:
        """Replace cores ``k, k+1`` by the truncated split of ``supercore``; see :func:`tnadapt.tt.twosite.split`."""
        from .twosite import replace_two_site

        return replace_two_site(self, k, supercore, max_rank=max_rank, eps=eps, cutoff=cutoff, absorb=absorb)
