"""``DMRGRankScheduler``: rank-adaptive training of TT adapters around any torch optimizer.

MetaTT (§2.4, §3.3, App. C/I): train a TT adapter at a high rank with a gradient
optimizer and, at scheduled points, run the two-site DMRG-style sweep (Algorithm 1,
:func:`tnadapt.tt.dmrg_sweep`) to truncate every bond; because the core shapes change,
the optimizer state of the cores is reset.  The scheduler does this in place:

1. at ``scheduler.step()`` it advances its counter ``t`` (completed epochs or optimizer
   steps — ``unit`` says which, the call site must match) and asks the schedule for a
   target at ``t``;
2. for every adapter it computes the sweep on detached copies of the cores (checking
   first that every core is finite — otherwise :class:`NonFiniteCoresError` and nothing
   is touched), grows bonds by exact padding if the target asks for more rank;
3. writes the new cores into the **same** ``nn.Parameter`` objects (``adapter.set_cores``),
   contiguous whatever strides the sweep produced (``torch.optim.LBFGS`` flattens gradients
   with ``view``), clears their gradients and autograd's cached gradient accumulators (so a graph still
   alive from the last step cannot impose the old shapes, see
   :func:`~tnadapt.nn.parameters.release_grad_accumulator`), drops their optimizer state (re-initialising it for eager
   optimizers such as Adagrad, see :mod:`tnadapt.optim.state`) and leaves every other
   parameter's state untouched.  The optimizer's param groups, LR schedulers and
   gradient scalers keep working, and training continues with the next
   ``optimizer.step()``;
4. records a :class:`~tnadapt.optim.SweepRecord` per adapter in :attr:`history`, logs it
   on the ``tnadapt.optim`` logger and passes it to the callbacks.

Adapters whose ranks do not change at a milestone are left untouched (no write, no
state reset; ``record.applied`` is ``False``).

A **gauge fix** (:class:`~tnadapt.optim.GaugeTarget`, e.g. from a :class:`~tnadapt.optim.GaugeSchedule`)
is the exception: it moves the orthogonality centre to one core at constant ranks
(:func:`tnadapt.tt.orthogonalize`) and is **always applied** — the cores are rewritten, their
optimizer state reset, and the record has ``applied=True``, ``ranks_before == ranks_after``, zero
``discarded``, empty spectra and ``relative_error`` the *measured* ``||ΔW' - ΔW|| / ||ΔW||`` of
what was written (in float64; round-off only; ``0.0`` when ``ΔW = 0``, e.g. at a zero-core init).
A bond whose rank exceeds what its neighbours can carry (``r_k > r_{k-1} n_k`` or ``r_{k-1} > n_k r_k``,
possible only with size-1 or tiny legs) is shrunk by the QR and padded back with exact zeros to keep the
Parameters' shapes (``record.grown`` lists it); the cores next to it are then orthonormal on their
non-zero block only.

Rank requests above what a bond can hold (``min(n_1···n_k, n_{k+1}···n_d)``,
:func:`tnadapt.tt.max_ranks`) are **clipped with a** :class:`RankClippedWarning`.

Under ``torch.distributed`` the sweep is computed on one source rank and broadcast (see
:mod:`tnadapt.optim.distributed`), so every rank ends with bit-identical cores.

>>> import torch
>>> from tnadapt.nn import GlobalTTAdapter
>>> adapter = GlobalTTAdapter(8, 8, {"layer": 3}, ranks=6, init="no-no-no",
...                           generator=torch.Generator().manual_seed(0))
>>> opt = torch.optim.AdamW(adapter.parameters(), lr=1e-3)
>>> sched = DMRGRankScheduler(opt, adapter, {1: 4, 2: [3, 2]}, unit="epoch")
>>> [r.ranks_after for r in sched.step()]           # after epoch 1
[(1, 4, 4, 1)]
>>> sched.step()[0].ranks_after, adapter.ranks       # after epoch 2
((1, 3, 2, 1), (1, 3, 2, 1))
>>> sched.step()                                     # epoch 3: nothing scheduled
[]
"""

from __future__ import annotations

import base64
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..nn.parameters import settle_parameter
from ..nn.validation import RankClippedWarning, check_float, clip_ranks
from ..tt import TensorTrain, dmrg_sweep, max_ranks, orthogonalize, pad_ranks
from . import distributed as _dist
from .param_groups import core_names_of
from .records import SweepRecord
from .schedules import GaugeSchedule, GaugeTarget, ScheduleLike, SweepTarget, Target, as_schedule
from .state import StateInit, check_optimizer_holds, reset_state, unwrap_optimizer

__all__ = ["DMRGRankScheduler", "NonFiniteCoresError", "RankClippedWarning", "TTAdapterLike", "resolve_center"]

logger = logging.getLogger("tnadapt.optim")

UNITS = ("epoch", "step")
STATE_VERSION = 1


class NonFiniteCoresError(FloatingPointError):
    """A core holds NaN/Inf: the sweep was aborted and no parameter was changed."""


@runtime_checkable
class TTAdapterLike(Protocol):
    """What the scheduler needs from an adapter (``tnadapt.nn.GlobalTTAdapter`` satisfies it)."""

    cores: nn.ParameterList

    @property
    def ranks(self) -> tuple[int, ...]: ...

    def tt(self) -> TensorTrain: ...

    def set_cores(self, cores: Sequence[torch.Tensor]) -> None: ...

    def num_parameters(self) -> int: ...


def _is_adapter(obj: object) -> bool:
    return isinstance(obj, nn.Module) and isinstance(obj, TTAdapterLike)


def _collect_adapters(adapters: object) -> list[tuple[str, TTAdapterLike]]:
    """``(name, adapter)`` pairs from an adapter, a model containing adapters (for a model wrapped by
    ``tnadapt.nn``: the active named adapters' ones), or a sequence of adapters."""
    if _is_adapter(adapters):
        return [("adapter", adapters)]  # type: ignore[list-item]
    if isinstance(adapters, nn.Module):
        from ..nn.control import active_containers
        from ..nn.injection import is_wrapped

        # a wrapped model with several named adapters: only the active adapters' owners (peft: only they train)
        keep = {id(o) for c in active_containers(adapters) for o in c.groups.values()} if is_wrapped(adapters) else None
        found = [
            (name or "adapter", m)
            for name, m in adapters.named_modules()
            if _is_adapter(m) and (keep is None or id(m) in keep)
        ]
        if not found:
            raise ValueError(
                f"adapters: the {type(adapters).__name__} contains no TT adapter "
                "(a module with cores, ranks, tt(), set_cores(), num_parameters())"
            )
        return found  # type: ignore[return-value]
    if isinstance(adapters, Iterable) and not isinstance(adapters, (str, bytes)):
        out = []
        for i, a in enumerate(adapters):
            if not _is_adapter(a):
                raise TypeError(
                    f"adapters[{i}]: expected a TT adapter module (e.g. tnadapt.nn.GlobalTTAdapter), "
                    f"got {type(a).__name__}"
                )
            out.append((f"adapters[{i}]", a))
        if not out:
            raise ValueError("adapters: expected at least one adapter, got an empty sequence")
        return out
    raise TypeError(
        f"adapters: expected a TT adapter, a model containing adapters, or a sequence of adapters, "
        f"got {type(adapters).__name__}"
    )


def _per_bond(name: str, spec: int | Sequence[int], bonds: int, who: str) -> list[int]:
    if isinstance(spec, int):
        return [spec] * bonds
    values = [int(v) for v in spec]
    if len(values) != bonds:
        raise ValueError(f"{name}: {who} has {bonds} bonds, got {len(values)} per-bond ranks {values}")
    return values


def resolve_center(center: int | str, adapter: TTAdapterLike, name: str = "adapter") -> int:
    """The core index ``[0, d)`` that a :class:`~tnadapt.optim.GaugeTarget` centre names in ``adapter``.

    ``center`` is an index (negative from the end) or a core name (``adapter.core_names``; ``"0"``,
    ``"1"``, ... for adapters without names).  ``ValueError`` names the valid choices.
    """
    names = core_names_of(adapter)
    d = len(names)
    if isinstance(center, str):
        if center in names:
            return names.index(center)
        raise ValueError(
            f"center: {name} has no core {center!r}; its cores are {list(names)} (or an index {-d}..{d - 1})"
        )
    if isinstance(center, bool) or not isinstance(center, int):
        raise TypeError(f"center: expected a core index or a core name, got {type(center).__name__} {center!r}")
    if not -d <= center < d:
        raise ValueError(f"center: core index {center} is out of range for {name}, whose {d} cores are {list(names)}")
    return center % d


def _generator_state(gen: torch.Generator) -> str:
    return base64.b64encode(bytes(gen.get_state().tolist())).decode("ascii")


def _set_generator_state(gen: torch.Generator, text: str) -> None:
    gen.set_state(torch.tensor(list(base64.b64decode(text)), dtype=torch.uint8))


class DMRGRankScheduler:
    """Apply a rank schedule to TT adapters trained by ``optimizer`` (see module doc).

    Parameters
    ----------
    optimizer:
        Any ``torch.optim.Optimizer`` (or a wrapper exposing it as ``.optimizer``) whose
        param groups hold **every** core of every adapter; checked at construction.
    adapters:
        A TT adapter, a sequence of them, or a model (all TT adapters inside are used; for a
        model wrapped by ``tnadapt.nn`` with several named adapters, the active adapters' ones).
    schedule:
        A :class:`~tnadapt.optim.RankSchedule`, a dict ``{t: rank}`` (rank: int, per-bond
        list or :class:`~tnadapt.optim.SweepTarget`), or a callable ``t -> SweepTarget | None``.
    unit:
        ``"epoch"`` (default, the paper's setting: call :meth:`step` after each epoch) or
        ``"step"`` (after each ``optimizer.step()``, not after each micro-batch of gradient
        accumulation); the schedule's ``t`` counts completed units.  Pass it explicitly in
        per-step loops — the scheduler cannot tell which kind of loop calls it.
    canonicalize:
        Passed to :func:`~tnadapt.tt.dmrg_sweep`: ``True`` (default) gives optimal per-bond
        truncation with exact error reports; ``False`` runs Algorithm 1 literally.
    growth_noise:
        Std of the one-sided Gaussian padding used when a target grows a bond
        (:func:`~tnadapt.tt.pad_ranks`); ``0`` pads with zeros (exact, but the new directions
        then receive no gradient).
    seed:
        Seed of the scheduler's own generator for growth noise (state saved in
        :meth:`state_dict`).
    state_init:
        Optional ``f(optimizer, param)`` re-initialising a core's optimizer state after
        the reset, overriding the automatic handling.
    compute_dtype:
        dtype the sweep runs in (default: the cores' dtype); results are cast back.
    distributed:
        ``None`` (default): compute-on-source-and-broadcast whenever torch.distributed is
        initialised with more than one process; ``False``: every rank computes alone.
    src, process_group:
        Source rank (within ``process_group``) and group for the broadcast.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        adapters: TTAdapterLike | Sequence[TTAdapterLike] | nn.Module,
        schedule: ScheduleLike,
        *,
        unit: str = "epoch",
        canonicalize: bool = True,
        growth_noise: float = 1e-3,
        seed: int = 0,
        state_init: StateInit | None = None,
        compute_dtype: torch.dtype | None = None,
        distributed: bool | None = None,
        src: int = 0,
        process_group: Any = None,
    ) -> None:
        if unit not in UNITS:
            raise ValueError(f"unit: expected one of {UNITS}, got {unit!r}")
        growth_noise = check_float("growth_noise", growth_noise, minimum=0)
        self.optimizer = unwrap_optimizer(optimizer)
        named = _collect_adapters(adapters)
        _dist.check_replicated_cores(named)  # FSDP-sharded cores cannot be swept: say so before training
        self.adapter_names: tuple[str, ...] = tuple(n for n, _ in named)
        self.adapters: tuple[TTAdapterLike, ...] = tuple(a for _, a in named)
        check_optimizer_holds(
            self.optimizer,
            [
                (f"{name}.cores.{k}", p)
                for name, adapter in named
                for k, p in enumerate(adapter.cores)  # type: ignore[arg-type]
            ],
        )
        self.schedule = as_schedule(schedule)
        self.unit = unit
        self.canonicalize = bool(canonicalize)
        self.growth_noise = float(growth_noise)
        self.state_init = state_init
        self.compute_dtype = compute_dtype
        self.distributed = distributed
        self.src = int(src)
        self.process_group = process_group
        self.generator = torch.Generator().manual_seed(int(seed))
        self.t = 0
        self.history: list[SweepRecord] = []
        self._callbacks: list[Callable[[SweepRecord], None]] = []
        self._check_schedule_fits()

    def _check_schedule_fits(self) -> None:
        """Per-bond lists of a schedule with known milestones must match every adapter's bond count.

        Caught here rather than at the milestone, possibly hours into training; so is a gauge centre
        that some adapter does not have.
        """
        if isinstance(self.schedule, GaugeSchedule):
            for name, adapter in zip(self.adapter_names, self.adapters):
                resolve_center(self.schedule.center, adapter, name)
        for t in self.schedule.milestones:
            target = self.schedule(t)
            if target is None:
                continue
            for name, adapter in zip(self.adapter_names, self.adapters):
                if isinstance(target, GaugeTarget):
                    resolve_center(target.center, adapter, name)
                    continue
                bonds = len(adapter.ranks) - 2
                for key in ("ranks", "max_rank"):
                    spec = getattr(target, key)
                    if isinstance(spec, tuple) and len(spec) != bonds:
                        raise ValueError(
                            f"schedule: the target at {self.unit} {t} gives {len(spec)} per-bond {key} "
                            f"{list(spec)}, but {name} has {bonds} bonds (ranks {tuple(adapter.ranks)})"
                        )

    # ------------------------------------------------------------------ public API
    @property
    def ranks(self) -> list[tuple[int, ...]]:
        """Current TT ranks of each adapter."""
        return [tuple(a.ranks) for a in self.adapters]

    def num_parameters(self) -> int:
        """Total trainable entries over all adapters."""
        return sum(int(a.num_parameters()) for a in self.adapters)

    def add_callback(self, fn: Callable[[SweepRecord], None]) -> Callable[[], None]:
        """Call ``fn(record)`` after every applied or skipped adapter sweep; returns a remover.

        >>> import torch
        >>> from tnadapt.nn import GlobalTTAdapter
        >>> a = GlobalTTAdapter(4, 4, {"layer": 2}, ranks=3, init="no-no-no")
        >>> s = DMRGRankScheduler(torch.optim.SGD(a.parameters(), lr=0.1), a, {1: 2}, unit="epoch")
        >>> seen = []
        >>> remove = s.add_callback(lambda r: seen.append(r.ranks_after))
        >>> _ = s.step(); seen
        [(1, 2, 2, 1)]
        >>> remove()
        """
        if not callable(fn):
            raise TypeError(f"fn: expected a callable taking a SweepRecord, got {type(fn).__name__}")
        self._callbacks.append(fn)

        def remove() -> None:
            if fn in self._callbacks:
                self._callbacks.remove(fn)

        return remove

    def step(self, t: int | None = None) -> list[SweepRecord]:
        """Mark one more completed unit (or jump the counter to ``t``); sweep if scheduled.

        Returns the records of this call's sweep (one per adapter), or ``[]``.  Milestones
        skipped over by a jump are not applied.  The counter advances even if the sweep then
        fails (the unit did complete); retry with ``sweep(schedule(t))`` after fixing the cause.
        """
        if t is None:
            self.t += 1
        else:
            if isinstance(t, bool) or not isinstance(t, int) or t < self.t:
                raise ValueError(f"t: expected an int >= the current counter {self.t}, got {t!r}")
            if t == self.t:
                return []
            self.t = t
        target = self.schedule(self.t)
        if target is None:
            return []
        return self.sweep(target)

    def sweep(self, target: SweepTarget | GaugeTarget | int | Sequence[int]) -> list[SweepRecord]:
        """Run a sweep (or, for a :class:`~tnadapt.optim.GaugeTarget`, a gauge fix) now, outside the schedule,
        at the current counter ``t``."""
        if not isinstance(target, (SweepTarget, GaugeTarget)):
            target = SweepTarget(ranks=target)  # type: ignore[arg-type]
        if isinstance(target, GaugeTarget):
            for name, adapter in zip(self.adapter_names, self.adapters):
                resolve_center(target.center, adapter, name)  # before any collective or computation
        # Under prepare_distributed the sweep's collectives run on its dedicated group (with its timeout).
        sync = _dist.sync_for(self.adapters) if self.distributed is not False else None
        group = self.process_group if self.process_group is not None or sync is None else sync.group
        active, rank, _ = _dist.dist_context(group) if self.distributed is not False else (False, 0, 1)
        if not active:
            records, cores = self._compute(target)
        else:
            _dist.check_replicated_cores(list(zip(self.adapter_names, self.adapters)))
            records, cores = self._compute_and_broadcast(target, rank, group)
        self._apply(records, cores)
        if sync is not None:
            sync.refresh()
        return records

    # ------------------------------------------------------------------ computation
    def _work_dtype(self, core: torch.Tensor) -> torch.dtype:
        return self.compute_dtype or core.dtype

    def _check_finite(self) -> None:
        for name, adapter in zip(self.adapter_names, self.adapters):
            flags = torch.stack([torch.isfinite(c.detach()).all() for c in adapter.cores])
            if not bool(flags.all()):
                bad = [k for k, ok in enumerate(flags.tolist()) if not ok]
                labels = getattr(adapter, "core_names", None)
                which = [labels[k] for k in bad] if labels else bad
                raise NonFiniteCoresError(
                    f"{name}: core(s) {which} contain NaN or Inf at {self.unit} {self.t}; the sweep was aborted "
                    "and no parameter or optimizer state was changed (lower the learning rate, clip gradients, "
                    "or restore a checkpoint)"
                )

    def _compute(self, target: Target) -> tuple[list[SweepRecord], list[list[torch.Tensor] | None]]:
        self._check_finite()
        records: list[SweepRecord] = []
        cores: list[list[torch.Tensor] | None] = []
        for i, (name, adapter) in enumerate(zip(self.adapter_names, self.adapters)):
            record, new = self._sweep_one(i, name, adapter, target)
            records.append(record)
            cores.append(new if record.applied else None)
        return records, cores

    def _sweep_one(
        self, index: int, name: str, adapter: TTAdapterLike, target: Target
    ) -> tuple[SweepRecord, list[torch.Tensor]]:
        if isinstance(target, GaugeTarget):
            return self._gauge_one(index, name, adapter, target)
        start = time.perf_counter()
        first = adapter.cores[0]
        x = TensorTrain([c.detach().to(self._work_dtype(first)) for c in adapter.cores])
        bonds = x.order - 1
        limit = max_ranks(x.shape)
        clipped: tuple[int, ...] = ()
        grown: list[int] = []
        if target.ranks is not None:
            want, clipped = clip_ranks(_per_bond("ranks", target.ranks, bonds, name), limit)
            caps = [min(w, r) for w, r in zip(want, x.bond_dims)]
            rep = dmrg_sweep(x, max_rank=caps, canonicalize=self.canonicalize)
            y = rep.tt
            grown = [k for k in range(bonds) if want[k] > y.bond_dims[k]]
            if grown:
                y = pad_ranks(y, want, noise=self.growth_noise, generator=self.generator)
            effective = SweepTarget(ranks=tuple(want))
        else:
            cap = None if target.max_rank is None else _per_bond("max_rank", target.max_rank, bonds, name)
            rep = dmrg_sweep(
                x,
                max_rank=cap,
                eps=target.eps,
                cutoff=target.cutoff,
                min_rank=target.min_rank,
                canonicalize=self.canonicalize,
            )
            y = rep.tt
            effective = target
        spectra = rep.pass_spectra[0] if rep.pass_spectra else rep.singular_values
        total = [float((s.double() ** 2).sum()) for s in spectra]
        first_pass = rep.passes[0] if rep.passes else rep.discarded
        weights = tuple(float(first_pass[k]) ** 2 / total[k] if total[k] > 0 else 0.0 for k in range(bonds))
        applied = y.ranks != x.ranks
        record = SweepRecord(
            t=self.t,
            unit=self.unit,
            adapter=index,
            name=name,
            target=effective.to_dict(),
            ranks_before=x.ranks,
            ranks_after=y.ranks,
            discarded=tuple(float(v) for v in rep.discarded),
            discarded_weight=weights,
            relative_error=float(rep.relative_error),
            singular_values=tuple(tuple(float(v) for v in s.tolist()) for s in spectra),
            num_parameters_before=x.num_params,
            num_parameters_after=y.num_params,
            grown=tuple(grown),
            clipped=tuple(clipped),
            applied=applied,
            seconds=time.perf_counter() - start,
        )
        return record, list(y.cores)

    def _gauge_one(
        self, index: int, name: str, adapter: TTAdapterLike, target: GaugeTarget
    ) -> tuple[SweepRecord, list[torch.Tensor]]:
        """Move the orthogonality centre of ``adapter`` to ``target.center`` at constant ranks (see module doc)."""
        start = time.perf_counter()
        center = resolve_center(target.center, adapter, name)
        first = adapter.cores[0]
        x = TensorTrain([c.detach().to(self._work_dtype(first)) for c in adapter.cores])
        y = orthogonalize(x, center)
        grown: tuple[int, ...] = ()
        if y.ranks != x.ranks:  # QR shrank a bond above r_{k-1} n_k (or n_k r_k): pad back with exact zeros
            grown = tuple(k for k in range(x.order - 1) if y.ranks[k + 1] < x.ranks[k + 1])
            y = pad_ranks(y, list(x.ranks[1:-1]), noise=0.0)
        # measure what will be written (the parameters' dtype), in double precision
        wide = torch.complex128 if first.dtype.is_complex else torch.float64
        before = TensorTrain([c.detach().to(wide) for c in adapter.cores])
        after = TensorTrain([c.to(first.dtype).to(wide) for c in y.cores])
        norm = float(before.norm())
        error = float((after - before).norm()) / norm if norm > 0 else 0.0
        bonds = x.order - 1
        record = SweepRecord(
            t=self.t,
            unit=self.unit,
            adapter=index,
            name=name,
            target=GaugeTarget(center).to_dict(),
            ranks_before=x.ranks,
            ranks_after=y.ranks,
            discarded=(0.0,) * bonds,
            discarded_weight=(0.0,) * bonds,
            relative_error=error,
            singular_values=((),) * bonds,
            num_parameters_before=x.num_params,
            num_parameters_after=y.num_params,
            grown=grown,
            clipped=(),
            applied=True,
            seconds=time.perf_counter() - start,
        )
        return record, list(y.cores)

    def _compute_and_broadcast(
        self, target: Target, rank: int, group: Any
    ) -> tuple[list[SweepRecord], list[list[torch.Tensor] | None]]:
        device = self.adapters[0].cores[0].device
        sync = _dist.sync_for(self.adapters)
        bound = (
            f"; the collectives time out after {sync.timeout.total_seconds():g}s (prepare_distributed(timeout=...))"
            if sync is not None and group is sync.group
            else ""
        )
        hint = (
            f"every rank must call DMRGRankScheduler.step() at the same {self.unit}s with the same adapters and ranks "
            f"(restore the same checkpoint on every rank){bound}"
        )
        what = f"the sweep at {self.unit} {self.t}"
        fp = _dist.fingerprint(self.t, self.adapters, device=device)
        if not _dist.compare_fingerprints(fp, group=group, what=what, hint=hint):
            logger.warning(
                "%s %d: the TT cores differed across ranks before the sweep (the sweep makes them identical again); "
                "their gradients are not being averaged: use tnadapt.optim.prepare_distributed or DDP",
                self.unit,
                self.t,
            )
        records: list[SweepRecord] = []
        cores: list[list[torch.Tensor] | None] = []
        payload: dict[str, Any]
        error: BaseException | None = None
        if rank == self.src:
            try:
                records, cores = self._compute(target)
                payload = {"records": [r.to_dict() for r in records]}
            except (ValueError, FloatingPointError, RuntimeError) as exc:
                error = exc
                payload = {"error": f"{type(exc).__name__}: {exc}", "non_finite": isinstance(exc, NonFiniteCoresError)}
        else:
            payload = {}
        with _dist.collective_errors(what, hint):
            payload = _dist.broadcast_json(payload, src=self.src, group=group, device=device)
        if "error" in payload:
            if error is not None:
                raise error
            cls = NonFiniteCoresError if payload.get("non_finite") else RuntimeError
            raise cls(f"sweep failed on source rank {self.src}: {payload['error']}")
        if rank != self.src:
            records = [SweepRecord.from_dict(d) for d in payload["records"]]
        out: list[list[torch.Tensor] | None] = []
        for i, (record, adapter) in enumerate(zip(records, self.adapters)):
            if not record.applied:
                out.append(None)
                continue
            r = record.ranks_after
            shapes = [(r[k], int(c.shape[1]), r[k + 1]) for k, c in enumerate(adapter.cores)]
            param = adapter.cores[0]
            work = self._work_dtype(param)
            mine = cores[i] if rank == self.src else None
            with _dist.collective_errors(what, hint):
                out.append(
                    _dist.broadcast_cores(mine, shapes, dtype=work, device=param.device, src=self.src, group=group)
                )
        return records, out

    # ------------------------------------------------------------------ writing
    def _apply(self, records: list[SweepRecord], cores: list[list[torch.Tensor] | None]) -> None:
        for record, adapter, new in zip(records, self.adapters, cores):
            if record.clipped:
                warnings.warn(
                    f"{record.name}: scheduled rank above what bond(s) {list(record.clipped)} support "
                    f"(max {list(max_ranks(tuple(int(c.shape[1]) for c in adapter.cores)))}); clipped to "
                    f"{record.target['ranks']}",
                    RankClippedWarning,
                    stacklevel=3,
                )
            if new is not None:
                adapter.set_cores(new)
                params = list(adapter.cores)
                # GlobalTTAdapter.set_cores leaves its cores contiguous, without gradients or stale gradient
                # accumulators; any other TTAdapterLike may not (a no-op for settled cores, so cheap to repeat).
                for p in params:
                    settle_parameter(p)
                reset_state(self.optimizer, params, state_init=self.state_init)
        for record in records:
            self.history.append(record)
            logger.info(record.summary())
            for fn in list(self._callbacks):
                fn(record)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: counter, history, current ranks, schedule description, RNG state."""
        return {
            "version": STATE_VERSION,
            "unit": self.unit,
            "t": self.t,
            "ranks": [list(r) for r in self.ranks],
            "history": [r.to_dict() for r in self.history],
            "schedule": self.schedule.describe(),
            "generator": _generator_state(self.generator),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the adapters must already carry the checkpoint's ranks.

        Resume order: (1) rebuild the model, (2) restore the adapter weights *with their
        saved ranks* (``tnadapt.nn.load_adapter``), (3) build the optimizer over the
        model's parameters and load its state, (4) build the scheduler and call this.
        Raises ``ValueError`` if the adapter ranks or the optimizer state's shapes do not
        match (i.e. a step was done out of order).
        """
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError(f"state: expected a DMRGRankScheduler state_dict (version {STATE_VERSION})")
        if state["unit"] != self.unit:
            raise ValueError(f"state: checkpoint counts {state['unit']!r}s but this scheduler counts {self.unit!r}s")
        saved = [tuple(r) for r in state["ranks"]]
        if saved != self.ranks:
            raise ValueError(
                f"state: the checkpoint's adapter ranks {saved} differ from the current ones {self.ranks}; "
                "load the adapter weights (with their saved ranks) before the scheduler state"
            )
        if state["schedule"] != self.schedule.describe():
            warnings.warn(
                "state: the checkpoint was written with a different schedule; continuing with the current one",
                UserWarning,
                stacklevel=2,
            )
        self.t = int(state["t"])
        self.history = [SweepRecord.from_dict(d) for d in state["history"]]
        _set_generator_state(self.generator, state["generator"])
        self.check_optimizer_state()

    def check_optimizer_state(self) -> None:
        """Raise ``ValueError`` if the optimizer holds state of the wrong shape for an adapter core.

        Catches an optimizer state loaded before the adapter's ranks were restored.  Only
        element-wise state (tensors with as many dims as the core, e.g. Adam moments, momentum
        buffers, Adagrad sums) is checked; factored statistics are optimizer-specific.
        """
        for name, adapter in zip(self.adapter_names, self.adapters):
            for k, p in enumerate(adapter.cores):
                for key, value in self.optimizer.state.get(p, {}).items():
                    if isinstance(value, torch.Tensor) and value.ndim == p.ndim and value.shape != p.shape:
                        raise ValueError(
                            f"optimizer: state {key!r} of {name}.cores.{k} has shape {tuple(value.shape)} but the "
                            f"parameter has shape {tuple(p.shape)}; restore the adapter's ranks first "
                            "(tnadapt.nn.load_adapter), then load the optimizer state"
                        )

    def __repr__(self) -> str:
        return (
            f"DMRGRankScheduler(unit={self.unit!r}, t={self.t}, adapters={list(self.adapter_names)}, "
            f"ranks={self.ranks}, schedule={self.schedule!r})"
        )
