"""LoRA -> MetaTT compression: ``tt_from_lowrank`` (from the factors) vs TT-SVD of the dense stacked tensor.

Three measurements, reported in ``docs/tera_and_lora.md``:

1. **time vs the dense TT-SVD it avoids** — the same random LoRA factors of a
   ``(D, L, M[, T], D)`` stack compressed to the same ``max_rank`` by
   :func:`tnadapt.tt.tt_from_lowrank` and by forming the dense tensor and running
   :func:`tnadapt.tt.tt_svd` (only at sizes where the dense tensor fits comfortably);
2. **ours at BERT-base size** — all six Linear types of BERT-base (query, key, value,
   attention output 768×768; intermediate 768×3072; output 3072×768), 12 layers, ``T``
   tasks: three shape groups, timed end to end;
3. **parameter counts and errors** of :func:`tnadapt.nn.compress_lora` on a BERT-base model
   (random weights, built from ``BertConfig()``) with ``N`` random LoRA adapters on
   query/value, for several target ranks — independent random LoRAs (no shared
   structure: the worst case) and synthetic LoRAs whose factors share per-matrix subspaces.

Entry points: ``python -m benchmarks.bench_compress [--rounds 3 --threads 1]`` prints the
tables; ``pytest benchmarks/bench_compress.py --benchmark-enable`` times case 1 with
pytest-benchmark (``--benchmark-disable`` runs each once as a smoke check).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from tnadapt.tt import tt_from_lowrank, tt_svd

F64 = torch.float64


@dataclass(frozen=True)
class Stack:
    """A stack of ``prod(index)`` random LoRA slices ``D_in x D_out`` of rank ``rank``."""

    d_in: int
    d_out: int
    index: tuple[int, ...]
    rank: int

    @property
    def dense_bytes(self) -> int:
        return 8 * self.d_in * self.d_out * math.prod(self.index)

    def label(self) -> str:
        return f"{self.d_in}x{'x'.join(map(str, self.index))}x{self.d_out}, r={self.rank}"


def random_pairs(stack: Stack, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-slice ``(A (D_in, r), B (D_out, r))`` with N(0, 1/D) entries (float64)."""
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(stack.d_in, stack.rank, generator=g, dtype=F64) / math.sqrt(stack.d_in),
            torch.randn(stack.d_out, stack.rank, generator=g, dtype=F64) / math.sqrt(stack.d_out),
        )
        for _ in range(math.prod(stack.index))
    ]


def dense_of(stack: Stack, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The dense ``(D_in, *index, D_out)`` tensor (what the factored path never forms)."""
    a = torch.stack([p[0] for p in pairs])
    b = torch.stack([p[1] for p in pairs])
    return torch.einsum("kir,kor->iko", a, b).reshape(stack.d_in, *stack.index, stack.d_out)


def ours(stack: Stack, pairs: list[tuple[torch.Tensor, torch.Tensor]], max_rank: int) -> float:
    """Relative error of the factored compression (exact, from its report)."""
    return float(tt_from_lowrank(pairs, stack.index, max_rank=max_rank).relative_error)


def dense_tt_svd(stack: Stack, pairs: list[tuple[torch.Tensor, torch.Tensor]], max_rank: int) -> float:
    """Form the dense tensor, TT-SVD it; returns the relative error bound-free (dense check)."""
    dense = dense_of(stack, pairs)
    rep = tt_svd(dense, max_rank=max_rank)
    return float(rep.relative_error)


def best_of(rounds: int, fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """Minimum wall time over ``rounds`` calls ``fn(*args)`` and the last result."""
    best, result = math.inf, None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, result


DENSE_CASES = [
    (Stack(256, 256, (12, 2, 4), 8), 16),
    (Stack(768, 768, (12, 2), 8), 16),
    (Stack(768, 768, (12, 2), 8), 64),
    (Stack(768, 768, (12, 2, 2), 8), 64),
]


def table_vs_dense(rounds: int) -> str:
    lines = [
        "| stack (D_in x index x D_out) | dense size | max_rank | ours s | dense TT-SVD s | speed-up | ours rel. err | dense rel. err |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stack, cap in DENSE_CASES:
        pairs = random_pairs(stack)
        t_ours, e_ours = best_of(rounds, ours, stack, pairs, cap)
        t_dense, e_dense = best_of(rounds, dense_tt_svd, stack, pairs, cap)
        lines.append(
            f"| {stack.label()} | {stack.dense_bytes / 2**20:.0f} MiB | {cap} | {t_ours:.3f} | {t_dense:.2f} | "
            f"{t_dense / t_ours:.0f}x | {e_ours:.4f} | {e_dense:.4f} |"
        )
    return "\n".join(lines)


def bert_base_groups(tasks: int, rank: int) -> list[tuple[str, Stack]]:
    """The three shape groups of LoRA on all six BERT-base Linear types, ``tasks`` tasks."""
    return [
        ("query,key,value,attention.output.dense", Stack(768, 768, (12, tasks, 4), rank)),
        ("intermediate.dense", Stack(768, 3072, (12, tasks, 1), rank)),
        ("output.dense", Stack(3072, 768, (12, tasks, 1), rank)),
    ]


def table_bert_base(rounds: int, tasks: int = 4, rank: int = 16, caps: tuple[int, ...] = (16, 64, 128)) -> str:
    lines = [
        f"| group ({tasks} tasks, LoRA r={rank}) | stack | dense would be | max_rank | time s | rel. error |",
        "|---|---|---|---|---|---|",
    ]
    for name, stack in bert_base_groups(tasks, rank):
        pairs = random_pairs(stack, seed=1)
        for cap in caps:
            t, err = best_of(rounds, ours, stack, pairs, cap)
            lines.append(
                f"| {name} | {stack.label()} | {stack.dense_bytes / 2**30:.2f} GiB | {cap} | {t:.2f} | {err:.4f} |"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- compress_lora on BERT-base
def bert_lora_sets(
    tasks: int, rank: int, shared: int | None, layers: int = 12, hidden: int = 768, seed: int = 0
) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """``tasks`` LoRA dicts on query/value of a BERT encoder, peft layout ``A (r, in)``, ``B (out, r)``.

    ``shared=None``: independent Gaussian factors.  ``shared=s``: per matrix type, all layers'
    and tasks' ``A`` rows lie in one random ``s``-dim subspace of the input space and ``B``
    columns in one ``s``-dim subspace of the output space (synthetic shared structure).
    """
    g = torch.Generator().manual_seed(seed)
    std = 1 / math.sqrt(hidden)
    bases = {
        m: (torch.randn(shared, hidden, generator=g, dtype=F64), torch.randn(hidden, shared, generator=g, dtype=F64))
        for m in ("query", "value")
        if shared
    }
    out = []
    for _ in range(tasks):
        task = {}
        for layer in range(layers):
            for m in ("query", "value"):
                name = f"encoder.layer.{layer}.attention.self.{m}"
                if shared:
                    ca = torch.randn(rank, shared, generator=g, dtype=F64) / math.sqrt(shared)
                    cb = torch.randn(shared, rank, generator=g, dtype=F64) / math.sqrt(shared)
                    a, b = ca @ bases[m][0] * std, bases[m][1] @ cb * std
                else:
                    a = torch.randn(rank, hidden, generator=g, dtype=F64) * std
                    b = torch.randn(hidden, rank, generator=g, dtype=F64) * std
                task[name] = (a, b)
        out.append(task)
    return out


def build_bert_base() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(), add_pooling_layer=False).eval()


#: (tasks, max_rank) rows of the compress_lora table; ``None`` = exact.  Exact is feasible for independent
#: LoRAs with one task only: with 4 tasks the exact end ranks reach D = 768 and the exact train is far larger
#: than the LoRAs.  Shared-subspace LoRAs have small exact ranks, so their 4-task exact row is cheap.
COMPRESS_ROWS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "independent": ((4, 8), (4, 32), (4, 64), (4, 128), (1, 64), (1, None)),
    "shared": ((4, 8), (4, 32), (4, 64), (4, 128), (4, None), (1, 64), (1, None)),
}


def table_compress_lora(rounds: int = 1, rank: int = 8, shared_dim: int = 16) -> str:
    from tnadapt.nn import compress_lora

    lines = [
        f"| LoRAs (q/v, r={rank}) | tasks | MetaTT max_rank | TT ranks | LoRA params | MetaTT params | "
        "ratio | rel. error | worst slice | time s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = build_bert_base()
    for kind, shared in (("independent", None), ("shared", shared_dim)):
        for tasks, cap in COMPRESS_ROWS[kind]:
            loras = bert_lora_sets(tasks, rank, shared)
            dt = math.inf
            for _ in range(rounds):  # best of ``rounds``; each run wraps a fresh copy (copy not timed)
                model = _fresh(base)
                t0 = time.perf_counter()
                _, rep = compress_lora(model, loras, rank=cap)
                dt = min(dt, time.perf_counter() - t0)
            ranks = next(iter(rep.ranks.values()))
            lines.append(
                f"| {kind if shared is None else f'shared subspaces (s={shared})'} | {tasks} | {cap if cap else 'exact'} | {ranks} | {rep.lora_parameters:,d} | "
                f"{rep.metatt_parameters:,d} | {rep.compression_ratio:.2f}x | {rep.relative_error:.2e} | "
                f"{rep.max_relative_error:.2e} | {dt:.2f} |"
            )
    return "\n".join(lines)


def _fresh(base: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(base)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["dense", "bert", "compress"])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# threads={torch.get_num_threads()}, torch {torch.__version__}, best of {args.rounds}")
    if "dense" not in args.skip:
        print("\n## tt_from_lowrank vs dense TT-SVD\n")
        print(table_vs_dense(args.rounds), flush=True)
    if "bert" not in args.skip:
        print("\n## tt_from_lowrank at BERT-base size\n")
        print(table_bert_base(args.rounds), flush=True)
    if "compress" not in args.skip:
        print("\n## compress_lora on BERT-base (query/value)\n")
        print(table_compress_lora(args.rounds), flush=True)


# ---------------------------------------------------------------------------- pytest-benchmark
BENCH_STACK = Stack(768, 768, (12, 2), 8)


@pytest.fixture(scope="module")
def bench_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return random_pairs(BENCH_STACK)


@pytest.mark.parametrize("impl", ["tt_from_lowrank", "dense_tt_svd"])
def test_compress_time(benchmark: Any, bench_pairs: list[tuple[torch.Tensor, torch.Tensor]], impl: str) -> None:
    fn = ours if impl == "tt_from_lowrank" else dense_tt_svd
    benchmark.group = f"compress {BENCH_STACK.label()} max_rank=16"
    err = benchmark.pedantic(lambda: fn(BENCH_STACK, bench_pairs, 16), rounds=3, warmup_rounds=0, iterations=1)
    assert 0.0 < err < 1.0


if __name__ == "__main__":
    main()
