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

On a resumed run (``trainer.train(resume_from_checkpoint=...)``) the counter starts at
the Trainer's restored progress in *completed* units (``global_step``, or
``floor(state.epoch)`` for a checkpoint written mid-epoch), so the next milestone is still
applied.

The Trainer's LR scheduler is untouched.  Limits: a multi-process Trainer (DDP) cannot
be re-wrapped from a callback, so the callback refuses to run with ``world_size > 1``
(use a plain loop with :func:`tnadapt.optim.rewrap_ddp`); resuming a Trainer checkpoint
written after a rank change needs the model rebuilt at the saved ranks first
(``tnadapt.nn.load_adapter``), because the Trainer loads weights into the model as built.

>>> from tnadapt.optim.hf import DMRGRankCallback
>>> cb = DMRGRankCallback({2: 4}, unit="epoch")
>>> cb.scheduler is None                 # created when training starts
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import TrainerCallback

from . import distributed as _dist
from .records import SweepRecord
from .scheduler import DMRGRankScheduler, TTAdapterLike
from .schedules import ScheduleLike

__all__ = ["DMRGRankCallback"]


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
    **scheduler_kwargs:
        Passed to :class:`~tnadapt.optim.DMRGRankScheduler` (``growth_noise``, ``seed``, ...).
    """

    def __init__(
        self,
        schedule: ScheduleLike,
        *,
        adapters: TTAdapterLike | Sequence[TTAdapterLike] | nn.Module | None = None,
        unit: str = "epoch",
        **scheduler_kwargs: Any,
    ) -> None:
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit: expected 'epoch' or 'step', got {unit!r}")
        self.schedule = schedule
        self.adapters = adapters
        self.unit = unit
        self.scheduler_kwargs = scheduler_kwargs
        self.scheduler: DMRGRankScheduler | None = None

    @property
    def history(self) -> list[SweepRecord]:
        """Records of every sweep so far (empty before training)."""
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

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        sched = self._ensure(args, model, optimizer)
        # Resuming a Trainer run: continue counting from the completed units (no sweep now).  A
        # checkpoint written mid-epoch has a fractional ``state.epoch``: the epoch in progress
        # has not completed, so floor it (rounding up would skip that epoch's milestone).
        t = state.global_step if self.unit == "step" else math.floor((state.epoch or 0) + 1e-6)
        if t > sched.t:
            sched.t = t

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        if self.unit == "step":
            self._ensure(args, model, optimizer).step(int(state.global_step))

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        if self.unit == "epoch":
            self._ensure(args, model, optimizer).step(round(state.epoch))
