"""Core initialisers: build single cores ``(r_left, n, r_right)`` or whole core lists.

The same initialisers serve :class:`~tnadapt.tt.TensorTrain` constructors and the
adapters in :mod:`tnadapt.nn` (MetaTT's ``ze``/``id``/``no``/``or`` strategies).

* ``"zeros"``     all zeros;
* ``"identity"``  every slice ``G[:, i, :]`` is the rectangular identity ``eye(r_left, r_right)``;
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
) -> torch.Tensor:
    """One core of shape ``(r_left, n, r_right)`` initialised by ``kind`` (see module doc).

    >>> init_core(2, 3, 2, "identity")[:, 1, :]
    tensor([[1., 0.],
            [0., 1.]])
    """
    dtype = dtype or torch.get_default_dtype()
    shape = (r_left, n, r_right)
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype, device=device)
    if kind == "identity":
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
        return (mat.reshape(shape) * scale).to(device=device, dtype=real).to(dtype)
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
        )
        for k in range(d)
    ]
