"""Argument checks shared by the adapter configs and owners of :mod:`tnadapt.nn` (and the rank scheduler).

Every check names the argument, what was expected and what was given, and never coerces:
a string where a number is expected (``"alpha": "nan"`` in a hand-edited
``adapter_config.json``) is refused, not parsed, and floats must be finite.

* :func:`check_float`, :func:`check_int`, :func:`check_bool`, :func:`check_choice`,
  :func:`check_rank` — scalar fields of configs and owner constructors;
* :func:`clip_ranks` / :func:`cap_ranks` — the rank rule: a bond (or Tucker mode) asked for
  more than its largest useful rank is capped there, with one :class:`RankClippedWarning`;
* :func:`check_mode_index` — per-call mode indices (an int, or a ``(batch,)`` integer tensor),
  range-checked without a host synchronisation on accelerators;
* :func:`allocation_guard` — an allocator failure becomes a ``ValueError`` naming the tensor.

>>> check_float("alpha", 0.5)
0.5
>>> check_float("alpha", "nan")
Traceback (most recent call last):
  ...
TypeError: alpha: expected a finite float, got str 'nan'
>>> clip_ranks([100, 3], [8, 16])
([8, 3], (0,))
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

__all__ = [
    "ModeIndexError",
    "RankClippedWarning",
    "allocation_guard",
    "cap_ranks",
    "check_bool",
    "check_choice",
    "check_dtype_name",
    "check_float",
    "check_int",
    "check_mode_index",
    "check_rank",
    "clip_ranks",
    "prefixed",
]


class RankClippedWarning(UserWarning):
    """A requested rank exceeded the largest useful rank of its bond (or Tucker mode) and was capped there."""


class ModeIndexError(IndexError, ValueError):
    """A mode index outside ``[0, size)``: an ``IndexError`` and a ``ValueError``, so either ``except`` catches it."""


def _given(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def check_float(name: str, value: Any, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite ``float`` (``>= minimum``, or ``> minimum`` with ``strict``).

    Accepts Python/NumPy reals (ints too), refuses bools and strings (``TypeError``) and NaN, Inf or
    out-of-bound values (``ValueError``).

    >>> check_float("init_std", 2, minimum=0)
    2.0
    """
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
    expected = f"a finite float{bound}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {expected}, got {_given(value)}")
    out = float(value)
    if not math.isfinite(out) or (minimum is not None and (out <= minimum if strict else out < minimum)):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return out


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (``>= minimum``); bools, floats and strings are refused (``TypeError``).

    >>> check_int("seed", 3)
    3
    """
    expected = "an int" + ("" if minimum is None else f" >= {minimum}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {expected}, got {_given(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool`` (``"false"`` would be truthy, so strings are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool (true/false), got {_given(value)}")
    return value


def check_choice(name: str, value: Any, options: Sequence[str]) -> str:
    """``value`` if it is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}: expected one of {tuple(options)}, got {value!r}")
    return value


def check_dtype_name(name: str, value: Any) -> torch.dtype:
    """The floating ``torch.dtype`` named ``value`` (``"float32"``, ``"bfloat16"``, ...).

    >>> check_dtype_name("dtype", "float64")
    torch.float64
    """
    dtype = getattr(torch, value, None) if isinstance(value, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name}: expected a floating torch dtype name like 'float32', got {value!r}")
    return dtype


def check_rank(name: str, value: Any) -> int | list[int]:
    """A rank argument: an int ``>= 1`` or a non-empty list of them (checked against the bonds later).

    >>> check_rank("rank", (3, 4))
    [3, 4]
    """
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name}: expected an int >= 1 or a non-empty list of them, got {value!r}")
        return [check_int(f"{name}[{k}]", v, minimum=1) for k, v in enumerate(value)]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= 1 or a list of them, got {_given(value)}")
    return check_int(name, value, minimum=1)


def clip_ranks(requested: Sequence[int], limits: Sequence[int]) -> tuple[list[int], tuple[int, ...]]:
    """``(min(requested, limit) per bond, the bonds that were above their limit)``."""
    if len(requested) != len(limits):
        raise ValueError(
            f"ranks: expected {len(limits)} values (one per bond), got {len(requested)}: {list(requested)}"
        )
    capped = [min(int(r), int(m)) for r, m in zip(requested, limits)]
    return capped, tuple(k for k, (r, m) in enumerate(zip(requested, limits)) if int(r) > int(m))


def cap_ranks(
    name: str, requested: Sequence[int], limits: Sequence[int], *, where: str, stacklevel: int = 3
) -> list[int]:
    """:func:`clip_ranks`, warning once (:class:`RankClippedWarning`) when anything was capped.

    ``limits`` are the largest useful ranks (a larger rank adds no expressivity); ``where``
    describes the object (e.g. ``"TT of legs (8, 1, 2, 8)"``) for the message.
    """
    capped, bonds = clip_ranks(requested, limits)
    if bonds:
        warnings.warn(
            f"{name}: requested {list(requested)}, but the largest useful ranks of the {where} are "
            f"{list(limits)} (a larger rank adds no expressivity); capped to {capped}",
            RankClippedWarning,
            stacklevel=stacklevel,
        )
    return capped


def check_mode_index(mode: str, size: int, value: Any, *, allow_tensor: bool = True) -> int | torch.Tensor:
    """Validate one index of mode ``mode`` (of ``size`` slices): an int, or a ``(batch,)`` integer tensor.

    A 0-d tensor is read as an int; a list/tuple of ints becomes a ``(batch,)`` int64 tensor.
    Ints and CPU tensors are range-checked on the host: :class:`ModeIndexError` (a
    ``ValueError`` and an ``IndexError``) naming the mode, its size and the offending
    values.  A tensor on another device is checked with ``torch._assert_async`` (no host
    synchronisation): an out-of-range entry fails at a later synchronisation with a
    message naming the mode and its size — on CUDA as a device-side assert, which leaves
    the CUDA context unusable, as any out-of-bounds gather would.  Validate on the CPU
    (pass CPU index tensors; they are moved to the cores' device after the check) to get
    the exact error instead.  Float/bool/complex tensors raise ``TypeError``, tensors of
    another shape than ``(batch,)`` ``ValueError``; per-sample tensors are refused with
    ``allow_tensor=False``.

    >>> check_mode_index("task", 3, torch.tensor([0, 2]))
    tensor([0, 2])
    >>> check_mode_index("task", 3, [0, 3, 5])
    Traceback (most recent call last):
      ...
    tnadapt.nn.validation.ModeIndexError: task: per-sample indices [3, 5] are out of range for mode 'task' of size 3 (valid: [0, 3))
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"{mode}: expected an integer index for mode {mode!r}, got a {value.dtype} tensor")
        value = int(value)
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{mode}: expected integer indices for mode {mode!r}, got {value!r}")
        value = torch.tensor(list(value), dtype=torch.long)
    if isinstance(value, torch.Tensor):
        if not allow_tensor:
            raise TypeError(f"{mode}: expected one int index for mode {mode!r}, got a per-sample index tensor")
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"{mode}: expected an integer (batch,) tensor for mode {mode!r}, got dtype {value.dtype}")
        if value.ndim != 1:
            raise ValueError(
                f"{mode}: expected a (batch,) tensor of indices for mode {mode!r}, got shape {tuple(value.shape)}"
            )
        _check_index_range(mode, size, value)
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        what = "an int" if not allow_tensor else "an int or a (batch,) integer tensor"
        raise TypeError(f"{mode}: expected {what} for mode {mode!r}, got {_given(value)}")
    index = int(value)
    if not 0 <= index < size:
        raise ModeIndexError(
            f"{mode}: index {index} is out of range for mode {mode!r} of size {size} (valid: [0, {size}))"
        )
    return index


def _check_index_range(mode: str, size: int, index: torch.Tensor) -> None:
    """Range check of a ``(batch,)`` index tensor: exact on the CPU, ``torch._assert_async`` elsewhere."""
    if index.numel() == 0:
        return
    bad = (index < 0) | (index >= size)
    message = f"{mode}: per-sample indices out of range for mode {mode!r} of size {size} (valid: [0, {size}))"
    if index.device.type != "cpu":
        torch._assert_async(~bad.any(), message)
        return
    if bool(bad.any()):
        values = sorted(set(index[bad].tolist()))
        shown = values[:10] + (["..."] if len(values) > 10 else [])
        raise ModeIndexError(
            f"{mode}: per-sample indices {shown} are out of range for mode {mode!r} of size {size} (valid: [0, {size}))"
        )


@contextlib.contextmanager
def allocation_guard(
    name: str, what: str, shapes: Sequence[Sequence[int]], dtype: torch.dtype | None
) -> Iterator[None]:
    """Turn an allocator failure inside the block into a ``ValueError`` naming ``name`` and the tensor sizes."""
    try:
        yield
    except RuntimeError as exc:  # torch.OutOfMemoryError is one; so are "can't allocate" / "overflowed"
        text = str(exc)
        if not isinstance(exc, torch.OutOfMemoryError) and "alloc" not in text and "overflow" not in text:
            raise
        entries = sum(math.prod(int(n) for n in s) for s in shapes)
        size = torch.empty((), dtype=dtype).element_size() if dtype is not None else 4
        raise ValueError(
            f"{name}: the {what} (shapes {[tuple(int(n) for n in s) for s in shapes]}, {entries:,} entries, "
            f"~{entries * size / 2**30:,.1f} GiB) could not be allocated ({text.splitlines()[0]}); "
            "lower the ranks"
        ) from None


@contextlib.contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Prefix the ``ValueError`` raised and the :class:`RankClippedWarning` s emitted inside the block
    with ``"<prefix>: "`` (e.g. the shape group an owner is built for); other warnings pass unchanged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RankClippedWarning)
        try:
            yield
        except ValueError as exc:
            raise ValueError(f"{prefix}: {exc}") from None
    for w in caught:
        clipped = issubclass(w.category, RankClippedWarning)
        warnings.warn(f"{prefix}: {w.message}" if clipped else w.message, w.category, stacklevel=4)
