"""Shared input checks for :mod:`tnadapt.tt`.

Every public function validates its arguments through these helpers so that a bad
input always produces a message naming the argument, what was expected and what was
given.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "Scalar",
    "as_int",
    "as_scalar",
    "check_finite",
    "check_int_rank",
    "check_min_rank",
    "check_mode",
    "check_positive_float",
    "check_rank_spec",
    "check_scalar",
    "describe",
]

#: What :func:`as_scalar` returns: a Python number, or a 0-d tensor (kept as is, so autograd reaches it).
Scalar = int | float | complex | torch.Tensor


def check_finite(name: str, tensors: torch.Tensor | Sequence[torch.Tensor]) -> None:
    """Raise ``ValueError`` if ``tensors`` (one tensor, or a list of cores) hold NaN or Inf.

    One reduction per tensor and a single host synchronisation for the whole list: the
    fast path checks that each tensor's *sum* is finite (a NaN or Inf entry always makes
    the sum non-finite, and a sum is one cheap pass); only when some sum is not (a real
    NaN/Inf, or a finite sum that overflowed) does the exact per-entry check run.  For a
    list the message names the offending cores by index.
    """
    single = isinstance(tensors, torch.Tensor)
    items: Sequence[torch.Tensor] = [tensors] if isinstance(tensors, torch.Tensor) else tensors
    if not items:
        return
    with torch.no_grad():  # one context instead of a detach() per tensor
        if bool(torch.stack([t.sum() for t in items]).isfinite().all()):
            return
    flags = torch.stack([torch.isfinite(t.detach()).all() for t in items])
    if bool(flags.all()):
        return
    if single:
        raise ValueError(f"{name}: expected finite values, but it contains NaN or Inf; refusing to decompose it")
    bad = [i for i, ok in enumerate(flags.tolist()) if not ok]
    raise ValueError(
        f"{name}: expected finite values, but core(s) {bad} contain NaN or Inf; refusing to decompose non-finite data"
    )


def check_min_rank(value: int) -> None:
    """Check a ``min_rank`` argument: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"min_rank: expected an int >= 1, got {value!r}")


def check_int_rank(name: str, value: int | None) -> None:
    """Check an optional single rank cap: ``None`` or an int >= 1 (``TypeError`` for non-ints)."""
    if value is None:
        return
    if not _is_int(value):
        raise TypeError(f"{name}: expected an int >= 1, got {type(value).__name__} {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def check_positive_float(name: str, value: float | None, *, allow_zero: bool = True) -> None:
    """Check that an optional tolerance is a finite non-negative (or positive) float."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (v == v) or v in (float("inf"), float("-inf")) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite float {bound}, got {value!r}")


def check_rank_spec(name: str, value: int | Sequence[int] | None, num_bonds: int) -> list[int] | None:
    """Normalise an int-or-per-bond-list rank argument to a list of ``num_bonds`` ints.

    ``None`` stays ``None`` (no limit).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int or a list of ints, got bool {value!r}")
    single = as_int(value)
    if single is not None:  # int, numpy integers, 0-d integer tensors
        values = [single] * num_bonds
    elif isinstance(value, torch.Tensor) and value.ndim == 0:
        raise TypeError(f"{name}: expected an int or a list of {num_bonds} ints, got {value!r}")
    else:
        try:
            items = list(value)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"{name}: expected an int or a list of {num_bonds} ints, got {type(value).__name__}"
            ) from None
        if not all(_is_int(v) for v in items):
            raise TypeError(f"{name}: expected an int or a list of {num_bonds} ints, got {items!r}")
        values = [int(v) for v in items]
        if len(values) != num_bonds:
            raise ValueError(
                f"{name}: expected one rank per bond ({num_bonds} values), got {len(values)}: {list(values)}"
            )
    for v in values:
        if v < 1:
            raise ValueError(f"{name}: ranks must be >= 1, got {values}")
    return values


def as_int(value: object) -> int | None:
    """``value`` as a Python int if it is an integer scalar, else ``None``.

    Integer scalars are Python ints, numpy integers (and 0-d integer arrays) and 0-d
    tensors of any integer dtype (``uint8`` included).  Bools (Python, numpy, or a
    ``torch.bool`` tensor) are not integers here, nor are floats or 1-element 1-D arrays.
    Every entry point that takes an index, a mode or a bond uses this one rule.
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, torch.Tensor):
        integer = not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
        return int(value) if value.ndim == 0 and integer else None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _is_int(value: object) -> bool:
    """An integer scalar in the sense of :func:`as_int`."""
    return as_int(value) is not None


def describe(value: object) -> str:
    """A short description of ``value`` for error messages: type, and shape/dtype for arrays."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"


def as_scalar(value: object) -> Scalar | None:
    """``value`` as a scalar a core can be multiplied by, or ``None`` if it is not scalar-like.

    Scalars are Python and numpy numbers (``numbers.Number``, numpy scalars, 0-d numpy
    arrays of a numeric or bool dtype: converted to the Python number, so a numpy complex
    promotes like a Python complex instead of being cast to real) and 0-d tensors (returned
    unchanged, so a gradient can flow to them).  Tensors and arrays with a dimension, and
    everything else, are not.
    """
    if isinstance(value, torch.Tensor):
        return value if value.ndim == 0 else None
    if isinstance(value, (np.generic, np.ndarray)):
        if value.ndim != 0 or value.dtype.kind not in "biufc":
            return None
        return value.item()  # type: ignore[no-any-return]
    if isinstance(value, numbers.Number):
        return value  # type: ignore[return-value]
    return None


def check_scalar(name: str, value: object, *, expected: str = "a scalar") -> Scalar:
    """:func:`as_scalar`, raising ``TypeError`` naming ``name`` when ``value`` is not a scalar.

    ``expected`` words what the caller accepts (``"a TensorTrain or a scalar"`` for ``x * other``).
    """
    scalar = as_scalar(value)
    if scalar is None:
        raise TypeError(
            f"{name}: expected {expected} (a Python or numpy number, or a 0-d tensor), got {describe(value)}"
        )
    return scalar


def check_mode(name: str, mode: int, order: int) -> int:
    """Normalise a (possibly negative) mode index (an integer scalar, see :func:`as_int`) to ``[0, order)``.

    Raises ``TypeError`` for a non-integer and ``IndexError`` for an out-of-range mode.
    """
    i = as_int(mode)
    if i is None:
        raise TypeError(f"{name}: expected an int mode index, got {type(mode).__name__} {mode!r}")
    if not -order <= i < order:
        raise IndexError(f"{name}: mode {i} is out of range for a tensor train of order {order}")
    return i % order
