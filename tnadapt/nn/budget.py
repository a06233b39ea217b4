"""Pick MetaTT per-bond ranks that hit a trainable-parameter budget.

A MetaTT config's ``rank`` (an int or one per bond) applies to every shape group's train
(each group capping a bond at its largest useful rank), so the trainable count is
``Σ_groups Σ_k r_{k-1} n_k r_k`` over each group's legs ``n = (in, *modes, [head], out)``.  :func:`budget` chooses the ranks by a documented,
deterministic rule:

1. **Uniform phase** — the largest ``r`` such that every bond at ``r`` fits the budget
   (each bond is capped at ``cap_k``, the largest rank any group can use there,
   ``max_g min(n_1···n_k, n_{k+1}···n_d)``, and at ``max_rank`` if given).
2. **Greedy phase** — repeatedly raise one bond by 1: among the bonds whose raise still
   fits, the one with the *lowest* current rank (ties: the cheaper raise, then the
   lower bond index).  Stops when no raise fits.  Ranks therefore stay within one or two
   of each other, and the leftover budget is smaller than the cheapest possible raise.

>>> from tnadapt.nn import MetaTTConfig
>>> res = budget_for_legs([(768, 12, 2, 768)], 13_184)          # the paper's MetaTT-4D r=8 count
>>> res.ranks, res.num_parameters, res.uniform_rank
([8, 8, 8], 13184, 8)
>>> res = budget_for_legs([(768, 12, 2, 768)], 20_000)
>>> res.ranks, res.num_parameters <= 20_000
([11, 14, 12], True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from torch import nn

from ..tt import max_ranks
from .config import MetaTTConfig
from .metatt import GlobalTTAdapter, build_metatt
from .validation import clip_ranks

__all__ = ["BudgetResult", "budget", "budget_for_legs", "metatt_num_parameters"]


def metatt_num_parameters(legs: Sequence[Sequence[int]], ranks: Sequence[int]) -> int:
    """Trainable count ``Σ_groups Σ_k r_{k-1} n_k r_k`` for per-bond ``ranks`` shared by all groups.

    Each group's bonds are capped at its largest useful ranks (:func:`tnadapt.tt.max_ranks`),
    as :class:`~tnadapt.nn.GlobalTTAdapter` caps them, so this is the count ``wrap`` gives.

    >>> metatt_num_parameters([(768, 12, 2, 768)], [8, 8, 8])
    13184
    >>> metatt_num_parameters([(4, 1, 4)], [8, 8]) == metatt_num_parameters([(4, 1, 4)], [4, 4])
    True
    """
    total = 0
    for group in legs:
        if len(ranks) != len(group) - 1:
            raise ValueError(f"ranks: expected {len(group) - 1} bond ranks for legs {tuple(group)}, got {list(ranks)}")
        full = [1, *clip_ranks(ranks, max_ranks(group))[0], 1]
        total += sum(full[k] * int(n) * full[k + 1] for k, n in enumerate(group))
    return total


@dataclass(frozen=True)
class BudgetResult:
    """The chosen per-bond ``ranks``, the resulting ``num_parameters`` (``<= target``), and the rule's trace."""

    ranks: list[int]
    num_parameters: int
    target: int
    uniform_rank: int
    legs: list[tuple[int, ...]]
    caps: list[int]

    def apply(self, config: MetaTTConfig) -> MetaTTConfig:
        """A copy of ``config`` with ``rank = ranks``."""
        return dataclasses.replace(config, rank=list(self.ranks))


def budget_for_legs(legs: Sequence[Sequence[int]], target: int, *, max_rank: int | None = None) -> BudgetResult:
    """:func:`budget` for explicit leg sizes, one tuple per shape group (all of the same order)."""
    groups = [tuple(int(n) for n in g) for g in legs]
    if not groups or len({len(g) for g in groups}) != 1 or len(groups[0]) < 2:
        raise ValueError(f"legs: expected one or more leg-size tuples of one common order >= 2, got {groups}")
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise ValueError(f"target: expected a positive int (trainable parameters), got {target!r}")
    if max_rank is not None and (isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1):
        raise ValueError(f"max_rank: expected a positive int or None, got {max_rank!r}")
    d = len(groups[0])
    caps = [max(min(math.prod(g[: k + 1]), math.prod(g[k + 1 :])) for g in groups) for k in range(d - 1)]
    if max_rank is not None:
        caps = [min(c, max_rank) for c in caps]

    def count(ranks: Sequence[int]) -> int:
        return metatt_num_parameters(groups, ranks)

    floor = count([1] * (d - 1))
    if floor > target:
        raise ValueError(f"target: {target} is below the smallest MetaTT for these targets (all ranks 1: {floor})")
    lo, hi = 1, max(caps)
    while lo < hi:  # largest uniform r that fits (count is monotone in r)
        mid = (lo + hi + 1) // 2
        if count([min(mid, c) for c in caps]) <= target:
            lo = mid
        else:
            hi = mid - 1
    uniform = lo
    ranks = [min(uniform, c) for c in caps]
    current = count(ranks)
    while True:
        options = []
        for k in range(d - 1):
            if ranks[k] >= caps[k]:
                continue
            trial = [*ranks]
            trial[k] += 1
            extra = count(trial) - current
            if current + extra <= target:
                options.append((ranks[k], extra, k))
        if not options:
            break
        _, extra, k = min(options)
        ranks[k] += 1
        current += extra
    return BudgetResult(
        ranks=ranks, num_parameters=current, target=target, uniform_rank=uniform, legs=groups, caps=caps
    )


def budget(model: nn.Module, config: MetaTTConfig, target: int, *, max_rank: int | None = None) -> BudgetResult:
    """Per-bond ranks for ``config``'s targets in ``model`` with at most ``target`` trainable adapter entries.

    The shape groups and their legs are exactly those :func:`tnadapt.nn.wrap` would build
    (same target matching and mode sizes).  Use ``result.apply(config)`` to get the config.

    >>> import torch
    >>> from torch import nn
    >>> from tnadapt.nn import MetaTTConfig, wrap, trainable_parameters
    >>> net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    >>> cfg = MetaTTConfig(target_modules=["0", "2"])
    >>> res = budget(net, cfg, 1000)
    >>> res.ranks, res.num_parameters, trainable_parameters(wrap(net, res.apply(cfg))).adapter
    ([10, 12, 10], 1000, 1000)
    """
    if not isinstance(config, MetaTTConfig):
        raise TypeError(f"config: expected a MetaTTConfig, got {type(config).__name__}")
    targets = config.match(model)
    probe = dataclasses.replace(config, rank=1, init="zeros")
    legs = [tuple(cast(GlobalTTAdapter, group.owner).shape) for group in build_metatt(probe, targets).values()]
    return budget_for_legs(legs, target, max_rank=max_rank)
