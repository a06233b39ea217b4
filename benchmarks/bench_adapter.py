"""Adapter overhead on a BERT-base-shaped encoder: MetaTT-4D vs peft LoRA vs no adapter, merged vs base.

The encoder is built from ``BertConfig()`` (hidden 768, 12 layers, 12 heads, FFN 3072) with
random weights — no download.  Adapters target ``query`` and ``value`` with the same rank.
Inputs are ``inputs_embeds`` with ``requires_grad=True`` so every variant back-propagates
through all activations (the no-adapter row is the floor of adapter training: activation
gradients, no weight gradients).

Besides whole-model steps, ``branch/*`` times only the adapter branches of all 24 adapted layers
(forward + backward of ``x -> ΔW-path(x)``, repeated 10 times per step): the part in which the
two adapters differ, without the ~50x larger base-model cost and its noise.

Two entry points:

* ``python -m benchmarks.bench_adapter [--batch 4 --seq 64 --rank 8 --rounds 7]`` runs all
  variants *interleaved* (robust against noisy neighbours), prints min/median times and the
  ratios reported in ``docs/adapters.md``;
* ``pytest benchmarks/bench_adapter.py --benchmark-enable`` times the same steps with
  pytest-benchmark (``--benchmark-disable`` runs each once as a smoke check).
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from tnadapt.nn import MetaTTConfig, adapted_modules, merge_and_unload, wrap

TARGETS = ["query", "value"]


@dataclass(frozen=True)
class Shape:
    """Encoder and batch sizes (defaults: BERT-base, a CPU-friendly batch)."""

    layers: int = 12
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    batch: int = 4
    seq: int = 64
    rank: int = 8


def build_encoder(shape: Shape, seed: int = 0) -> nn.Module:
    """A ``BertModel`` of the given shape with random weights, in eval mode (no dropout)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        vocab_size=128,
        max_position_embeddings=max(64, shape.seq),
    )
    return BertModel(cfg, add_pooling_layer=False).eval().requires_grad_(False)


def with_metatt(model: nn.Module, shape: Shape) -> nn.Module:
    # a non-zero init so the adapter does real work (ze-id-id-id would give zero updates)
    return wrap(model, MetaTTConfig(target_modules=TARGETS, rank=shape.rank, init="no:0.02-id-id-id"))


def with_lora(model: nn.Module, shape: Shape) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=shape.rank, lora_alpha=shape.rank, target_modules=TARGETS, lora_dropout=0.0)
    return get_peft_model(model, cfg)


#: The branch-only steps are short; each timed step runs them this many times.
BRANCH_REPEATS = 10


def metatt_branches(model: nn.Module) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """``x -> alpha·((x @ G_in) @ M) @ G_out`` of every adapted layer (what ``AdaptedLinear`` adds to the base)."""
    return [functools.partial(layer.owner.forward_delta, key=layer.key) for layer in adapted_modules(model).values()]


def lora_branches(model: nn.Module) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """``x -> scaling · B(A(dropout(x)))`` of every peft LoRA layer (peft's per-layer dispatch logic excluded)."""
    layers = [m for m in model.modules() if isinstance(getattr(m, "lora_A", None), nn.ModuleDict) and m.lora_A]

    def part(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.lora_B["default"](m.lora_A["default"](m.lora_dropout["default"](x))) * m.scaling["default"]

    return [functools.partial(part, m) for m in layers]


def make_steps(shape: Shape) -> dict[str, Callable[[], Any]]:
    """``name -> zero-argument step``: training steps (forward+backward) and inference forwards."""
    base = build_encoder(shape)
    metatt = with_metatt(copy.deepcopy(base), shape)
    lora = with_lora(copy.deepcopy(base), shape)
    merged = merge_and_unload(with_metatt(copy.deepcopy(base), shape))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape.batch, shape.seq, shape.hidden, generator=g)

    def train(model: nn.Module) -> Callable[[], Any]:
        def step() -> None:
            inp = x.clone().requires_grad_(True)
            out = model(inputs_embeds=inp).last_hidden_state
            out.square().mean().backward()
            for p in model.parameters():
                p.grad = None

        return step

    def infer(model: nn.Module) -> Callable[[], Any]:
        def step() -> torch.Tensor:
            with torch.inference_mode():
                return model(inputs_embeds=x).last_hidden_state

        return step

    def branch(parts: list[Callable[[torch.Tensor], torch.Tensor]]) -> Callable[[], Any]:
        def step() -> None:  # the adapter branches alone, forward + backward, BRANCH_REPEATS times
            for _ in range(BRANCH_REPEATS):
                inp = x.clone().requires_grad_(True)
                total = inp.new_zeros(())
                for part in parts:
                    total = total + part(inp).square().mean()
                total.backward()

        return step

    return {
        "branch/metatt-4d": branch(metatt_branches(metatt)),
        "branch/peft-lora": branch(lora_branches(lora)),
        "train/no-adapter": train(base),
        "train/metatt-4d": train(metatt),
        "train/peft-lora": train(lora),
        "infer/base": infer(base),
        "infer/metatt-4d": infer(metatt),
        "infer/peft-lora": infer(lora),
        "infer/metatt-merged": infer(merged),
    }


def interleaved_times(
    steps: dict[str, Callable[[], Any]], rounds: int, warmup: int = 2, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Seconds per step, running the steps round-robin ``rounds`` times after ``warmup`` rounds.

    Round-robin order spreads slow phases of a shared machine over all variants alike.
    ``clock=time.process_time`` measures CPU seconds of this process instead of wall time,
    which is far less sensitive to other processes competing for the cores.
    """
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(warmup + rounds):
        for name, step in steps.items():
            t0 = clock()
            step()
            dt = clock() - t0
            if r >= warmup:
                times[name].append(dt)
    return times


RATIOS = [
    ("adapter branches only: MetaTT-4D / peft LoRA", "branch/metatt-4d", "branch/peft-lora"),
    ("train: MetaTT-4D / peft LoRA", "train/metatt-4d", "train/peft-lora"),
    ("train: MetaTT-4D / no adapter", "train/metatt-4d", "train/no-adapter"),
    ("train: peft LoRA / no adapter", "train/peft-lora", "train/no-adapter"),
    ("infer: MetaTT-4D (unmerged) / peft LoRA", "infer/metatt-4d", "infer/peft-lora"),
    ("infer: MetaTT-4D (unmerged) / base", "infer/metatt-4d", "infer/base"),
    ("infer: MetaTT-4D merged / base", "infer/metatt-merged", "infer/base"),
]


def report(times: dict[str, list[float]], ratios: list[tuple[str, str, str]] | None = None) -> str:
    """Markdown tables: min and median ms per step, then the ratios of interest (``ratios``, default
    :data:`RATIOS`; by min and by median)."""
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = ["| step | min ms | median ms |", "|---|---|---|"]
    lines += [f"| {k} | {best[k] * 1e3:.1f} | {med[k] * 1e3:.1f} |" for k in times]
    lines += ["", "| ratio | by min | by median |", "|---|---|---|"]
    lines += [
        f"| {label} | {best[a] / best[b]:.3f} | {med[a] / med[b]:.3f} |"
        for label, a, b in (RATIOS if ratios is None else ratios)
        if a in times and b in times
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in ("layers", "hidden", "heads", "intermediate", "batch", "seq", "rank"):
        parser.add_argument(f"--{f}", type=int, default=getattr(Shape(), f))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall time or process CPU time")
    parser.add_argument("--only", default="", help="run only steps whose name starts with this (e.g. 'branch')")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = Shape(**{f: getattr(args, f) for f in Shape.__dataclass_fields__})
    print(f"# {shape}, threads={torch.get_num_threads()}, clock={args.clock}, torch {torch.__version__}")
    steps = {k: v for k, v in make_steps(shape).items() if k.startswith(args.only)}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(report(interleaved_times(steps, args.rounds, clock=clock)))


# ---------------------------------------------------------------------------- pytest-benchmark
@pytest.fixture(scope="module")
def steps() -> dict[str, Callable[[], Any]]:
    return make_steps(Shape())


@pytest.mark.parametrize(
    "name",
    [
        "branch/metatt-4d",
        "branch/peft-lora",
        "train/no-adapter",
        "train/metatt-4d",
        "train/peft-lora",
        "infer/base",
        "infer/metatt-4d",
        "infer/peft-lora",
        "infer/metatt-merged",
    ],
)
def test_adapter_step(benchmark: Any, steps: dict[str, Callable[[], Any]], name: str) -> None:
    benchmark.group = "adapter " + name.split("/")[0]
    benchmark.pedantic(steps[name], rounds=5, warmup_rounds=1, iterations=1)


if __name__ == "__main__":
    main()
