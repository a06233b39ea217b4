"""Rank schedules: *when* to sweep and *what* each sweep should produce.

A schedule maps the scheduler's counter ``t`` (completed epochs or optimizer steps,
see :class:`~tnadapt.optim.DMRGRankScheduler`) to a :class:`SweepTarget` or ``None``
(no sweep at ``t``).  A target is either

* a **rank target** — ``ranks``: an int for every bond or one int per bond.  Bonds above
  the target are truncated by the two-site sweep, bonds below it are grown by exact
  padding (:func:`tnadapt.tt.pad_ranks`), so a schedule may go down *and* up; or
* a **tolerance target** — ``eps`` (relative Frobenius error of the whole train,
  ``||ΔW - ΔW'|| <= eps ||ΔW||``) and/or ``cutoff`` (per-bond relative discarded weight
  ``Σ_dropped s² / Σ s² <= cutoff``): every bond gets the *smallest* rank satisfying
  the criteria, optionally bounded by ``max_rank``/``min_rank``.  Tolerances only
  truncate, never grow.

Schedules:

* :class:`ExplicitSchedule` — ``{t: rank}`` (int, per-bond list, or a :class:`SweepTarget`);
* :class:`PowerLawSchedule` — MetaTT's ``r(i) = r_f + (r_0 - r_f)(1 - (i/N)^γ)`` at the
  ``N`` milestones ``at[0] < ... < at[N-1]`` (paper Appendix I.2);
* :class:`LinearSchedule` — the power law with ``γ = 1``;
* :class:`ToleranceSchedule` — the same tolerance target at every milestone;
* :class:`GaugeSchedule` — a **gauge fix** (:class:`GaugeTarget`) every ``every`` units: the
  orthogonality centre is moved to one core at constant ranks (``ΔW`` unchanged up to
  round-off), keeping the train in a canonical gauge during training.

A plain ``dict`` is accepted wherever a schedule is expected (see :func:`as_schedule`).

>>> s = PowerLawSchedule(40, 20, at=[1, 2, 3, 4, 5], gamma=2.0)   # paper, Appendix I.2
>>> [s(t).ranks for t in s.milestones]
[39, 37, 33, 27, 20]
>>> s(6) is None
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..tt._errors import check_min_rank

__all__ = [
    "ExplicitSchedule",
    "GaugeSchedule",
    "GaugeTarget",
    "LinearSchedule",
    "PowerLawSchedule",
    "RankSchedule",
    "SweepTarget",
    "ToleranceSchedule",
    "as_schedule",
    "round_half_up",
]

RankSpec = int | tuple[int, ...]


def _rank_spec(name: str, value: Any) -> RankSpec:
    """Normalise an int or a sequence of ints (>= 1) to ``int | tuple[int, ...]``."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int or a sequence of ints, got bool {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{name}: expected ranks >= 1, got {value}")
        return value
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping)):
        out = tuple(value)
        if not out or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
            raise ValueError(f"{name}: expected a non-empty sequence of ints >= 1, got {list(out)}")
        return out
    raise TypeError(f"{name}: expected an int or a sequence of ints, got {type(value).__name__} {value!r}")


def _tolerance(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite float >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SweepTarget:
    """What one sweep should produce.

    Exactly one of the two modes:

    ``ranks``
        Exact target ranks (int for every bond or one per bond).  Truncate bonds above,
        grow bonds below.
    ``eps`` / ``cutoff`` (with optional ``max_rank``, ``min_rank``)
        Tolerance mode: smallest rank per bond meeting the criteria (see module doc).

    >>> SweepTarget(ranks=4)
    SweepTarget(ranks=4, eps=None, cutoff=None, max_rank=None, min_rank=1)
    >>> SweepTarget(cutoff=1e-3, max_rank=8).is_tolerance
    True
    """

    ranks: RankSpec | None = None
    eps: float | None = None
    cutoff: float | None = None
    max_rank: RankSpec | None = None
    min_rank: int = 1

    def __post_init__(self) -> None:
        tol = self.eps is not None or self.cutoff is not None
        if self.ranks is None and not tol:
            raise ValueError("SweepTarget: give ranks=<int or per-bond list>, or a tolerance eps=/cutoff=")
        if self.ranks is not None and (tol or self.max_rank is not None):
            raise ValueError(
                "SweepTarget: ranks= is an exact target and cannot be combined with eps/cutoff/max_rank; "
                "use max_rank= to cap a tolerance target"
            )
        if self.ranks is not None:
            object.__setattr__(self, "ranks", _rank_spec("ranks", self.ranks))
        if self.max_rank is not None:
            object.__setattr__(self, "max_rank", _rank_spec("max_rank", self.max_rank))
        object.__setattr__(self, "eps", _tolerance("eps", self.eps))
        object.__setattr__(self, "cutoff", _tolerance("cutoff", self.cutoff))
        check_min_rank(self.min_rank)
        object.__setattr__(self, "min_rank", int(self.min_rank))  # numpy ints too, stored JSON-ready
        if self.ranks is not None and self.min_rank != 1:
            raise ValueError(f"min_rank: only a tolerance target (eps/cutoff) uses it, got min_rank={self.min_rank}")
        if self.max_rank is not None:
            caps = self.max_rank if isinstance(self.max_rank, tuple) else (self.max_rank,)
            if self.min_rank > min(caps):
                raise ValueError(f"min_rank: expected <= max_rank {self.max_rank!r}, got {self.min_rank}")

    @property
    def is_tolerance(self) -> bool:
        """Whether this is a tolerance target (``eps``/``cutoff``) rather than exact ranks."""
        return self.ranks is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepTarget:
        """Inverse of :meth:`to_dict`."""
        fields: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**fields)


def _center_spec(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and not value):
        raise TypeError(
            f"center: expected a core index (int, negative from the end) or a core name such as 'in', got {value!r}"
        )
    return value if isinstance(value, str) else int(value)


@dataclass(frozen=True)
class GaugeTarget:
    """A gauge fix: move the orthogonality centre to core ``center`` at **constant ranks**.

    Every core left of the centre becomes left-orthonormal, every core right of it
    right-orthonormal (thin QR sweeps, :func:`tnadapt.tt.orthogonalize`); the represented
    ``ΔW`` is unchanged up to round-off, so nothing is truncated and no rank moves.
    ``center`` is a core index (negative counts from the end) or, for adapters with
    ``core_names``, a core name such as ``"in"`` or ``"out"``; the scheduler checks it
    against every adapter.

    >>> GaugeTarget("out").to_dict(), GaugeTarget.from_dict({"center": -1})
    ({'center': 'out'}, GaugeTarget(center=-1))
    """

    center: int | str = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", _center_spec(self.center))

    @property
    def is_tolerance(self) -> bool:
        """Always ``False`` (a gauge fix has no tolerance)."""
        return False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"center": self.center}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GaugeTarget:
        """Inverse of :meth:`to_dict`."""
        return cls(center=data["center"])


#: What a schedule may return at a milestone.
Target = SweepTarget | GaugeTarget


def round_half_up(value: float) -> int:
    """Nearest integer, halves rounded up (``2.5 -> 3``), robust to float noise of 1e-9.

    >>> round_half_up(39.2), round_half_up(36.5), round_half_up(36.4999999999)
    (39, 37, 37)
    """
    return math.floor(value + 0.5 + 1e-9)


def _milestones(at: Iterable[int]) -> tuple[int, ...]:
    try:
        ms = tuple(at)
    except TypeError:
        raise TypeError(f"at: expected a sequence of ints, got {type(at).__name__} {at!r}") from None
    if not ms or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in ms):
        raise ValueError(f"at: expected a non-empty sequence of ints >= 1, got {list(ms)}")
    if any(b <= a for a, b in itertools.pairwise(ms)):
        raise ValueError(f"at: milestones must be strictly increasing, got {list(ms)}")
    return ms


class RankSchedule:
    """Base class: ``schedule(t) -> SweepTarget | None`` plus the sorted ``milestones``.

    Subclasses implement :meth:`target`; ``__call__`` returns ``None`` off the milestones.
    """

    milestones: tuple[int, ...] = ()

    def __call__(self, t: int) -> Target | None:
        if t not in self._milestone_set:
            return None
        return self.target(t)

    @property
    def _milestone_set(self) -> frozenset[int]:
        return frozenset(self.milestones)

    def target(self, t: int) -> Target:
        """The target at milestone ``t``."""
        raise TypeError(f"{type(self).__name__} must implement target(t)")

    def describe(self) -> dict[str, Any]:
        """JSON description (stored in the scheduler's ``state_dict`` to catch mismatched resumes)."""
        return {"type": type(self).__name__, "targets": {str(t): self.target(t).to_dict() for t in self.milestones}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(milestones={list(self.milestones)})"


class ExplicitSchedule(RankSchedule):
    """``{t: rank}`` with rank an int, a per-bond sequence, a :class:`SweepTarget` or a :class:`GaugeTarget`.

    >>> s = ExplicitSchedule({2: 8, 4: [6, 4, 6], 6: SweepTarget(cutoff=1e-4)})
    >>> s.milestones, s(4).ranks, s(6).cutoff, s(5)
    ((2, 4, 6), (6, 4, 6), 0.0001, None)
    """

    def __init__(self, mapping: Mapping[int, int | Sequence[int] | SweepTarget | GaugeTarget]) -> None:
        if not isinstance(mapping, Mapping) or not mapping:
            raise ValueError(f"mapping: expected a non-empty dict {{t: rank}}, got {mapping!r}")
        targets: dict[int, Target] = {}
        for t, spec in mapping.items():
            if isinstance(t, bool) or not isinstance(t, int) or t < 1:
                raise ValueError(f"mapping: keys must be ints >= 1 (completed epochs/steps), got {t!r}")
            targets[t] = (
                spec
                if isinstance(spec, (SweepTarget, GaugeTarget))
                else SweepTarget(ranks=_rank_spec(f"mapping[{t}]", spec))
            )
        self._targets = dict(sorted(targets.items()))
        self.milestones = tuple(self._targets)

    def target(self, t: int) -> Target:
        return self._targets[t]


class PowerLawSchedule(RankSchedule):
    """MetaTT's power law ``r(i) = r_f + (r_0 - r_f)(1 - (i/N)^γ)``, ``i = 1..N``.

    The ``i``-th sweep happens at ``at[i-1]`` (``N = len(at)``) and targets
    ``round_half_up(r(i))`` (nearest integer, halves up; :func:`round_half_up`), so the last
    sweep lands exactly on ``r_f``.  ``r0``/``rf`` are ints or per-bond sequences (applied
    bond by bond).  ``γ > 1`` cuts little early and much late (the paper's ``γ = 2``,
    motivated by "larger reductions are more effective later"); ``γ = 1`` is linear;
    ``r0 < rf`` gives a growing schedule.

    >>> PowerLawSchedule(10, 4, at=[2, 4, 6]).ranks
    [9, 7, 4]
    >>> PowerLawSchedule([10, 6], [4, 2], at=[1, 2], gamma=1.0).ranks
    [(7, 4), (4, 2)]
    """

    def __init__(
        self,
        r0: int | Sequence[int],
        rf: int | Sequence[int],
        at: Iterable[int],
        gamma: float = 2.0,
    ) -> None:
        self.r0 = _rank_spec("r0", r0)
        self.rf = _rank_spec("rf", rf)
        if isinstance(self.r0, tuple) and isinstance(self.rf, tuple) and len(self.r0) != len(self.rf):
            raise ValueError(f"rf: expected {len(self.r0)} per-bond ranks like r0, got {len(self.rf)}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma: expected a finite float > 0, got {gamma!r}")
        self.gamma = float(gamma)
        self.milestones = _milestones(at)
        n = len(self.milestones)
        self.ranks: list[RankSpec] = [self._rank_at(i, n) for i in range(1, n + 1)]

    def _rank_at(self, i: int, n: int) -> RankSpec:
        frac = 1.0 - (i / n) ** self.gamma

        def one(a: int, b: int) -> int:
            return max(1, round_half_up(b + (a - b) * frac))

        if isinstance(self.r0, int) and isinstance(self.rf, int):
            return one(self.r0, self.rf)
        width = len(self.r0) if isinstance(self.r0, tuple) else len(self.rf)  # type: ignore[arg-type]
        a = self.r0 if isinstance(self.r0, tuple) else (self.r0,) * width
        b = self.rf if isinstance(self.rf, tuple) else (self.rf,) * width
        return tuple(one(x, y) for x, y in zip(a, b))

    def target(self, t: int) -> SweepTarget:
        return SweepTarget(ranks=self.ranks[self.milestones.index(t)])


class LinearSchedule(PowerLawSchedule):
    """Linear ramp from ``r0`` to ``rf`` over the milestones (power law with ``γ = 1``).

    >>> LinearSchedule(10, 4, at=[1, 2, 3]).ranks
    [8, 6, 4]
    """

    def __init__(self, r0: int | Sequence[int], rf: int | Sequence[int], at: Iterable[int]) -> None:
        super().__init__(r0, rf, at, gamma=1.0)


class ToleranceSchedule(RankSchedule):
    """Error-tolerance mode: at every milestone keep the smallest ranks meeting ``eps``/``cutoff``.

    >>> s = ToleranceSchedule(at=[3, 6], cutoff=1e-3, max_rank=16)
    >>> s(3)
    SweepTarget(ranks=None, eps=None, cutoff=0.001, max_rank=16, min_rank=1)
    """

    def __init__(
        self,
        at: Iterable[int],
        *,
        eps: float | None = None,
        cutoff: float | None = None,
        max_rank: int | Sequence[int] | None = None,
        min_rank: int = 1,
    ) -> None:
        if eps is None and cutoff is None:
            raise ValueError("ToleranceSchedule: give eps= and/or cutoff=")
        self._target = SweepTarget(eps=eps, cutoff=cutoff, max_rank=max_rank, min_rank=min_rank)  # type: ignore[arg-type]
        self.milestones = _milestones(at)

    def target(self, t: int) -> SweepTarget:
        return self._target


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return int(value)


class GaugeSchedule(RankSchedule):
    """A gauge fix (:class:`GaugeTarget`) at ``t = start, start + every, start + 2 every, ...`` — without end.

    ``start`` defaults to ``every``.  With ``unit="step"`` the train is put back into the
    canonical gauge with centre ``center`` every ``every`` optimizer steps; ranks never
    change and ``ΔW`` is kept to round-off, but the cores' values (and so the gradients the
    optimizer sees next) do, and their optimizer state is reset.  The milestones are
    unbounded, so :attr:`milestones` is empty (like a callable schedule's);
    :meth:`describe` gives the parameters instead.

    >>> s = GaugeSchedule(every=3, center="out")
    >>> [t for t in range(1, 11) if s(t) is not None], s(3)
    ([3, 6, 9], GaugeTarget(center='out'))
    >>> [t for t in range(1, 11) if GaugeSchedule(4, start=2)(t)]
    [2, 6, 10]
    >>> GaugeSchedule(2).describe()
    {'type': 'GaugeSchedule', 'every': 2, 'start': 2, 'center': 0}
    """

    def __init__(self, every: int, center: int | str = 0, start: int | None = None) -> None:
        self.every = _positive("every", every)
        self.start = self.every if start is None else _positive("start", start)
        self._target = GaugeTarget(center)
        self.milestones = ()

    @property
    def center(self) -> int | str:
        """The requested centre (index or core name)."""
        return self._target.center

    def __call__(self, t: int) -> GaugeTarget | None:
        if t < self.start or (t - self.start) % self.every:
            return None
        return self._target

    def target(self, t: int) -> GaugeTarget:
        return self._target

    def describe(self) -> dict[str, Any]:
        return {"type": "GaugeSchedule", "every": self.every, "start": self.start, "center": self.center}

    def __repr__(self) -> str:
        return f"GaugeSchedule(every={self.every}, center={self.center!r}, start={self.start})"


ScheduleLike = (
    RankSchedule
    | Mapping[int, int | Sequence[int] | SweepTarget | GaugeTarget]
    | Callable[[int], SweepTarget | GaugeTarget | None]
)


class _CallableSchedule(RankSchedule):
    """Wraps any ``f(t) -> SweepTarget | None`` (no milestones known in advance)."""

    def __init__(self, fn: Callable[[int], Target | None]) -> None:
        self._fn = fn

    def __call__(self, t: int) -> Target | None:
        out = self._fn(t)
        if out is not None and not isinstance(out, (SweepTarget, GaugeTarget)):
            raise TypeError(
                f"schedule({t}): expected a SweepTarget, a GaugeTarget or None, got {type(out).__name__} {out!r}"
            )
        return out

    def describe(self) -> dict[str, Any]:
        return {"type": "callable", "name": getattr(self._fn, "__qualname__", repr(self._fn))}

    def __repr__(self) -> str:
        return f"_CallableSchedule({self._fn!r})"


def as_schedule(schedule: ScheduleLike) -> RankSchedule:
    """Coerce a schedule, a ``{t: rank}`` dict or a callable ``t -> SweepTarget | None``.

    >>> as_schedule({3: 6, 6: 4}).milestones
    (3, 6)
    """
    if isinstance(schedule, RankSchedule):
        return schedule
    if isinstance(schedule, Mapping):
        return ExplicitSchedule(schedule)
    if callable(schedule):
        return _CallableSchedule(schedule)
    raise TypeError(
        f"schedule: expected a RankSchedule, a dict {{t: rank}} or a callable t -> SweepTarget | None, "
        f"got {type(schedule).__name__}"
    )
