"""Benchmark cases: one TT operation on fixed inputs, for tnadapt, the LAPACK floor and each anchor library.

A :class:`Case` builds its inputs once (seeded) and offers one :class:`Impl` per
implementation (``IMPLS``).  ``Impl.prepare`` converts the inputs to that library's
format outside the timed region; ``Impl.run`` is the timed call; ``Impl.mutates`` marks
operations that work in place, which then get a fresh copy before every round (the
copy is not timed); ``Impl.dense`` maps a result to a dense tensor so the smoke test
can check that every implementation computes the same thing.  An anchor that lacks the
operation carries ``unsupported`` (the reason), and the benchmark is skipped with it.

The *floor* replays exactly the dense kernel calls of the textbook algorithm on the
same data, with nothing in between: the Householder QRs (``torch.linalg.qr``) and thin
SVDs (``torch.linalg.svd(full_matrices=False)``) of the unfoldings it factors,
recorded once from a plain run on the real inputs, in the memory layout the algorithm
hands them over; for the contraction-only operations (``full``, ``dot``) the bare GEMM
chain.  Anchors are imported lazily, so collecting the benchmarks never needs them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tnadapt import tt

__all__ = [
    "ANCHORS",
    "EXTRAS",
    "IMPLS",
    "Case",
    "Impl",
    "benchmark_cases",
    "dmrg_case",
    "dot_case",
    "from_dense_case",
    "full_case",
    "orth_case",
    "round_case",
    "smoke_cases",
    "sum_case",
]

ANCHORS = ("tntorch", "torchtt", "tensorly", "quimb")
IMPLS = ("tnadapt", "floor", *ANCHORS)
#: Optional implementations a case may add (each gets its own column, ratio to ``tnadapt``):
#: the straight torch loop (QR/SVD plus the absorption GEMMs, no checks, no report),
#: tnadapt's other methods, and quimb 1.16's new factorizations at the same rank.
EXTRAS = (
    "torch loop",
    "tnadapt randomized",
    "tnadapt round_sum",
    "tnadapt formed",
    "quimb svd:rand",
    "quimb rsvd",
    "quimb qr:cholesky",
    "quimb src",
)

#: Relative tolerance anchors get with ``max_rank`` so only the rank cap decides (they all need some eps).
_ANCHOR_EPS = 1e-14


@dataclass(frozen=True)
class Impl:
    """One implementation of a case: ``run(prepare(inputs))`` is timed; see the module docstring."""

    prepare: Callable[[Any], Any] = lambda inputs: inputs
    run: Callable[[Any], Any] | None = None
    mutates: bool = False
    copy: Callable[[Any], Any] | None = None
    dense: Callable[[Any], torch.Tensor] | None = None
    unsupported: str | None = None


@dataclass(frozen=True)
class Case:
    """A named operation on seeded inputs; ``group`` is the pytest-benchmark group stem.

    ``impls`` has every name of :data:`IMPLS` and any of :data:`EXTRAS`.  ``max_rounds``
    caps the timed rounds of a case whose calls take seconds (and skips its warm-up round).
    """

    group: str
    make: Callable[[], Any]
    impls: dict[str, Impl] = field(default_factory=dict)
    max_rounds: int | None = None


# ----------------------------------------------------------------------------- inputs
def _random_tt(
    shape: Sequence[int], rank: int, *, seed: int, dtype: torch.dtype, exact_rank: int | None
) -> tt.TensorTrain:
    """A random train with interior ranks ``rank``; with ``exact_rank`` it represents a rank-``exact_rank`` tensor.

    The exact variant is ``y + y + ...`` (``rank // exact_rank`` copies) of a random train
    ``y``: every truncation to ``exact_rank`` is then exact, so all implementations must
    agree on the result (used by the smoke test).
    """
    g = torch.Generator().manual_seed(seed)
    if exact_rank is None:
        return tt.TensorTrain.random(shape, rank, generator=g, dtype=dtype)
    if rank % exact_rank:
        raise ValueError(f"rank: expected a multiple of exact_rank={exact_rank}, got {rank}")
    y = tt.TensorTrain.random(shape, exact_rank, generator=g, dtype=dtype)
    x = y
    for _ in range(rank // exact_rank - 1):
        x = x + y
    return x


def _ranks_after(shape: Sequence[int], cap: int) -> list[int]:
    """``(1, r_1, ..., r_{d-1}, 1)`` of a generic train capped at ``cap`` (limited by the unfolding sizes)."""
    d = len(shape)
    return [1, *(min(cap, math.prod(shape[: k + 1]), math.prod(shape[k + 1 :])) for k in range(d - 1)), 1]


# ----------------------------------------------------------------------------- floors
def _qr_all(mats: Sequence[torch.Tensor]) -> None:
    for m in mats:
        torch.linalg.qr(m)


def _svd_all(mats: Sequence[torch.Tensor]) -> None:
    for m in mats:
        torch.linalg.svd(m, full_matrices=False)


def _qr_svd_all(mats: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]) -> None:
    _qr_all(mats[0])
    _svd_all(mats[1])


def _record_right_sweep(cores: list[torch.Tensor], stop: int) -> list[torch.Tensor]:
    """Right-orthonormalise ``cores[stop+1:]`` in place (textbook QR sweep); returns the matrices factored."""
    mats = []
    for k in range(len(cores) - 1, stop, -1):
        r0, n, r1 = cores[k].shape
        a = cores[k].reshape(r0, n * r1).clone().mH  # column-major, as LAPACK wants it
        mats.append(a)
        q, r = torch.linalg.qr(a)
        cores[k] = q.mH.reshape(q.shape[1], n, r1)
        prev = cores[k - 1]
        cores[k - 1] = (prev.reshape(-1, r0) @ r.mH).reshape(prev.shape[0], prev.shape[1], q.shape[1])
    return mats


def _record_left_sweep(cores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Left-orthonormalise all but the last core in place; returns the matrices factored."""
    mats = []
    for k in range(len(cores) - 1):
        r0, n, r1 = cores[k].shape
        a = cores[k].reshape(r0 * n, r1).clone()
        mats.append(a)
        q, r = torch.linalg.qr(a)
        cores[k] = q.reshape(r0, n, q.shape[1])
        nxt = cores[k + 1]
        cores[k + 1] = (r @ nxt.reshape(r1, -1)).reshape(r.shape[0], nxt.shape[1], nxt.shape[2])
    return mats


def _record_svd_sweep(cores: list[torch.Tensor], cap: int) -> list[torch.Tensor]:
    """Truncated-SVD sweep left to right (centre at 0 on entry); returns the matrices factored."""
    mats = []
    for k in range(len(cores) - 1):
        r0, n, r1 = cores[k].shape
        a = cores[k].reshape(r0 * n, r1).clone()
        mats.append(a)
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        keep = min(cap, s.shape[0])
        cores[k] = u[:, :keep].reshape(r0, n, keep)
        nxt = cores[k + 1]
        sv = s[:keep, None].to(vh.dtype) * vh[:keep]
        cores[k + 1] = (sv @ nxt.reshape(r1, -1)).reshape(keep, nxt.shape[1], nxt.shape[2])
    return mats


def _record_round(x: tt.TensorTrain, cap: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    cores = list(x.cores)
    qr_mats = _record_right_sweep(cores, 0)
    return qr_mats, _record_svd_sweep(cores, cap)


def _record_tt_svd(a: torch.Tensor, cap: int) -> list[torch.Tensor]:
    mats = []
    shape = a.shape
    rest = a.reshape(1, -1)
    for k in range(a.ndim - 1):
        mat = rest.reshape(rest.shape[0] * shape[k], -1).clone()
        mats.append(mat)
        _, s, vh = torch.linalg.svd(mat, full_matrices=False)
        keep = min(cap, s.shape[0])
        rest = s[:keep, None].to(vh.dtype) * vh[:keep]
    return mats


def _record_dmrg(x: tt.TensorTrain, cap: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The paper's sweep, canonicalised: QR sweep to centre 0, then merge → SVD → split both ways."""
    cores = list(x.cores)
    qr_mats = _record_right_sweep(cores, 0)
    svd_mats = []

    def step(k: int, keep_cap: int, absorb_right: bool) -> None:
        a, b = cores[k], cores[k + 1]
        r0, n0, r1 = a.shape
        _, n1, r2 = b.shape
        w = (a.reshape(r0 * n0, r1) @ b.reshape(r1, n1 * r2)).clone()
        svd_mats.append(w)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        keep = min(keep_cap, s.shape[0])
        u, s, vh = u[:, :keep], s[:keep].to(w.dtype), vh[:keep]
        left, right = (u, s[:, None] * vh) if absorb_right else (u * s, vh)
        cores[k], cores[k + 1] = left.reshape(r0, n0, keep), right.reshape(keep, n1, r2)

    for k in range(len(cores) - 1):
        step(k, cap, True)
    for k in range(len(cores) - 2, -1, -1):
        step(k, cores[k].shape[2], False)
    return qr_mats, svd_mats


def _torch_left_loop(cores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The straight torch loop of left-orthogonalisation: ``torch.linalg.qr`` and the absorption GEMM, nothing else."""
    out = list(cores)
    for k in range(len(out) - 1):
        r0, n, r1 = out[k].shape
        q, r = torch.linalg.qr(out[k].reshape(r0 * n, r1))
        out[k] = q.reshape(r0, n, q.shape[1])
        nxt = out[k + 1]
        out[k + 1] = (r @ nxt.reshape(r1, -1)).reshape(r.shape[0], nxt.shape[1], nxt.shape[2])
    return out


def _torch_round_loop(cores: Sequence[torch.Tensor], cap: int) -> list[torch.Tensor]:
    """The straight torch loop of TT-rounding to ``cap``: right-to-left QR sweep, then truncated SVDs, no report."""
    out = list(cores)
    for k in range(len(out) - 1, 0, -1):
        r0, n, r1 = out[k].shape
        q, r = torch.linalg.qr(out[k].reshape(r0, n * r1).mH)
        out[k] = q.mH.reshape(q.shape[1], n, r1)
        prev = out[k - 1]
        out[k - 1] = (prev.reshape(-1, r0) @ r.mH).reshape(prev.shape[0], prev.shape[1], q.shape[1])
    for k in range(len(out) - 1):
        r0, n, r1 = out[k].shape
        u, s, vh = torch.linalg.svd(out[k].reshape(r0 * n, r1), full_matrices=False)
        keep = min(cap, s.shape[0])
        out[k] = u[:, :keep].reshape(r0, n, keep)
        nxt = out[k + 1]
        out[k + 1] = ((s[:keep, None] * vh[:keep]) @ nxt.reshape(r1, -1)).reshape(keep, nxt.shape[1], nxt.shape[2])
    return out


def _dense_cores(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    return tt.TensorTrain(list(cores)).full()


def _gemm_full(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    result = cores[0].reshape(cores[0].shape[1], -1)
    for core in cores[1:]:
        result = (result @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[2])
    return result


def _gemm_dot(pair: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]) -> torch.Tensor:
    env = torch.ones(1, 1, dtype=pair[0][0].dtype)
    for ga, gb in zip(*pair):
        ra0, n, ra1 = ga.shape
        rb0, _, rb1 = gb.shape
        env = ga.reshape(ra0 * n, ra1).mH @ (env @ gb.reshape(rb0, n * rb1)).reshape(ra0 * n, rb1)
    return env


# ----------------------------------------------------------------------------- anchors
def _tntorch(cores: Sequence[torch.Tensor]) -> Any:
    import tntorch

    return tntorch.Tensor([c.clone() for c in cores])


def _torchtt(cores: Sequence[torch.Tensor]) -> Any:
    import torchtt

    return torchtt.TT([c.clone() for c in cores])


def _quimb(cores: Sequence[torch.Tensor]) -> Any:
    """A quimb ``MatrixProductState`` on torch arrays (quimb dispatches through autoray; the
    torch backend shares torch's MKL and thread setting and measured faster than numpy)."""
    import quimb.tensor as qtn

    d = len(cores)
    if d == 1:
        raise ValueError("quimb: an MPS needs at least two sites")
    arrays = [cores[0][0].clone(), *(c.clone() for c in cores[1:-1]), cores[-1][:, :, 0].clone()]
    return qtn.MatrixProductState(arrays, shape="lpr")


def _quimb_dense(mps: Any) -> torch.Tensor:
    return mps.to_dense().reshape(tuple(int(mps.phys_dim(i)) for i in range(mps.L)))


def _scalar(value: Any) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64).reshape(())


def _tensorly_run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    import tensorly

    with tensorly.backend_context("pytorch"):
        return fn(*args, **kwargs)


def _tntorch_round(t: Any, cap: int) -> Any:
    t.round_tt(eps=_ANCHOR_EPS, rmax=cap)
    return t


def _tntorch_orth(t: Any) -> Any:
    t.orthogonalize(t.dim() - 1)
    return t


def _torchtt_orth(t: Any) -> Any:
    # torchtt has no public orthogonalisation; its round() calls this internal left-to-right QR sweep.
    from torchtt._decomposition import lr_orthogonal

    return lr_orthogonal(list(t.cores), list(t.R), False)[0]


def _quimb_compress(m: Any, cap: int) -> Any:
    m.compress(max_bond=cap, cutoff=0.0)
    return m


def _quimb_left_canonize(m: Any) -> Any:
    m.left_canonize()
    return m


def _quimb_compress_rand(m: Any, cap: int) -> Any:
    """quimb's QR canonicalisation, then ``svd:rand`` (randomized SVD, oversample 10, 2 power iterations) per bond."""
    m.compress(max_bond=cap, cutoff=0.0, method="svd:rand", seed=0)
    return m


def _quimb_cholesky_canonize(m: Any) -> Any:
    """Left canonicalisation bond by bond with quimb's ``qr:cholesky`` split (two passes: CholeskyQR2)."""
    import quimb.tensor as qtn

    with warnings.catch_warnings():  # "not well-defined for tall matrices" on the rank-saturated end bonds
        warnings.simplefilter("ignore", UserWarning)
        for i in range(m.L - 1):
            qtn.tensor_canonize_bond(m[i], m[i + 1], method="qr:cholesky", passes=2)
    return m


def _quimb_sum(trains: Sequence[tt.TensorTrain]) -> Any:
    """The formed sum as one quimb MPS (``add_MPS``: block-diagonal cores), built outside the timing."""
    total = _quimb(trains[0].cores)
    for x in trains[1:]:
        total = total.add_MPS(_quimb(x.cores))
    return total


def _quimb_src(m: Any, cap: int) -> Any:
    """quimb's successive randomized compression (``method="src"``, max rank only) of the formed sum."""
    from quimb.tensor.tn1d.compress import tensor_network_1d_compress

    return tensor_network_1d_compress(m, max_bond=cap, method="src", seed=0)


_QUIMB_RSVD = (
    "quimb's 'rsvd' split driver has only a numpy implementation: on the torch arrays every quimb anchor "
    "here uses, autoray finds no linalg.rsvd for the torch backend (ImportError)"
)


_TENSORLY_TT = "tensorly's TT module (tensorly.tt_tensor, tensorly.decomposition.tensor_train) has no "


# ----------------------------------------------------------------------------- cases
def round_case(d: int, n: int, r: int, target: int, *, exact: bool = False) -> Case:
    """``round_tt(x, max_rank=target)`` of a random order-``d`` train with mode size ``n`` and ranks ``r``."""

    def make() -> tt.TensorTrain:
        return _random_tt((n,) * d, r, seed=1, dtype=torch.float64, exact_rank=target if exact else None)

    return Case(
        group=f"round d={d} n={n} r={r}->{target}",
        make=make,
        impls={
            "tnadapt": Impl(run=lambda x: tt.round_tt(x, max_rank=target).tt, dense=lambda y: y.full()),
            "floor": Impl(prepare=lambda x: _record_round(x, target), run=_qr_svd_all),
            "tntorch": Impl(
                prepare=lambda x: _tntorch(x.cores),
                run=lambda t: _tntorch_round(t, target),
                mutates=True,
                copy=lambda t: t.clone(),
                dense=lambda t: t.torch(),
            ),
            "torchtt": Impl(
                prepare=lambda x: _torchtt(x.cores),
                run=lambda t: t.round(_ANCHOR_EPS, target),
                dense=lambda t: t.full(),
            ),
            "tensorly": Impl(unsupported=_TENSORLY_TT + "TT rounding (recompression of a TT)"),
            "quimb": Impl(
                prepare=lambda x: _quimb(x.cores),
                run=lambda m: _quimb_compress(m, target),
                mutates=True,
                copy=lambda m: m.copy(),
                dense=_quimb_dense,
            ),
            "torch loop": Impl(
                prepare=lambda x: list(x.cores), run=lambda c: _torch_round_loop(c, target), dense=_dense_cores
            ),
            "tnadapt randomized": Impl(
                run=lambda x: tt.round_tt(x, max_rank=target, method="randomized", generator=0).tt,
                dense=lambda y: y.full(),
            ),
            "quimb svd:rand": Impl(
                prepare=lambda x: _quimb(x.cores),
                run=lambda m: _quimb_compress_rand(m, target),
                mutates=True,
                copy=lambda m: m.copy(),
                dense=_quimb_dense,
            ),
            "quimb rsvd": Impl(unsupported=_QUIMB_RSVD),
        },
    )


def orth_case(d: int, n: int, r: int) -> Case:
    """Left-orthogonalisation (orthogonality centre ``d-1``) of a random train with ranks ``r``."""

    def make() -> tt.TensorTrain:
        return _random_tt((n,) * d, r, seed=2, dtype=torch.float64, exact_rank=None)

    return Case(
        group=f"left-orthogonalize d={d} n={n} r={r}",
        make=make,
        impls={
            "tnadapt": Impl(run=lambda x: tt.orthogonalize(x, d - 1), dense=lambda y: y.full()),
            "floor": Impl(prepare=lambda x: _record_left_sweep(list(x.cores)), run=_qr_all),
            "tntorch": Impl(
                prepare=lambda x: _tntorch(x.cores),
                run=_tntorch_orth,
                mutates=True,
                copy=lambda t: t.clone(),
                dense=lambda t: t.torch(),
            ),
            "torchtt": Impl(
                prepare=lambda x: _torchtt(x.cores),
                run=_torchtt_orth,
                dense=lambda cores: tt.TensorTrain(cores).full(),
            ),
            "tensorly": Impl(unsupported=_TENSORLY_TT + "orthogonalisation / canonical forms"),
            "quimb": Impl(
                prepare=lambda x: _quimb(x.cores),
                run=_quimb_left_canonize,
                mutates=True,
                copy=lambda m: m.copy(),
                dense=_quimb_dense,
            ),
            "torch loop": Impl(prepare=lambda x: list(x.cores), run=_torch_left_loop, dense=_dense_cores),
            "quimb qr:cholesky": Impl(
                prepare=lambda x: _quimb(x.cores),
                run=_quimb_cholesky_canonize,
                mutates=True,
                copy=lambda m: m.copy(),
                dense=_quimb_dense,
            ),
        },
    )


def full_case(d: int, n: int, r: int) -> Case:
    """``full()``: contract a random train to the dense tensor."""

    def make() -> tt.TensorTrain:
        return _random_tt((n,) * d, r, seed=3, dtype=torch.float64, exact_rank=None)

    def tensorly_full(cores: list[torch.Tensor]) -> torch.Tensor:
        import tensorly

        return _tensorly_run(tensorly.tt_to_tensor, cores)

    return Case(
        group=f"full d={d} n={n} r={r}",
        make=make,
        impls={
            "tnadapt": Impl(run=lambda x: x.full(), dense=lambda y: y),
            "floor": Impl(prepare=lambda x: list(x.cores), run=_gemm_full),
            "tntorch": Impl(prepare=lambda x: _tntorch(x.cores), run=lambda t: t.torch(), dense=lambda y: y),
            "torchtt": Impl(prepare=lambda x: _torchtt(x.cores), run=lambda t: t.full(), dense=lambda y: y),
            "tensorly": Impl(prepare=lambda x: [c.clone() for c in x.cores], run=tensorly_full, dense=lambda y: y),
            "quimb": Impl(prepare=lambda x: _quimb(x.cores), run=lambda m: m.to_dense(), dense=lambda y: y),
        },
    )


def from_dense_case(d: int, n: int, target: int, *, exact: bool = False) -> Case:
    """TT-SVD of a dense ``n^d`` tensor to ``max_rank=target``."""
    ranks = _ranks_after((n,) * d, target)

    def make() -> torch.Tensor:
        if exact:
            return _random_tt((n,) * d, target, seed=4, dtype=torch.float64, exact_rank=target).full()
        return torch.randn((n,) * d, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def tensorly_tt(a: torch.Tensor) -> list[torch.Tensor]:
        from tensorly.decomposition import tensor_train

        return _tensorly_run(tensor_train, a, list(ranks))

    def tensorly_dense(factors: Any) -> torch.Tensor:
        import tensorly

        return _tensorly_run(tensorly.tt_to_tensor, factors)

    def quimb_tt(a: torch.Tensor) -> Any:
        import quimb.tensor as qtn

        return qtn.MatrixProductState.from_dense(a, dims=[n] * d, max_bond=target, cutoff=0.0)

    def tntorch_tt(a: torch.Tensor) -> Any:
        import tntorch

        return tntorch.Tensor(a, ranks_tt=target)

    def torchtt_tt(a: torch.Tensor) -> Any:
        import torchtt

        return torchtt.TT(a, eps=_ANCHOR_EPS, rmax=target)

    return Case(
        group=f"from_dense {n}^{d} ->{target}",
        make=make,
        impls={
            "tnadapt": Impl(run=lambda a: tt.TensorTrain.from_dense(a, max_rank=target), dense=lambda y: y.full()),
            "floor": Impl(prepare=lambda a: _record_tt_svd(a, target), run=_svd_all),
            "tntorch": Impl(run=tntorch_tt, dense=lambda t: t.torch()),
            "torchtt": Impl(run=torchtt_tt, dense=lambda t: t.full()),
            "tensorly": Impl(run=tensorly_tt, dense=tensorly_dense),
            "quimb": Impl(run=quimb_tt, dense=_quimb_dense),
        },
    )


def dot_case(d: int, n: int, r: int) -> Case:
    """``dot(x, y)`` of two random trains with ranks ``r``."""

    def make() -> tuple[tt.TensorTrain, tt.TensorTrain]:
        x = _random_tt((n,) * d, r, seed=5, dtype=torch.float64, exact_rank=None)
        return x, _random_tt((n,) * d, r, seed=6, dtype=torch.float64, exact_rank=None)

    def torchtt_dot(pair: tuple[Any, Any]) -> torch.Tensor:
        import torchtt

        return torchtt.dot(*pair)

    def tntorch_dot(pair: tuple[Any, Any]) -> torch.Tensor:
        import tntorch

        return tntorch.dot(*pair)

    return Case(
        group=f"dot d={d} n={n} r={r}",
        make=make,
        impls={
            "tnadapt": Impl(run=lambda p: tt.dot(*p), dense=_scalar),
            "floor": Impl(prepare=lambda p: (list(p[0].cores), list(p[1].cores)), run=_gemm_dot),
            "tntorch": Impl(
                prepare=lambda p: (_tntorch(p[0].cores), _tntorch(p[1].cores)), run=tntorch_dot, dense=_scalar
            ),
            "torchtt": Impl(
                prepare=lambda p: (_torchtt(p[0].cores), _torchtt(p[1].cores)), run=torchtt_dot, dense=_scalar
            ),
            "tensorly": Impl(unsupported=_TENSORLY_TT + "inner product of two TTs"),
            "quimb": Impl(
                prepare=lambda p: (_quimb(p[0].cores), _quimb(p[1].cores)), run=lambda m: m[0].H @ m[1], dense=_scalar
            ),
        },
    )


def dmrg_case(shape: Sequence[int], r: int, target: int, *, exact: bool = False) -> Case:
    """:func:`tnadapt.tt.dmrg_sweep` (MetaTT Alg. 1) to ``max_rank=target`` of a float32 train with ranks ``r``."""
    shape = tuple(shape)

    def make() -> tt.TensorTrain:
        return _random_tt(shape, r, seed=7, dtype=torch.float32, exact_rank=target if exact else None)

    reason = "no merge -> truncated SVD -> split two-site sweep (MetaTT Alg. 1) in this library"
    return Case(
        group=f"dmrg_sweep {'x'.join(map(str, shape))} r={r}->{target}",
        make=make,
        impls={
            "tnadapt": Impl(run=lambda x: tt.dmrg_sweep(x, max_rank=target).tt, dense=lambda y: y.full()),
            "floor": Impl(prepare=lambda x: _record_dmrg(x, target), run=_qr_svd_all),
            **{name: Impl(unsupported=reason) for name in ANCHORS},
        },
    )


def sum_case(count: int, d: int, n: int, r: int, target: int, *, exact: bool = False) -> Case:
    """Round ``x_1 + ... + x_count`` (random trains of ranks ``r``) to ``max_rank=target``.

    ``tnadapt`` is :func:`~tnadapt.tt.round_sum` with ``method="randomized"`` (never forms the
    rank-``count r`` train); ``tnadapt formed`` forms the sum and rounds it deterministically
    (inside the timing, as the anchors do: their ``+`` is timed too, except quimb's
    ``add_MPS``, done outside).  ``exact``: every summand is a multiple of one rank-``target``
    train, so every method must return the same tensor.
    """

    def make() -> list[tt.TensorTrain]:
        g = torch.Generator().manual_seed(8)
        if exact:
            y = tt.TensorTrain.random((n,) * d, target, generator=g, dtype=torch.float64)
            return [y * float(i + 1) for i in range(count)]
        return [tt.TensorTrain.random((n,) * d, r, generator=g, dtype=torch.float64) for _ in range(count)]

    def formed(xs: Sequence[Any]) -> Any:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total

    def tntorch_round(ts: list[Any]) -> Any:
        return _tntorch_round(formed(ts), target)

    return Case(
        group=f"round_sum {count}x d={d} n={n} r={r}->{target}",
        make=make,
        max_rounds=2,
        impls={
            "tnadapt": Impl(
                run=lambda xs: tt.round_sum(xs, max_rank=target, method="randomized", generator=0).tt,
                dense=lambda y: y.full(),
            ),
            "floor": Impl(
                unsupported="not recorded for sums: 'tnadapt formed' (rounding the formed sum) is the deterministic "
                "reference, and its recorded LAPACK calls alone take seconds per round"
            ),
            "tnadapt round_sum": Impl(run=lambda xs: tt.round_sum(xs, max_rank=target).tt, dense=lambda y: y.full()),
            "tnadapt formed": Impl(
                run=lambda xs: tt.round_tt(formed(xs), max_rank=target).tt, dense=lambda y: y.full()
            ),
            "tntorch": Impl(
                prepare=lambda xs: [_tntorch(x.cores) for x in xs], run=tntorch_round, dense=lambda t: t.torch()
            ),
            "torchtt": Impl(
                prepare=lambda xs: [_torchtt(x.cores) for x in xs],
                run=lambda ts: formed(ts).round(_ANCHOR_EPS, target),
                dense=lambda t: t.full(),
            ),
            "tensorly": Impl(unsupported=_TENSORLY_TT + "TT addition or rounding"),
            "quimb": Impl(
                prepare=_quimb_sum,
                run=lambda m: _quimb_compress(m, target),
                mutates=True,
                copy=lambda m: m.copy(),
                dense=_quimb_dense,
            ),
            "quimb src": Impl(prepare=_quimb_sum, run=lambda m: _quimb_src(m, target), dense=_quimb_dense),
        },
    )


def benchmark_cases() -> list[Case]:
    """The cases of issue 2's benchmark list, at full size."""
    return [
        round_case(8, 32, 64, 16),
        round_case(16, 8, 40, 10),
        orth_case(8, 32, 64),
        orth_case(16, 8, 40),
        full_case(6, 8, 16),
        from_dense_case(7, 8, 16),
        dot_case(8, 32, 64),
        dmrg_case((768, 12, 2, 768), 64, 8),
        sum_case(8, 16, 16, 50, 50),
    ]


def smoke_cases() -> list[Case]:
    """Tiny versions of every case, with exactly low-rank inputs so all implementations must agree."""
    return [
        round_case(4, 3, 4, 2, exact=True),
        orth_case(4, 3, 2),
        full_case(3, 3, 2),
        from_dense_case(4, 3, 2, exact=True),
        dot_case(4, 3, 2),
        dmrg_case((5, 3, 2, 5), 4, 2, exact=True),
        sum_case(3, 4, 3, 2, 2, exact=True),
    ]


def prepared(impl: Impl, inputs: Any) -> Any:
    """The state ``impl.run`` takes (conversion to the library's format; not timed)."""
    return impl.prepare(inputs)


def execute(impl: Impl, state: Any) -> Any:
    """Run ``impl`` once on ``state`` (on a copy when it works in place) and return its result."""
    if impl.run is None:
        raise ValueError(f"execute: this implementation is unsupported: {impl.unsupported}")
    if impl.mutates:
        assert impl.copy is not None
        state = impl.copy(state)
    return impl.run(state)
