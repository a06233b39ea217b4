"""Core initialisers: build single cores ``(r_left, n, r_right)`` or whole core lists.

The same initialisers serve :class:`~tnadapt.tt.TensorTrain` constructors and the
adapters in :mod:`tnadapt.nn` (MetaTT's ``ze``/``id``/``no``/``or`` strategies).

* ``"zeros"``     all zeros;
* ``"identity"``  an interior core has every slice ``G[:, i, :]`` equal to the rectangular identity
  ``eye(r_left, r_right)``; the first core of a train ``(1, n, r)`` is the identity of its
  ``(n, r)`` unfolding and the last core ``(r, n, 1)`` that of its ``(r, n)`` unfolding (MetaTT's
  Algorithm 3, ``nn.init.eye_`` on the ``(r, D)`` output matrix).  A per-slice identity there would
  be the same unit vector for every ``i`` — a rank-1 boundary that traps training in one bond
  direction.  The core of an order-1 train is all ones;
* ``"normal"``    i.i.d. ``N(0, std**2)`` (default ``std = 1/sqrt(r_left)``);
* ``"orthogonal"`` the left unfolding ``(r_left*n, r_right)`` (or its transpose when wide)
  has orthonormal columns (rows), scaled by ``std`` if given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from ._errors import check_rank_spec

__all__ = ["INIT_NAMES", "CoreInit", "init_core", "interior_ranks", "make_cores"]

CoreInit = Literal["zeros", "identity", "normal", "orthogonal"]
CorePosition = Literal["first", "last", "interior", "only"]
CORE_POSITIONS: tuple[str, ...] = ("first", "last", "interior", "only")
INIT_NAMES: tuple[str, ...] = ("zeros", "identity", "normal", "orthogonal")


def init_core(
    r_left: int,
    n: int,
    r_right: int,
    kind: str,
    *,
    std: float | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    position: CorePosition | None = None,
) -> torch.Tensor:
    """One core of shape ``(r_left, n, r_right)`` initialised by ``kind`` (see module doc).

    ``position`` (``"first"``, ``"last"``, ``"interior"`` or ``"only"``) is where the core sits in
    its train; only ``"identity"`` depends on it.  ``None`` infers it from the bonds: ``r_left == 1 <
    r_right`` is a first core, ``r_right == 1 < r_left`` a last one, anything else interior.

    >>> init_core(2, 3, 2, "identity")[:, 1, :]
    tensor([[1., 0.],
            [0., 1.]])
    >>> init_core(2, 3, 1, "identity", position="last")[:, :, 0]   # eye(r, n)
    tensor([[1., 0., 0.],
            [0., 1., 0.]])
    """
    if position is not None and position not in CORE_POSITIONS:
        raise ValueError(f"position: expected one of {CORE_POSITIONS}, got {position!r}")
    dtype = dtype or torch.get_default_dtype()
    shape = (r_left, n, r_right)
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype, device=device)
    if kind == "identity":
        if position is None:
            position = "first" if r_left == 1 < r_right else "last" if r_right == 1 < r_left else "interior"
        bounds = {"first": r_left == 1, "last": r_right == 1, "only": r_left == r_right == 1, "interior": True}
        if not bounds[position]:
            raise ValueError(
                f"position: a {position!r} core needs boundary rank 1 on its outer side(s), got shape {shape}"
            )
        if position == "first":
            return torch.eye(n, r_right, dtype=dtype, device=device).reshape(shape)
        if position == "last":
            return torch.eye(r_left, n, dtype=dtype, device=device).reshape(shape)
        eye = torch.eye(r_left, r_right, dtype=dtype, device=device)
        return eye.unsqueeze(1).expand(r_left, n, r_right).contiguous()
    if kind == "normal":
        scale = (1.0 / math.sqrt(r_left)) if std is None else float(std)
        # Sample on the generator's device then move: keeps seeded results device-independent.
        gen_device = generator.device if generator is not None else device
        real = dtype.to_real() if dtype.is_complex else dtype
        sample = torch.randn(shape, generator=generator, dtype=real, device=gen_device)
        if dtype.is_complex:
            imag = torch.randn(shape, generator=generator, dtype=real, device=gen_device)
            sample = torch.complex(sample, imag) / math.sqrt(2.0)
        return (sample * scale).to(device=device, dtype=dtype)
    if kind == "orthogonal":
        rows, cols = r_left * n, r_right
        gen_device = generator.device if generator is not None else device
        real = dtype.to_real() if dtype.is_complex else dtype
        work = torch.randn(
            (max(rows, cols), min(rows, cols)), generator=generator, dtype=torch.float64, device=gen_device
        )
        q, r = torch.linalg.qr(work)
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        mat = q if rows >= cols else q.T
        scale = 1.0 if std is None else float(std)
        return (
            (mat.reshape(shape) * scale).to(device=device, dtype=real).to(dtype).contiguous()
        )  # QR gives column-major
    raise ValueError(f"kind: expected one of {INIT_NAMES}, got {kind!r}")


def interior_ranks(shape: Sequence[int], ranks: int | Sequence[int]) -> list[int]:
    """Full rank list ``(1, r_1, ..., r_{d-1}, 1)`` from an int or ``d-1`` interior ranks."""
    d = len(shape)
    bonds = check_rank_spec("ranks", ranks, d - 1) or []
    return [1, *bonds, 1]


def make_cores(
    shape: Sequence[int],
    ranks: int | Sequence[int],
    kind: str | Sequence[str],
    *,
    std: float | Sequence[float | None] | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> list[torch.Tensor]:
    """Cores for a train of ``shape`` and ``ranks``; ``kind``/``std`` per core or shared.

    >>> [tuple(c.shape) for c in make_cores((4, 5, 6), 2, "zeros")]
    [(1, 4, 2), (2, 5, 2), (2, 6, 1)]
    """
    shape = [int(n) for n in shape]
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"shape: expected a non-empty sequence of positive ints, got {list(shape)}")
    d = len(shape)
    full_ranks = interior_ranks(shape, ranks)
    kinds = [kind] * d if isinstance(kind, str) else list(kind)
    stds = list(std) if isinstance(std, Sequence) else [std] * d
    if len(kinds) != d:
        raise ValueError(f"kind: expected one init per core ({d}), got {len(kinds)}: {kinds}")
    if len(stds) != d:
        raise ValueError(f"std: expected one value per core ({d}), got {len(stds)}")
    return [
        init_core(
            full_ranks[k],
            shape[k],
            full_ranks[k + 1],
            kinds[k],
            std=stds[k],
            generator=generator,
            dtype=dtype,
            device=device,
            position=_position(k, d),
        )
        for k in range(d)
    ]


def _position(k: int, d: int) -> CorePosition:
    if d == 1:
        return "only"
    return "first" if k == 0 else "last" if k == d - 1 else "interior"
