"""Scaled reductions that neither overflow nor underflow (internal).

``torch.linalg.vector_norm`` squares the entries in the working precision: in float32 a
tensor with norm ``1e-30`` has ``||x||² = 1e-60`` and its norm comes out ``0``, one with
norm ``1e30`` comes out ``inf``.  Dividing by the largest magnitude first (as LAPACK's
``nrm2`` does) keeps every square in ``[0, 1]``.
"""

from __future__ import annotations

import torch

__all__ = ["stable_norm"]


def stable_norm(x: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of ``x`` as a 0-d real tensor, safe from overflow and underflow.

    Differentiable (the scale is treated as a constant, which leaves the gradient exact).

    >>> float(stable_norm(torch.full((4,), 1e-30, dtype=torch.float32)))  # doctest: +ELLIPSIS
    2.0000...e-30
    >>> float(stable_norm(torch.full((4,), 1e30, dtype=torch.float32)))  # doctest: +ELLIPSIS
    2.0000...e+30
    """
    if x.numel() == 0:
        return torch.linalg.vector_norm(x)
    scale = x.detach().abs().amax()
    safe = torch.where((scale > 0) & torch.isfinite(scale), scale, torch.ones_like(scale))
    return torch.linalg.vector_norm(x / safe) * safe
