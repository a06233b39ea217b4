"""Cost of one rank-adaptation step: a MetaTT-4D DMRG sweep vs the SVDs LoRA-style adaptation needs.

MetaTT paper, Appendix I.3 / Table 19: rank-adapting LoRA by SVD needs one SVD per adapted
``D x D`` matrix, ``O(L M D^3)`` in total, while one two-site sweep over the MetaTT-4D train
``(D, L, M, D)`` of rank ``r`` costs ``O(2DLr min(D, Lr) + 2LMr^2 min(Lr, Mr) + 2DMr min(D, Mr))``.
This benchmark *measures* both on the paper's shapes (``M = 2`` matrices per layer:
query/value) in float32:

``sweep``
    :func:`tnadapt.tt.dmrg_sweep` on random cores of rank ``r`` truncating every bond to
    ``r // 8`` (``canonicalize=True``: QR sweep + two SVD passes) — what
    :class:`tnadapt.optim.DMRGRankScheduler` runs per adapter at a milestone;
``lora-dense``
    ``torch.linalg.svd`` of one dense ``D x D`` matrix (the paper's LoRA-SVD unit), times
    ``L * M`` — the one matrix is timed and the total is extrapolated (stated in the table);
``lora-factored``
    the *efficient* LoRA alternative the paper does not count: for each of the ``L * M``
    rank-``r`` LoRA pairs ``B (D x r)``, ``A (r x D)``, thin QRs of ``B`` and ``A^T`` and an
    ``r x r`` SVD of ``R_B R_A^T`` (``O(D r^2)`` per matrix) — all of them timed.

Entry points:

* ``python -m benchmarks.bench_sweep [--rounds 5 --threads 1 --models roberta-base,llama-2-7b]``
  times interleaved rounds (min and median) and prints the markdown table used in
  ``docs/rank_adaptive.md``, with the paper's predicted ratio next to the measured ones;
* ``pytest benchmarks/bench_sweep.py --benchmark-enable`` times the RoBERTa-base cases with
  pytest-benchmark (``--benchmark-disable`` runs each once as a smoke check).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from tnadapt import tt
from tnadapt.tt import TensorTrain, dmrg_sweep

#: (hidden size D, layers L) of the paper's models; M = 2 adapted matrices per layer.
MODELS: dict[str, tuple[int, int]] = {
    "roberta-base": (768, 12),
    "roberta-large": (1024, 24),
    "llama-2-7b": (4096, 32),
}
MATRICES = 2


@dataclass(frozen=True)
class Setting:
    model: str
    rank: int

    @property
    def dims(self) -> tuple[int, int, int]:
        d, layers = MODELS[self.model]
        return d, layers, MATRICES

    @property
    def target(self) -> int:
        return max(2, self.rank // 8)


def paper_ratio(d: int, layers: int, matrices: int, r: int) -> float:
    """Table 19's predicted ratio: Eq. (8) / Eq. (9) with O(1) constants.

    >>> round(paper_ratio(768, 12, 2, 16)), round(paper_ratio(4096, 32, 2, 64))
    (186, 127)
    """
    lora = layers * matrices * d**3
    metatt = (
        2 * d * layers * r * min(d, layers * r)
        + 2 * layers * matrices * r**2 * min(layers * r, matrices * r)
        + 2 * d * matrices * r * min(d, matrices * r)
    )
    return lora / metatt


def metatt_train(s: Setting, seed: int = 0) -> TensorTrain:
    d, layers, m = s.dims
    g = torch.Generator().manual_seed(seed)
    return TensorTrain.random((d, layers, m, d), s.rank, generator=g, dtype=torch.float32)


def lora_factors(s: Setting, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    d, layers, m = s.dims
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(d, s.rank, generator=g), torch.randn(s.rank, d, generator=g)) for _ in range(layers * m)]


def run_sweep(x: TensorTrain, target: int) -> TensorTrain:
    return dmrg_sweep(x, max_rank=target).tt


def run_lora_factored(pairs: list[tuple[torch.Tensor, torch.Tensor]], target: int) -> list[torch.Tensor]:
    """Truncated SVD of every ``B @ A`` from the factors: QR, QR, r x r SVD, keep ``target``."""
    out = []
    for b, a in pairs:
        qb, rb = torch.linalg.qr(b)
        qa, ra = torch.linalg.qr(a.T)
        u, sv, vh = torch.linalg.svd(rb @ ra.T)
        out.append((qb @ (u[:, :target] * sv[:target])) @ (vh[:target] @ qa.T))
    return out


def run_dense_svd(w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.linalg.svd(w, full_matrices=False)


# ---------------------------------------------------------------- pytest-benchmark
SMALL = [Setting("roberta-base", 16), Setting("roberta-base", 64)]


@pytest.mark.parametrize("s", SMALL, ids=lambda s: f"{s.model}-r{s.rank}")
def test_sweep(benchmark, s: Setting) -> None:
    x = metatt_train(s)
    benchmark.group = f"rank-adapt {s.model} r={s.rank}"
    y = benchmark(run_sweep, x, s.target)
    assert y.bond_dims == (s.target,) * 3


@pytest.mark.parametrize("s", SMALL, ids=lambda s: f"{s.model}-r{s.rank}")
def test_lora_factored(benchmark, s: Setting) -> None:
    pairs = lora_factors(s)
    benchmark.group = f"rank-adapt {s.model} r={s.rank}"
    out = benchmark(run_lora_factored, pairs, s.target)
    assert len(out) == s.dims[1] * s.dims[2]


def test_lora_dense_one_matrix(benchmark) -> None:
    d = MODELS["roberta-base"][0]
    w = torch.randn(d, d, generator=torch.Generator().manual_seed(0))
    benchmark.group = "rank-adapt roberta-base one dense SVD"
    _, s, _ = benchmark(run_dense_svd, w)
    assert s.shape == (d,)


# ---------------------------------------------------------------- interleaved table
def _time(rounds: int, fn: Callable[..., object], *args: object) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - start)
    return out


def measure(settings: list[Setting], rounds: int, dense_rounds: int) -> list[dict[str, float | str | int]]:
    rows = []
    dense_cache: dict[int, list[float]] = {}
    for s in settings:
        d, layers, m = s.dims
        x = metatt_train(s)
        pairs = lora_factors(s)
        run_sweep(x, s.target)  # warm-up
        run_lora_factored(pairs[:2], s.target)
        sweep_t, fact_t = [], []
        for _ in range(rounds):  # interleave so both see the same load
            sweep_t += _time(1, run_sweep, x, s.target)
            fact_t += _time(1, run_lora_factored, pairs, s.target)
        if d not in dense_cache:
            w = torch.randn(d, d, generator=torch.Generator().manual_seed(1))
            dense_cache[d] = _time(dense_rounds, run_dense_svd, w)
        dense_one = min(dense_cache[d])
        rows.append(
            {
                "model": s.model,
                "D": d,
                "L": layers,
                "r": s.rank,
                "target": s.target,
                "sweep_min": min(sweep_t),
                "sweep_median": statistics.median(sweep_t),
                "lora_factored_min": min(fact_t),
                "lora_dense_one": dense_one,
                "lora_dense_total": dense_one * layers * m,
                "ratio_dense": dense_one * layers * m / min(sweep_t),
                "ratio_factored": min(fact_t) / min(sweep_t),
                "paper_ratio": paper_ratio(d, layers, m, s.rank),
            }
        )
        print(_row(rows[-1]), flush=True)
    return rows


HEADER = (
    "| model | D, L | r -> target | sweep (min / median) | LoRA dense SVDs: 1 matrix x L·M = total | "
    "dense / sweep | paper Eq.8/Eq.9 | LoRA factored (all L·M) | factored / sweep |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _row(r: dict) -> str:
    return (
        f"| {r['model']} | {r['D']}, {r['L']} | {r['r']} -> {r['target']} | "
        f"{r['sweep_min'] * 1e3:.1f} / {r['sweep_median'] * 1e3:.1f} ms | "
        f"{r['lora_dense_one'] * 1e3:.0f} ms x {r['L'] * MATRICES} = {r['lora_dense_total']:.2f} s | "
        f"{r['ratio_dense']:.0f}x | {r['paper_ratio']:.0f}x | {r['lora_factored_min'] * 1e3:.1f} ms | "
        f"{r['ratio_factored']:.2f}x |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MetaTT sweep vs LoRA SVD rank adaptation")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dense-rounds", type=int, default=2, help="rounds of the single dense D x D SVD")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--ranks", default="16,64")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = [Setting(m, int(r)) for m in args.models.split(",") for r in args.ranks.split(",")]
    print(f"torch {torch.__version__}, {args.threads} thread(s), float32, tnadapt.tt from {tt.__file__}")
    print(HEADER)
    measure(settings, args.rounds, args.dense_rounds)


if __name__ == "__main__":
    main()
