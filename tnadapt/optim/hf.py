"""Hugging Face ``Trainer`` integration: :class:`DMRGRankCallback`.

Importing this module imports ``transformers`` (``pip install tnadapt[hf]``);
``import tnadapt.optim`` alone never does.

The callback builds a :class:`~tnadapt.optim.DMRGRankScheduler` the first time the
Trainer hands it the optimizer (``on_train_begin``; the Trainer creates the optimizer
before that event and passes it, possibly wrapped by ``accelerate``, in the callback
kwargs) and drives it from the Trainer's own counters:

* ``unit="step"`` — at ``on_step_end`` with ``t = state.global_step`` (optimizer steps,
  so gradient accumulation is accounted for; the Trainer has already run
  ``optimizer.step()``, ``lr_scheduler.step()`` and ``zero_grad()`` at that point);
* ``unit="epoch"`` — at ``on_epoch_end`` with ``t = round(state.epoch)``, i.e. *before*
  the end-of-epoch evaluation, as in the paper.

Saving, reloading and resuming (``docs/rank_adaptive.md``, "Hugging Face Trainer"):

* ``trainer.save_model(out)`` and every checkpoint go through the wrapped model's
  ``save_pretrained`` (:func:`tnadapt.nn.save_pretrained`): ``adapter_config.json`` with the
  *current* ranks + ``adapter_model.safetensors``, and an adapter-only ``model.safetensors``
  for the Trainer's resume.  Reload with :func:`tnadapt.nn.load_pretrained`.
* ``trainer.train(resume_from_checkpoint=...)`` from the unchanged script works after any
  number of sweeps: the Trainer loads the checkpoint with ``model.load_state_dict``, whose
  pre-hook resizes the cores to the checkpoint's ranks first (before the optimizer is built
  and ``optimizer.pt`` is loaded), so weights, optimizer state and LR schedule all match.
* The callback's own state (counter ``t``, :attr:`history`, growth-noise generator) is kept
  in the Trainer's ``state.stateful_callbacks`` under its :attr:`~DMRGRankCallback.state_key`, so it
  travels in each checkpoint's ``trainer_state.json`` and is restored at ``on_train_begin`` of a resumed run.
  The key is :data:`STATE_KEY` for an unnamed callback and ``f"{STATE_KEY}[{name}]"`` (:func:`state_key`) for
  ``DMRGRankCallback(..., name=name)``.
  A milestone that was due but not yet applied when the checkpoint was written (unit
  ``"epoch"``, a step checkpoint at the last step of an epoch: the Trainer saves it before
  ``on_epoch_end``) is applied at the resumed run's first ``on_epoch_begin`` (``on_train_end`` if no epoch is
  left) — after every callback's ``on_train_begin`` has checked its saved ranks against the checkpoint's, and
  before any training step, as in the uninterrupted run.  For a checkpoint without
  that state (older tnadapt) the counter starts at the Trainer's progress in *completed*
  units (``global_step``, or ``floor(state.epoch)``).

Several callbacks in one Trainer — e.g. a rank schedule per epoch beside a gauge fix every 8 optimizer
steps — need distinct names, so that each keeps its own state in the checkpoint (each state records the
adapters' ranks, so after a sweep every ``DMRGRankCallback`` of the run re-publishes its own)::

    callbacks = [DMRGRankCallback({1: 4}, unit="epoch"),
                 DMRGRankCallback(GaugeSchedule(8, center="in"), unit="step", name="gauge")]

Two callbacks with the same key (two unnamed ones, or the same ``name`` twice; also one callback instance
registered twice) would overwrite each other's state: the second one's ``on_train_begin`` raises a
``ValueError`` instead, before any step.  The keys claimed in a run are marked on the Trainer's ``state``
object itself, as an attribute outside its dataclass fields, so the mark is never written to
``trainer_state.json`` and every ``train()`` call (resumed or not, which builds a fresh ``state``) starts
without it.  Renaming a callback between a run and its resume loses its saved state (the renamed one counts on
from the Trainer's progress, as for an older checkpoint).

On CPU a resumed run reproduces the uninterrupted one bit for bit, losses, ranks, cores and
optimizer state (``tests/optim/test_hf_checkpoints.py``;
with a rank and a gauge callback together, ``tests/optim/test_hf_multi.py``).  The Trainer's LR scheduler is
untouched.  Multi-process Trainer runs (DDP after :func:`tnadapt.optim.prepare_distributed`; what
is refused and why) are covered in ``docs/training_at_scale.md``.

>>> from tnadapt.optim.hf import DMRGRankCallback
>>> cb = DMRGRankCallback({2: 4}, unit="epoch")
>>> cb.scheduler is None                 # created when training starts
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from transformers import TrainerCallback

from . import distributed as _dist
from .records import SweepRecord
from .scheduler import DMRGRankScheduler, TTAdapterLike
from .schedules import ScheduleLike

__all__ = ["STATE_KEY", "DMRGRankCallback", "state_key"]

#: Key of the callback's scheduler state in ``TrainerState.stateful_callbacks`` (``trainer_state.json``).
#: Not the class name: the Trainer's ``restore_callback_states_from_checkpoint`` rebuilds the callbacks
#: it finds under their class names from JSON constructor arguments, which a schedule is not.
STATE_KEY = "tnadapt.DMRGRankCallback"

#: Attribute set on the Trainer's ``state`` object (not a dataclass field: never serialised) mapping each state key
#: claimed in the current ``train()`` call to the callback that claimed it.
_CLAIMS_ATTR = "_tnadapt_dmrg_state_keys"


def state_key(name: str | None = None) -> str:
    """The ``state.stateful_callbacks`` key of ``DMRGRankCallback(..., name=name)``.

    >>> state_key(), state_key("gauge")
    ('tnadapt.DMRGRankCallback', 'tnadapt.DMRGRankCallback[gauge]')
    """
    if name is None:
        return STATE_KEY
    if not isinstance(name, str):
        raise TypeError(f"name: expected a non-empty str or None, got {type(name).__name__}")
    if not name.strip():
        raise ValueError(f"name: expected a non-empty str or None, got {name!r}")
    return f"{STATE_KEY}[{name}]"


class DMRGRankCallback(TrainerCallback):
    """Apply a rank schedule inside ``transformers.Trainer`` (see module doc).

    Parameters
    ----------
    schedule:
        Anything :class:`~tnadapt.optim.DMRGRankScheduler` accepts.
    adapters:
        The TT adapters; default: every TT adapter found in the Trainer's model.
    unit:
        ``"epoch"`` (default) or ``"step"`` (optimizer steps, i.e. ``state.global_step``).
    name:
        Distinguishes this callback's checkpointed state from another ``DMRGRankCallback``'s in the same Trainer:
        the state is kept under :attr:`state_key` (``STATE_KEY`` when ``None``, the default, else
        ``f"{STATE_KEY}[{name}]"``).  A non-empty str; needed for every callback but one when several run together.
    **scheduler_kwargs:
        Passed to :class:`~tnadapt.optim.DMRGRankScheduler` (``growth_noise``, ``seed``, ...).
    """

    def __init__(
        self,
        schedule: ScheduleLike,
        *,
        adapters: TTAdapterLike | Sequence[TTAdapterLike] | nn.Module | None = None,
        unit: str = "epoch",
        name: str | None = None,
        **scheduler_kwargs: Any,
    ) -> None:
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit: expected 'epoch' or 'step', got {unit!r}")
        #: Key of this callback's state in ``state.stateful_callbacks`` (see :func:`state_key`).
        self.state_key = state_key(name)
        self.name = name
        self.schedule = schedule
        self.adapters = adapters
        self.unit = unit
        self.scheduler_kwargs = scheduler_kwargs
        self.scheduler: DMRGRankScheduler | None = None
        self._pending: int | None = None  # a milestone a resumed checkpoint left due, applied at the next event

    @property
    def history(self) -> list[SweepRecord]:
        """Records of every sweep so far (empty before training; a resumed run restores the earlier ones)."""
        return [] if self.scheduler is None else self.scheduler.history

    def _ensure(self, args: Any, model: nn.Module | None, optimizer: Any) -> DMRGRankScheduler:
        if self.scheduler is not None:
            return self.scheduler
        if optimizer is None:
            raise RuntimeError("DMRGRankCallback: the Trainer passed no optimizer to the callback")
        adapters = self.adapters if self.adapters is not None else model
        if adapters is None:
            raise RuntimeError("DMRGRankCallback: no adapters given and the Trainer passed no model")
        if getattr(args, "world_size", 1) > 1:
            # Multi-process: the Trainer's loop holds its DDP wrapper in a local variable, so the wrapper can never be
            # rebuilt after a sweep; the cores must have been kept out of it (prepare_distributed) before train().
            # Checked here, at on_train_begin, i.e. before the first step.
            if getattr(args, "deepspeed", None):
                raise RuntimeError(
                    "DMRGRankCallback: DeepSpeed is not supported (ZeRO partitions the TT cores into flat buffers "
                    "of fixed size that a sweep cannot reshape); train with DDP (the Trainer's default for several "
                    "processes) after tnadapt.optim.prepare_distributed(model), see docs/training_at_scale.md"
                )
            if getattr(args, "fsdp", None):
                raise RuntimeError(
                    "DMRGRankCallback: the Trainer's FSDP integration shards the TT cores (a sweep cannot reshape a "
                    "shard); train with DDP after tnadapt.optim.prepare_distributed(model), or write a plain loop with "
                    "fully_shard(..., ignored_params=sync.ignored_params), see docs/training_at_scale.md"
                )
            _dist.require_sync(adapters, who="DMRGRankCallback")
        self.scheduler = DMRGRankScheduler(optimizer, adapters, self.schedule, unit=self.unit, **self.scheduler_kwargs)
        return self.scheduler

    def _publish(self, state: Any) -> None:
        """Put the scheduler's state where the Trainer's next checkpoint (``trainer_state.json``) takes it."""
        if self.scheduler is None:
            return
        if not isinstance(getattr(state, "stateful_callbacks", None), dict):
            state.stateful_callbacks = {}
        state.stateful_callbacks[self.state_key] = self.scheduler.state_dict()

    def _restore(self, sched: DMRGRankScheduler, saved: Any) -> None:
        """Load the scheduler state a checkpoint carried (ranks and optimizer shapes are checked)."""
        if not isinstance(saved, Mapping):
            raise ValueError(
                f"state.stateful_callbacks[{self.state_key!r}]: expected the DMRGRankScheduler state (an object), "
                f"got {type(saved).__name__}"
            )
        saved = dict(saved)
        # trainer_state.json holds JSON: compare the schedule as JSON too (tuples read back as lists).
        if saved.get("schedule") == json.loads(json.dumps(sched.schedule.describe())):
            saved["schedule"] = sched.schedule.describe()
        sched.load_state_dict(saved)

    def _claim(self, state: Any) -> None:
        """Refuse a second callback (or a second registration of this one) publishing under the same key."""
        claims = getattr(state, _CLAIMS_ATTR, None)
        if not isinstance(claims, dict):
            claims = {}
            setattr(state, _CLAIMS_ATTR, claims)
        other = claims.get(self.state_key)
        if other is self:
            raise ValueError(
                f"DMRGRankCallback: this callback (state key {self.state_key!r}) is registered twice in the "
                "Trainer; its schedule would be stepped twice per event"
            )
        if other is not None:
            raise ValueError(
                f"DMRGRankCallback: two callbacks in this Trainer keep their state under the same key "
                f"{self.state_key!r} in state.stateful_callbacks (the checkpoint would hold only one of them); "
                "give each a distinct name=..., e.g. DMRGRankCallback(GaugeSchedule(8), unit='step', name='gauge')"
            )
        claims[self.state_key] = self

    def _publish_all(self, state: Any) -> None:
        """After a sweep: publish every ``DMRGRankCallback`` of this run, whose saved ``ranks`` must follow the model's."""
        claims = getattr(state, _CLAIMS_ATTR, None)
        others = [cb for cb in claims.values() if cb is not self] if isinstance(claims, dict) else []
        for cb in [self, *others]:
            cb._publish(state)

    def _step(self, state: Any, t: int) -> None:
        records = self._sched().step(t)
        if records:
            self._publish_all(state)
        else:
            self._publish(state)

    def _sched(self) -> DMRGRankScheduler:
        assert self.scheduler is not None
        return self.scheduler

    def _catch_up(self, state: Any) -> None:
        """Apply the milestone a resumed checkpoint left due (see :meth:`on_train_begin`)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if pending > self._sched().t:
                self._step(state, pending)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        self._claim(state)
        self._pending = None
        sched = self._ensure(args, model, optimizer)
        # Completed units of a resumed run.  A checkpoint written mid-epoch has a fractional
        # ``state.epoch``: the epoch in progress has not completed, so floor it (rounding up
        # would skip that epoch's milestone).
        done = state.global_step if self.unit == "step" else math.floor((state.epoch or 0) + 1e-6)
        saved = (getattr(state, "stateful_callbacks", None) or {}).get(self.state_key)
        if saved is not None:  # resuming a checkpoint written by this callback
            self._restore(sched, saved)
            if done > sched.t:
                # Due but not applied yet when the checkpoint was written.  Applied at the next event (on_epoch_begin,
                # or on_train_end when no epoch is left), once every DMRGRankCallback of the Trainer has restored its
                # state against the checkpoint's ranks.
                self._pending = int(done)
        elif done > sched.t:  # a checkpoint without callback state: count on, no sweep now
            sched.t = done
        self._publish(state)

    def on_epoch_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._catch_up(state)

    def on_train_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._catch_up(state)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        if self.unit == "step":
            self._ensure(args, model, optimizer)
            self._catch_up(state)
            self._step(state, int(state.global_step))

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        if self.unit == "epoch":
            self._ensure(args, model, optimizer)
            self._catch_up(state)
            self._step(state, round(state.epoch))
