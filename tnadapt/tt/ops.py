"""Algebra on tensor trains: sums, scaling, Hadamard product, inner products, mode products.

Rank rules (``r`` and ``s`` are the bond ranks of the operands):

* ``a + b`` and ``a - b``: ranks ``r_k + s_k`` (block-diagonal cores);
* ``c * a``: ranks unchanged (the scalar multiplies the first core);
* ``a * b`` (Hadamard): ranks ``r_k * s_k`` (Kronecker product of slices).

``dot`` contracts left to right at cost ``O(d n r^3)`` and memory ``O(n r^2)``, the
environment rescaled by powers of two (exact) at every step, so it neither over- nor underflows
where the result does not; ``norm`` orthogonalises and takes the Frobenius norm of the
centre core (accurate for differences too), or with ``method="gram"`` takes ``sqrt`` of the
scaled Gram contraction (half the cost, no over/underflow, but only ``sqrt(u)`` accurate on
nearly cancelling trains); its gradient ``X / ||X||`` (``0`` at ``X = 0``) comes from one
contraction in a canonical gauge, not from differentiating a QR sweep (see :func:`norm`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import opt_einsum
import torch
from torch.autograd.function import once_differentiable

from ._errors import Scalar, check_mode, check_scalar
from ._numerics import stable_norm
from .tensor_train import TensorTrain

__all__ = ["absorb_matrices", "add", "check_compatible", "contract", "dot", "hadamard", "norm", "scale", "sum_cores"]


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
    return TensorTrain(sum_cores(a.cores, b.cores))


def sum_cores(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The cores of the sum of two chains: block-diagonal, bonds ``r_k + s_k`` (first/last core concatenated).

    Cores are ``(..., r_{k-1}, n_k, r_k)``: any leading axes (the batch axis of a
    :class:`~tnadapt.tt.TTBatch`) are carried along, so trains and batches share this code.
    """
    d = len(a)
    if d == 1:
        return [a[0] + b[0]]
    cores = []
    for k, (ga, gb) in enumerate(zip(a, b)):
        if k == 0:
            cores.append(torch.cat([ga, gb], dim=-1))
        elif k == d - 1:
            cores.append(torch.cat([ga, gb], dim=-3))
        else:
            *lead, ra0, n, ra1 = ga.shape
            rb0, rb1 = gb.shape[-3], gb.shape[-1]
            top = torch.cat([ga, ga.new_zeros(*lead, ra0, n, rb1)], dim=-1)
            bottom = torch.cat([gb.new_zeros(*lead, rb0, n, ra1), gb], dim=-1)
            cores.append(torch.cat([top, bottom], dim=-3))
    return cores


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


def _exponent(peak: torch.Tensor, limit: int) -> torch.Tensor:
    """``e`` with ``peak / 2**e`` in ``[0.5, 1)`` (0 for zero, NaN and Inf), clamped to ``±limit`` (int32 0-d)."""
    return torch.frexp(peak)[1].clamp(-limit, limit)


def _power_of_two(e: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``2**e`` in ``like``'s real dtype (an exact power of two while ``|e|`` is within the exponent range)."""
    real = like.real.dtype if like.is_complex() else like.dtype
    return torch.pow(torch.tensor(2.0, dtype=real, device=like.device), e.to(real))


def _times_power_of_two(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``x * 2**e`` in two exact halves, so ``2**e`` itself never over- or underflows on the way."""
    half = torch.div(e, 2, rounding_mode="floor")
    return x * _power_of_two(half, x) * _power_of_two(e - half, x)


def _peaks(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``max |entry|`` of every core (1-d, NaN where a core holds a NaN): one pass over each core.

    Real cores take ``aminmax`` (one read, no ``abs`` copy); complex ones ``abs().amax()``.
    """
    if cores[0].is_complex():
        return torch.stack([c.detach().abs().amax() for c in cores])
    lows, highs = zip(*(torch.aminmax(c.detach()) for c in cores))
    return torch.maximum(torch.stack(highs), -torch.stack(lows))


def _scaled_inner(a: TensorTrain, b: TensorTrain) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``<a, b> = m * 2**e``: the Gram contraction with the environment rescaled by powers of two at every step.

    Returns ``(m, e, peaks)``: the 0-d mantissa, the int32 exponent and the per-core
    ``max |entry|`` of both trains (for the non-finite checks of the callers).  Before each step
    the environment is divided by ``2**(e_a + e_b)`` (the two cores' exponents), after it by
    its own peak's power of two, so every intermediate stays ``O(r n)``.  Scaling by
    powers of two is exact, so ``m * 2**e`` is bit-for-bit the unscaled contraction whenever
    that one neither over- nor underflows — and stays finite and accurate when it would.
    The scale factors are constants for autograd (the gradient is that of ``<a, b>``).

    On the CPU, where reading a scalar costs no device round trip, the exponents are host
    integers: per step one ``aminmax`` pass over each core just before its step (while it is
    in cache), one ``abs().amax()`` of the environment and one multiply (its ``2**-e`` and the
    step's pre-scale folded into one exact factor when that factor is a normal number).
    Elsewhere the same arithmetic runs on the device without synchronising, the core peaks
    taken up front (:func:`_scaled_inner_on_device`).  Both give bit-identical results.
    """
    real = a.dtype.to_real() if a.dtype.is_complex else a.dtype
    limit = int(math.log2(torch.finfo(real).max)) - 2
    if a.device.type != "cpu":
        pa = _peaks(a.cores)
        pb = pa if all(x is y for x, y in zip(a.cores, b.cores)) else _peaks(b.cores)
        m, e = _scaled_inner_on_device(a, b, pa, pb, limit)
        return m, e, torch.stack([pa, pb], dim=1).reshape(-1)
    # The environment (not the core: a pass over every core saved) is pre-scaled by the cores'
    # exponents, clamped so that it stays a normal number; the step then yields values ~ 1.
    # Each core's peak is read just before its step, while the core is still in cache.
    pre_limit = limit - 24
    env = torch.ones(1, 1, dtype=a.dtype, device=a.device)  # (ra, rb)
    shift, total, peaks = 0, 0, []
    for ga, gb in zip(a.cores, b.cores):
        peak_a = _host_peak(ga)
        peak_b = peak_a if gb is ga else _host_peak(gb)
        peaks += [peak_a, peak_b]
        pre = max(-pre_limit, min(pre_limit, _host_exponent(peak_a, limit) + _host_exponent(peak_b, limit)))
        env = _left_env_step(_host_times_power_of_two(env, shift - pre, limit), ga, gb)
        ee = _host_exponent(env.detach().abs().amax().item(), limit)
        total += pre + ee
        shift = -ee
    env = _host_times_power_of_two(env, shift, limit)
    m, e = env.reshape(()), torch.tensor(total, dtype=torch.int32, device=a.device)
    return m, e, torch.tensor(peaks, dtype=real, device=a.device)


def _host_peak(core: torch.Tensor) -> float:
    """``max |entry|`` of a CPU core as a host float (NaN if it holds one): one ``aminmax`` pass for real cores."""
    if core.is_complex():
        return float(core.detach().abs().amax().item())
    low, high = (float(v.item()) for v in torch.aminmax(core.detach()))
    return math.nan if math.isnan(low) else max(high, -low)


def _host_exponent(peak: float, limit: int) -> int:
    """:func:`_exponent` of a host float: ``e`` with ``peak / 2**e`` in ``[0.5, 1)`` (0 for 0, NaN, Inf), within ``±limit``."""
    return max(-limit, min(limit, math.frexp(peak)[1]))


def _host_times_power_of_two(x: torch.Tensor, e: int, limit: int) -> torch.Tensor:
    """``x * 2**e`` for a host integer ``e``: one exact multiply while ``2**e`` is normal, else two halves."""
    if e == 0:
        return x
    if -limit <= e <= limit:
        return x * math.ldexp(1.0, e)
    half = e // 2
    return x * math.ldexp(1.0, half) * math.ldexp(1.0, e - half)


def _scaled_inner_on_device(
    a: TensorTrain, b: TensorTrain, pa: torch.Tensor, pb: torch.Tensor, limit: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(m, e)`` of :func:`_scaled_inner` with every exponent kept on the device (no host synchronisation)."""
    pre_limit = limit - 24
    pre = (_exponent(pa, limit) + _exponent(pb, limit)).clamp(-pre_limit, pre_limit)
    pre_factors = _power_of_two(-pre, pa)
    env = torch.ones(1, 1, dtype=a.dtype, device=a.device)  # (ra, rb)
    exponents = []
    for k, (ga, gb) in enumerate(zip(a.cores, b.cores)):
        env = _left_env_step(env * pre_factors[k], ga, gb)
        ee = _exponent(env.detach().abs().amax(), limit)
        env = env * _power_of_two(-ee, env)
        exponents.append(ee)
    return env.reshape(()), pre.sum(dtype=torch.int32) + torch.stack(exponents).sum(dtype=torch.int32)


def dot(a: TensorTrain, b: TensorTrain) -> torch.Tensor:
    """Inner product ``sum conj(a) * b`` as a 0-d tensor, ``O(d n r^3)`` time.

    The left-to-right Gram contraction with the partial environment rescaled by powers of
    two (exact) at every step, so the result over- or underflows only where the value itself
    does, and is bit-for-bit the plain contraction elsewhere.  NaN and Inf propagate.  A
    polynomial in the cores (the scales are constants), so its gradient exists everywhere
    (zero trains included).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((3, 3, 3), 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    >>> bool(torch.isclose(dot(x, x), (x.full() ** 2).sum()))
    True
    >>> float(dot(1e200 * x, 1e-200 * x) / dot(x, x))
    1.0
    """
    check_compatible(a, b, "dot")
    m, e, _ = _scaled_inner(a, b)
    return _times_power_of_two(m, e)


def _gram_norm(a: TensorTrain) -> torch.Tensor:
    """``sqrt(<a, a>)`` from the scaled Gram contraction (no QR): as fast as the plain Gram norm, never
    over- or underflowing, NaN for NaN entries and Inf for Inf ones (0-d real, no autograd)."""
    with torch.no_grad():
        m, e, peaks = _scaled_inner(a, a)
        half = torch.div(e, 2, rounding_mode="floor")
        mant = m.real.clamp_min(0) * _power_of_two(e - 2 * half, m.real)  # e - 2 half in {0, 1}
        value = _times_power_of_two(mant.sqrt(), half)
        return torch.where(peaks.isfinite().all(), value, peaks.sum())


def _norm_value(a: TensorTrain, method: str) -> tuple[torch.Tensor, TensorTrain | None]:
    """``||a||`` (0-d real, no autograd) and the canonical form it was read from (``None`` for ``"gram"``).

    A known centre: the centre core's norm (``O(n r^2)``); else ``"qr"``: one QR sweep to centre
    ``d-1``; ``"gram"``: the scaled Gram contraction (:func:`_gram_norm`).
    """
    if a.center is None and method == "gram":
        return _gram_norm(a), None
    basis = _canonical_basis(a)
    assert basis.center is not None
    with torch.no_grad():
        value = stable_norm(basis.cores[basis.center])
        # LAPACK's Householder QR can leave a NaN in Q alone (a NaN leading entry of a column still
        # gives a finite R), and off-centre cores are not read: flag non-finite cores explicitly, on the
        # device (no host synchronisation; amax propagates NaN and never overflows).
        peaks = torch.stack([c.abs().amax() for c in a.cores])
        return torch.where(peaks.isfinite().all(), value, peaks.sum()), basis


def _canonical_basis(a: TensorTrain) -> TensorTrain:
    """A canonical form of ``a`` (itself when its centre is known, else one QR sweep to centre ``d-1``)."""
    from .canonical import orthogonalize_unchecked

    with torch.no_grad():
        return a if a.center is not None else orthogonalize_unchecked(a, a.order - 1)


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
    """``||X||`` (value of :func:`_norm_value`) with the gradient ``X / ||X||`` (``0`` at ``X = 0``).

    Differentiating through the sweep's QR factorisations would give NaN wherever an
    unfolding is rank deficient (a zero core, zero-padded ranks), although the norm is
    smooth there (or, at ``X = 0``, has torch's subgradient ``0``).  The backward instead
    differentiates ``||P X||`` with ``P`` the projection onto the span of a detached
    canonical basis (built in the backward: the QR sweep is paid only when a gradient is
    asked for): ``P X = X``, so the first derivative is exact.  Second
    derivatives of the two differ, so double backward is refused (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx: Any, center: int | None, method: str, *cores: torch.Tensor) -> torch.Tensor:
        value, basis = _norm_value(TensorTrain(cores, center=center), method)
        ctx.num_cores = len(cores)
        ctx.center = center if basis is None else basis.center
        ctx.save_for_backward(*cores, *(() if basis is None else basis.cores))
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        d = ctx.num_cores
        basis = _canonical_basis(TensorTrain(saved[d:] or saved, center=ctx.center))
        needed = [k for k in range(d) if ctx.needs_input_grad[k + 2]]
        with torch.enable_grad():
            leaves = tuple(c.detach().requires_grad_(k in needed) for k, c in enumerate(saved[:d]))
            value = stable_norm(_projected_center(basis, leaves))
            grads = torch.autograd.grad(value, [leaves[k] for k in needed], grad)
        out: list[torch.Tensor | None] = [None] * (d + 2)
        for k, g in zip(needed, grads):
            out[k + 2] = g
        return tuple(out)


def norm(a: TensorTrain, *, method: str = "qr") -> torch.Tensor:
    """Frobenius norm (0-d real tensor); the centre core's norm whenever a centre is known.

    Without a known centre, ``method="qr"`` (default) orthogonalises (one QR sweep): accurate
    to round-off relative to ``||X||`` even for differences of nearly equal trains
    (``(x - y).norm()``).  ``method="gram"`` is ``sqrt(<a, a>)`` by the left-to-right
    contraction with the environment rescaled by exact powers of two at every step: the cost
    of the plain Gram contraction (about half the QR sweep), without its over- and underflow
    (``1e±300`` norms in float64, ``1e±30`` in float32), a few ulps times ``d`` from the QR
    value on well-conditioned trains — but a train that nearly cancels (a difference, or
    ``||X||`` far below the product of its cores' norms) keeps only about ``sqrt(u)`` relative
    to that scale, so use it for norms of trains, not of residuals.  Like
    ``torch.linalg.vector_norm`` neither raises on NaN or Inf entries: the norm is then NaN
    (or Inf), and so is the gradient.  The gradient (both methods) is that of
    ``torch.linalg.vector_norm(a.full())`` with respect to every core — ``X / ||X||`` pulled
    back to the cores, ``0`` for the zero tensor (torch's subgradient at 0), finite for
    rank-deficient cores — computed by one environment contraction in a canonical gauge (for
    ``"gram"`` the QR sweep runs in the backward), not by differentiating the QR sweep, so it
    neither over- nor underflows where the norm does not.  Only first derivatives are
    supported (double backward raises).

    >>> import torch
    >>> from tnadapt.tt import TensorTrain
    >>> x = TensorTrain.random((4, 4, 4), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> big = 1e300 * x
    >>> bool(torch.isclose(norm(big, method="gram"), norm(big))), bool(torch.isfinite(norm(big, method="gram")))
    (True, True)
    """
    if method not in ("qr", "gram"):
        raise ValueError(f"method: expected 'qr' or 'gram', got {method!r}")
    if torch.is_grad_enabled() and a.requires_grad:
        out: torch.Tensor = _Norm.apply(a.center, method, *a.cores)
        return out
    return _norm_value(a, method)[0]


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
