"""TT-SVD: decompose a dense tensor into a tensor train (Oseledets 2011, Alg. 1).

With ``eps`` the result satisfies ``||A - full(tt)|| <= eps ||A||`` (each of the
``d-1`` bonds gets the budget ``eps ||A|| / sqrt(d-1)``); with ``max_rank`` (int or per
bond) the ranks are capped, and the error is the best achievable by sequential
truncation, at most ``sqrt(d-1)`` times the optimum.  The cores come out
left-orthonormal (orthogonality centre ``d-1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import linalg
from ._errors import check_finite, check_min_rank, check_positive_float, check_rank_spec
from ._numerics import stable_norm
from ._sweeps import drop_redundant_ranks
from .tensor_train import TensorTrain
from .truncation import TruncationReport, truncate_spectrum

__all__ = ["tt_svd"]


def tt_svd(
    tensor: torch.Tensor,
    *,
    max_rank: int | Sequence[int] | None = None,
    eps: float | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
) -> TruncationReport:
    """Decompose a dense ``tensor`` of shape ``(n_1, ..., n_d)``; returns the report (``.tt``).

    >>> import torch
    >>> a = torch.randn(4, 5, 6, dtype=torch.float64)
    >>> rep = tt_svd(a)
    >>> bool(torch.allclose(rep.tt.full(), a)), rep.tt.ranks
    (True, (1, 4, 6, 1))
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim < 1 or tensor.numel() == 0:
        raise ValueError(
            f"tensor: expected a non-empty tensor with at least 1 dimension, got shape {tuple(tensor.shape)}"
        )
    if not (tensor.dtype.is_floating_point or tensor.dtype.is_complex):
        raise ValueError(f"tensor: expected a floating or complex dtype, got {tensor.dtype}")
    check_positive_float("eps", eps)
    check_positive_float("cutoff", cutoff)
    check_min_rank(min_rank)
    check_finite("tensor", tensor)
    d = tensor.ndim
    caps = check_rank_spec("max_rank", max_rank, d - 1)
    shape = tuple(tensor.shape)
    ref = stable_norm(tensor)
    abs_tol = None if eps is None or d == 1 else ref * (eps / (d - 1) ** 0.5)
    cores: list[torch.Tensor] = []
    discarded: list[torch.Tensor] = []
    spectra: list[torch.Tensor] = []
    rest = tensor.reshape(1, -1)  # (r_{k-1}, n_k * ... * n_d)
    for k in range(d - 1):
        r0 = rest.shape[0]
        mat = rest.reshape(r0 * shape[k], -1)
        # Only U and S are needed: the remainder is Uᴴ mat (one GEMM), so wide unfoldings
        # skip forming Vh (see linalg.left_svd).
        u, s = linalg.left_svd(mat)
        rank, gone = truncate_spectrum(
            s, max_rank=None if caps is None else caps[k], abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank
        )
        u = u[:, :rank]
        cores.append(u.reshape(r0, shape[k], rank))
        rest = u.mH @ mat
        discarded.append(gone)
        spectra.append(s)
    cores.append(rest.reshape(rest.shape[0], shape[-1], 1))
    drop_redundant_ranks(cores, d - 1)
    tt = TensorTrain(cores, center=d - 1)
    disc_t = torch.stack(discarded) if discarded else ref.new_zeros((0,))
    full_ranks = (1, *(min(math.prod(shape[: k + 1]), math.prod(shape[k + 1 :])) for k in range(d - 1)), 1)
    return TruncationReport(
        tt=tt,
        discarded=disc_t,
        singular_values=tuple(spectra),
        ranks_before=full_ranks,
        ranks_after=tt.ranks,
        reference_norm=ref,
    )
