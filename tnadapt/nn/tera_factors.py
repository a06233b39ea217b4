"""TeRA building blocks: mode splits, the frozen random Tucker factors, and the forward cost model.

Pure functions (no ``nn.Module``) used by :mod:`tnadapt.nn.tera`.

* :func:`split_dim` — balanced factorisation of ``d_in``/``d_out`` into tensor modes;
* :func:`random_factors` — the shared frozen core ``G (R_1, ..., R_N)`` and factor
  matrices ``U_n (I_n, R_n)``, drawn on the CPU in float64 from a seed (so they can be
  regenerated anywhere) and normalised so that ``ΔW`` with every ``λ = 1`` has mean
  squared entry ``1 / d_in``;
* :func:`fingerprint` / :func:`check_fingerprint` — a short summary of the factors
  stored in ``adapter_config.json`` to detect a different seed or RNG on load;
* :func:`forward_costs` — multiply-add counts of the two forward paths, used to pick one.

>>> split_dim(768, 2), split_dim(768, 3), split_dim(3072, 2)
([24, 32], [8, 8, 12], [48, 64])
>>> core, us = random_factors([3, 4], [2, 5], [3, 4, 2, 5], seed=0)
>>> tuple(core.shape), [tuple(u.shape) for u in us]
((3, 4, 2, 5), [(3, 3), (4, 4), (2, 2), (5, 5)])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch

__all__ = [
    "FACTOR_INITS",
    "check_fingerprint",
    "fingerprint",
    "forward_costs",
    "group_seed",
    "random_factors",
    "split_dim",
    "tucker_max_ranks",
    "tucker_norm_sq",
]

#: Distributions for the frozen factors: ``orthogonal`` (default: factor matrices with
#: orthonormal columns — rows when ``R_n > I_n`` — and a core whose ``(∏R_in, ∏R_out)``
#: unfolding is a random partial isometry, so with ``R_n = I_n`` and every ``λ = 1`` all
#: singular values of ``ΔW`` are equal), ``normal`` (i.i.d. Gaussian core and factors; ``ΔW``
#: is then full rank but badly conditioned, its condition number being the product of the
#: factors'), ``uniform`` (i.i.d. uniform on ``[-1, 1]``).
FACTOR_INITS = ("normal", "uniform", "orthogonal")


@lru_cache(maxsize=256)
def _splits(n: int, order: int, smallest: int) -> tuple[tuple[int, ...], ...]:
    """All non-decreasing factorisations of ``n`` into ``order`` factors ``>= smallest``."""
    if order == 1:
        return ((n,),) if n >= smallest else ()
    out: list[tuple[int, ...]] = []
    f = smallest
    while f**order <= n:
        if n % f == 0:
            out.extend((f, *rest) for rest in _splits(n // f, order - 1, f))
        f += 1
    return tuple(out)


def split_dim(n: int, order: int) -> list[int]:
    """Split ``n`` into ``order`` factors (ascending) with the smallest largest factor.

    Ties go to the smallest sum of factors (fewest trainable entries with ``R_n = I_n``).
    A prime ``n`` gives ``[1, ..., 1, n]``.

    >>> split_dim(12, 2), split_dim(7, 2), split_dim(10, 1)
    ([3, 4], [1, 7], [10])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order: expected a positive int, got {order!r}")
    best = min(_splits(n, order, 1), key=lambda fs: (max(fs), sum(fs)))
    return list(best)


def tucker_max_ranks(legs: Sequence[int], ranks: Sequence[int], placement: str) -> list[int]:
    """Largest useful Tucker rank per mode of a TeRA network with legs ``I`` and requested ranks ``R``.

    * ``placement="physical"`` (``λ_n ∈ R^{I_n}``): ``I_n``.  ``ΔW = T ×_1 diag(λ_1) ··· ×_N diag(λ_N)``
      with the frozen ``T = G ×_n U_n``, so the trained family is ``T`` times a rank-1 tensor of
      ``λ`` s, whatever the ranks, and ``rank(ΔW) <= min(∏ min(R, I) over the in modes, ... out modes)``:
      ``R_n > I_n`` adds neither trained entries nor rank.
    * ``placement="bond"`` (``λ_n ∈ R^{R_n}``): ``I_n · ∏_{m≠n} min(I_m, R_m)``.  ``ΔW`` is linear in
      ``λ_n``, spanned by ``U_n[:, j] ⊗ h_j`` where the ``h_j`` lie in the column space of
      ``⊗_{m≠n} F_m`` (dimension ``∏_{m≠n} min(I_m, R_m)``); ``R_n > I_n`` does add trained
      directions, up to that space's dimension and no further.

    ``tests/nn/test_validation.py`` checks that capping there keeps the rank of the Jacobian
    ``∂ΔW/∂λ`` (the dimension of the trainable family) on random small networks.

    >>> tucker_max_ranks([2, 3, 2, 2], [30, 30, 30, 30], "bond"), tucker_max_ranks([2, 3, 2, 2], [30, 30, 30, 30], "physical")
    ([24, 24, 24, 24], [2, 3, 2, 2])
    """
    legs, ranks = [int(n) for n in legs], [int(r) for r in ranks]
    if placement == "physical":
        return legs
    kept = [min(n, r) for n, r in zip(legs, ranks)]
    return [legs[n] * math.prod(kept[:n] + kept[n + 1 :]) for n in range(len(legs))]


def group_seed(seed: int, in_features: int, out_features: int) -> int:
    """The seed of one shape group: ``seed`` mixed with the shape, so groups draw independent factors."""
    mixed = (int(seed) * 1_000_003 + int(in_features)) * 1_000_003 + int(out_features)
    return mixed % (2**63 - 1)


def _draw(shape: Sequence[int], kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "uniform":
        return torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def tucker_norm_sq(core: torch.Tensor, factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``||G ×_1 U_1 ··· ×_N U_N||_F²`` from the Gram matrices ``U_nᵀ U_n`` (no full tensor).

    >>> g = torch.randn(2, 3, dtype=torch.float64); u = [torch.randn(4, 2, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)]
    >>> bool(torch.isclose(tucker_norm_sq(g, u), (u[0] @ g @ u[1].T).square().sum()))
    True
    """
    acc = core
    for u in factors:
        acc = torch.tensordot(acc, u.mT @ u, dims=([0], [0]))  # cycles the modes back into order
    return (acc * core).sum()


def _isometry(mat: torch.Tensor) -> torch.Tensor:
    """The orthonormal factor of ``mat`` (columns if tall, rows if wide), sign-fixed so it is Haar-distributed
    for a Gaussian ``mat``."""
    wide = mat.shape[0] < mat.shape[1]
    q, r = torch.linalg.qr(mat.mT if wide else mat)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
    return q.mT if wide else q


def random_factors(
    in_modes: Sequence[int],
    out_modes: Sequence[int],
    ranks: Sequence[int],
    *,
    seed: int,
    init: str = "orthogonal",
    scale: float = 1.0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Frozen core ``G`` of shape ``ranks`` and factors ``U_n (I_n, R_n)``, float64 on the CPU.

    Drawn in a fixed order (core, then ``U_1 ... U_N``) from ``torch.Generator().manual_seed(seed)``;
    the core is then rescaled so that the unfolded ``ΔW = G ×_n U_n`` (every ``λ = 1``) has
    ``||ΔW||_F² = scale² · d_out`` (mean squared entry ``scale² / d_in``: a unit-variance
    input gives an update of variance ``scale²`` per output).
    """
    if init not in FACTOR_INITS:
        raise ValueError(f"factor_init: expected one of {FACTOR_INITS}, got {init!r}")
    legs = [int(n) for n in (*in_modes, *out_modes)]
    if len(ranks) != len(legs):
        raise ValueError(f"ranks: expected one Tucker rank per mode ({len(legs)} modes {legs}), got {list(ranks)}")
    generator = torch.Generator().manual_seed(int(seed))
    core = _draw(ranks, "uniform" if init == "uniform" else "normal", generator)
    factors = [_draw((n, r), "uniform" if init == "uniform" else "normal", generator) for n, r in zip(legs, ranks)]
    if init == "orthogonal":
        a = len(in_modes)
        rows = math.prod(int(r) for r in ranks[:a])
        core = _isometry(core.reshape(rows, -1)).reshape(core.shape)
        factors = [_isometry(u) for u in factors]
    norm_sq = tucker_norm_sq(core, factors)
    d_out = math.prod(int(n) for n in out_modes)
    core = core * (float(scale) * math.sqrt(d_out / float(norm_sq)))
    return core, factors


def _summary(t: torch.Tensor) -> list[float]:
    flat = t.detach().to("cpu", torch.float64).flatten()
    return [float(v) for v in flat[:3]] + [float(flat.sum()), float(flat.square().sum())]


def fingerprint(tensors: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """A few numbers per tensor (first entries, sum, sum of squares), JSON-ready.

    >>> fingerprint({"u0": torch.arange(4.0)})
    {'u0': [0.0, 1.0, 2.0, 6.0, 14.0]}
    """
    return {name: _summary(t) for name, t in tensors.items()}


def check_fingerprint(expected: dict[str, list[float]], tensors: dict[str, torch.Tensor], *, where: str) -> None:
    """Raise ``ValueError`` naming the first tensor whose summary differs (relative tolerance 1e-4,
    loose enough for a float32/bfloat16 copy, far too tight for a different random draw)."""
    got = fingerprint(tensors)
    if set(got) != set(expected):
        raise ValueError(f"{where}: frozen factors {sorted(got)} do not match the recorded {sorted(expected)}")
    for name, want in expected.items():
        have = got[name]
        scale = max(abs(v) for v in want) or 1.0
        tol = 1e-2 if tensors[name].dtype in (torch.float16, torch.bfloat16) else 1e-4
        if len(have) != len(want) or any(abs(a - b) > tol * scale for a, b in zip(have, want)):
            raise ValueError(
                f"{where}: frozen factor {name!r} does not match the fingerprint recorded at save time "
                f"(expected {want}, got {have}); it was drawn with a different seed or random generator. "
                "Save adapters with save_factors=True to store the frozen factors in the file."
            )


def _chain_cost(lead: int, start: Sequence[int], end: Sequence[int]) -> int:
    """Multiply-adds of mode products turning modes ``start`` into ``end`` one at a time (in order)."""
    cur = [int(v) for v in start]
    cost = 0
    for j, target in enumerate(end):
        cost += lead * math.prod(cur) * int(target)
        cur[j] = int(target)
    return cost


def forward_costs(in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int], rows: int) -> dict[str, int]:
    """Multiply-adds of one forward for ``rows`` input rows.

    * ``factored``: mode products of ``x (rows, I_1..I_a)`` with the in factors, one
      ``(ΠR_in × ΠR_out)`` matmul with the unfolded core, mode products with the out factors;
    * ``dense``: build ``ΔW`` (mode products of the core with all factors), then ``x @ ΔWᵀ``.

    >>> forward_costs([3, 4], [2, 5], [3, 4, 2, 5], rows=1)["factored"] < forward_costs([3, 4], [2, 5], [3, 4, 2, 5], rows=1)["dense"]
    True
    """
    a = len(in_modes)
    r_in, r_out = ranks[:a], ranks[a:]
    d_in, d_out = math.prod(in_modes), math.prod(out_modes)
    factored = (
        _chain_cost(rows, in_modes, r_in)
        + rows * math.prod(r_in) * math.prod(r_out)
        + _chain_cost(rows, r_out, out_modes)
    )
    dense = _chain_cost(1, ranks, [*in_modes, *out_modes]) + rows * d_in * d_out
    return {"factored": int(factored), "dense": int(dense)}
