"""Scaled reductions that neither overflow nor underflow (internal).

``torch.linalg.vector_norm`` squares the entries in the working precision: in float32 a
tensor with norm ``1e-30`` has ``||x||² = 1e-60`` and its norm comes out ``0``, one with
norm ``1e30`` comes out ``inf``.  Dividing by the largest magnitude first (as LAPACK's
``nrm2`` does) keeps every square in ``[0, 1]``.
"""

from __future__ import annotations

import torch

__all__ = ["stable_norm"]


def stable_norm(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Frobenius norm of ``x`` (over ``dim`` if given), real, safe from overflow and underflow.

    Without ``dim`` a 0-d tensor; with ``dim`` the norms along that dimension (like
    ``torch.linalg.vector_norm(x, dim=dim)``), each scaled by its own largest magnitude.
    Differentiable (the scale is treated as a constant, which leaves the gradient exact).

    >>> float(stable_norm(torch.full((4,), 1e-30, dtype=torch.float32)))  # doctest: +ELLIPSIS
    2.0000...e-30
    >>> float(stable_norm(torch.full((4,), 1e30, dtype=torch.float32)))  # doctest: +ELLIPSIS
    2.0000...e+30
    >>> stable_norm(torch.tensor([[3e-30, 4e-30], [3e30, 4e30]]), dim=1)
    tensor([5.0000e-30, 5.0000e+30])
    """
    if x.numel() == 0:
        return torch.linalg.vector_norm(x, dim=dim)
    scale = x.detach().abs().amax(dim=() if dim is None else dim, keepdim=True)
    safe = torch.where((scale > 0) & torch.isfinite(scale), scale, torch.ones_like(scale))
    norms = torch.linalg.vector_norm(x / safe, dim=dim)
    return norms * (safe.reshape(()) if dim is None else safe.squeeze(dim))
