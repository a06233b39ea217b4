"""Writing a Parameter's value in place (rank-adaptive adapters), the one place core values are stored.

Every adapter Parameter is created by :func:`new_parameter` and rewritten by
:func:`write_parameter` (``GlobalTTAdapter.set_cores``, hence the rank scheduler, rank growth
and LoRA compression), so all of them hold **contiguous** data.  Decompositions hand back
cores with permuted strides (a core ``(3, 1, 3)`` with strides ``(1, 9, 3)`` after a sweep over a
size-1 mode, orthogonal inits built from a transposed ``Q``); autograd gives a Parameter
gradients with its own strides, and optimizers that flatten gradients with ``view(-1)``
(``torch.optim.LBFGS``) fail on non-contiguous ones.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["new_parameter", "release_grad_accumulator", "settle_parameter", "write_parameter"]


def new_parameter(value: torch.Tensor, *, requires_grad: bool = True) -> nn.Parameter:
    """An ``nn.Parameter`` over a contiguous copy-if-needed of ``value`` (detached).

    >>> new_parameter(torch.ones(3, 2).T).is_contiguous()
    True
    """
    return nn.Parameter(value.detach().contiguous(), requires_grad=requires_grad)


def write_parameter(param: torch.Tensor, value: torch.Tensor) -> None:
    """Replace ``param``'s value by a contiguous copy of ``value`` in ``param``'s dtype/device.

    The shape may change.  ``param`` keeps its identity and ``requires_grad``; its gradient
    and cached gradient accumulator are dropped (:func:`settle_parameter`).  The copy never
    aliases ``value``.

    >>> p = torch.nn.Parameter(torch.zeros(2, 2))
    >>> write_parameter(p, torch.arange(6.0).reshape(3, 2).T)
    >>> tuple(p.shape), p.is_contiguous(), p.grad is None
    ((2, 3), True, True)
    """
    with torch.no_grad():
        param.data = (
            value.detach().to(device=param.device, dtype=param.dtype).clone(memory_format=torch.contiguous_format)
        )
    settle_parameter(param)


def settle_parameter(param: torch.Tensor) -> None:
    """After a write: make ``param``'s data contiguous (copying only if it is not), clear its gradient
    and release its cached gradient accumulator (see :func:`release_grad_accumulator`)."""
    if not param.data.is_contiguous():
        with torch.no_grad():
            param.data = param.data.contiguous()
    param.grad = None
    release_grad_accumulator(param)


def release_grad_accumulator(param: torch.Tensor) -> None:
    """Make autograd forget ``param``'s cached gradient accumulator after a shape change.

    A leaf keeps (weakly) one ``AccumulateGrad`` node, which records the leaf's shape when
    it is created.  ``param.data = new`` drops that node only when the dtype or device
    changes, not the shape, so while any old graph is still alive (typically the previous
    step's ``loss``) the next backward would check the new gradient against the *old*
    shape and fail ("returned an invalid gradient ... expected shape compatible with").
    Swapping in a placeholder of another dtype and back drops the node; the next forward
    creates a fresh one.  The parameter's value, identity and ``requires_grad`` are kept.

    >>> p = torch.nn.Parameter(torch.ones(2, 3))
    >>> loss = (2 * p).sum(); loss.backward()          # `loss` keeps the old graph alive
    >>> p.data = torch.ones(2, 4); p.grad = None
    >>> release_grad_accumulator(p)
    >>> (2 * p).sum().backward(); tuple(p.grad.shape)
    (2, 4)
    """
    data = param.data
    other = torch.float32 if data.dtype == torch.float64 else torch.float64
    with torch.no_grad():
        param.data = torch.empty(0, dtype=other, device=data.device)
        param.data = data
