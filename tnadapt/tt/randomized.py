"""Randomized TT rounding and rounding of sums of trains (Al Daas, Ballard et al., SISC 2023).

A Gaussian TT sketch ``R`` with ranks ``l_k`` is contracted with the right parts of ``x``
(``W_k = X_{>k} R_{>k}ᴴ``, shape ``(r_k, l_k)``: cheap GEMMs, one right-to-left pass), then
one left-to-right sweep truncates every bond: with ``C_k = (Fᴴ_{≤k-1} ⊗ I) X_{≤k}`` of shape
``(rank_{k-1} n_k, r_k)`` (``F`` the frames kept so far), ``Q = qr(C_k W_k)`` captures the
range of the bond's unfolding and the SVD of the small ``Qᴴ C_k`` (times a square root of the
right parts' Gram matrix for a sum) picks the kept frame ``F_k = Q U_{:, :rank}``.  So only
``(l n, l)`` QRs and ``(l, r)`` SVDs are factored, never an ``(r n, r)`` panel.

Errors are *computed*, not estimated.  The frames are nested, so the bonds' errors are
orthogonal and

    ||x - round(x)||² = Σ_k ||(I - Q_k Q_kᴴ) C_k X_{>k}||² + tail_k(S)²

* one train: ``x`` is first right-orthogonalised (``X_{>k}`` has orthonormal rows), so
  each term is the Frobenius norm of an explicit residual plus an SVD tail: exact to
  round-off, like deterministic rounding;
* a sum ``Σ_i x_i`` (never formed): ``X_{>k}`` stacks the summands' right parts and each term
  is ``tr(M G_k Mᴴ)`` with ``G_k`` their Gram matrix — exact in exact arithmetic, accurate to
  about ``sqrt(u) sqrt(Σ_i ||x_i||²)`` in round-off (``u`` the unit round-off).

With ``eps`` alone the sketch is doubled until every bond's sketch residual is at most
``eps ||x|| / sqrt(2 (d-1))``; the rest of each bond's budget ``eps ||x|| / sqrt(d-1)`` goes
to the SVD tail, so ``error <= eps ||x||`` holds for the computed errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import linalg
from ._errors import check_finite, check_min_rank, check_positive_float, check_rank_spec
from ._numerics import stable_norm
from ._sweeps import drop_redundant_ranks, feasible_ranks, svd_sweep
from .canonical import orthogonalize_unchecked
from .ops import _right_env_step, check_compatible
from .tensor_train import TensorTrain
from .truncation import TruncationReport, truncate_spectrum

__all__ = ["randomized_round", "round_sum"]

#: Sketch-rank growth factor of the ``eps`` mode.
_GROWTH = 2


def _real(dtype: torch.dtype) -> torch.dtype:
    return dtype.to_real() if dtype.is_complex else dtype


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, bool) or not isinstance(generator, (int, torch.Generator)):
        raise TypeError(f"generator: expected a torch.Generator, an int seed or None, got {type(generator).__name__}")
    if isinstance(generator, int):
        return torch.Generator().manual_seed(generator)
    if generator.device.type != "cpu":
        raise ValueError(f"generator: expected a CPU torch.Generator, got one on {generator.device}")
    return generator


def _check_oversample(oversample: int) -> None:
    if isinstance(oversample, bool) or not isinstance(oversample, int) or oversample < 0:
        raise ValueError(f"oversample: expected an int >= 0, got {oversample!r}")


def _sketch(
    shape: Sequence[int], ranks: Sequence[int], like: torch.Tensor, generator: torch.Generator
) -> list[torch.Tensor]:
    """Gaussian sketch cores ``(l_{k-1}, n_k, l_k)`` (drawn on the CPU, moved to ``like``'s device)."""
    full = [1, *ranks, 1]
    return [
        torch.randn(full[k], n, full[k + 1], generator=generator, dtype=like.dtype).to(like.device)
        for k, n in enumerate(shape)
    ]


def _right_sketches(cores: Sequence[torch.Tensor], sketch: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``W_k = X_{>k} R_{>k}ᴴ`` for ``k = 0..d-1``, shape ``(r_k, l_k)`` (``W_{d-1} = 1``)."""
    d = len(cores)
    w = [cores[0].new_ones(1, 1)] * d
    for k in range(d - 1, 0, -1):
        w[k - 1] = _right_env_step(w[k], sketch[k], cores[k])
    return w


def _right_grams(summands: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """``G_k`` of shape ``(Σ r^i_k, Σ r^i_k)``: blocks ``X^i_{>k} X^{j}_{>k}ᴴ``, for ``k = 0..d-2``."""
    n_sum, d = len(summands), len(summands[0])
    blocks = {(i, j): summands[0][0].new_ones(1, 1) for i in range(n_sum) for j in range(i, n_sum)}
    grams: list[torch.Tensor] = [summands[0][0].new_ones(1, 1)] * d
    for k in range(d - 1, 0, -1):
        blocks = {(i, j): _right_env_step(g, summands[j][k], summands[i][k]) for (i, j), g in blocks.items()}
        rows = [
            torch.cat([blocks[(i, j)] if i <= j else blocks[(j, i)].mH for j in range(n_sum)], dim=1)
            for i in range(n_sum)
        ]
        grams[k - 1] = torch.cat(rows, dim=0)
    return grams


def _gram_svd(b: torch.Tensor, gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and values of ``B L`` (``L Lᴴ = gram``) from the small ``(l, l)`` matrix ``B G Bᴴ``.

    ``G`` may be singular (a bond near the end of the train has ``Σ r^i_k`` above the
    dimension of its right parts), so no Cholesky factor is formed; values below
    ``sqrt(u) s_max`` are at round-off level, as every Gram-based quantity here.
    """
    lam, vec = torch.linalg.eigh(b @ gram @ b.mH)
    lam, vec = lam.flip(0), vec.flip(1)
    return vec, lam.clamp_min(0).sqrt()


def _sketch_sweep(
    summands: Sequence[Sequence[torch.Tensor]],
    ranks: Sequence[int],
    generator: torch.Generator,
    grams: Sequence[torch.Tensor] | None,
    *,
    caps: list[int] | None,
    bond_tol: torch.Tensor | None,
    min_rank: int,
    must_fit: bool,
) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]] | None:
    """One sketched truncation sweep of ``Σ_i x_i`` (left to right); cores (centre d-1), bond errors, spectra.

    At bond ``k``: ``Q = qr(C_k W_k)`` (``l_k`` columns), then the SVD of the small
    ``B L_k`` (``B = Qᴴ C_k``, ``L_k Lᴴ_k = G_k`` the Gram matrix of the right parts, the
    identity when ``grams is None``: a right-orthogonalised single train) gives the
    kept frame ``F = Q U_{:, :rank}``.  The bond error is
    ``||(I - F Fᴴ) C_k X_{>k}||² = ||(I - Q Qᴴ) C_k X_{>k}||² + tail(S)²`` (orthogonal
    pieces) and the bonds' errors are orthogonal (nested frames), so they add in squares.
    With ``must_fit`` (``eps`` growth) returns ``None`` as soon as a sketch residual
    exceeds ``bond_tol / sqrt(2)``.
    """
    first = summands[0]
    d = len(first)
    shape = [int(c.shape[1]) for c in first]
    sketch = _sketch(shape, ranks, first[0], generator)
    ws = [_right_sketches(cores, sketch) for cores in summands]
    zs = [first[0].new_ones(1, 1) for _ in summands]  # Fᴴ_{≤k-1} X^i_{≤k-1}, (rank_{k-1}, r^i_{k-1})
    out: list[torch.Tensor] = []
    errors: list[torch.Tensor] = []
    spectra: list[torch.Tensor] = []
    real = _real(first[0].dtype)
    for k in range(d - 1):
        n = shape[k]
        cs = [(z @ cores[k].reshape(z.shape[1], -1)).reshape(z.shape[0] * n, -1) for z, cores in zip(zs, summands)]
        y = sum((c @ w[k] for c, w in zip(cs, ws)), start=cs[0].new_zeros(cs[0].shape[0], ws[0][k].shape[1]))
        q, _ = linalg.qr(y)
        bs = [q.mH @ c for c in cs]
        res = torch.cat([c - q @ b for c, b in zip(cs, bs)], dim=1)
        b = torch.cat(bs, dim=1)
        if grams is None:
            residual = stable_norm(res)
            u, sv, _ = linalg.svd(b)
        else:
            residual = torch.einsum("ab,bc,ac->", res, grams[k], res.conj()).real.clamp_min(0).sqrt().to(real)
            u, sv = _gram_svd(b, grams[k])
        tol = None
        if bond_tol is not None:
            if must_fit and bool(residual**2 > bond_tol**2 / 2):
                return None
            tol = (bond_tol**2 - residual**2).clamp_min(0).sqrt()
        cap = None if caps is None else caps[k]
        rank, tail = truncate_spectrum(sv, max_rank=cap, abs_tol=tol, min_rank=min_rank)
        keep = u[:, :rank]
        zs = [keep.mH @ bi for bi in bs]
        errors.append(stable_norm(torch.stack([residual, tail.to(real)])))
        spectra.append(sv)
        out.append((q @ keep).reshape(-1, n, rank))
    last = sum(
        ((z @ cores[-1].reshape(z.shape[1], -1)) for z, cores in zip(zs, summands)),
        start=first[0].new_zeros(zs[0].shape[0], shape[-1]),
    )
    out.append(last.reshape(-1, shape[-1], 1))
    err = torch.stack(errors) if errors else torch.zeros(0, dtype=real, device=first[0].device)
    return out, err, spectra


def _sketch_round(
    summands: Sequence[Sequence[torch.Tensor]],
    *,
    caps: list[int] | None,
    eps: float | None,
    ref: torch.Tensor,
    min_rank: int,
    oversample: int,
    generator: torch.Generator,
    grams: Sequence[torch.Tensor] | None,
    ranks_before: tuple[int, ...],
) -> TruncationReport:
    """Sketch at ranks ``max_rank + oversample``; with ``eps`` alone, grow the sketch (×2) until every
    bond's sketch residual is at most ``eps ||x|| / sqrt(2 (d-1))`` (the rest of each bond's budget goes
    to the truncation of the sketched spectrum) or the sketch ranks reach the feasible maximum."""
    shape = [int(c.shape[1]) for c in summands[0]]
    d = len(shape)
    bound = [sum(int(cores[k].shape[2]) for cores in summands) for k in range(d - 1)]
    most = feasible_ranks(shape, bound)
    bond_tol = None if eps is None else ref * (eps / (d - 1) ** 0.5)

    def sweep(ranks: list[int], must_fit: bool) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]] | None:
        return _sketch_sweep(
            summands, ranks, generator, grams, caps=caps, bond_tol=bond_tol, min_rank=min_rank, must_fit=must_fit
        )

    if caps is not None:
        ranks = feasible_ranks(shape, [min(c + oversample, m) for c, m in zip(caps, most)])
        result = sweep(ranks, False)
    else:
        width = max(oversample, 4)
        result = None
        while result is None:
            ranks = feasible_ranks(shape, [min(width, m) for m in most])
            result = sweep(ranks, ranks != most)
            width *= _GROWTH
    assert result is not None
    cores, errors, spectra = result
    drop_redundant_ranks(cores, d - 1)
    out = TensorTrain(cores, center=d - 1)
    return TruncationReport(
        tt=out,
        discarded=errors,
        singular_values=tuple(spectra),
        ranks_before=ranks_before,
        ranks_after=out.ranks,
        reference_norm=ref,
    )


def randomized_round(
    tt: TensorTrain,
    *,
    max_rank: list[int] | None,
    eps: float | None,
    min_rank: int,
    oversample: int,
    generator: torch.Generator | int | None,
) -> TruncationReport:
    """:func:`~tnadapt.tt.rounding.round_tt` with ``method="randomized"`` (arguments validated there)."""
    _check_oversample(oversample)
    if max_rank is None and eps is None:
        raise ValueError("round_tt: method='randomized' needs max_rank or eps, got neither")
    gen = _as_generator(generator)
    x = orthogonalize_unchecked(tt, 0)
    ref = stable_norm(x.cores[0])
    if x.order == 1:
        return TruncationReport(
            tt=x, discarded=ref.new_zeros(0), singular_values=(), ranks_before=tt.ranks,
            ranks_after=x.ranks, reference_norm=ref,
        )  # fmt: skip
    return _sketch_round(
        [list(x.cores)], caps=max_rank, eps=eps, ref=ref, min_rank=min_rank, oversample=oversample,
        generator=gen, grams=None, ranks_before=tt.ranks,
    )  # fmt: skip


def _orthogonal_sum(summands: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """The cores of ``Σ_i x_i`` right-orthogonalised to centre 0, from the summands' blocks.

    The block-diagonal cores of the formed sum are never built: each step stacks the
    summands' cores times their row block of the triangular factor, ``[G^i_k T_i]``, and
    takes one thin QR of that stack (its rows are the bond rank ``Σ_i r^i_{k-1}``).
    """
    d = len(summands[0])
    ts = [c[-1].new_ones(1, 1) for c in summands]  # (r^i_k, m_k)
    out: list[torch.Tensor] = [summands[0][0]] * d
    for k in range(d - 1, 0, -1):
        n = int(summands[0][k].shape[1])
        parts = [
            (cores[k].reshape(-1, t.shape[0]) @ t).reshape(cores[k].shape[0], -1) for cores, t in zip(summands, ts)
        ]
        q, r = linalg.tall_qr(torch.cat(parts, dim=0).mH)
        out[k] = q.mH.reshape(q.shape[1], n, -1)
        ts = list(torch.split(r.mH, [p.shape[0] for p in parts], dim=0))
    out[0] = sum(
        ((cores[0].reshape(-1, t.shape[0]) @ t) for cores, t in zip(summands, ts)),
        start=summands[0][0].new_zeros(int(summands[0][0].shape[1]), ts[0].shape[1]),
    ).reshape(1, int(summands[0][0].shape[1]), -1)
    return out


def round_sum(
    trains: Sequence[TensorTrain],
    *,
    max_rank: int | Sequence[int] | None = None,
    eps: float | None = None,
    cutoff: float | None = None,
    min_rank: int = 1,
    method: str = "deterministic",
    oversample: int = 10,
    generator: torch.Generator | int | None = None,
) -> TruncationReport:
    """Round ``x_1 + ... + x_N`` without forming the rank-``Σ r`` train.

    Every ``trains[i]`` has cores ``(r^i_{k-1}, n_k, r^i_k)`` with common shape, dtype and
    device.  The criteria are those of :func:`~tnadapt.tt.rounding.round_tt`
    (``ranks_before`` is that of the formed sum).

    ``method="deterministic"``: a blockwise QR sweep (the summands' stacked cores, never the
    block-diagonal ones) then the SVD sweep; the per-bond ``discarded`` norms are exact.
    ``method="randomized"``: a sketch of ranks ``max_rank + oversample`` contracted with each
    summand, one QR sweep of the small sketched cores, then an SVD sweep to ``max_rank``;
    with ``eps`` alone the sketch grows (×2) until the computed sketch error is at most
    ``eps ||x|| / sqrt(2)``, so ``error <= eps ||x||`` holds for the computed errors.  The
    sketch errors are computed from the summands' Gram matrices (exact in exact
    arithmetic; round-off makes them accurate to about ``sqrt(u) sqrt(Σ_i ||x_i||²)`` in
    absolute terms, ``u`` the unit round-off — fine for ``max_rank`` or moderate ``eps``; an
    ``eps`` below ``32 sqrt(u d)`` of that scale falls back to the deterministic method, whose
    errors are exact to round-off).
    ``cutoff`` is deterministic only.  ``generator``: a CPU generator or seed (``None``: seed 0).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> g = torch.Generator().manual_seed(0)
    >>> xs = [TensorTrain.random((4, 4, 4, 4), 2, generator=g, dtype=torch.float64) for _ in range(3)]
    >>> rep = round_sum(xs, eps=1e-12, method="randomized")
    >>> rep.ranks_before, rep.tt.ranks, float(rep.relative_error) < 1e-12
    ((1, 6, 6, 6, 1), (1, 4, 6, 4, 1), True)
    """
    trains = list(trains) if not isinstance(trains, TensorTrain) else [trains]
    if not trains:
        raise ValueError("trains: expected at least one TensorTrain, got an empty sequence")
    for i, t in enumerate(trains):
        if not isinstance(t, TensorTrain):
            raise TypeError(f"trains[{i}]: expected a TensorTrain, got {type(t).__name__}")
        check_compatible(trains[0], t, f"round_sum: trains[{i}]")
        check_finite(f"trains[{i}]", list(t.cores))
    if method not in ("deterministic", "randomized"):
        raise ValueError(f"method: expected 'deterministic' or 'randomized', got {method!r}")
    check_positive_float("eps", eps)
    check_positive_float("cutoff", cutoff)
    check_min_rank(min_rank)
    d = trains[0].order
    caps = check_rank_spec("max_rank", max_rank, d - 1)
    summands = [list(t.cores) for t in trains]
    before = (1, *[sum(t.ranks[k] for t in trains) for k in range(1, d)], 1) if d > 1 else (1, 1)
    if d == 1:
        core = sum((t.cores[0] for t in trains[1:]), start=trains[0].cores[0])
        ref = stable_norm(core)
        return TruncationReport(
            tt=TensorTrain([core], center=0), discarded=ref.new_zeros(0), singular_values=(),
            ranks_before=before, ranks_after=(1, 1), reference_norm=ref,
        )  # fmt: skip
    if method == "deterministic":
        cores = _orthogonal_sum(summands)
        ref = stable_norm(cores[0])
        abs_tol = None if eps is None else ref * (eps / (d - 1) ** 0.5)
        discarded, spectra = svd_sweep(
            cores, direction="right", max_ranks=caps, abs_tol=abs_tol, cutoff=cutoff, min_rank=min_rank
        )
        drop_redundant_ranks(cores, d - 1)
        out = TensorTrain(cores, center=d - 1)
        return TruncationReport(
            tt=out, discarded=discarded, singular_values=tuple(spectra), ranks_before=before,
            ranks_after=out.ranks, reference_norm=ref,
        )  # fmt: skip
    _check_oversample(oversample)
    if cutoff is not None:
        raise ValueError("cutoff: not supported with method='randomized' (use max_rank or eps), got a cutoff")
    if caps is None and eps is None:
        raise ValueError("round_sum: method='randomized' needs max_rank or eps, got neither")
    gen = _as_generator(generator)
    grams = _right_grams(summands)
    ref = grams_norm(summands, grams)
    if eps is not None and caps is None and bool(eps * ref < _gram_floor(summands, grams)):
        # Below the Gram round-off floor the computed sketch error could not certify eps.
        return round_sum(trains, eps=eps, min_rank=min_rank, method="deterministic")
    return _sketch_round(
        summands, caps=caps, eps=eps, ref=ref, min_rank=min_rank, oversample=oversample,
        generator=gen, grams=grams, ranks_before=before,
    )  # fmt: skip


def _gram_floor(summands: Sequence[Sequence[torch.Tensor]], grams: Sequence[torch.Tensor]) -> torch.Tensor:
    """``32 sqrt(u d) sqrt(Σ_i ||x_i||²)``: the absolute accuracy the Gram-based sketch errors are trusted to."""
    offsets = [0]
    for cores in summands:
        offsets.append(offsets[-1] + int(cores[0].shape[2]))
    sq = sum(grams_norm([cores], [grams[0][a:b, a:b]]) ** 2 for cores, a, b in zip(summands, offsets, offsets[1:]))
    u = torch.finfo(_real(summands[0][0].dtype)).eps / 2
    return 32 * (u * len(summands[0])) ** 0.5 * torch.as_tensor(sq).sqrt()


def grams_norm(summands: Sequence[Sequence[torch.Tensor]], grams: Sequence[torch.Tensor]) -> torch.Tensor:
    """``||Σ_i x_i||`` from the first cores and the Gram matrix of bond 0 (0-d real)."""
    first = torch.cat([cores[0].reshape(cores[0].shape[1], -1) for cores in summands], dim=1)  # (n_1, Σ r^i_1)
    value = torch.einsum("ab,bc,ac->", first, grams[0], first.conj()).real
    return value.clamp_min(0).sqrt().to(_real(first.dtype))
