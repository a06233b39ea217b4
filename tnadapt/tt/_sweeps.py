"""One-site SVD sweeps shared by TT-SVD and rounding (internal).

Each step truncates the bond on one side of the orthogonality centre by a truncated SVD
of the centre core's unfolding and pushes ``S Vh`` (or ``U S``) into the neighbour, so
the centre moves one site.  Because everything outside the centre is orthonormal, the
discarded singular values are exactly the error committed at that bond and the errors
of successive bonds are orthogonal: ``||x - y||² = Σ_k discarded_k²``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import linalg
from ._numerics import stable_norm
from .canonical import left_qr_step, right_qr_step
from .truncation import _select_rank


def feasible_ranks(shape: Sequence[int], ranks: Sequence[int]) -> list[int]:
    """The largest interior ranks ``<= ranks`` with ``r_k <= min(r_{k-1} n_k, n_{k+1} r_{k+1})``.

    A bond rank above either bound is redundant: the tensor's unfolding cannot have it.
    """
    full = [1, *ranks, 1]
    changed = True
    while changed:
        changed = False
        for k in range(1, len(shape)):
            bound = min(full[k - 1] * shape[k - 1], shape[k] * full[k + 1])
            if full[k] > bound:
                full[k], changed = bound, True
    return full[1:-1]


def drop_redundant_ranks(cores: list[torch.Tensor], center: int) -> None:
    """Shrink redundant bond ranks in place; the tensor and the end centre (0 or d-1) are kept.

    A truncation sweep cuts bond ``k`` before bond ``k+1`` (left to right), so a hard cut at
    bond ``k+1`` can leave ``r_k > n_{k+1} r_{k+1}`` (mirror image for right to left).
    Shrinking the cap of bond ``k`` in advance would lose accuracy; instead the stretch
    that needs it is re-orthogonalised, away from the centre and back, which makes every
    rank minimal exactly.  No work at all when the ranks are already minimal.
    """
    d = len(cores)
    current = [int(c.shape[2]) for c in cores[:-1]]
    shape = [int(c.shape[1]) for c in cores]
    bad = [k for k, (r, f) in enumerate(zip(current, feasible_ranks(shape, current))) if r > f]
    if not bad:
        return
    if center == d - 1:
        lo = bad[0]
        for k in range(d - 1, lo, -1):
            cores[k - 1], cores[k] = right_qr_step(cores[k - 1], cores[k])
        for k in range(lo, d - 1):
            cores[k], cores[k + 1] = left_qr_step(cores[k], cores[k + 1])
    else:
        hi = bad[-1] + 1
        for k in range(hi):
            cores[k], cores[k + 1] = left_qr_step(cores[k], cores[k + 1])
        for k in range(hi, 0, -1):
            cores[k - 1], cores[k] = right_qr_step(cores[k - 1], cores[k])


def _as(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Real singular values ``s`` in ``like``'s dtype (a copy only for complex factors)."""
    return s.to(like.dtype) if like.is_complex() else s


def _svd_step_right(
    cores: list[torch.Tensor],
    k: int,
    *,
    max_rank: int | None,
    abs_tol: torch.Tensor | None,
    cutoff: float | None,
    min_rank: int,
) -> tuple[int, torch.Tensor]:
    r0, n, r1 = cores[k].shape
    u, s, vh = linalg.svd(cores[k].reshape(r0 * n, r1))
    rank = _select_rank(s, max_rank=max_rank, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank)
    cores[k] = u[:, :rank].reshape(r0, n, rank)
    nxt = cores[k + 1]
    cores[k + 1] = ((_as(s[:rank], vh).unsqueeze(1) * vh[:rank]) @ nxt.reshape(r1, -1)).reshape(
        rank, nxt.shape[1], nxt.shape[2]
    )
    return rank, s


def _svd_step_left(
    cores: list[torch.Tensor],
    k: int,
    *,
    max_rank: int | None,
    abs_tol: torch.Tensor | None,
    cutoff: float | None,
    min_rank: int,
) -> tuple[int, torch.Tensor]:
    r0, n, r1 = cores[k].shape
    u, s, vh = linalg.svd(cores[k].reshape(r0, n * r1))
    rank = _select_rank(s, max_rank=max_rank, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank)
    cores[k] = vh[:rank].reshape(rank, n, r1)
    prev = cores[k - 1]
    cores[k - 1] = (prev.reshape(-1, r0) @ (u[:, :rank] * _as(s[:rank], u).unsqueeze(0))).reshape(
        prev.shape[0], prev.shape[1], rank
    )
    return rank, s


def svd_sweep(
    cores: list[torch.Tensor],
    *,
    direction: str,
    max_ranks: list[int] | None,
    abs_tol: torch.Tensor | None,
    cutoff: float | None,
    min_rank: int,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Truncate every bond of ``cores`` in place, sweeping ``"right"`` (centre 0 → d-1) or ``"left"``.

    Returns the per-bond discarded norms as a real ``(d-1,)`` tensor ordered by bond
    index, and the per-bond spectra.
    """
    d = len(cores)
    bonds = range(d - 1)
    results: dict[int, tuple[int, torch.Tensor]] = {}
    step = _svd_step_right if direction == "right" else _svd_step_left
    order = bonds if direction == "right" else reversed(bonds)
    for bond in order:
        site = bond if direction == "right" else bond + 1
        cap = None if max_ranks is None else max_ranks[bond]
        results[bond] = step(cores, site, max_rank=cap, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank)
    real = cores[0].real.dtype if cores[0].is_complex() else cores[0].dtype
    if d == 1:
        return torch.zeros(0, dtype=real, device=cores[0].device), []
    spectra = [results[b][1] for b in bonds]
    return _tail_norms(spectra, [results[b][0] for b in bonds], real), spectra


def _tail_norms(spectra: list[torch.Tensor], ranks: list[int], real: torch.dtype) -> torch.Tensor:
    """``sqrt(sum_{j >= ranks[b]} spectra[b][j]²)`` for every bond ``b``, in one batched pass.

    Scaled by each tail's largest value first (like :func:`~tnadapt.tt._numerics.stable_norm`),
    so nothing over- or underflows; a handful of ops for the whole sweep instead of a
    scaled norm per bond.  On the CPU (no gradient needed) each tail is summed on the host by
    :func:`math.hypot`, which scales the same way and is accurate to about an ulp:
    cheaper than a dozen small torch ops for these short spectra.
    """
    if spectra[0].device.type == "cpu" and not any(s.requires_grad for s in spectra):
        return torch.tensor([math.hypot(*s[r:].tolist()) for s, r in zip(spectra, ranks)], dtype=real)
    padded = torch.nn.utils.rnn.pad_sequence([s if s.dtype == real else s.to(real) for s in spectra], batch_first=True)
    keep = torch.tensor(ranks, device=padded.device)
    tails = torch.where(torch.arange(padded.shape[1], device=padded.device) >= keep[:, None], padded, 0.0)
    return stable_norm(tails, dim=1)
