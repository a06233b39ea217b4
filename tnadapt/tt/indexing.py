"""Indexing tensor trains: ``x[i, j, ...]`` and batched element gathers.

Per mode an index may be an integer (``int``, numpy integer or 0-d integer tensor; fixes
the mode; negative counts from the end), a ``slice`` (any step, Python semantics; it must
select at least one entry), or a 1-D integer list/tensor (selects entries along the mode, like
``torch.index_select``).  ``...`` expands to full slices; missing trailing indices are
full slices.  Fixed modes are absorbed into a neighbouring core, so the result is a
``TensorTrain`` over the remaining modes, or a 0-d tensor when every mode is fixed.
Use ``.full()`` on the result for a dense tensor.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch

from .ops import absorb_matrices
from .tensor_train import TensorTrain

__all__ = ["gather", "getitem"]


def _expand_index(index: Any, d: int) -> list[Any]:
    items = list(index) if isinstance(index, tuple) else [index]
    n_ellipsis = sum(1 for it in items if it is Ellipsis)
    if n_ellipsis > 1:
        raise IndexError("index: at most one '...' is allowed")
    n_real = len(items) - n_ellipsis
    if n_real > d:
        raise IndexError(f"index: too many indices ({n_real}) for a tensor train of order {d}")
    if n_ellipsis:
        pos = items.index(Ellipsis)
        items = items[:pos] + [slice(None)] * (d - n_real) + items[pos + 1 :]
    return items + [slice(None)] * (d - len(items))


def _as_int(idx: Any) -> int | None:
    """``idx`` as a Python int if it is a scalar integer (int, numpy integer, 0-d integer tensor)."""
    if isinstance(idx, (bool, np.bool_)):
        return None
    if isinstance(idx, torch.Tensor):
        ok = idx.ndim == 0 and not (idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool)
        return int(idx) if ok else None
    try:
        return operator.index(idx)
    except TypeError:
        return None


def _select(core: torch.Tensor, k: int, idx: Any) -> torch.Tensor:
    n = core.shape[1]
    if isinstance(idx, (bool, np.bool_)):
        raise IndexError(f"index[{k}]: boolean indices are not supported")
    i = _as_int(idx)
    if i is not None:
        if not -n <= i < n:
            raise IndexError(f"index[{k}]: {i} is out of range for mode {k} of size {n}")
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
    except (TypeError, ValueError, RuntimeError):
        raise IndexError(
            f"index[{k}]: expected an int, a slice or a non-empty 1-D integer index, got {idx!r}"
        ) from None
    if tensor.ndim != 1 or tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.numel() == 0:
        raise IndexError(f"index[{k}]: expected an int, a slice or a non-empty 1-D integer index, got {idx!r}")
    if bool(((tensor < -n) | (tensor >= n)).any()):
        raise IndexError(f"index[{k}]: entries out of range for mode {k} of size {n}: {tensor.tolist()}")
    return core.index_select(1, tensor % n)


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

    Negative entries count from the end of their mode, as in :func:`getitem`.  Cost
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
    if indices.ndim != 2 or indices.shape[1] != tt.order or indices.is_floating_point() or indices.dtype == torch.bool:
        raise ValueError(
            f"indices: expected an integer tensor of shape (batch, {tt.order}), got "
            f"{indices.dtype} {tuple(indices.shape)}"
        )
    indices = indices.to(tt.device)
    sizes = torch.tensor(tt.shape, device=tt.device)
    if bool(((indices < -sizes) | (indices >= sizes)).any()):
        raise IndexError(f"indices: entries out of range for shape {tt.shape}")
    indices = indices % sizes
    batch = indices.shape[0]
    env = tt.cores[0].new_ones(batch, 1)
    for k, core in enumerate(tt.cores):
        slices = core.permute(1, 0, 2)[indices[:, k]]  # (batch, r0, r1)
        env = torch.bmm(env.unsqueeze(1), slices).squeeze(1)
    return env.squeeze(1)
