"""Textbook TT-matrices (MPOs) built exactly from local terms.

:func:`mpo_from_terms` is the general builder: a sum of one-site operators and
nearest-neighbour two-site operators on a chain,

    H = Σ_k h_k  +  Σ_k Σ_t A_{k,t} ⊗ B_{k+1,t}

(``h_k`` acting on site ``k``, the two-site term on bond ``(k, k+1)`` as a sum of
products), as an exact :class:`~tnadapt.tt.matrix.TTMatrix` by the finite-state-automaton
construction.  Its core at site ``k`` is the operator-valued matrix (rows: the state
on the bond to the left, columns: the state on the bond to the right)

    ┌ I   A_{k,1} ... A_{k,T}   h_k     ┐
    │ 0                         B_{k,1} │
    │ ⋮          (0)            ⋮       │
    │ 0                         B_{k,T} │
    └ 0   0  ...  0             I       ┘

so the bond dimension between sites ``k`` and ``k+1`` is ``T_k + 2``, where ``T_k`` is the
number of product terms of that bond — the minimal one for the Heisenberg XXZ (5) and
transverse-field Ising (3) chains.  A two-site term given as a dense matrix is split into
the fewest products by its operator Schmidt decomposition (an SVD).

:func:`laplacian_mpo` is not a local Hamiltonian but a carry automaton: the Dirichlet
finite-difference Laplacian on ``N = Π n_k`` grid points whose index is written in mixed
radix (site 0 most significant, C order, as ``TTMatrix.full`` uses), rank 3 — the QTT
Laplacian of Kazeev & Khoromskij when every ``n_k = 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._errors import check_positive_float, describe
from .matrix import TTMatrix
from .truncation import select_rank

__all__ = ["heisenberg_mpo", "ising_mpo", "laplacian_mpo", "mpo_from_terms", "tridiagonal_toeplitz_mpo"]

#: A two-site term: a dense ``(n_k n_{k+1}, n_k n_{k+1})`` matrix (C-order pairs) or a list of ``(A, B)`` products.
TwoSiteTerm = torch.Tensor | Sequence[tuple[torch.Tensor, torch.Tensor]]


def _resolve(dtype: torch.dtype | None, device: torch.device | str | None) -> tuple[torch.dtype, torch.device]:
    out = torch.get_default_dtype() if dtype is None else dtype
    if not (out.is_floating_point or out.is_complex):
        raise TypeError(f"dtype: expected a floating or complex dtype, got {out}")
    return out, torch.device("cpu") if device is None else torch.device(device)


def _check_square(name: str, op: object, n: int) -> torch.Tensor:
    if not isinstance(op, torch.Tensor) or tuple(op.shape) != (n, n):
        raise ValueError(f"{name}: expected a ({n}, {n}) tensor, got {describe(op)}")
    return op


def _products(name: str, term: TwoSiteTerm, n1: int, n2: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A two-site term as the fewest ``(A, B)`` products: an operator Schmidt decomposition for a dense term."""
    if isinstance(term, torch.Tensor):
        size = n1 * n2
        if tuple(term.shape) != (size, size):
            raise ValueError(f"{name}: expected a ({size}, {size}) two-site matrix, got shape {tuple(term.shape)}")
        work = term.to(torch.complex128 if term.is_complex() else torch.float64)
        # T[(i1 i2), (j1 j2)] -> M[(i1 j1), (i2 j2)]: a sum of Kronecker products is a low-rank M.
        mat = work.reshape(n1, n2, n1, n2).permute(0, 2, 1, 3).reshape(n1 * n1, n2 * n2)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        tiny = float(s[0]) * 1e-13 if s.numel() and float(s[0]) > 0 else 0.0
        k = select_rank(s, abs_tol=tiny) if tiny > 0 else 0
        return [
            (
                (u[:, t] * s[t]).reshape(n1, n1).to(term.dtype),
                vh[t].reshape(n2, n2).to(term.dtype),
            )
            for t in range(k)
        ]
    pairs = list(term)
    out = []
    for t, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"{name}[{t}]: expected an (A, B) pair of tensors, got {describe(pair)}")
        out.append((_check_square(f"{name}[{t}][0]", pair[0], n1), _check_square(f"{name}[{t}][1]", pair[1], n2)))
    return out


def mpo_from_terms(
    dims: Sequence[int],
    *,
    one_site: Sequence[torch.Tensor | None] | None = None,
    two_site: Sequence[TwoSiteTerm | None] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> TTMatrix:
    """The exact TT-matrix of ``Σ_k h_k + Σ_k (two-site term on bond k, k+1)`` on a chain of ``dims``.

    Parameters
    ----------
    dims:
        Local dimensions ``(n_0, ..., n_{L-1})``; the operator has ``row_dims = col_dims = dims``.
    one_site:
        ``L`` entries, each an ``(n_k, n_k)`` tensor or ``None`` (no term).
    two_site:
        ``L - 1`` entries, each ``None``, a dense ``(n_k n_{k+1}, n_k n_{k+1})`` matrix (row
        index ``i_k n_{k+1} + i_{k+1}``), or a list of ``(A, B)`` pairs meaning ``Σ A ⊗ B``.

    Bond ``k`` has rank ``T_k + 2`` (``T_k`` product terms; a dense term is split into
    the fewest, by SVD); the end cores have ranks ``(1, ...)`` and ``(..., 1)``.

    >>> import torch
    >>> z = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    >>> h = mpo_from_terms([2, 2, 2], two_site=[[(z, z)]] * 2, dtype=torch.float64)
    >>> h.ranks, torch.diagonal(h.full()).tolist()
    ((1, 3, 3, 1), [2.0, 0.0, -2.0, 0.0, 0.0, -2.0, 0.0, 2.0])
    """
    sizes = [int(n) for n in dims]
    if not sizes or any(n < 1 for n in sizes):
        raise ValueError(f"dims: expected a non-empty sequence of positive ints, got {list(dims)!r}")
    length = len(sizes)
    ones = [None] * length if one_site is None else list(one_site)
    twos = [None] * (length - 1) if two_site is None else list(two_site)
    if dtype is None:  # the promoted dtype of the given terms (complex if any term is)
        given: list[object] = [op for op in ones if op is not None]
        for term in twos:
            given.extend([term] if isinstance(term, torch.Tensor) else [m for pair in term or () for m in pair])
        dtype = torch.get_default_dtype()
        for op in given:
            if isinstance(op, torch.Tensor):
                dtype = torch.promote_types(dtype, op.dtype)
    dt, dev = _resolve(dtype, device)
    if len(ones) != length:
        raise ValueError(f"one_site: expected {length} entries (one per site), got {len(ones)}")
    if len(twos) != length - 1:
        raise ValueError(f"two_site: expected {length - 1} entries (one per bond), got {len(twos)}")
    terms = [[] if t is None else _products(f"two_site[{k}]", t, sizes[k], sizes[k + 1]) for k, t in enumerate(twos)]
    bonds = [1] + [len(t) + 2 for t in terms] + [1]
    cores = []
    for k, n in enumerate(sizes):
        rows, cols = len(terms[k - 1]) + 2 if k > 0 else 2, bonds[k + 1] if k < length - 1 else 2
        w = torch.zeros(rows, n, n, cols, dtype=dt, device=dev)
        eye = torch.eye(n, dtype=dt, device=dev)
        w[0, :, :, 0] = eye
        w[rows - 1, :, :, cols - 1] = eye
        if ones[k] is not None:
            w[0, :, :, cols - 1] = _check_square(f"one_site[{k}]", ones[k], n).to(dt)
        if k < length - 1:
            for t, (a, _) in enumerate(terms[k]):
                w[0, :, :, 1 + t] = a.to(dt)
        if k > 0:
            for t, (_, b) in enumerate(terms[k - 1]):
                w[1 + t, :, :, cols - 1] = b.to(dt)
        # Boundaries: the chain starts in state 0 and must end in the last ("done") state.
        if k == 0:
            w = w[:1]
        if k == length - 1:
            w = w[..., cols - 1 :]
        cores.append(w.contiguous())
    return TTMatrix(cores)


def _spin_half(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``S^z``, ``S^+``, ``S^-`` for spin 1/2 (basis ``|↑>, |↓>``)."""
    sz = torch.tensor([[0.5, 0.0], [0.0, -0.5]], dtype=dtype, device=device)
    sp = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=dtype, device=device)
    return sz, sp, sp.mT.contiguous()


def _check_length(length: int) -> int:
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length: expected an int >= 2 (sites of the chain), got {length!r}")
    return length


def _check_real(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name}: expected a finite real number, got {describe(value)}")
    return float(value)


def heisenberg_mpo(
    length: int,
    *,
    J: float = 1.0,
    delta: float = 1.0,
    h: float = 0.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> TTMatrix:
    """Open spin-1/2 XXZ chain ``H = J Σ (S^x S^x + S^y S^y + Δ S^z S^z) − h Σ S^z``, bond dimension 5.

    Spin operators ``S = σ / 2``, basis ``|↑>, |↓>`` per site; ``J = Δ = 1, h = 0`` is the
    Heisenberg chain, whose energy per site tends to ``1/4 − ln 2`` (Bethe ansatz).  The
    XY part is written ``(J/2)(S^+ S^- + S^- S^+)``, so the cores are real.

    >>> import torch
    >>> H = heisenberg_mpo(4, dtype=torch.float64)
    >>> H.ranks, round(float(torch.linalg.eigvalsh(H.full())[0]), 6)
    ((1, 5, 5, 5, 1), -1.616025)
    """
    length = _check_length(length)
    J, delta, h = _check_real("J", J), _check_real("delta", delta), _check_real("h", h)
    dt, dev = _resolve(dtype, device)
    sz, sp, sm = _spin_half(dt, dev)
    pairs = [(0.5 * J * sp, sm), (0.5 * J * sm, sp), (J * delta * sz, sz)]
    field = None if h == 0 else -h * sz
    return mpo_from_terms(
        [2] * length, one_site=[field] * length, two_site=[pairs] * (length - 1), dtype=dt, device=dev
    )


def ising_mpo(
    length: int,
    *,
    J: float = 1.0,
    g: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> TTMatrix:
    """Open transverse-field Ising chain ``H = −J Σ Z_k Z_{k+1} − g Σ X_k`` (Pauli matrices), bond dimension 3.

    ``g = J`` is the critical point.

    >>> import torch
    >>> H = ising_mpo(3, dtype=torch.float64)
    >>> H.ranks, bool(torch.allclose(H.full(), H.full().mT))
    ((1, 3, 3, 1), True)
    """
    length = _check_length(length)
    J, g = _check_real("J", J), _check_real("g", g)
    dt, dev = _resolve(dtype, device)
    z = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=dt, device=dev)
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=dt, device=dev)
    field = None if g == 0 else -g * x
    return mpo_from_terms(
        [2] * length, one_site=[field] * length, two_site=[[(-J * z, z)]] * (length - 1), dtype=dt, device=dev
    )


def tridiagonal_toeplitz_mpo(
    dims: Sequence[int],
    diagonal: float,
    lower: float,
    upper: float,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> TTMatrix:
    """``diagonal·I + lower·S + upper·Sᵀ`` on ``N = Π dims`` points, ``S`` the down-shift (``S[i+1, i] = 1``), rank 3.

    The grid index ``i`` is written in mixed radix with site 0 the most significant digit
    (the C order of ``TTMatrix.full``).  The cores are a carry automaton read from the
    least significant digit: state "equal so far", "pending carry" (``i = j + 1``: a digit
    ``n-1`` turns into 0 and carries on) and "pending borrow" (``i = j − 1``).  The first
    site accepts only "equal", which drops the wrap-around (Dirichlet boundaries).

    >>> import torch
    >>> T = tridiagonal_toeplitz_mpo([2, 3], 2.0, -1.0, -1.0, dtype=torch.float64)
    >>> T.ranks, T.full()[1].tolist()
    ((1, 3, 1), [-1.0, 2.0, -1.0, 0.0, 0.0, 0.0])
    """
    sizes = [int(n) for n in dims]
    if not sizes or any(n < 1 for n in sizes):
        raise ValueError(f"dims: expected a non-empty sequence of positive ints, got {list(dims)!r}")
    coeffs = [_check_real("diagonal", diagonal), _check_real("lower", lower), _check_real("upper", upper)]
    dt, dev = _resolve(dtype, device)
    cores = []
    for n in sizes:
        # w[s_out, i, j, s_in]: s_in is the state entering this digit from the less significant side.
        w = torch.zeros(3, n, n, 3, dtype=dt, device=dev)
        idx = torch.arange(n, device=dev)
        w[0, idx, idx, 0] = 1.0  # equal stays equal
        if n > 1:
            w[0, idx[1:], idx[:-1], 1] = 1.0  # carry resolved: i = j + 1
            w[0, idx[:-1], idx[1:], 2] = 1.0  # borrow resolved: i = j - 1
        w[1, 0, n - 1, 1] = 1.0  # j = n-1 + carry: digit 0, carry on
        w[2, n - 1, 0, 2] = 1.0  # j = 0 - borrow: digit n-1, borrow on
        cores.append(w)
    start = torch.tensor(coeffs, dtype=dt, device=dev)
    cores[0] = cores[0][:1]
    cores[-1] = torch.tensordot(cores[-1], start, dims=([3], [0])).unsqueeze(-1)
    return TTMatrix([c.contiguous() for c in cores])


def laplacian_mpo(
    dims: Sequence[int],
    *,
    h: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> TTMatrix:
    """The 1D Dirichlet finite-difference Laplacian ``tridiag(-1, 2, -1) / h²`` on ``N = Π dims`` points, rank 3.

    ``h`` defaults to ``1 / (N + 1)`` (``N`` interior points of ``[0, 1]``), so ``A x = f``
    discretises ``-u'' = f``, ``u(0) = u(1) = 0``.  ``dims = [2] * d`` is the QTT form on a
    ``2^d`` grid; any mixed radix works (site 0 the most significant digit).

    >>> import torch
    >>> A = laplacian_mpo([2] * 3, h=1.0, dtype=torch.float64)
    >>> A.ranks, A.full()[:3, :3].tolist()
    ((1, 3, 3, 1), [[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]])
    """
    sizes = [int(n) for n in dims]
    if not sizes:
        raise ValueError("dims: expected a non-empty sequence of positive ints, got []")
    step = 1.0 / (math.prod(sizes) + 1) if h is None else _check_real("h", h)
    check_positive_float("h", step, allow_zero=False)
    inv = 1.0 / (step * step)
    return tridiagonal_toeplitz_mpo(sizes, 2.0 * inv, -inv, -inv, dtype=dtype, device=device)
