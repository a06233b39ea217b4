"""Algebra on tensor trains: sums, scaling, Hadamard product, inner products, mode products.

Rank rules (``r`` and ``s`` are the bond ranks of the operands):

* ``a + b`` and ``a - b``: ranks ``r_k + s_k`` (block-diagonal cores);
* ``c * a``: ranks unchanged (the scalar multiplies the first core);
* ``a * b`` (Hadamard): ranks ``r_k * s_k`` (Kronecker product of slices).

``dot`` contracts left to right at cost ``O(d n r^3)`` and memory ``O(n r^2)``;
``norm`` orthogonalises and takes the Frobenius norm of the centre core, so it never
squares the condition number and cannot overflow/underflow through ``dot(x, x)``; its
gradient ``X / ||X||`` (``0`` at ``X = 0``) comes from one contraction in that canonical
gauge, not from differentiating the QR sweep (see :func:`norm`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import opt_einsum
import torch
from torch.autograd.function import once_differentiable

from ._errors import Scalar, check_mode, check_scalar
from ._numerics import stable_norm
from .tensor_train import TensorTrain

__all__ = ["absorb_matrices", "add", "check_compatible", "contract", "dot", "hadamard", "norm", "scale"]


def check_compatible(a: TensorTrain, b: TensorTrain, op: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` share shape, dtype and device."""
    if not isinstance(b, TensorTrain):
        raise TypeError(f"{op}: expected a TensorTrain operand, got {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{op}: shapes differ: {a.shape} vs {b.shape}")
    if a.dtype != b.dtype:
        raise ValueError(f"{op}: dtypes differ: {a.dtype} vs {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{op}: devices differ: {a.device} vs {b.device}")


def add(a: TensorTrain, b: TensorTrain) -> TensorTrain:
    """``a + b`` with block-diagonal cores (ranks add).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((2, 3, 4), 2, generator=torch.Generator().manual_seed(1))
    >>> (x + x).ranks
    (1, 4, 4, 1)
    """
    check_compatible(a, b, "add")
    d = a.order
    if d == 1:
        return TensorTrain([a.cores[0] + b.cores[0]])
    cores = []
    for k, (ga, gb) in enumerate(zip(a.cores, b.cores)):
        if k == 0:
            cores.append(torch.cat([ga, gb], dim=2))
        elif k == d - 1:
            cores.append(torch.cat([ga, gb], dim=0))
        else:
            ra0, n, ra1 = ga.shape
            rb0, _, rb1 = gb.shape
            top = torch.cat([ga, ga.new_zeros(ra0, n, rb1)], dim=2)
            bottom = torch.cat([gb.new_zeros(rb0, n, ra1), gb], dim=2)
            cores.append(torch.cat([top, bottom], dim=0))
    return TensorTrain(cores)


def scale(a: TensorTrain, alpha: float | complex | torch.Tensor) -> TensorTrain:
    """``alpha * a``: the scalar multiplies the core at the orthogonality centre (or the first).

    ``alpha`` is a Python or numpy number (numpy scalars and 0-d arrays are converted to
    the Python number) or a 0-d tensor (kept, so a gradient reaches it); anything else
    raises ``TypeError``.  The result dtype follows torch's promotion for ``core * alpha``:
    a complex ``alpha`` (Python, numpy or 0-d tensor) turns a real train complex, promoting
    every core; a real scalar keeps the train's dtype.

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((2, 3), 2, generator=torch.Generator().manual_seed(0))
    >>> scale(x, 2j).dtype
    torch.complex64
    """
    return scale_unchecked(a, check_scalar("alpha", alpha))


def scale_unchecked(a: TensorTrain, alpha: Scalar, *, divide: bool = False) -> TensorTrain:
    """:func:`scale` (or, with ``divide=True``, division by ``alpha``) for an ``alpha`` already checked by
    :func:`~tnadapt.tt._errors.check_scalar`; the operators of :class:`TensorTrain` name their operand there."""
    k = a.center if a.center is not None else 0
    cores = list(a.cores)
    scaled = cores[k] / alpha if divide else cores[k] * alpha
    if scaled.dtype != a.dtype:
        cores = [c.to(scaled.dtype) for c in cores]
    cores[k] = scaled
    return TensorTrain(cores, center=a.center)


def hadamard(a: TensorTrain, b: TensorTrain) -> TensorTrain:
    """Elementwise product; slices are Kronecker products so ranks multiply."""
    check_compatible(a, b, "hadamard")
    cores = []
    for ga, gb in zip(a.cores, b.cores):
        ra0, n, ra1 = ga.shape
        rb0, _, rb1 = gb.shape
        cores.append(torch.einsum("anb,cnd->acnbd", ga, gb).reshape(ra0 * rb0, n, ra1 * rb1))
    return TensorTrain(cores)


def _left_env_step(env: torch.Tensor, ga: torch.Tensor, gb: torch.Tensor) -> torch.Tensor:
    """One step of ``<a, b>`` from the left: ``env (ra0, rb0) -> sum_i ga[:, i, :]ᴴ env gb[:, i, :]``, ``(ra1, rb1)``."""
    ra0, n, ra1 = ga.shape
    rb0, _, rb1 = gb.shape
    # (ra0, rb0) x (rb0, n*rb1) -> (ra0, n, rb1); then contract (ra0, n) with conj(ga).
    tmp = (env @ gb.reshape(rb0, n * rb1)).reshape(ra0 * n, rb1)
    return ga.reshape(ra0 * n, ra1).mH @ tmp


def _right_env_step(env: torch.Tensor, ga: torch.Tensor, gb: torch.Tensor) -> torch.Tensor:
    """Mirror image of :func:`_left_env_step`: ``env (rb1, ra1) -> sum_i gb[:, i, :] env ga[:, i, :]ᴴ``, ``(rb0, ra0)``."""
    ra0, n, ra1 = ga.shape
    rb0, _, rb1 = gb.shape
    tmp = (gb.reshape(rb0 * n, rb1) @ env).reshape(rb0, n * ra1)
    return tmp @ ga.reshape(ra0, n * ra1).mH


def dot(a: TensorTrain, b: TensorTrain) -> torch.Tensor:
    """Inner product ``sum conj(a) * b`` as a 0-d tensor, ``O(d n r^3)`` time.

    A polynomial in the cores, so its gradient exists everywhere (zero trains included).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((3, 3, 3), 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    >>> bool(torch.isclose(dot(x, x), (x.full() ** 2).sum()))
    True
    """
    check_compatible(a, b, "dot")
    env = torch.ones(1, 1, dtype=a.dtype, device=a.device)  # (ra, rb)
    for ga, gb in zip(a.cores, b.cores):
        env = _left_env_step(env, ga, gb)
    return env.reshape(())


def _norm_and_basis(a: TensorTrain) -> tuple[torch.Tensor, TensorTrain]:
    """``||a||`` from the centre core of a canonical form of ``a``, and that canonical form (no autograd).

    The form is ``a`` itself when its centre is known, else one QR sweep to centre ``d-1``.
    """
    from .canonical import orthogonalize_unchecked

    with torch.no_grad():
        basis = a if a.center is not None else orthogonalize_unchecked(a, a.order - 1)
        assert basis.center is not None
        value = stable_norm(basis.cores[basis.center])
        # LAPACK's Householder QR can leave a NaN in Q alone (a NaN leading entry of a column still
        # gives a finite R), so the centre core may look finite: flag non-finite cores explicitly,
        # on the device (no host synchronisation; amax propagates NaN and never overflows).
        peaks = torch.stack([c.abs().amax() for c in a.cores])
        return torch.where(peaks.isfinite().all(), value, peaks.sum()), basis


def _projected_center(basis: TensorTrain, cores: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The centre core of the train ``cores`` in the gauge of the canonical ``basis`` (centre ``c``).

    ``left = Yᴴ_{<c} X_{<c}`` and ``right = X_{>c} Yᴴ_{>c}`` (``Y`` the basis cores) are the
    gauge matrices that :func:`orthogonalize` would produce, so the result has ``basis``'s
    ranks, ``||result|| = ||X||`` whenever ``X`` lies in the basis' span (it does: ``Y`` was
    built from ``X``), and nothing is squared (the magnitudes are those of the QR sweep).
    Linear in each core of ``X``: no QR is differentiated.
    """
    c = basis.center
    assert c is not None
    ys = basis.cores
    left = torch.ones(1, 1, dtype=cores[0].dtype, device=cores[0].device)
    for k in range(c):
        left = _left_env_step(left, ys[k], cores[k])
    right = torch.ones(1, 1, dtype=cores[0].dtype, device=cores[0].device)
    for k in range(len(cores) - 1, c, -1):
        right = _right_env_step(right, ys[k], cores[k])
    return torch.einsum("ya,anb,bz->ynz", left, cores[c], right)


class _Norm(torch.autograd.Function):
    """``||X||`` with the QR-sweep value and the gradient ``X / ||X||`` (``0`` at ``X = 0``).

    Differentiating through the sweep's QR factorisations would give NaN wherever an
    unfolding is rank deficient (a zero core, zero-padded ranks), although the norm is
    smooth there (or, at ``X = 0``, has torch's subgradient ``0``).  The backward instead
    differentiates ``||P X||`` with ``P`` the projection onto the span of the detached
    canonical basis: ``P X = X``, so value and first derivative are exact.  Second
    derivatives of the two differ, so double backward is refused (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx: Any, center: int | None, *cores: torch.Tensor) -> torch.Tensor:
        value, basis = _norm_and_basis(TensorTrain(cores, center=center))
        ctx.num_cores = len(cores)
        ctx.basis_center = basis.center
        ctx.save_for_backward(*cores, *basis.cores)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        d = ctx.num_cores
        basis = TensorTrain(saved[d:], center=ctx.basis_center)
        needed = [k for k in range(d) if ctx.needs_input_grad[k + 1]]
        with torch.enable_grad():
            leaves = tuple(c.detach().requires_grad_(k in needed) for k, c in enumerate(saved[:d]))
            value = stable_norm(_projected_center(basis, leaves))
            grads = torch.autograd.grad(value, [leaves[k] for k in needed], grad)
        out: list[torch.Tensor | None] = [None] * (d + 1)
        for k, g in zip(needed, grads):
            out[k + 1] = g
        return tuple(out)


def norm(a: TensorTrain) -> torch.Tensor:
    """Frobenius norm through the orthogonality centre (0-d real tensor).

    Reuses a known centre; otherwise costs one QR sweep.  Like ``torch.linalg.vector_norm``
    it does not raise on NaN or Inf entries: the norm is then NaN (or Inf), and so is the
    gradient.  The gradient is that of ``torch.linalg.vector_norm(a.full())`` with respect to
    every core — ``X / ||X||`` pulled back to the cores, ``0`` for the zero tensor (torch's
    subgradient at 0), finite for rank-deficient cores — computed by one environment
    contraction in the canonical gauge, not by differentiating the QR sweep, so it neither
    over- nor underflows where the norm does not.  Only first derivatives are supported
    (double backward raises).
    """
    if torch.is_grad_enabled() and a.requires_grad:
        out: torch.Tensor = _Norm.apply(a.center, *a.cores)
        return out
    return _norm_and_basis(a)[0]


def contract(tt: TensorTrain, factors: Mapping[int, torch.Tensor]) -> TensorTrain | torch.Tensor:
    """Mode products of ``tt`` with vectors and matrices.

    ``factors[k]`` is either a vector of shape ``(n_k,)``, which contracts mode ``k``
    away (``sum_i v[i] X[..., i, ...]``), or a matrix of shape ``(m, n_k)``, which maps
    mode ``k`` to size ``m`` (``Y[..., j, ...] = sum_i M[j, i] X[..., i, ...]``).
    Cores and factors are promoted to a common dtype (``torch.promote_types``).
    Returns a ``TensorTrain`` over the remaining modes, or a 0-d tensor when every mode
    is contracted with a vector (then the whole network is contracted in the order
    planned by ``opt_einsum``).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((3, 4), 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    >>> u, v = torch.ones(3, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    >>> bool(torch.isclose(contract(x, {0: u, 1: v}), x.full().sum()))
    True
    """
    d = tt.order
    normalized: dict[int, torch.Tensor] = {}
    for mode, factor in factors.items():
        k = check_mode("factors", mode, d)
        if k in normalized:
            raise ValueError(f"factors: mode {mode} given twice")
        if not isinstance(factor, torch.Tensor) or factor.ndim not in (1, 2):
            got = tuple(factor.shape) if isinstance(factor, torch.Tensor) else type(factor).__name__
            raise ValueError(f"factors[{mode}]: expected a vector (n_k,) or matrix (m, n_k) tensor, got {got}")
        if factor.shape[-1] != tt.shape[k]:
            raise ValueError(
                f"factors[{mode}]: last dimension {factor.shape[-1]} does not match mode size {tt.shape[k]}"
            )
        normalized[k] = factor.to(device=tt.device)
    # Promote cores and factors to one dtype (a float64 or complex factor widens the train).
    dtype = functools.reduce(torch.promote_types, (f.dtype for f in normalized.values()), tt.dtype)
    normalized = {k: f.to(dtype) for k, f in normalized.items()}
    tt_cores = [c.to(dtype) for c in tt.cores]
    if len(normalized) == d and all(f.ndim == 1 for f in normalized.values()):
        operands: list[object] = []
        for k, core in enumerate(tt_cores):
            operands += [core, [2 * k, 2 * k + 1, 2 * k + 2], normalized[k], [2 * k + 1]]
        return opt_einsum.contract(*operands, [0, 2 * d], backend="torch").reshape(())
    items: list[torch.Tensor] = []
    for k, core in enumerate(tt_cores):
        mode_factor = normalized.get(k)
        if mode_factor is None:
            items.append(core)
        elif mode_factor.ndim == 1:
            items.append(torch.einsum("anb,n->ab", core, mode_factor))
        else:
            items.append(torch.einsum("anb,mn->amb", core, mode_factor))
    return absorb_matrices(items)


def absorb_matrices(items: list[torch.Tensor]) -> TensorTrain | torch.Tensor:
    """Build a train from a chain of 3-D cores and 2-D matrices (fixed modes).

    Each matrix ``(r_{k-1}, r_k)`` — a core whose mode was fixed or contracted away —
    is multiplied into the next kept core (or the previous one at the right end).
    Returns a 0-d tensor if no 3-D core remains.
    """
    cores: list[torch.Tensor] = []
    pending: torch.Tensor | None = None
    for item in items:
        if item.ndim == 2:
            pending = item if pending is None else pending @ item
            continue
        if pending is not None:
            item = torch.einsum("pa,anb->pnb", pending, item)
            pending = None
        cores.append(item)
    if not cores:
        assert pending is not None
        return pending.reshape(())
    if pending is not None:
        cores[-1] = torch.einsum("anb,bp->anp", cores[-1], pending)
    return TensorTrain(cores)
