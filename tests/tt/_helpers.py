"""Shared strategies, dense references and settings for the ``tnadapt.tt`` property tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from hypothesis import settings
from hypothesis.strategies import SearchStrategy

from tnadapt import testing
from tnadapt.tt import TensorTrain

#: The parameter space of the issue's bar: orders 1..7, small modes and ranks, every dtype.
ORDERS = range(1, 8)
MODE_SIZES = range(1, 5)
RANKS = range(1, 5)
MAX_NUMEL = 2048


def trains(**overrides: Any) -> SearchStrategy[TensorTrain]:
    """:func:`tnadapt.testing.tensor_trains` over the suite's default parameter space."""
    kwargs: dict[str, Any] = {
        "orders": ORDERS,
        "mode_sizes": MODE_SIZES,
        "ranks": RANKS,
        "dtypes": testing.DTYPES,
        "max_numel": MAX_NUMEL,
    }
    kwargs.update(overrides)
    return testing.tensor_trains(**kwargs)


def scaled(fraction: float) -> settings:
    """Settings with a fraction of the active profile's ``max_examples`` (at least 5)."""
    return settings(max_examples=max(5, int(settings().max_examples * fraction)))


#: Extreme norms per real dtype: ``||x||²`` out of range (float32: 1e±60), or near the ends of float64's
#: exponent range (1e±300) where any unscaled square or product of two norms over- or underflows.
EXTREME_SCALES: dict[torch.dtype, tuple[float, ...]] = {
    torch.float32: (1e-30, 1e30),
    torch.float64: (1e-30, 1e30, 1e-150, 1e150, 1e-300, 1e300),
}


def extreme_scales(dtype: torch.dtype) -> SearchStrategy[float]:
    """A strategy over :data:`EXTREME_SCALES` for ``dtype`` (complex dtypes use their real counterpart's)."""
    from hypothesis import strategies as st

    return st.sampled_from(EXTREME_SCALES[dtype.to_real() if dtype.is_complex else dtype])


def wide(dtype: torch.dtype) -> torch.dtype:
    """float64 / complex128 counterpart of ``dtype``."""
    return torch.complex128 if dtype.is_complex else torch.float64


def reference(x: TensorTrain) -> torch.Tensor:
    """Dense tensor of ``x`` computed in double precision by an independent einsum chain."""
    return testing.dense(x.to(wide(x.dtype)))


def rtol(x: TensorTrain | torch.dtype) -> float:
    return testing.default_rtol(x if isinstance(x, torch.dtype) else x.dtype)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense_tt_svd_tails(tensor: torch.Tensor, ranks: Sequence[int], direction: str = "right") -> torch.Tensor:
    """Per-bond discarded norms of a dense sequential TT-SVD truncating bond ``k`` to ``ranks[k]``.

    ``direction="right"`` peels modes from the left (bond 0 first), ``"left"`` from the right.
    This is what rounding and the canonical two-site sweep must report, computed densely.
    """
    a = tensor.detach().to(wide(tensor.dtype))
    shape = tuple(a.shape)
    d = len(shape)
    tails = torch.zeros(max(d - 1, 0), dtype=torch.float64)
    if direction == "right":
        rest = a.reshape(1, -1)
        for k in range(d - 1):
            u, s, vh = torch.linalg.svd(rest.reshape(rest.shape[0] * shape[k], -1), full_matrices=False)
            r = ranks[k]
            tails[k] = torch.linalg.vector_norm(s[r:])
            rest = s[:r].to(vh.dtype).unsqueeze(1) * vh[:r]
    else:
        rest = a.reshape(-1, 1)
        for k in range(d - 1, 0, -1):
            u, s, vh = torch.linalg.svd(rest.reshape(-1, shape[k] * rest.shape[1]), full_matrices=False)
            r = ranks[k - 1]
            tails[k - 1] = torch.linalg.vector_norm(s[r:])
            rest = u[:, :r] * s[:r].to(u.dtype).unsqueeze(0)
    return tails


def truncation_ranks(singular_values: Sequence[torch.Tensor], discarded: torch.Tensor) -> list[int]:
    """The rank each bond was truncated to, read off a report: the smallest ``r`` whose tail
    ``||s[r:]||`` is the reported discarded norm (both come from the same reported ``s``, so
    they agree to round-off).

    Differs from the final ranks when redundant ranks were dropped after the sweep.
    """
    ranks = []
    for s, gone in zip(singular_values, discarded.tolist()):
        real = s.dtype.to_real() if s.dtype.is_complex else s.dtype
        slack = 1e-3 * gone + 100 * torch.finfo(real).eps * (float(s.max()) if s.numel() else 0.0)
        tails = [float(torch.linalg.vector_norm(s[r:].to(torch.float64))) for r in range(len(s) + 1)]
        ranks.append(next(r for r, t in enumerate(tails) if t <= gone + slack))
    return ranks


def as_float(t: torch.Tensor) -> float:
    """A real 0-d tensor as a Python float (in double precision)."""
    return float(t.detach().to(torch.float64))


#: How :func:`degenerate_trains` breaks a train: not at all, one zero core, every core zero, zero-padded ranks.
DEGENERACIES = ("none", "one zero core", "all zero", "zero padded")


def degenerate_trains(**overrides: Any) -> SearchStrategy[TensorTrain]:
    """:func:`trains` made degenerate by a drawn entry of :data:`DEGENERACIES`, some put in canonical form.

    A zero core gives the zero tensor (MetaTT's default adapter init has a zero first core);
    zero-padded ranks (``pad_ranks(x, r + extra)``) give a non-zero tensor whose unfoldings
    are rank deficient.  Both make the QR factorisations of a sweep singular.  With a drawn
    probability the result is orthogonalised to a drawn centre, so tracked-centre code
    paths see degenerate trains too.
    """
    from hypothesis import strategies as st

    from tnadapt.tt import pad_ranks

    @st.composite
    def build(draw: st.DrawFn) -> TensorTrain:
        x = draw(trains(**overrides))
        kind = draw(st.sampled_from(DEGENERACIES))
        cores = list(x.cores)
        if kind == "one zero core":
            k = draw(st.integers(0, x.order - 1))
            cores[k] = torch.zeros_like(cores[k])
        elif kind == "all zero":
            cores = [torch.zeros_like(c) for c in cores]
        out = TensorTrain(cores)
        if kind == "zero padded" and out.order > 1:
            out = pad_ranks(out, [r + draw(st.integers(1, 2)) for r in out.bond_dims])
        if draw(st.booleans()):
            out = out.orthogonalize(draw(st.integers(0, out.order - 1)))
        return out

    return build()


def leaf_copy(x: TensorTrain) -> TensorTrain:
    """``x`` with detached copies of its cores that require grad (same centre): a fresh autograd leaf per core."""
    return TensorTrain([c.detach().clone().requires_grad_(True) for c in x.cores], center=x.center)


def core_grads(fn: Callable[[TensorTrain], torch.Tensor], x: TensorTrain) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``fn(leaf_copy(x))`` (a real 0-d tensor) and its gradient with respect to every core (zeros if unused)."""
    leaf = leaf_copy(x)
    value = fn(leaf)
    grads = torch.autograd.grad(value, list(leaf.cores), allow_unused=True)
    return value.detach(), [torch.zeros_like(c) if g is None else g for c, g in zip(leaf.cores, grads)]
