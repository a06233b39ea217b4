"""What a scheduled sweep did to one adapter: :class:`SweepRecord` (JSON round-trippable).

>>> r = SweepRecord(t=3, unit="epoch", adapter=0, name="adapter", target={"ranks": 4},
...                 ranks_before=(1, 8, 8, 1), ranks_after=(1, 4, 4, 1), discarded=(0.1, 0.2),
...                 discarded_weight=(0.01, 0.04), relative_error=0.05, singular_values=((1.0, 0.1), (1.0, 0.2)),
...                 num_parameters_before=160, num_parameters_after=64, grown=(), clipped=(), applied=True,
...                 seconds=0.01)
>>> SweepRecord.from_dict(r.to_dict()) == r
True
>>> r.summary()
'sweep @ epoch 3 on adapter: ranks (1, 8, 8, 1) -> (1, 4, 4, 1), params 160 -> 64, rel. error 5.000e-02'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["SweepRecord"]


@dataclass(frozen=True)
class SweepRecord:
    """One adapter's outcome of one scheduled sweep.

    Attributes
    ----------
    t, unit:
        Scheduler counter when the sweep ran (completed ``unit``\\ s: ``"epoch"`` or ``"step"``).
    adapter, name:
        Index of the adapter in the scheduler's list and a readable name.
    target:
        The :class:`~tnadapt.optim.SweepTarget` as a dict, after clipping.
    ranks_before, ranks_after:
        TT ranks ``(1, r_1, ..., r_{d-1}, 1)``.
    discarded:
        Per-bond Frobenius norm of what the sweep dropped (``sqrt`` of the sum of squares
        over its two passes; :class:`tnadapt.tt.SweepReport.discarded`).
    discarded_weight:
        Per-bond relative discarded weight ``Σ_dropped s² / Σ s²`` of the truncating
        (left-to-right) pass — the quantity a ``cutoff`` bounds.
    relative_error:
        ``||ΔW - ΔW'|| / ||ΔW||`` bound from the sweep (exact for the canonical sweep).
    singular_values:
        Per-bond spectrum seen by the truncating pass, largest first.
    num_parameters_before, num_parameters_after:
        Trainable entries of the adapter's cores.
    grown:
        Bonds that were grown by padding (:func:`tnadapt.tt.pad_ranks`).
    clipped:
        Bonds whose requested rank exceeded what the bond supports and was clipped.
    applied:
        Whether the cores were written (``False`` when the ranks did not change: then the
        parameters and the optimizer state are left untouched; always ``True`` for a gauge fix,
        whose ``target`` is ``{"center": k}``, see :attr:`is_gauge`).
    seconds:
        Wall time of the sweep computation.
    """

    t: int
    unit: str
    adapter: int
    name: str
    target: dict[str, Any]
    ranks_before: tuple[int, ...]
    ranks_after: tuple[int, ...]
    discarded: tuple[float, ...]
    discarded_weight: tuple[float, ...]
    relative_error: float
    singular_values: tuple[tuple[float, ...], ...]
    num_parameters_before: int
    num_parameters_after: int
    grown: tuple[int, ...]
    clipped: tuple[int, ...]
    applied: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""

        def plain(v: Any) -> Any:
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            return v

        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepRecord:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise ValueError(f"data: a SweepRecord dict needs the keys {sorted(missing)}")
        out = dict(data)
        for key in ("ranks_before", "ranks_after", "grown", "clipped"):
            out[key] = tuple(int(v) for v in out[key])
        for key in ("discarded", "discarded_weight"):
            out[key] = tuple(float(v) for v in out[key])
        out["singular_values"] = tuple(tuple(float(s) for s in bond) for bond in out["singular_values"])
        return cls(**{k: out[k] for k in names})

    @property
    def is_gauge(self) -> bool:
        """Whether this records a gauge fix (:class:`~tnadapt.optim.GaugeTarget`) rather than a rank sweep."""
        return "center" in self.target

    def summary(self) -> str:
        """One log line."""
        if self.is_gauge:
            return (
                f"gauge fix @ {self.unit} {self.t} on {self.name}: centre -> core {self.target['center']}, "
                f"ranks {self.ranks_after} unchanged, rel. change {self.relative_error:.3e}"
            )
        return (
            f"sweep @ {self.unit} {self.t} on {self.name}: ranks {self.ranks_before} -> {self.ranks_after}, "
            f"params {self.num_parameters_before} -> {self.num_parameters_after}, "
            f"rel. error {self.relative_error:.3e}"
            + (f", grown bonds {list(self.grown)}" if self.grown else "")
            + (f", clipped bonds {list(self.clipped)}" if self.clipped else "")
            + ("" if self.applied else " (ranks unchanged: not applied)")
        )
