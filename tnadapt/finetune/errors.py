"""The error type for mistakes in user input (bad flag values, files, models), and the shared integer check.

>>> check_int("--epochs", 3)
3
>>> check_int("--seed", -1, minimum=0, maximum=2**32 - 1)
Traceback (most recent call last):
...
tnadapt.finetune.errors.UserError: --seed: expected an integer in 0..4294967295, got -1
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_SEED", "UserError", "check_int"]

#: Largest accepted ``--seed`` (seeds are ``0 .. 2**32 - 1``, the range every RNG involved accepts).
MAX_SEED = 2**32 - 1


class UserError(ValueError):
    """A mistake in the user's input.  The CLI prints the message on one line and exits with status 2."""


def check_int(flag: str, value: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) in ``minimum..maximum``, else a :class:`UserError` naming ``flag``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if ok and (maximum is None or value <= maximum):
        return int(value)
    if maximum is not None:
        expected = f"an integer in {minimum}..{maximum}"
    else:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    raise UserError(f"{flag}: expected {expected}, got {value!r}")
