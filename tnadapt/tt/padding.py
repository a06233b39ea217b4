"""Rank growth: enlarge TT bonds without changing the represented tensor.

Growing bond ``k`` from ``r_k`` to ``r'_k`` appends ``r'_k - r_k`` columns to core ``k``
(its right index) and as many rows to core ``k+1`` (its left index).  The new *rows*
are always zero, so every slice product ``G_1[i_1] ··· G_d[i_d]`` keeps its old value
exactly in exact arithmetic (in floating point only the summation order of a matmul may
differ), whatever the new columns hold.

* ``noise=0`` pads the columns with zeros as well.  The tensor is unchanged, but the
  padded directions are a saddle point of any loss: the gradient of a new column is
  proportional to the matching (zero) row and vice versa, so plain gradient descent
  never leaves it.
* ``noise > 0`` fills the new columns with i.i.d. ``N(0, noise²)`` entries.  The tensor
  is still unchanged (the rows are zero), and now the gradient with respect to the new
  rows is non-zero, so training can use the added capacity (the "physics direction" of
  DMRG: start small and grow the bond dimension).

Bonds whose requested rank is not larger than the current one are left alone: this
function only grows (truncate with :func:`~tnadapt.tt.dmrg_sweep` or
:func:`~tnadapt.tt.round_tt`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._errors import check_finite, check_positive_float, check_rank_spec
from .tensor_train import TensorTrain

__all__ = ["max_ranks", "pad_ranks"]


def max_ranks(shape: Sequence[int]) -> tuple[int, ...]:
    """Largest useful interior rank per bond: ``min(n_1 ··· n_k, n_{k+1} ··· n_d)``.

    Any train of this ``shape`` can be represented exactly with these ranks; a larger
    bond only adds redundant (linearly dependent) directions.

    >>> max_ranks((768, 12, 2, 768))
    (768, 1536, 768)
    >>> max_ranks((2, 3, 4))
    (2, 4)
    """
    shape = [int(n) for n in shape]
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"shape: expected a non-empty sequence of positive ints, got {list(shape)}")
    return tuple(min(math.prod(shape[: k + 1]), math.prod(shape[k + 1 :])) for k in range(len(shape) - 1))


def pad_ranks(
    tt: TensorTrain,
    ranks: int | Sequence[int],
    *,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> TensorTrain:
    """Grow the bonds of ``tt`` to ``ranks`` (int or one per bond) keeping ``full()`` exactly.

    Bonds already at least as large as requested keep their rank.  New columns of core
    ``k`` (shape ``(r_{k-1}, n_k, r'_k - r_k)``) are zeros (``noise=0``) or
    ``N(0, noise²)`` drawn from ``generator`` (then moved to the cores' device/dtype, so
    a seeded result does not depend on the device); new rows of core ``k+1`` are zeros.
    The result carries no orthogonality centre.

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((4, 5, 6), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> y = pad_ranks(x, [3, 5], noise=0.1, generator=torch.Generator().manual_seed(1))
    >>> y.ranks, bool(torch.allclose(y.full(), x.full(), rtol=1e-14, atol=1e-14))
    ((1, 3, 5, 1), True)
    """
    if not isinstance(tt, TensorTrain):
        raise TypeError(f"tt: expected a TensorTrain, got {type(tt).__name__}")
    check_positive_float("noise", noise)
    targets = check_rank_spec("ranks", ranks, tt.order - 1) or []
    check_finite("tt", list(tt.cores))
    old = tt.bond_dims
    new = [max(t, r) for t, r in zip(targets, old)]
    if new == list(old):
        return tt
    full = [1, *new, 1]
    cores: list[torch.Tensor] = []
    for k, core in enumerate(tt.cores):
        r0, n, r1 = core.shape
        out = core.new_zeros((full[k], n, full[k + 1]))
        out[:r0, :, :r1] = core
        extra = full[k + 1] - r1
        if extra and noise > 0:
            real = core.real.dtype if core.is_complex() else core.dtype
            gen_device = generator.device if generator is not None else core.device
            sample = torch.randn((r0, n, extra), generator=generator, dtype=torch.float64, device=gen_device)
            out[:r0, :, r1:] = (sample * noise).to(device=core.device, dtype=real).to(core.dtype)
        cores.append(out)
    return TensorTrain(cores)
