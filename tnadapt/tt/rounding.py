"""TT-rounding (Oseledets 2011, Alg. 2): recompress a train to lower ranks.

The train is brought to canonical form with the centre at one end (QR sweep, reusing a
known centre), then a truncated-SVD sweep moves the centre to the other end, truncating
every bond.  Because all cores off the centre are orthonormal, the singular values at
each step are the bond's exact Schmidt values, and

    ||x - round(x)||² = Σ_k discarded_k²                      (reported per bond)

Guarantees:

* ``eps``: each bond gets the budget ``eps ||x|| / sqrt(d-1)``, hence
  ``||x - round(x)|| <= eps ||x||``;
* ``max_rank`` (int or per bond): ranks never exceed it, and the error is
  quasi-optimal, ``<= sqrt(Σ_k best_k²)`` where ``best_k`` is the best rank-``r_k``
  error of the ``k``-th unfolding;
* ``cutoff`` (ITensor/quimb semantics): at each bond the discarded weight
  ``Σ_{dropped} s² / Σ s²`` is at most ``cutoff``;
* ``min_rank``: ranks are at least ``min(min_rank, available)``.

All criteria combine: the rank at each bond is the smallest that satisfies every one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._errors import check_finite, check_min_rank, check_positive_float, check_rank_spec
from ._numerics import stable_norm
from ._sweeps import drop_redundant_ranks, svd_sweep
from .canonical import orthogonalize_cores
from .tensor_train import TensorTrain
from .truncation import TruncationReport

__all__ = ["check_truncation_args", "round_tt"]


def check_truncation_args(
    tt: TensorTrain,
    max_rank: int | Sequence[int] | None,
    eps: float | None,
    cutoff: float | None,
    min_rank: int,
    *,
    name: str = "tt",
) -> list[int] | None:
    """Validate the shared truncation arguments; returns per-bond caps (or ``None``).

    ``name``: what the errors call ``tt`` (the argument's name at the caller)."""
    if not isinstance(tt, TensorTrain):
        raise TypeError(f"{name}: expected a TensorTrain, got {type(tt).__name__}")
    check_positive_float("eps", eps)
    check_positive_float("cutoff", cutoff)
    check_min_rank(min_rank)
    check_finite(name, list(tt.cores))
    return check_rank_spec("max_rank", max_rank, tt.order - 1)


def round_tt(
    tt: TensorTrain,
    *,
    max_rank: int | Sequence[int] | None = None,
    eps: float | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
    method: str = "deterministic",
    oversample: int = 10,
    generator: torch.Generator | int | None = None,
) -> TruncationReport:
    """Round ``tt``; returns a :class:`~tnadapt.tt.truncation.TruncationReport` (``.tt`` is the result).

    With no criterion at all the train is only compressed to its exact minimal ranks up
    to round-off (singular values that are exactly zero are kept; pass a tiny ``eps``
    to drop numerically zero ones).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((4, 4, 4, 4), 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> rep = round_tt(x + x, eps=1e-12)
    >>> rep.tt.ranks, float(rep.relative_error) < 1e-12
    ((1, 3, 3, 3, 1), True)

    ``method="randomized"`` (Al Daas, Ballard et al., SISC 2023; see
    :mod:`tnadapt.tt.randomized`): after the QR sweep, a Gaussian TT sketch of ranks
    ``max_rank + oversample`` replaces the SVD of every ``(r n, r)`` unfolding by a QR of a
    sketched ``(l n, l)`` panel and an SVD of an ``(l, r)`` one.  ``discarded`` (hence
    ``error``) is still *computed exactly* per bond (sketch residual and SVD tail,
    orthogonal); ``singular_values`` are the sketched bonds' spectra.  The result ends with
    centre ``d-1``.  With ``eps`` alone the sketch doubles until each bond's residual fits
    half its budget, so ``error <= eps ||x||`` always holds.  ``cutoff`` is deterministic
    only.  ``generator``: a CPU ``torch.Generator`` or an int seed (``None``: seed 0), so
    results are reproducible.

    >>> rep = round_tt(x + x, max_rank=2, method="randomized", generator=1)
    >>> rep.tt.ranks, abs(float(rep.error) - float((rep.tt - x - x).norm())) < 1e-10
    ((1, 2, 2, 2, 1), True)
    """
    caps = check_truncation_args(tt, max_rank, eps, cutoff, min_rank)
    if method == "randomized":
        if cutoff is not None:
            raise ValueError("cutoff: not supported with method='randomized' (use max_rank or eps), got a cutoff")
        from .randomized import randomized_round

        return randomized_round(
            tt, max_rank=caps, eps=eps, min_rank=min_rank, oversample=oversample, generator=generator
        )
    if method != "deterministic":
        raise ValueError(f"method: expected 'deterministic' or 'randomized', got {method!r}")
    d = tt.order
    # Sweep toward whichever end is closer to a known centre (saves a QR sweep).
    to_right = tt.center is None or tt.center <= (d - 1) / 2
    start = 0 if to_right else d - 1
    cores = orthogonalize_cores(list(tt.cores), tt.center, start)
    ref = stable_norm(cores[start])
    abs_tol = None if eps is None or d == 1 else ref * (eps / (d - 1) ** 0.5)
    discarded, spectra = svd_sweep(
        cores,
        direction="right" if to_right else "left",
        max_ranks=caps,
        abs_tol=abs_tol,
        cutoff=cutoff,
        min_rank=min_rank,
    )
    drop_redundant_ranks(cores, d - 1 if to_right else 0)
    out = TensorTrain._trusted(cores, d - 1 if to_right else 0)
    return TruncationReport(
        tt=out,
        discarded=discarded,
        singular_values=tuple(spectra),
        ranks_before=tt.ranks,
        ranks_after=out.ranks,
        reference_norm=ref,
    )
