"""Mixed-adapter batches on a BERT-base-shaped encoder: a batch mixing 8 named adapters vs the same batch through
one adapter, and vs peft LoRA's ``adapter_names=`` path on the same shapes.

The encoder is :func:`benchmarks.bench_adapter.build_encoder` (hidden 768, 12 layers; random weights, no
download).  Both sides carry 8 adapters on ``query`` and ``value`` (MetaTT-4D rank 8 with random
cores; peft LoRA ``r=8`` with random ``B``); the batch gives sample ``b`` adapter ``b % 8``.  Steps are
inference forwards (``torch.inference_mode``) of ``inputs_embeds (batch, seq, 768)``:

* ``infer/base`` — no adapter (the floor);
* ``infer/tnadapt-one`` / ``infer/peft-one`` — the whole batch through one adapter (the usual forward);
* ``infer/tnadapt-mixed8`` — ``with adapter_context(model, adapter_names=names): model(x)``, entering the
  block included (the per-batch cost of serving: the ``(batch,)`` index; the stacked factors are built
  once and reused while the adapters do not change);
* ``infer/peft-mixed8`` — ``peft_model(inputs_embeds=x, adapter_names=names)``.

``branch/*`` run the same four variants through the 24 adapted layers alone, their base layers swapped
for zero-output ones (:class:`ZeroLinear`), ``BRANCH_REPEATS`` times per step: the adapter work, which the
~50x larger base-model cost hides in whole forwards.  The ratios report both, and the adapter overhead
of whole forwards over the base (``t - t_base``).

* ``python -m benchmarks.bench_named_adapters [--batch 16 --seq 32 --rounds 9]`` runs the steps
  interleaved and prints the tables of ``docs/benchmarks.md``;
* ``pytest benchmarks/bench_named_adapters.py --benchmark-enable`` times them with pytest-benchmark.
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

from benchmarks.bench_adapter import TARGETS, build_encoder, interleaved_times, report
from benchmarks.bench_adapter import Shape as EncoderShape
from tnadapt.nn import MetaTTConfig, adapter_context, add_adapter


@dataclass(frozen=True)
class Shape:
    """Encoder, batch and adapter sizes (defaults: BERT-base, 8 adapters, a CPU-friendly batch)."""

    layers: int = 12
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    batch: int = 16
    seq: int = 32
    rank: int = 8
    adapters: int = 8

    def encoder(self) -> EncoderShape:
        return EncoderShape(self.layers, self.hidden, self.heads, self.intermediate, self.batch, self.seq, self.rank)


def adapter_names(shape: Shape) -> list[str]:
    """Sample ``b`` uses adapter ``a{b % adapters}``."""
    return [f"a{b % shape.adapters}" for b in range(shape.batch)]


def with_tnadapt(model: nn.Module, shape: Shape) -> nn.Module:
    """``shape.adapters`` MetaTT-4D adapters ``a0, a1, ...`` (random cores, different seeds); ``a0`` active."""
    for k in range(shape.adapters):
        config = MetaTTConfig(target_modules=TARGETS, rank=shape.rank, init="no:0.02-no:0.5-no:0.5-no:0.02", seed=k)
        add_adapter(model, f"a{k}", config)
    return model


def with_peft(model: nn.Module, shape: Shape) -> nn.Module:
    """The same number of peft LoRA adapters (``r = lora_alpha = rank``, random ``B``); ``a0`` active."""
    from peft import LoraConfig, get_peft_model

    def config() -> LoraConfig:
        return LoraConfig(r=shape.rank, lora_alpha=shape.rank, target_modules=TARGETS, init_lora_weights=False)

    torch.manual_seed(0)
    peft_model = get_peft_model(model, config(), adapter_name="a0")
    for k in range(1, shape.adapters):
        peft_model.add_adapter(f"a{k}", config())
    peft_model.set_adapter("a0")
    return peft_model.eval()


class ZeroLinear(nn.Linear):
    """An ``nn.Linear`` that outputs zeros: the base layer of the ``branch/*`` steps, so they time the adapter
    branches alone (through the public forward paths) without the base matmuls."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.out_features)


def branch_layers(model: nn.Module) -> list[nn.Module]:
    """The adapted layers of a tnadapt or peft model, their base layers swapped for :class:`ZeroLinear` s."""
    layers = [m for m in model.modules() if isinstance(getattr(m, "base_layer", None), nn.Linear)]
    for m in layers:
        base = m.base_layer
        zero = ZeroLinear(base.in_features, base.out_features, bias=False, device="meta")
        zero.weight = base.weight
        m.base_layer = zero
    return layers


#: Each ``branch/*`` step runs all adapted layers this many times (they are short).
BRANCH_REPEATS = 10


def make_steps(shape: Shape) -> dict[str, Callable[[], torch.Tensor]]:
    """``name -> zero-argument inference step`` (see the module doc)."""
    base = build_encoder(shape.encoder())
    ours = with_tnadapt(copy.deepcopy(base), shape).eval()
    theirs = with_peft(copy.deepcopy(base), shape)
    ours_branches = copy.deepcopy(ours)
    theirs_branches = copy.deepcopy(theirs)
    our_layers, their_layers = branch_layers(ours_branches), branch_layers(theirs_branches)
    names = adapter_names(shape)
    x = torch.randn(shape.batch, shape.seq, shape.hidden, generator=torch.Generator().manual_seed(1))

    def branches(layers: list[nn.Module], mixed: bool, peft: bool) -> Callable[[], torch.Tensor]:
        kwargs = {"adapter_names": names} if mixed and peft else {}

        def layer_pass() -> torch.Tensor:
            out = x.new_zeros(())
            for layer in layers:
                out = out + layer(x, **kwargs)[0, 0, 0]
            return out

        def step() -> torch.Tensor:
            with torch.inference_mode():
                for _ in range(BRANCH_REPEATS):
                    if mixed and not peft:  # entering the block is part of the per-batch cost
                        with adapter_context(ours_branches, adapter_names=names):
                            out = layer_pass()
                    else:
                        out = layer_pass()
                return out

        return step

    def plain(model: nn.Module) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            with torch.inference_mode():
                return model(inputs_embeds=x).last_hidden_state

        return step

    def ours_mixed() -> torch.Tensor:
        with torch.inference_mode(), adapter_context(ours, adapter_names=names):
            return ours(inputs_embeds=x).last_hidden_state

    def peft_mixed() -> torch.Tensor:
        with torch.inference_mode():
            return theirs(inputs_embeds=x, adapter_names=names).last_hidden_state

    return {
        "branch/tnadapt-one": branches(our_layers, mixed=False, peft=False),
        "branch/tnadapt-mixed8": branches(our_layers, mixed=True, peft=False),
        "branch/peft-one": branches(their_layers, mixed=False, peft=True),
        "branch/peft-mixed8": branches(their_layers, mixed=True, peft=True),
        "infer/base": plain(base),
        "infer/tnadapt-one": plain(ours),
        "infer/tnadapt-mixed8": ours_mixed,
        "infer/peft-one": plain(theirs),
        "infer/peft-mixed8": peft_mixed,
    }


RATIOS = [
    ("branches: mixed 8 / one adapter (tnadapt; goal <= 1.2)", "branch/tnadapt-mixed8", "branch/tnadapt-one"),
    ("branches: tnadapt mixed 8 / peft mixed 8 (goal < 1)", "branch/tnadapt-mixed8", "branch/peft-mixed8"),
    ("branches: peft mixed 8 / peft one", "branch/peft-mixed8", "branch/peft-one"),
    ("mixed 8 adapters / one adapter (tnadapt; goal <= 1.2)", "infer/tnadapt-mixed8", "infer/tnadapt-one"),
    ("tnadapt mixed 8 / peft mixed 8 (goal < 1)", "infer/tnadapt-mixed8", "infer/peft-mixed8"),
    ("peft: mixed 8 adapters / one adapter", "infer/peft-mixed8", "infer/peft-one"),
    ("one adapter: tnadapt / peft", "infer/tnadapt-one", "infer/peft-one"),
]

#: Ratios of the adapter overhead ``t - t_base`` (by median).
OVERHEAD_RATIOS = [
    ("overhead: tnadapt mixed 8 / tnadapt one", "infer/tnadapt-mixed8", "infer/tnadapt-one"),
    ("overhead: tnadapt mixed 8 / peft mixed 8", "infer/tnadapt-mixed8", "infer/peft-mixed8"),
]


def overhead_report(times: dict[str, list[float]]) -> str:
    """Median adapter overhead over ``infer/base`` per step, and the :data:`OVERHEAD_RATIOS`."""
    med = {k: statistics.median(v) for k, v in times.items()}
    over = {k: med[k] - med["infer/base"] for k in med if k.startswith("infer/") and k != "infer/base"}
    lines = ["| step | median overhead over base, ms |", "|---|---|"]
    lines += [f"| {k} | {v * 1e3:.2f} |" for k, v in over.items()]
    lines += ["", "| overhead ratio | by median |", "|---|---|"]
    lines += [f"| {label} | {over[a] / over[b]:.3f} |" for label, a, b in OVERHEAD_RATIOS if over[b] > 0]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in Shape.__dataclass_fields__:
        parser.add_argument(f"--{f}", type=int, default=getattr(Shape(), f))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall time or process CPU time")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = Shape(**{f: getattr(args, f) for f in Shape.__dataclass_fields__})
    print(f"# {shape}, threads={torch.get_num_threads()}, clock={args.clock}, torch {torch.__version__}")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times = interleaved_times(make_steps(shape), args.rounds, clock=clock)
    print(report(times, RATIOS))
    print()
    print(overhead_report(times))


# ---------------------------------------------------------------------------- pytest-benchmark
@pytest.fixture(scope="module")
def steps() -> dict[str, Callable[[], torch.Tensor]]:
    return make_steps(Shape())


@pytest.mark.parametrize(
    "name",
    [
        "branch/tnadapt-one",
        "branch/tnadapt-mixed8",
        "branch/peft-one",
        "branch/peft-mixed8",
        "infer/base",
        "infer/tnadapt-one",
        "infer/tnadapt-mixed8",
        "infer/peft-one",
        "infer/peft-mixed8",
    ],
)
def test_named_adapter_step(benchmark: Any, steps: dict[str, Callable[[], torch.Tensor]], name: str) -> None:
    benchmark.group = "named adapters " + name.split("/")[0]
    benchmark.pedantic(steps[name], rounds=5, warmup_rounds=1, iterations=1)


if __name__ == "__main__":
    main()
