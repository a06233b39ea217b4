"""Rank schedules: the paper's power law, linear ramps, explicit maps, tolerance targets, bad input."""

from __future__ import annotations

import math

import pytest

from tnadapt.optim import (
    ExplicitSchedule,
    LinearSchedule,
    PowerLawSchedule,
    SweepTarget,
    ToleranceSchedule,
    as_schedule,
    round_half_up,
)


@pytest.mark.parametrize(
    ("r0", "rf", "n", "gamma"), [(40, 20, 5, 2.0), (10, 4, 3, 2.0), (10, 4, 6, 0.5), (4, 12, 4, 2)]
)
def test_power_law_matches_formula(r0: int, rf: int, n: int, gamma: float) -> None:
    at = [3 * i for i in range(1, n + 1)]
    s = PowerLawSchedule(r0, rf, at=at, gamma=gamma)
    for i, t in enumerate(at, start=1):
        value = rf + (r0 - rf) * (1 - (i / n) ** gamma)
        assert s(t) == SweepTarget(ranks=math.floor(value + 0.5))
        assert s(t + 1) is None
    assert s(at[-1]).ranks == rf
    ranks = [s(t).ranks for t in at]
    assert ranks == sorted(ranks, reverse=r0 > rf)  # monotone towards rf


def test_paper_schedule_appendix_i() -> None:
    s = PowerLawSchedule(40, 20, at=range(1, 6), gamma=2)
    assert s.ranks == [39, 37, 33, 27, 20]
    assert s.milestones == (1, 2, 3, 4, 5)


def test_linear_and_per_bond() -> None:
    assert LinearSchedule(10, 4, at=[1, 2, 3]).ranks == [8, 6, 4]
    s = LinearSchedule([10, 8, 10], 4, at=[5, 10])
    assert s.ranks == [(7, 6, 7), (4, 4, 4)]
    assert s(10).ranks == (4, 4, 4)


def test_round_half_up() -> None:
    assert [round_half_up(v) for v in (0.5, 1.5, 2.5, 2.4999, 3.0000000001)] == [1, 2, 3, 2, 3]


def test_explicit_and_coercion() -> None:
    s = as_schedule({6: 2, 2: [4, 3], 4: SweepTarget(cutoff=1e-2)})
    assert isinstance(s, ExplicitSchedule)
    assert s.milestones == (2, 4, 6)
    assert s(2).ranks == (4, 3) and s(4).is_tolerance and s(6).ranks == 2 and s(3) is None
    assert s.describe()["targets"]["6"] == {"ranks": 2, "eps": None, "cutoff": None, "max_rank": None, "min_rank": 1}
    f = as_schedule(lambda t: SweepTarget(ranks=3) if t % 2 == 0 else None)
    assert f(4).ranks == 3 and f(3) is None
    bad = as_schedule(lambda t: 3)
    with pytest.raises(TypeError, match=r"schedule\(1\): expected a SweepTarget"):
        bad(1)


def test_tolerance_schedule() -> None:
    s = ToleranceSchedule(at=[2, 4], eps=0.1, max_rank=[8, 6], min_rank=2)
    assert s(2) == SweepTarget(eps=0.1, max_rank=(8, 6), min_rank=2) and s(3) is None
    assert SweepTarget.from_dict(s(4).to_dict()) == s(4)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: SweepTarget(), ValueError, "give ranks"),
        (lambda: SweepTarget(ranks=4, eps=0.1), ValueError, "cannot be combined"),
        (lambda: SweepTarget(ranks=0), ValueError, "ranks: expected ranks >= 1"),
        (lambda: SweepTarget(ranks=[2, 0]), ValueError, "ranks"),
        (lambda: SweepTarget(ranks="4"), TypeError, "ranks"),
        (lambda: SweepTarget(cutoff=-1.0), ValueError, "cutoff"),
        (lambda: SweepTarget(eps=float("nan")), ValueError, "eps"),
        (lambda: SweepTarget(eps=0.1, min_rank=0), ValueError, "min_rank"),
        (lambda: PowerLawSchedule(10, 4, at=[3, 2]), ValueError, "strictly increasing"),
        (lambda: PowerLawSchedule(10, 4, at=[]), ValueError, "at"),
        (lambda: PowerLawSchedule(10, 4, at=5), TypeError, "at"),
        (lambda: PowerLawSchedule(10, 4, at=[1], gamma=0), ValueError, "gamma"),
        (lambda: PowerLawSchedule([10, 8], [4, 4, 4], at=[1]), ValueError, "rf"),
        (lambda: ExplicitSchedule({}), ValueError, "mapping"),
        (lambda: ExplicitSchedule({1.5: 3}), ValueError, "mapping"),
        (lambda: ToleranceSchedule(at=[1]), ValueError, "eps= and/or cutoff="),
        (lambda: as_schedule(3), TypeError, "schedule"),
        (lambda: SweepTarget(ranks=4, min_rank=2), ValueError, "min_rank: only a tolerance target"),
        (lambda: SweepTarget(eps=0.1, max_rank=[4, 2], min_rank=3), ValueError, r"min_rank: expected <= max_rank"),
        (lambda: ToleranceSchedule(at=[1], cutoff=0.1, max_rank=2, min_rank=5), ValueError, "min_rank"),
        (lambda: SweepTarget(cutoff=0.1, max_rank=0), ValueError, "max_rank: expected ranks >= 1"),
        (lambda: ExplicitSchedule({1: -2}), ValueError, r"mapping\[1\]: expected ranks >= 1, got -2"),
        (lambda: ExplicitSchedule({1: [2, 2.5]}), ValueError, r"mapping\[1\]: expected a non-empty sequence of ints"),
        (lambda: ExplicitSchedule({1: []}), ValueError, r"mapping\[1\]"),
        (
            lambda: ExplicitSchedule({1: 2.5}),
            TypeError,
            r"mapping\[1\]: expected an int or a sequence of ints, got float",
        ),
        (lambda: ExplicitSchedule({"3": 2}), ValueError, "mapping: keys must be ints >= 1 .* got '3'"),
        (lambda: ExplicitSchedule({-1: 2}), ValueError, "mapping: keys must be ints >= 1"),
        (lambda: ExplicitSchedule({True: 2}), ValueError, "mapping: keys must be ints >= 1"),
        (lambda: ExplicitSchedule([(1, 2)]), ValueError, "mapping: expected a non-empty dict"),
        (lambda: PowerLawSchedule(-1, 4, at=[1]), ValueError, "r0: expected ranks >= 1, got -1"),
        (lambda: LinearSchedule(4, 0, at=[1]), ValueError, "rf: expected ranks >= 1, got 0"),
        (lambda: PowerLawSchedule(10, 4, at=[0, 1]), ValueError, "at: expected a non-empty sequence of ints >= 1"),
        (lambda: PowerLawSchedule(10, 4, at=[1], gamma=float("inf")), ValueError, "gamma"),
    ],
)
def test_bad_input(build, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()
