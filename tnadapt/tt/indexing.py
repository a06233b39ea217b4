"""Indexing tensor trains: ``x[i, j, ...]`` and batched element gathers.

Per mode an index may be an integer (``int``, numpy integer or 0-d integer tensor; fixes
the mode; negative counts from the end), a ``slice`` (any step, Python semantics; it must
select at least one entry), or a 1-D integer list/array/tensor (selects entries along the mode,
like ``torch.index_select``).  ``...`` expands to full slices; missing trailing indices are
full slices.  Fixed modes are absorbed into a neighbouring core, so the result is a
``TensorTrain`` over the remaining modes, or a 0-d tensor when every mode is fixed.
Use ``.full()`` on the result for a dense tensor.

Index dtypes (one rule for :func:`getitem` and :func:`gather`): every integer dtype is an
index — ``int64``, ``int32``, ``int16``, ``int8`` and the unsigned ``uint8``/``uint16``/
``uint32``/``uint64`` (which cannot count from the end).  Unlike plain torch indexing, a
``uint8`` tensor is read as integer positions, never as a mask.  Booleans (``True``, bool
lists, arrays and tensors) are refused: a mask is not an index here; pass its positions,
``mask.nonzero().squeeze(1)``.  Floating and complex indices are refused as well.
"""

from __future__ import annotations

from typing import Any

import torch

from ._errors import as_int, describe
from .ops import absorb_matrices
from .tensor_train import TensorTrain

__all__ = ["gather", "getitem"]

_MASK_HINT = "booleans are not indices here (for a mask pass its positions, mask.nonzero().squeeze(1))"


def _expand_index(index: Any, d: int) -> list[Any]:
    items = list(index) if isinstance(index, tuple) else [index]
    n_ellipsis = sum(1 for it in items if it is Ellipsis)
    if n_ellipsis > 1:
        raise IndexError("index: at most one '...' is allowed")
    n_real = len(items) - n_ellipsis
    if n_real > d:
        raise IndexError(f"index: too many indices ({n_real}) for a tensor train of order {d}")
    if n_ellipsis:
        pos = next(i for i, it in enumerate(items) if it is Ellipsis)  # not list.index: arrays compare elementwise
        items = items[:pos] + [slice(None)] * (d - n_real) + items[pos + 1 :]
    return items + [slice(None)] * (d - len(items))


def _is_integer_dtype(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _wrap_indices(indices: torch.Tensor, sizes: torch.Tensor | int) -> torch.Tensor | None:
    """Integer ``indices`` (any integer dtype) as ``int64`` positions in ``[0, sizes)``, or ``None`` if any is out of range.

    Entries of a signed dtype may be negative (``-n <= i < n``, counting from the end);
    unsigned entries must satisfy ``0 <= i < n`` (a ``uint64`` above ``2**63 - 1`` wraps
    negative in ``int64`` and is caught by that bound).  ``sizes`` broadcasts against
    ``indices`` (a mode size, or one size per column).  One host synchronisation.
    """
    wide = indices.to(torch.int64)
    low = -sizes if indices.dtype.is_signed else 0
    if bool(((wide < low) | (wide >= sizes)).any()):
        return None
    return wide % sizes


_EXPECTED = "expected an int, a slice or a non-empty 1-D integer index"


def _bad_index(k: int, idx: Any, *, boolean: bool = False) -> IndexError:
    got = describe(idx) if isinstance(idx, torch.Tensor) else repr(idx)
    if boolean:
        return IndexError(f"index[{k}]: boolean indices are not supported: {_EXPECTED}, got {got}; {_MASK_HINT}")
    return IndexError(f"index[{k}]: {_EXPECTED}, got {got}")


def _select(core: torch.Tensor, k: int, idx: Any) -> torch.Tensor:
    n = core.shape[1]
    i = as_int(idx)
    if i is not None:
        if not -n <= i < n:
            raise IndexError(f"index[{k}]: {i} is out of range for mode {k} of size {n} (expected {-n} <= i < {n})")
        return core[:, i % n, :]
    if isinstance(idx, slice):
        positions = range(n)[idx]  # Python semantics, negative steps included
        if len(positions) == 0:
            raise IndexError(f"index[{k}]: slice {idx} selects no entries of mode {k} (size {n})")
        if positions.step == 1:
            return core[:, positions.start : positions.stop, :]
        return core.index_select(1, torch.arange(positions.start, positions.stop, positions.step, device=core.device))
    try:
        tensor = torch.as_tensor(idx, device=core.device)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise _bad_index(k, idx) from None
    if tensor.dtype == torch.bool:
        raise _bad_index(k, idx, boolean=True)
    if tensor.ndim != 1 or tensor.numel() == 0 or not _is_integer_dtype(tensor.dtype):
        raise _bad_index(k, idx)
    positions_t = _wrap_indices(tensor, n)
    if positions_t is None:
        low = -n if tensor.dtype.is_signed else 0
        raise IndexError(
            f"index[{k}]: entries out of range for mode {k} of size {n}: {tensor.tolist()} "
            f"(expected {low} <= i < {n} for {tensor.dtype} entries)"
        )
    return core.index_select(1, positions_t)


def getitem(tt: TensorTrain, index: Any, *, dense: bool = False) -> TensorTrain | torch.Tensor:
    """``tt[index]``; see the module docstring.

    With ``dense=True`` the result is always a dense tensor (of the shape NumPy-style indexing
    of ``tt.full()`` would give), contracted from the small indexed train — the full tensor is
    never formed; the size guard of :meth:`TensorTrain.full` applies to the result.

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((3, 4, 5), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> bool(torch.allclose(x[1, :, 2:4].full(), x.full()[1, :, 2:4]))
    True
    >>> bool(torch.isclose(x[0, 1, 2], x.full()[0, 1, 2]))
    True
    >>> getitem(x, (1, slice(None), -1), dense=True).shape
    torch.Size([4])
    """
    items = _expand_index(index, tt.order)
    out = absorb_matrices([_select(core, k, idx) for k, (core, idx) in enumerate(zip(tt.cores, items))])
    if dense and isinstance(out, TensorTrain):
        return out.full()
    return out


def gather(tt: TensorTrain, indices: torch.Tensor) -> torch.Tensor:
    """Entries at the multi-indices in ``indices`` (integer tensor ``(batch, d)``) → ``(batch,)``.

    ``indices`` may have any integer dtype, as the index tensors of :func:`getitem` (booleans
    are refused).  Negative entries of a signed dtype count from the end of their mode.  Cost
    ``O(batch d r^2)``; differentiable with respect to the cores.

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((3, 4), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> idx = torch.tensor([[0, 1], [2, -1]])
    >>> bool(torch.allclose(gather(x, idx), x.full()[idx[:, 0], idx[:, 1]]))
    True
    """
    if not isinstance(indices, torch.Tensor):
        indices = torch.as_tensor(indices)
    if indices.ndim != 2 or indices.shape[1] != tt.order or not _is_integer_dtype(indices.dtype):
        hint = f"; {_MASK_HINT}" if indices.dtype == torch.bool else ""
        raise ValueError(
            f"indices: expected an integer tensor of shape (batch, {tt.order}), got "
            f"{indices.dtype} {tuple(indices.shape)}{hint}"
        )
    sizes = torch.tensor(tt.shape, device=tt.device)
    wrapped = _wrap_indices(indices.to(tt.device), sizes)
    if wrapped is None:
        low = "-n_k" if indices.dtype.is_signed else "0"
        raise IndexError(
            f"indices: entries out of range for shape {tt.shape} "
            f"(expected {low} <= indices[:, k] < n_k for {indices.dtype} entries)"
        )
    indices = wrapped
    batch = indices.shape[0]
    env = tt.cores[0].new_ones(batch, 1)
    for k, core in enumerate(tt.cores):
        slices = core.permute(1, 0, 2)[indices[:, k]]  # (batch, r0, r1)
        env = torch.bmm(env.unsqueeze(1), slices).squeeze(1)
    return env.squeeze(1)
