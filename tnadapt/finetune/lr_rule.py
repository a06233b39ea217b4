"""Default learning rates: a power law in the run's number of optimiser steps, one per method family.

The best AdamW rate of an adapter falls as its run gets longer (more optimiser steps).  Measured with
``examples/frontier.py --rate-study`` (docs/results.md, "Learning rate vs run length": MiniLM-L6, q/v adapters, the
two tuning tasks, runs of 48, 192 and 564 steps, the best of 3–4 swept rates at each length, every best inside
its grid), the best rates lie on

    lr(steps) = lr_48 * (48 / steps) ** power

fitted by least squares in log-log: MetaTT-4D best 1e-2 / 2e-3 / 2e-3 → ``8.2e-3 * (48 / steps) ** 0.68``; peft LoRA
r=8 best 1e-2 / 2e-3 / 1e-3 → ``9.1e-3 * (48 / steps) ** 0.95``.  A fixed 5e-3 (the old default) lost 2.4 points
of polarity accuracy to 2e-3 at 564 steps.

with ``steps`` clamped to the measured range ``[48, 564]`` (a run outside it gets the rate of the nearest end: the
rule is not extrapolated).  ``tnadapt finetune`` without ``--lr`` uses this rule (the resolved rate is printed and
recorded in ``run_config.json``, so ``--resume`` continues at the same rate); so does
:class:`~tnadapt.finetune.trainer.TrainSettings` with ``lr=None``.  Families measured at one length only keep a
constant rate (``power = 0``); language modelling (``--task lm``) keeps the fixed rate it always had, since the rule
was measured on classification.

>>> default_lr("metatt-4d", 48), default_lr("metatt-4d", 10), default_lr("head", 564)
(0.0082, 0.0082, 0.01)
>>> f"{default_lr('metatt-4d', 192):.2g} {default_lr('metatt-4d', 564):.2g} {default_lr('lora', 564):.2g}"
'0.0032 0.0015 0.00088'
>>> round(default_lr("metatt-4d", 564), 5) == round(default_lr("metatt-4d", 5000), 5)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LM_LR", "MEASURED_STEPS", "RULES", "RateRule", "default_lr", "optimiser_steps", "rule_for"]

#: The run lengths (optimiser steps) the rule was measured between; it is flat outside them.
MEASURED_STEPS = (48, 564)
#: The default rate of ``--task lm`` (not covered by the measurements).
LM_LR = 5e-3


@dataclass(frozen=True)
class RateRule:
    """``lr(steps) = lr_48 * (48 / clamp(steps, *MEASURED_STEPS)) ** power``.

    >>> RateRule(1e-2, 1.0)(96), RateRule(3e-3)(1000)
    (0.005, 0.003)
    """

    lr_48: float
    power: float = 0.0

    def __post_init__(self) -> None:
        if not (self.lr_48 > 0 and math.isfinite(self.lr_48)):
            raise ValueError(f"lr_48: expected a positive finite rate, got {self.lr_48!r}")
        if not (self.power >= 0 and math.isfinite(self.power)):
            raise ValueError(f"power: expected a finite exponent >= 0, got {self.power!r}")

    def __call__(self, steps: int) -> float:
        lo, hi = MEASURED_STEPS
        clamped = min(max(int(steps), lo), hi)
        return self.lr_48 * (lo / clamped) ** self.power


#: Method family -> its rule.  ``metatt``: MetaTT-4D r=8 alpha 2 (also MetaTT-5D, (4+1)D and the LoTR preset, which
#: chose MetaTT's rate at 48 steps); ``lora``: peft LoRA r=8; VeRA, TeRA and the head alone were swept at 48 steps
#: only and keep a constant.
RULES: dict[str, RateRule] = {
    "metatt": RateRule(8.2e-3, 0.68),
    "lora": RateRule(9.1e-3, 0.95),
    "vera": RateRule(5e-3),
    "tera": RateRule(1e-2),
    "head": RateRule(1e-2),
}

_FAMILY = {"metatt-4d": "metatt", "metatt-5d": "metatt", "metatt-4+1d": "metatt", "lotr": "metatt"}


def rule_for(method: str) -> RateRule:
    """The rule of ``method`` (a ``--adapter`` name); unknown names get a constant 5e-3.

    >>> rule_for("metatt-5d") is RULES["metatt"], rule_for("lora") is RULES["lora"]
    (True, True)
    """
    return RULES.get(_FAMILY.get(method, method), RateRule(5e-3))


def optimiser_steps(examples: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps of a run: ``epochs * ceil(examples / batch_size)``.

    >>> optimiser_steps(3000, 16, 3)
    564
    """
    return int(epochs) * math.ceil(int(examples) / int(batch_size))


def default_lr(method: str, steps: int, *, task: str = "classification") -> float:
    """The default learning rate of ``method`` for a run of ``steps`` optimiser steps (see the module doc)."""
    if task == "lm":
        return LM_LR
    return rule_for(method)(steps)
