"""Property-testing toolkit for tensor-train code: hypothesis strategies, builders and assertions.

Use it to property-test your own TT code the way :mod:`tnadapt.tt` is tested: draw random
trains with :func:`tensor_trains`, trains with *known* singular values at every bond with
:func:`tensor_trains_with_spectra`, and compare results with :func:`assert_tt_close`
(computed through the TT of the difference, never densifying).

The strategies need `hypothesis <https://hypothesis.readthedocs.io>`_ (``pip install
tnadapt[test]``); it is imported lazily, so the builders and assertion helpers work
without it, and ``import tnadapt.tt`` never imports this module.

Strategy arguments accept a hypothesis strategy, a single value, or a sequence of values to
sample from (``range(1, 5)``, ``[torch.float32, torch.float64]``).  Random values are drawn
from a hypothesis-drawn seed fed to a ``torch.Generator``, so failing examples shrink and
replay exactly.

>>> import torch
>>> from hypothesis import given, settings
>>> from tnadapt.testing import assert_tt_close, tensor_trains
>>> @settings(max_examples=5, deadline=None)
... @given(tensor_trains(orders=range(1, 4), dtypes=torch.float64))
... def test_double(x):
...     assert_tt_close(x + x, 2 * x)
>>> test_double()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from tnadapt.tt import TensorTrain
from tnadapt.tt._sweeps import feasible_ranks
from tnadapt.tt.canonical import is_left_orthonormal, is_right_orthonormal

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "COMPLEX_DTYPES",
    "DTYPES",
    "REAL_DTYPES",
    "TTWithSpectra",
    "assert_canonical",
    "assert_dense_close",
    "assert_left_orthonormal",
    "assert_right_orthonormal",
    "assert_tt_close",
    "available_devices",
    "best_truncation_errors",
    "default_rtol",
    "dense",
    "gauge_transform",
    "minimal_ranks",
    "spectra",
    "tensor_trains",
    "tensor_trains_with_spectra",
    "tt_with_spectra",
    "unfolding_singular_values",
]

REAL_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
COMPLEX_DTYPES: tuple[torch.dtype, ...] = (torch.complex64, torch.complex128)
#: The dtypes :mod:`tnadapt.tt` supports natively (fp16/bf16 are upcast inside QR/SVD).
DTYPES: tuple[torch.dtype, ...] = REAL_DTYPES + COMPLEX_DTYPES

_RTOL = {
    torch.float16: 5e-2,
    torch.bfloat16: 1e-1,
    torch.float32: 1e-4,
    torch.float64: 1e-10,
}


def _real(dtype: torch.dtype) -> torch.dtype:
    return dtype.to_real() if dtype.is_complex else dtype


def default_rtol(dtype: torch.dtype) -> float:
    """A relative tolerance for norm-wise comparisons of small trains in ``dtype``.

    About ``1e3`` times the unit round-off for single and double precision (complex
    dtypes use their real counterpart's).

    >>> default_rtol(torch.float32), default_rtol(torch.complex128)
    (0.0001, 1e-10)
    """
    real = _real(dtype)
    if real not in _RTOL:
        raise ValueError(f"dtype: expected a floating or complex dtype, got {dtype}")
    return _RTOL[real]


def available_devices() -> tuple[str, ...]:
    """``("cpu",)`` plus ``"cuda"`` when a GPU is visible: pass as ``devices=`` to test every device."""
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


# ---------------------------------------------------------------------------- dense references
def dense(tt: TensorTrain) -> torch.Tensor:
    """Dense tensor of ``tt`` by an einsum chain, independent of :meth:`TensorTrain.full`.

    Meant as a reference for small trains in tests.

    >>> x = TensorTrain.random((2, 3), 2, generator=torch.Generator().manual_seed(0))
    >>> bool(torch.allclose(dense(x), x.full()))
    True
    """
    out = tt.cores[0][0]  # (n_1, r_1)
    for core in tt.cores[1:]:
        out = torch.einsum("...a,anb->...nb", out, core)
    return out[..., 0]


def _float64(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64


def unfolding_singular_values(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Singular values (float64, descending) of the unfoldings ``A.reshape(n_1...n_k, n_{k+1}...n_d)``.

    One tensor per bond ``k = 1..d-1``, computed in double precision.

    >>> a = torch.outer(torch.arange(1.0, 4.0), torch.ones(2))  # rank 1
    >>> [s.shape[0] for s in unfolding_singular_values(a)], float(unfolding_singular_values(a)[0][1]) < 1e-12
    ([2], True)
    """
    shape = tuple(tensor.shape)
    work = tensor.detach().to(_float64(tensor.dtype))
    return [
        torch.linalg.svdvals(work.reshape(math.prod(shape[: k + 1]), -1)).to(torch.float64)
        for k in range(len(shape) - 1)
    ]


def best_truncation_errors(tensor: torch.Tensor, ranks: Sequence[int]) -> torch.Tensor:
    """``best[k]``: the best rank-``ranks[k]`` approximation error of unfolding ``k`` (dense SVD tail).

    ``ranks`` holds the ``d-1`` interior ranks.  Oseledets' quasi-optimality theorem says TT-SVD
    and TT-rounding to these ranks have error at most ``sqrt(sum(best**2))``.

    >>> a = torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64))
    >>> best_truncation_errors(a, [1])
    tensor([3.], dtype=torch.float64)
    """
    spectra_ = unfolding_singular_values(tensor)
    if len(ranks) != len(spectra_):
        raise ValueError(f"ranks: expected {len(spectra_)} interior ranks, got {len(ranks)}")
    tails = [torch.linalg.vector_norm(s[int(r) :]) for s, r in zip(spectra_, ranks)]
    return torch.stack(tails) if tails else torch.zeros(0, dtype=torch.float64)


def minimal_ranks(shape: Sequence[int], ranks: Sequence[int] | int) -> tuple[int, ...]:
    """Clamp interior ``ranks`` so no bond exceeds what its neighbours can support.

    Returns the largest ranks ``r'_k <= r_k`` with ``r'_k <= r'_{k-1} n_k`` and
    ``r'_k <= n_{k+1} r'_{k+1}`` (boundary ranks 1): a random train with these ranks is
    minimal with probability one.  The result includes the boundary ranks.

    >>> minimal_ranks((2, 3, 2), 5)
    (1, 2, 2, 1)
    """
    d = len(shape)
    inner = [int(ranks)] * (d - 1) if isinstance(ranks, int) else [int(r) for r in ranks]
    if len(inner) != d - 1:
        raise ValueError(f"ranks: expected {d - 1} interior ranks, got {len(inner)}")
    return (1, *feasible_ranks([int(n) for n in shape], inner), 1)


# ---------------------------------------------------------------------------- builders
def _random_isometry(
    rows: int, cols: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device | str | None
) -> torch.Tensor:
    """A ``(rows, cols)`` matrix with orthonormal columns (``rows >= cols``), built in double precision."""
    work = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    if dtype.is_complex:
        work = torch.complex(work, torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    q, r = torch.linalg.qr(work)
    diag = torch.diagonal(r)
    q = q * (diag / diag.abs()).unsqueeze(0)  # unique (Haar) phases
    return q.to(device=device, dtype=dtype)


def tt_with_spectra(
    spectra: Sequence[torch.Tensor | Sequence[float]],
    *,
    mode_sizes: Sequence[int] | None = None,
    norm: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> TensorTrain:
    """A train whose unfolding at every bond ``k`` has singular values ``norm * s_k / ||s_k||``.

    ``spectra[k]`` (length ``r_k``, non-negative, not all zero) sets bond ``k``; the train has
    order ``len(spectra) + 1``, ranks ``(1, r_1, ..., r_{d-1}, 1)`` and mode sizes at least
    ``r_{k-1} r_k`` (``mode_sizes`` may ask for larger).  Construction: core ``k`` is
    ``G[a, i, b] = Q_k[i, (a, b)] w_k[b]`` with random isometries ``Q_k``; the Schmidt
    vectors at each bond are then exactly orthogonal, so the spectra are exact.

    >>> x = tt_with_spectra([[1.0, 1e-3], [1.0, 0.5, 0.25]], generator=torch.Generator().manual_seed(0))
    >>> x.shape, x.ranks
    ((2, 6, 3), (1, 2, 3, 1))
    >>> s = unfolding_singular_values(x.full())[0]
    >>> bool(torch.allclose(s[:2], torch.tensor([1.0, 1e-3], dtype=torch.float64) / (1 + 1e-6) ** 0.5))
    True
    """
    weights: list[torch.Tensor] = []
    for k, s in enumerate(spectra):
        w = torch.as_tensor(s, dtype=torch.float64).flatten().cpu()
        if w.numel() == 0 or bool((w < 0).any()) or not bool(torch.isfinite(w).all()) or float(w.abs().sum()) == 0:
            raise ValueError(f"spectra[{k}]: expected a non-empty, finite, non-negative, non-zero spectrum, got {w}")
        weights.append(w / torch.linalg.vector_norm(w))
    d = len(weights) + 1
    ranks = [1, *(int(w.numel()) for w in weights), 1]
    need = [ranks[k] * ranks[k + 1] for k in range(d)]
    sizes = list(need) if mode_sizes is None else [int(n) for n in mode_sizes]
    if len(sizes) != d or any(n < m for n, m in zip(sizes, need)):
        raise ValueError(f"mode_sizes: expected {d} sizes with n_k >= r_(k-1) r_k = {need}, got {sizes}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    cores = []
    for k in range(d):
        q = _random_isometry(sizes[k], need[k], gen, _float64(dtype), None)
        core = q.reshape(sizes[k], ranks[k], ranks[k + 1]).permute(1, 0, 2)
        if k < d - 1:
            core = core * weights[k].to(core.dtype)
        if k == 0:
            core = core * norm
        cores.append(core.contiguous().to(device=device, dtype=dtype))
    return TensorTrain(cores)


def gauge_transform(
    tt: TensorTrain, *, generator: torch.Generator | None = None, condition: float = 10.0
) -> TensorTrain:
    """The same tensor with a random invertible matrix ``A_k`` inserted on every bond.

    Core ``k`` becomes ``G_k A_k`` and core ``k+1`` becomes ``A_k^{-1} G_{k+1}``, with
    ``A_k = U diag(s) V^H`` for random unitary ``U, V`` and ``s`` spread over
    ``[1/sqrt(condition), sqrt(condition)]``.  ``full``, ``dot`` and ``norm`` must not change.

    >>> x = TensorTrain.random((3, 4, 5), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> y = gauge_transform(x, generator=torch.Generator().manual_seed(1))
    >>> bool(torch.allclose(x.full(), y.full())), bool(torch.equal(x.cores[1], y.cores[1]))
    (True, False)
    """
    if condition < 1:
        raise ValueError(f"condition: expected a float >= 1, got {condition}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    cores = list(tt.cores)
    wide = _float64(tt.dtype)
    for k in range(tt.order - 1):
        r = cores[k].shape[2]
        u = _random_isometry(r, r, gen, wide, None)
        v = _random_isometry(r, r, gen, wide, None)
        logs = (torch.rand(r, generator=gen, dtype=torch.float64) - 0.5) * math.log(condition)
        s = torch.exp(logs).to(wide)
        a = (u * s.unsqueeze(0)) @ v.mH
        a_inv = (v * (1.0 / s).unsqueeze(0)) @ u.mH
        a, a_inv = a.to(device=tt.device, dtype=tt.dtype), a_inv.to(device=tt.device, dtype=tt.dtype)
        cores[k] = torch.einsum("anb,bc->anc", cores[k], a)
        cores[k + 1] = torch.einsum("ab,bnc->anc", a_inv, cores[k + 1])
    return TensorTrain(cores)


# ---------------------------------------------------------------------------- assertions
def _norm_pair(diff: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    return float(diff.detach().to(torch.float64)), float(ref.detach().to(torch.float64))


def assert_tt_close(
    actual: TensorTrain,
    expected: TensorTrain,
    *,
    rtol: float | None = None,
    atol: float = 0.0,
    msg: str = "",
) -> None:
    """Assert ``||actual - expected|| <= atol + rtol * max(||actual||, ||expected||)``.

    The norm of the difference is computed on the TT ``actual - expected`` (ranks add) by
    orthogonalisation, never by densifying.  Operands are promoted to a common dtype;
    ``rtol`` defaults to :func:`default_rtol` of that dtype.

    >>> x = TensorTrain.random((3, 4), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> assert_tt_close(x, x * (1 + 1e-13))
    >>> assert_tt_close(x, 2 * x)
    Traceback (most recent call last):
    ...
    AssertionError: tensor trains differ: ||actual - expected|| = ...
    """
    for name, value in (("actual", actual), ("expected", expected)):
        if not isinstance(value, TensorTrain):
            raise TypeError(f"{name}: expected a TensorTrain, got {type(value).__name__}")
    prefix = f"{msg}: " if msg else ""
    if actual.shape != expected.shape:
        raise AssertionError(f"{prefix}shapes differ: {actual.shape} vs {expected.shape}")
    if actual.device != expected.device:
        raise AssertionError(f"{prefix}devices differ: {actual.device} vs {expected.device}")
    common = torch.promote_types(actual.dtype, expected.dtype)
    a, b = actual.to(common).detach(), expected.to(common).detach()
    tol = default_rtol(common) if rtol is None else float(rtol)
    diff, ref = _norm_pair((a - b).norm(), torch.maximum(a.norm(), b.norm()))
    bound = atol + tol * ref
    if not diff <= bound:
        raise AssertionError(
            f"{prefix}tensor trains differ: ||actual - expected|| = {diff:.3e} > atol + rtol * max(||actual||, "
            f"||expected||) = {bound:.3e} (rtol={tol:g}, atol={atol:g}, ||actual||={float(a.norm()):.3e}, "
            f"||expected||={float(b.norm()):.3e}, shape={actual.shape}, ranks {actual.ranks} vs {expected.ranks})"
        )


def assert_dense_close(
    actual: torch.Tensor, expected: torch.Tensor, *, rtol: float | None = None, atol: float = 0.0, msg: str = ""
) -> None:
    """Norm-wise dense comparison: ``||actual - expected|| <= atol + rtol * ||expected||``.

    Norm-wise (not entry-wise) so that entries that cancel to nearly zero do not need an
    absolute tolerance.  Shapes must match exactly; ``rtol`` defaults to
    :func:`default_rtol` of the wider dtype.

    >>> assert_dense_close(torch.ones(3), torch.ones(3) + 1e-7)
    """
    prefix = f"{msg}: " if msg else ""
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{prefix}shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}")
    common = torch.promote_types(actual.dtype, expected.dtype)
    wide = _float64(common)
    a = actual.detach().to(device="cpu", dtype=wide)
    b = expected.detach().to(device="cpu", dtype=wide)
    tol = default_rtol(common) if rtol is None else float(rtol)
    diff = float(torch.linalg.vector_norm(a - b))
    ref = float(torch.linalg.vector_norm(b))
    if not diff <= atol + tol * ref:
        raise AssertionError(
            f"{prefix}tensors differ: ||actual - expected|| = {diff:.3e} > atol + rtol * ||expected|| = "
            f"{atol + tol * ref:.3e} (rtol={tol:g}, atol={atol:g}, ||expected||={ref:.3e}, shape={tuple(b.shape)})"
        )


def _orthonormality_defect(mat: torch.Tensor) -> float:
    gram = mat.detach().mH @ mat.detach()
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return float((gram - eye).abs().max())


def _check_cores(tt: TensorTrain, ks: Sequence[int], side: str, atol: float | None) -> None:
    for k in ks:
        core = tt.cores[k]
        r0, n, r1 = core.shape
        ok = is_left_orthonormal(core, atol=atol) if side == "left" else is_right_orthonormal(core, atol=atol)
        if not ok:
            mat = core.reshape(r0 * n, r1) if side == "left" else core.reshape(r0, n * r1).mH
            raise AssertionError(
                f"core {k} of shape {tuple(core.shape)} is not {side}-orthonormal: "
                f"max |G^H G - I| = {_orthonormality_defect(mat):.3e}"
            )


def assert_left_orthonormal(
    tt: TensorTrain, k: int | Sequence[int] | None = None, *, atol: float | None = None
) -> None:
    """Assert core(s) ``k`` (default: all but the last) have orthonormal left unfoldings.

    >>> x = TensorTrain.random((3, 4, 5), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> assert_left_orthonormal(x.orthogonalize(-1))
    """
    ks = range(tt.order - 1) if k is None else ([k] if isinstance(k, int) else list(k))
    _check_cores(tt, ks, "left", atol)


def assert_right_orthonormal(
    tt: TensorTrain, k: int | Sequence[int] | None = None, *, atol: float | None = None
) -> None:
    """Assert core(s) ``k`` (default: all but the first) have orthonormal right unfoldings."""
    ks = range(1, tt.order) if k is None else ([k] if isinstance(k, int) else list(k))
    _check_cores(tt, ks, "right", atol)


def assert_canonical(tt: TensorTrain, center: int | None = None, *, atol: float | None = None) -> None:
    """Assert mixed canonical form: cores before ``center`` left-, after it right-orthonormal.

    ``center`` defaults to the train's tracked centre, which must then be known.

    >>> x = TensorTrain.random((3, 4, 5), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> assert_canonical(x.orthogonalize(1))
    """
    c = tt.center if center is None else center % tt.order
    if c is None:
        raise AssertionError("tt has no tracked orthogonality centre and none was given")
    assert_left_orthonormal(tt, range(c), atol=atol)
    assert_right_orthonormal(tt, range(c + 1, tt.order), atol=atol)


# ---------------------------------------------------------------------------- strategies
def _strategy(value: Any, name: str) -> SearchStrategy[Any]:
    """A strategy from a strategy, a single value, or a sequence/range to sample from."""
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy

    if isinstance(value, SearchStrategy):
        return value
    if isinstance(value, (str, int, float, torch.dtype, torch.device)):
        return st.just(value)
    if isinstance(value, (Sequence, range)):
        if len(value) == 0:
            raise ValueError(f"{name}: expected a non-empty sequence of choices")
        return st.sampled_from(list(value))
    raise TypeError(f"{name}: expected a hypothesis strategy, a value or a sequence of values, got {value!r}")


def _fit_shape(shape: list[int], max_numel: int) -> list[int]:
    """Halve the largest modes until ``prod(shape) <= max_numel`` (deterministic, shrink-friendly)."""
    while math.prod(shape) > max_numel:
        k = max(range(len(shape)), key=lambda i: shape[i])
        shape[k] = max(1, shape[k] // 2)
    return shape


def tensor_trains(
    orders: Any = range(1, 6),
    mode_sizes: Any = range(1, 5),
    ranks: Any = range(1, 5),
    dtypes: Any = DTYPES,
    devices: Any = ("cpu",),
    *,
    minimal: bool = False,
    canonical: Any = False,
    max_numel: int = 4096,
) -> SearchStrategy[TensorTrain]:
    """Strategy drawing random :class:`~tnadapt.tt.TensorTrain` objects.

    Parameters
    ----------
    orders, mode_sizes, ranks, dtypes, devices:
        Strategies (or values, or sequences to sample from) for the order ``d``, each mode
        size, each interior rank, the dtype and the device.
    minimal:
        Clamp ranks with :func:`minimal_ranks` so the drawn train is (generically) minimal;
        otherwise ranks may exceed what the mode sizes support (a valid, redundant train).
    canonical:
        Bool (or strategy of bools): when true, the train is put in mixed canonical form
        with a drawn centre (so code paths that reuse a tracked centre get exercised).
    max_numel:
        Mode sizes are reduced until the dense tensor has at most this many entries, so
        dense references stay cheap.

    Cores are Gaussian with ``std = 1/sqrt(r_{k-1})`` (entries of the dense tensor are
    ``O(1)``), generated on the CPU from a drawn seed and moved to the drawn device.

    >>> from hypothesis import find
    >>> x = find(tensor_trains(orders=3, ranks=2, dtypes=torch.float64), lambda t: True)
    >>> x.order, x.dtype
    (3, torch.float64)
    """
    from hypothesis import strategies as st

    orders_s = _strategy(orders, "orders")
    sizes_s = _strategy(mode_sizes, "mode_sizes")
    ranks_s = _strategy(ranks, "ranks")
    dtypes_s = _strategy(dtypes, "dtypes")
    devices_s = _strategy(devices, "devices")
    canonical_s = _strategy(canonical, "canonical")

    @st.composite
    def build(draw: Any) -> TensorTrain:
        d = int(draw(orders_s))
        if d < 1:
            raise ValueError(f"orders: drew order {d}, expected >= 1")
        shape = _fit_shape([int(draw(sizes_s)) for _ in range(d)], max_numel)
        inner = [int(draw(ranks_s)) for _ in range(d - 1)]
        if minimal:
            inner = list(minimal_ranks(shape, inner)[1:-1])
        dtype = draw(dtypes_s)
        device = draw(devices_s)
        seed = draw(st.integers(0, 2**32 - 1))
        gen = torch.Generator().manual_seed(seed)
        cores = TensorTrain.random(shape, inner, generator=gen, dtype=dtype).cores
        x = TensorTrain([c.to(device) for c in cores])
        if draw(canonical_s):
            x = x.orthogonalize(draw(st.integers(0, d - 1)))
        return x

    return build()


def spectra(
    max_len: int = 4,
    *,
    kinds: Sequence[str] = ("geometric", "degenerate", "random"),
    ratios: Sequence[float] = (1e-1, 1e-2, 1e-3),
    min_len: int = 1,
) -> SearchStrategy[torch.Tensor]:
    """Strategy drawing a descending, positive float64 spectrum of length ``min_len..max_len``.

    ``kinds``: ``"geometric"`` (``1, q, q^2, ...`` with ``q`` from ``ratios``),
    ``"degenerate"`` (levels ``1, q, q^2, ...`` each repeated: exact multiplicities) and
    ``"random"`` (sorted uniform values in ``[q_min, 1]``, ``q_min = min(ratios)``).
    The largest value is always ``1``.

    >>> from hypothesis import find
    >>> s = find(spectra(3, kinds=["geometric"], ratios=[1e-3]), lambda s: len(s) == 3)
    >>> s.tolist()
    [1.0, 0.001, 1e-06]
    """
    from hypothesis import strategies as st

    known = ("geometric", "degenerate", "random")
    for kind in kinds:
        if kind not in known:
            raise ValueError(f"kinds: expected values from {known}, got {kind!r}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"min_len/max_len: expected 1 <= min_len <= max_len, got {min_len}, {max_len}")

    @st.composite
    def build(draw: Any) -> torch.Tensor:
        kind = draw(st.sampled_from(list(kinds)))
        n = draw(st.integers(min_len, max_len))
        q = float(draw(st.sampled_from(list(ratios))))
        if kind == "geometric":
            values = [q**j for j in range(n)]
        elif kind == "degenerate":
            counts = draw(st.lists(st.integers(1, n), min_size=1, max_size=n))
            values = [q**level for level, c in enumerate(counts) for _ in range(c)][:n]
            values += [values[-1]] * (n - len(values))
        else:
            rest = draw(st.lists(st.floats(min(ratios), 1.0), min_size=n - 1, max_size=n - 1))
            values = [1.0, *sorted(rest, reverse=True)]
        return torch.tensor(values, dtype=torch.float64)

    return build()


class TTWithSpectra(NamedTuple):
    """A drawn train and the exact singular values of each bond's unfolding (float64)."""

    tt: TensorTrain
    spectra: tuple[torch.Tensor, ...]


def tensor_trains_with_spectra(
    orders: Any = range(2, 5),
    bond_spectra: Any = None,
    dtypes: Any = DTYPES,
    devices: Any = ("cpu",),
    *,
    norms: Any = 1.0,
    extra_mode_size: Any = range(0, 2),
) -> SearchStrategy[TTWithSpectra]:
    """Strategy drawing :class:`TTWithSpectra`: trains with known spectra at every bond.

    Built by :func:`tt_with_spectra`; ``bond_spectra`` defaults to :func:`spectra` ``()``,
    ``norms`` sets ``||x||`` and ``extra_mode_size`` pads each mode beyond the minimum
    ``r_{k-1} r_k``.  The reported ``spectra[k]`` is the exact singular-value vector of
    unfolding ``k`` (``norm * s_k / ||s_k||``).

    >>> from hypothesis import find
    >>> ex = find(tensor_trains_with_spectra(orders=3, dtypes=torch.float64), lambda e: True)
    >>> ex.tt.order, len(ex.spectra)
    (3, 2)
    """
    from hypothesis import strategies as st

    orders_s = _strategy(orders, "orders")
    spectra_s = spectra() if bond_spectra is None else _strategy(bond_spectra, "bond_spectra")
    dtypes_s = _strategy(dtypes, "dtypes")
    devices_s = _strategy(devices, "devices")
    norms_s = _strategy(norms, "norms")
    extra_s = _strategy(extra_mode_size, "extra_mode_size")

    @st.composite
    def build(draw: Any) -> TTWithSpectra:
        d = int(draw(orders_s))
        specs = [draw(spectra_s) for _ in range(d - 1)]
        ranks = [1, *(len(s) for s in specs), 1]
        sizes = [ranks[k] * ranks[k + 1] + int(draw(extra_s)) for k in range(d)]
        norm = float(draw(norms_s))
        dtype, device = draw(dtypes_s), draw(devices_s)
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
        x = tt_with_spectra(specs, mode_sizes=sizes, norm=norm, generator=gen, dtype=dtype, device=device)
        exact = tuple(norm * s / torch.linalg.vector_norm(s) for s in specs)
        return TTWithSpectra(x, exact)

    return build()
