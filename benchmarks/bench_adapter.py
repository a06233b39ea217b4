"""Adapter overhead on a BERT-base-shaped encoder: MetaTT-4D vs peft LoRA vs no adapter, merged vs base.

The encoder is built from ``BertConfig()`` (hidden 768, 12 layers, 12 heads, FFN 3072) with
random weights — no download.  Adapters target ``query`` and ``value`` with the same rank.
Inputs are ``inputs_embeds`` with ``requires_grad=True`` so every variant back-propagates
through all activations (the no-adapter row is the floor of adapter training: activation
gradients, no weight gradients).

Two entry points:

* ``python -m benchmarks.bench_adapter [--batch 4 --seq 64 --rank 8 --rounds 7]`` runs all
  variants *interleaved* (robust against noisy neighbours), prints median times and the
  ratios reported in ``docs/adapters.md``;
* ``pytest benchmarks/bench_adapter.py --benchmark-enable`` times the same steps with
  pytest-benchmark (``--benchmark-disable`` runs each once as a smoke check).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from tnadapt.nn import MetaTTConfig, merge_and_unload, wrap

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

    return {
        "train/no-adapter": train(base),
        "train/metatt-4d": train(metatt),
        "train/peft-lora": train(lora),
        "infer/base": infer(base),
        "infer/metatt-4d": infer(metatt),
        "infer/peft-lora": infer(lora),
        "infer/metatt-merged": infer(merged),
    }


def interleaved_medians(steps: dict[str, Callable[[], Any]], rounds: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per step, running the steps round-robin ``rounds`` times after ``warmup`` rounds."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(warmup + rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def report(med: dict[str, float]) -> str:
    """Markdown table of median times and the ratios of interest."""
    rows = [
        ("train: MetaTT-4D / peft LoRA", med["train/metatt-4d"] / med["train/peft-lora"]),
        ("train: MetaTT-4D / no adapter", med["train/metatt-4d"] / med["train/no-adapter"]),
        ("train: peft LoRA / no adapter", med["train/peft-lora"] / med["train/no-adapter"]),
        ("infer: MetaTT-4D (unmerged) / peft LoRA", med["infer/metatt-4d"] / med["infer/peft-lora"]),
        ("infer: MetaTT-4D merged / base", med["infer/metatt-merged"] / med["infer/base"]),
    ]
    lines = ["| step | median ms |", "|---|---|"]
    lines += [f"| {k} | {v * 1e3:.1f} |" for k, v in med.items()]
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in ("layers", "hidden", "heads", "intermediate", "batch", "seq", "rank"):
        parser.add_argument(f"--{f}", type=int, default=getattr(Shape(), f))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = Shape(**{f: getattr(args, f) for f in Shape.__dataclass_fields__})
    print(f"# {shape}, threads={torch.get_num_threads()}, torch {torch.__version__}")
    print(report(interleaved_medians(make_steps(shape), args.rounds)))


# ---------------------------------------------------------------------------- pytest-benchmark
@pytest.fixture(scope="module")
def steps() -> dict[str, Callable[[], Any]]:
    return make_steps(Shape())


@pytest.mark.parametrize(
    "name",
    [
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
