"""Replacing a Parameter's value in place when its shape changes (rank-adaptive adapters)."""

from __future__ import annotations

import torch

__all__ = ["release_grad_accumulator"]


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
