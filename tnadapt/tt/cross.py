"""TT-cross: approximate a black-box function of indices by interpolation on maxvol-chosen fibres.

Alternating half-sweeps (Oseledets & Tyrtyshnikov 2010, with rank growth as in tntorch's
and teneva's cross): each bond ``k`` (between cores ``k`` and ``k+1``) has ``r_k`` left
multi-indices ``I_k`` over modes ``0..k`` and ``r_k`` right ones ``J_k`` over modes ``k+1..d-1``.  A left-to-right
half-sweep evaluates the fibres ``C_k = f(I_{k-1}, :, J_k)`` of shape
``(r_{k-1}, n_k, r_k)`` (one batched call per core), takes ``Q = qr([C_k, random kick])``,
picks ``r'_k`` rows of ``Q`` by maxvol as the new ``I_k`` and keeps the interpolation core
``Q Q[I_k]⁻¹``; the last fibre closes the train.  Right-to-left is the mirror image.  The
ranks grow by ``kick`` per half-sweep up to ``max_rank``.

Stopping uses a held-out sample of ``holdout`` random multi-indices (evaluated once):
``||f(S) - x(S)|| / ||f(S)||`` is an *estimate* of the relative error (reported as such,
:attr:`CrossReport.estimated_relative_error`), and iteration stops when it is below
``tol``, or when the evaluation budget ``max_evals`` would be exceeded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from . import linalg
from .indexing import gather
from .rounding import round_tt
from .tensor_train import TensorTrain

__all__ = ["CrossReport", "apply", "cross", "maxvol"]


@dataclass(frozen=True)
class CrossReport:
    """Result of :func:`cross`.

    Attributes
    ----------
    tt:
        The approximation (cores ``(r_{k-1}, n_k, r_k)``), rounded to ``tol / 10``.
    evaluations:
        Number of points at which the function was evaluated (held-out sample included).
    sweeps:
        Half-sweeps run.
    estimated_relative_error:
        ``||f(S) - tt(S)|| / ||f(S)||`` on the held-out sample ``S``: an *estimate* of the
        relative error of ``tt``, not a bound.
    converged:
        Whether the estimate fell below ``tol`` (otherwise the budget or ``max_sweeps`` ran out).
    """

    tt: TensorTrain
    evaluations: int
    sweeps: int
    estimated_relative_error: float
    converged: bool


def maxvol(a: torch.Tensor, *, tol: float = 1.05, max_iters: int = 100) -> torch.Tensor:
    """Rows of a tall ``(m, r)`` matrix spanning a submatrix of (locally) maximal volume (``(r,)`` long).

    Starts from the pivots of an LU factorisation and swaps rows while some entry of
    ``A A[rows]⁻¹`` exceeds ``tol`` in modulus (Goreinov et al. 2010).

    >>> import torch
    >>> a = torch.tensor([[1.0, 0.0], [0.0, 0.1], [0.0, 2.0]], dtype=torch.float64)
    >>> sorted(maxvol(a).tolist())
    [0, 2]
    """
    m, r = a.shape
    if m < r:
        raise ValueError(f"a: expected a tall matrix (m >= r), got shape {tuple(a.shape)}")
    _, pivots = torch.linalg.lu_factor(a)
    perm = torch.arange(m, device=a.device)
    for i, p in enumerate((pivots - 1).tolist()):
        perm[[i, p]] = perm[[p, i]]
    rows = perm[:r].clone()
    for _ in range(max_iters):
        b = torch.linalg.solve(a[rows], a, left=False)
        flat = int(b.abs().argmax())
        i, j = divmod(flat, r)
        if float(b[i, j].abs()) <= tol:
            break
        rows[j] = i
    return rows


def _points(left: torch.Tensor, n: int, right: torch.Tensor) -> torch.Tensor:
    """All multi-indices ``(left[a], i, right[b])`` in ``(a, i, b)`` order: ``(ra n rb, d)``."""
    ra, rb = left.shape[0], right.shape[0]
    mode = torch.arange(n, device=left.device)
    return torch.cat(
        [
            left[:, None, None, :].expand(ra, n, rb, left.shape[1]),
            mode[None, :, None, None].expand(ra, n, rb, 1),
            right[None, None, :, :].expand(ra, n, rb, right.shape[1]),
        ],
        dim=3,
    ).reshape(ra * n * rb, -1)


def cross(
    fn: Callable[[torch.Tensor], torch.Tensor],
    shape: Sequence[int],
    *,
    tol: float = 1e-6,
    max_rank: int = 64,
    max_evals: int = 10**6,
    max_sweeps: int = 50,
    kick: int = 2,
    holdout: int = 512,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | int | None = None,
) -> CrossReport:
    """Rank-adaptive TT-cross approximation of ``fn`` on the grid ``shape`` (see module docs).

    ``fn`` maps a long tensor of multi-indices ``(batch, d)`` to values ``(batch,)``; it is
    called once per core per half-sweep (batches of ``r_{k-1} n_k r_k`` points).  Returns a
    :class:`CrossReport` whose ``tt`` has cores ``(r_{k-1}, n_k, r_k)``.

    >>> import torch
    >>> rep = cross(lambda i: 1.0 / (i.sum(1) + 1).double(), (8, 8, 8, 8), tol=1e-8)
    >>> rep.converged, rep.estimated_relative_error < 1e-8
    (True, True)
    """
    shape = [int(n) for n in shape]
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"shape: expected a non-empty sequence of positive mode sizes, got {shape}")
    for name, value, low in (("max_rank", max_rank, 1), ("kick", kick, 0), ("holdout", holdout, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if not tol > 0:
        raise ValueError(f"tol: expected a positive float, got {tol!r}")
    gen = (
        torch.Generator().manual_seed(0 if generator is None else generator)
        if not isinstance(generator, torch.Generator)
        else generator
    )
    dev = torch.device("cpu") if device is None else torch.device(device)
    d = len(shape)
    evals = 0

    def call(points: torch.Tensor) -> torch.Tensor:
        nonlocal evals
        evals += points.shape[0]
        out = torch.as_tensor(fn(points.to(dev))).to(device=dev, dtype=dtype).reshape(-1)
        if out.shape[0] != points.shape[0]:
            raise ValueError(
                f"fn: expected {points.shape[0]} values for a batch of that many indices, got {out.shape[0]}"
            )
        return out

    sample = torch.stack([torch.randint(0, n, (holdout,), generator=gen) for n in shape], dim=1).to(dev)
    truth = call(sample)
    scale = torch.linalg.vector_norm(truth)
    # Right multi-indices J_k for bonds k = 0..d-2 (over modes k+1..d-1), one random row each.
    right = [
        torch.stack([torch.randint(0, n, (1,), generator=gen) for n in shape[k + 1 :]], 1).to(dev) for k in range(d - 1)
    ]
    left: list[torch.Tensor] = [torch.zeros(1, 0, dtype=torch.long, device=dev)] * d  # I_{k-1} for core k
    empty = torch.zeros(1, 0, dtype=torch.long, device=dev)
    best: TensorTrain | None = None
    estimate = float("inf")
    sweeps = 0

    def kicked(c: torch.Tensor, limit: int) -> torch.Tensor:
        extra = min(kick, max(0, limit - c.shape[1]))
        if extra:
            c = torch.cat([c, torch.randn(c.shape[0], extra, generator=gen, dtype=dtype).to(dev)], dim=1)
        q, _ = linalg.qr(c)
        return q[:, : min(q.shape[1], limit)]

    while sweeps < max_sweeps:
        forward = sweeps % 2 == 0
        cost = sum(
            (left[k].shape[0] if forward else 1) * n * (right[k].shape[0] if k < d - 1 else 1)
            for k, n in enumerate(shape)
        )
        if best is not None and evals + cost > max_evals:
            break
        cores: list[torch.Tensor] = [torch.empty(0)] * d
        if d == 1:
            cores[0] = call(_points(empty, shape[0], empty)).reshape(1, shape[0], 1)
        elif forward:
            for k in range(d - 1):
                lk, n = left[k], shape[k]
                c = call(_points(lk, n, right[k])).reshape(lk.shape[0] * n, -1)
                q = kicked(c, min(max_rank, lk.shape[0] * n))
                rows = maxvol(q)
                cores[k] = torch.linalg.solve(q[rows], q, left=False).reshape(lk.shape[0], n, -1)
                a, i = rows // n, rows % n
                left[k + 1] = torch.cat([lk[a], i[:, None]], dim=1)
            cores[-1] = call(_points(left[-1], shape[-1], empty)).reshape(-1, shape[-1], 1)
        else:
            for k in range(d - 1, 0, -1):
                n = shape[k]
                rk = right[k] if k < d - 1 else empty
                c = call(_points(left[k], n, rk)).reshape(left[k].shape[0], n * rk.shape[0]).mT
                q = kicked(c.contiguous(), min(max_rank, n * rk.shape[0]))
                rows = maxvol(q)
                cores[k] = torch.linalg.solve(q[rows], q, left=False).mT.reshape(-1, n, rk.shape[0])
                i, b = rows // rk.shape[0], rows % rk.shape[0]
                right[k - 1] = torch.cat([i[:, None], rk[b]], dim=1)
            cores[0] = call(_points(empty, shape[0], right[0])).reshape(1, shape[0], -1)
        sweeps += 1
        best = TensorTrain(cores)
        estimate = float(
            torch.linalg.vector_norm(gather(best, sample) - truth) / scale.clamp_min(torch.finfo(dtype).tiny)
        )
        if estimate <= tol or d == 1:
            break
    assert best is not None
    out = round_tt(best, eps=tol / 10).tt if d > 1 else best
    estimate = float(torch.linalg.vector_norm(gather(out, sample) - truth) / scale.clamp_min(torch.finfo(dtype).tiny))
    return CrossReport(
        tt=out, evaluations=evals, sweeps=sweeps, estimated_relative_error=estimate, converged=estimate <= tol
    )


def apply(x: TensorTrain, fn: Callable[[torch.Tensor], torch.Tensor], **kwargs: object) -> CrossReport:
    """Element-wise ``fn(x)`` (``torch.exp``, ``torch.sqrt``, ``torch.reciprocal``, any callable on values)
    as a TT, by :func:`cross` on the entries of ``x`` (keyword arguments are passed on).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((6, 6, 6), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> rep = apply(x, torch.exp, tol=1e-10)
    >>> bool(torch.allclose(rep.tt.full(), torch.exp(x.full()), atol=1e-7))
    True
    """
    kwargs.setdefault("dtype", x.dtype)
    kwargs.setdefault("device", x.device)
    return cross(lambda idx: fn(gather(x, idx)), x.shape, **kwargs)  # type: ignore[arg-type]
