"""``budget``: per-bond MetaTT ranks under a trainable-parameter target, checked by brute force and by wrapping."""

from __future__ import annotations

import pytest
from nn_helpers import tiny_bert

from tnadapt.nn import GlobalTTAdapter, MetaTTConfig, trainable_parameters, wrap
from tnadapt.nn.budget import budget, budget_for_legs, metatt_num_parameters

ROBERTA_4D = [(768, 12, 2, 768)]


@pytest.mark.parametrize("rank, count", [(8, 13_184), (24, 44_928), (64, 155_648)])
def test_paper_counts_give_the_paper_ranks(rank, count):
    res = budget_for_legs(ROBERTA_4D, count)
    assert res.ranks == [rank] * 3 and res.num_parameters == count and res.uniform_rank == rank
    assert GlobalTTAdapter(768, 768, {"layer": 12, "matrix": 2}, ranks=res.ranks).num_parameters() == count


@pytest.mark.parametrize(
    "legs, target, max_rank",
    [
        (ROBERTA_4D, 20_000, None),
        (ROBERTA_4D, 100_000, 40),
        ([(16, 2, 2, 16), (16, 2, 2, 32)], 900, None),
        ([(8, 3, 4, 2, 8)], 500, None),
        ([(4, 2, 4)], 10_000, None),  # budget beyond every cap: all bonds saturate
    ],
)
def test_rule_is_maximal_and_respects_caps(legs, target, max_rank):
    res = budget_for_legs(legs, target, max_rank=max_rank)
    assert res.num_parameters == metatt_num_parameters(legs, res.ranks) <= target
    assert all(1 <= r <= c for r, c in zip(res.ranks, res.caps))
    if max_rank is not None:
        assert max(res.ranks) <= max_rank
    # uniform phase: r is the largest uniform rank that fits, r + 1 does not (unless capped)
    u = res.uniform_rank
    assert metatt_num_parameters(legs, [min(u, c) for c in res.caps]) <= target
    if any(u + 1 <= c for c in res.caps):
        assert metatt_num_parameters(legs, [min(u + 1, c) for c in res.caps]) > target
    # greedy phase ends only when no single bond can be raised within the budget
    for k in range(len(res.ranks)):
        if res.ranks[k] < res.caps[k]:
            trial = [*res.ranks]
            trial[k] += 1
            assert metatt_num_parameters(legs, trial) > target
    assert all(r >= u or r == c for r, c in zip(res.ranks, res.caps))


def test_budget_on_a_model_matches_what_wrap_builds():
    targets = ["query", "value", "intermediate.dense"]
    for cfg in (
        MetaTTConfig(target_modules=targets),
        MetaTTConfig(target_modules=["query", "value"], preset="metatt-5d", heads=4),
        MetaTTConfig(target_modules=targets, preset="metatt-4+1d", mode_sizes={"task": 3}),
    ):
        res = budget(tiny_bert(), cfg, 2_500)
        net = wrap(tiny_bert(), res.apply(cfg))
        assert trainable_parameters(net).adapter == res.num_parameters <= 2_500
        assert len(res.legs) == (2 if "intermediate.dense" in cfg.target_modules else 1)


def test_errors():
    with pytest.raises(ValueError, match="smallest MetaTT"):
        budget_for_legs(ROBERTA_4D, 100)
    with pytest.raises(ValueError, match="target"):
        budget_for_legs(ROBERTA_4D, 0)
    with pytest.raises(ValueError, match="legs"):
        budget_for_legs([(4, 2, 4), (4, 4)], 100)
    with pytest.raises(ValueError, match="max_rank"):
        budget_for_legs(ROBERTA_4D, 20_000, max_rank=0)
    with pytest.raises(ValueError, match="bond ranks"):
        metatt_num_parameters(ROBERTA_4D, [1, 2])
    with pytest.raises(TypeError, match="MetaTTConfig"):
        budget(tiny_bert(), object(), 100)  # type: ignore[arg-type]
