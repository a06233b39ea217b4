"""``tnadapt.optim`` — rank-adaptive training of tensor-train adapters.

:class:`DMRGRankScheduler` wraps any torch optimizer and applies a rank schedule
(:mod:`~tnadapt.optim.schedules`) to TT adapters with MetaTT's two-site sweep, resetting
only the adapters' optimizer state; :func:`core_param_groups` gives chosen TT cores their own
learning rate in any optimizer, and a :class:`GaugeSchedule` keeps the train in a canonical gauge
during training (constant-rank sweeps).  :mod:`~tnadapt.optim.checkpoint` saves/loads the
optimizer and scheduler without pickle, :mod:`~tnadapt.optim.distributed` keeps DDP/FSDP2
ranks in sync, and :mod:`tnadapt.optim.hf` (imported on demand) plugs the scheduler into
the Hugging Face ``Trainer``.  See ``docs/rank_adaptive.md``.

>>> from tnadapt.optim import PowerLawSchedule
>>> PowerLawSchedule(10, 4, at=[2, 4, 6], gamma=1.0).ranks
[8, 6, 4]
"""

from .checkpoint import load_training_state, save_training_state, training_state_files
from .distributed import TTCoreSync, prepare_distributed, rewrap_ddp
from .param_groups import core_param_groups
from .records import SweepRecord
from .scheduler import DMRGRankScheduler, NonFiniteCoresError, RankClippedWarning, TTAdapterLike
from .schedules import (
    ExplicitSchedule,
    GaugeSchedule,
    GaugeTarget,
    LinearSchedule,
    PowerLawSchedule,
    RankSchedule,
    SweepTarget,
    ToleranceSchedule,
    as_schedule,
    round_half_up,
)
from .state import reset_state

__all__ = [
    "DMRGRankScheduler",
    "ExplicitSchedule",
    "GaugeSchedule",
    "GaugeTarget",
    "LinearSchedule",
    "NonFiniteCoresError",
    "PowerLawSchedule",
    "RankClippedWarning",
    "RankSchedule",
    "SweepRecord",
    "SweepTarget",
    "TTAdapterLike",
    "TTCoreSync",
    "ToleranceSchedule",
    "as_schedule",
    "core_param_groups",
    "load_training_state",
    "prepare_distributed",
    "reset_state",
    "rewrap_ddp",
    "round_half_up",
    "save_training_state",
    "training_state_files",
]
