"""Environment contractions for sweeping TT-matrix algorithms (ALS, AMEn, DMRG).

Conventions
-----------
An operator core (MPO core) has shape ``(q_{k-1}, m_k, n_k, q_k)``: row index ``m_k``
(the bra side), column index ``n_k`` (the ket side).  A train core has shape
``(r_{k-1}, n_k, r_k)``.  The *left environment* of sites ``< k`` for the sandwich
``<y| A |x>`` is the tensor

    L[a, A, α] = Σ conj(Y_{<k})[..., a] W_{<k}[..., A] X_{<k}[..., α]

of shape ``(ry_{k-1}, q_{k-1}, rx_{k-1})`` (bra rank, operator rank, ket rank); the right
environment of sites ``> k`` is ``R[b, B, β]`` of shape ``(ry_k, q_k, rx_k)``.  Both
boundaries are ``ones(1, 1, 1)``.  Two-layer projections ``<y|x>`` use the same code with
an identity operator of rank 1 (:func:`identity_cores`).

Every contraction below is a short chain of matrix products with explicit reshapes (no
``einsum`` path search per call): these run inside Lanczos/CG iterations.  Their GEMMs are
small for the bond dimensions sweeps usually run at, and on CPU small GEMMs gain nothing
from intra-op threads and lose a lot when the cores are shared (measured: a two-site
product at bond dimension 32 took 0.4 ms single-threaded and 70 ms with 2 threads on a
loaded 2-core machine), so :func:`sweep_threads` runs a sweep single-threaded while its
two-site blocks have at most :data:`SINGLE_THREAD_MAX` entries, like the small
factorizations of :mod:`tnadapt.tt._threads`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from ._threads import limited_threads

__all__ = [
    "apply_local",
    "dense_local",
    "identity_cores",
    "left_step",
    "merge_operators",
    "right_step",
    "sweep_threads",
]


#: Sweeps whose largest two-site block has at most this many entries run single-threaded on CPU
#: (bond dimension ~90 for qubits).
SINGLE_THREAD_MAX = 1 << 15


def sweep_threads(cores: Sequence[torch.Tensor]) -> contextlib.AbstractContextManager[None]:
    """The thread context for a sweep over ``cores``: one thread when every two-site block is small, on CPU.

    The largest block is bounded by ``max_k numel(G_k) * n_{k+1}``; the caller's thread
    setting is restored on exit (:func:`tnadapt.tt._threads.limited_threads`).
    """
    first = cores[0]
    widest = max(int(c.shape[1]) for c in cores)
    largest = max(c.numel() for c in cores) * widest
    if first.device.type == "cpu" and largest <= SINGLE_THREAD_MAX and torch.get_num_threads() > 1:
        return limited_threads(1)
    return contextlib.nullcontext()


def left_step(env: torch.Tensor, bra: torch.Tensor, op: torch.Tensor, ket: torch.Tensor) -> torch.Tensor:
    """Extend a left environment ``(ry, q, rx)`` by one site: ``(ry', q', rx')``.

    ``bra`` ``(ry, m, ry')`` (conjugated here), ``op`` ``(q, m, n, q')``, ``ket`` ``(rx, n, rx')``.
    """
    a, q, al = env.shape
    _, n, be = ket.shape
    _, m, _, q2 = op.shape
    b = bra.shape[2]
    t = (env.reshape(a * q, al) @ ket.reshape(al, n * be)).reshape(a, q, n, be)
    t = t.permute(0, 3, 1, 2).reshape(a * be, q * n) @ op.permute(0, 2, 1, 3).reshape(q * n, m * q2)
    t = t.reshape(a, be, m, q2).permute(1, 3, 0, 2).reshape(be * q2, a * m) @ bra.conj().reshape(a * m, b)
    return t.reshape(be, q2, b).permute(2, 1, 0)


def right_step(env: torch.Tensor, bra: torch.Tensor, op: torch.Tensor, ket: torch.Tensor) -> torch.Tensor:
    """Extend a right environment ``(ry', q', rx')`` by one site to the left: ``(ry, q, rx)``."""
    b, q2, be = env.shape
    al, n, _ = ket.shape
    q, m, _, _ = op.shape
    a = bra.shape[0]
    t = (ket.reshape(al * n, be) @ env.permute(2, 0, 1).reshape(be, b * q2)).reshape(al, n, b, q2)
    t = t.permute(0, 2, 1, 3).reshape(al * b, n * q2) @ op.permute(2, 3, 0, 1).reshape(n * q2, q * m)
    t = t.reshape(al, b, q, m).permute(0, 2, 3, 1).reshape(al * q, m * b) @ bra.conj().reshape(a, m * b).mT
    return t.reshape(al, q, a).permute(2, 1, 0)


def apply_local(left: torch.Tensor, ops: Sequence[torch.Tensor], right: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The projected operator applied to a local block: ``(L ⊗ W_1 ⊗ ... ⊗ W_s ⊗ R) v``.

    ``v`` has shape ``(rx_l, n_1, ..., n_s, rx_r)``; the result ``(ry_l, m_1, ..., m_s, ry_r)``.
    """
    a2, q, a = left.shape
    b2, _, be = right.shape
    t = (left.reshape(a2 * q, a) @ v.reshape(a, -1)).reshape(a2, q, -1)
    done = a2  # product of the leading (a2, m_1, ..., m_{i-1}) dimensions
    for op in ops:
        q, m, n, q2 = op.shape
        t = t.reshape(done, q, n, -1)
        rest = t.shape[3]
        t = t.permute(0, 3, 1, 2).reshape(done * rest, q * n) @ op.permute(0, 2, 1, 3).reshape(q * n, m * q2)
        t = t.reshape(done, rest, m, q2).permute(0, 2, 3, 1)
        done *= m
        q = q2
    t = t.reshape(done, q * be) @ right.reshape(b2, q * be).mT
    shape = (a2, *(op.shape[1] for op in ops), b2)
    return t.reshape(shape)


def merge_operators(ops: Sequence[torch.Tensor]) -> torch.Tensor:
    """The operator cores ``W_1 ... W_s`` contracted into one ``(q, m_1..m_s, n_1..n_s, q')`` core.

    A two-site block then costs one operator step in :func:`apply_local` instead of two (the
    same flops, half the reshapes), which matters inside Lanczos.
    """
    chain = ops[0]
    mm, nn = ops[0].shape[1], ops[0].shape[2]
    for op in ops[1:]:
        _, m, n, q2 = op.shape
        chain = torch.tensordot(chain, op, dims=([3], [0]))  # (q, M, N, m, n, q2)
        chain = chain.permute(0, 1, 3, 2, 4, 5).reshape(chain.shape[0], mm * m, nn * n, q2)
        mm, nn = mm * m, nn * n
    return chain


def dense_local(left: torch.Tensor, ops: Sequence[torch.Tensor], right: torch.Tensor) -> torch.Tensor:
    """The projected operator as a dense ``(ry_l m_1..m_s ry_r, rx_l n_1..n_s rx_r)`` matrix."""
    a2, _, a = left.shape
    b2, _, be = right.shape
    chain = merge_operators(ops)
    mm, nn = chain.shape[1], chain.shape[2]
    # full[a2, M, b2, a, N, be] = Σ L[a2, A, a] chain[A, M, N, B] R[b2, B, be]
    t = torch.tensordot(left, chain, dims=([1], [0]))  # (a2, a, M, N, B)
    t = torch.tensordot(t, right, dims=([4], [1]))  # (a2, a, M, N, b2, be)
    return t.permute(0, 2, 4, 1, 3, 5).reshape(a2 * mm * b2, a * nn * be)


def identity_cores(dims: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """Rank-1 identity operator cores ``(1, n_k, n_k, 1)``: two-layer projections through the three-layer code."""
    return [torch.eye(n, dtype=dtype, device=device).reshape(1, n, n, 1) for n in dims]
