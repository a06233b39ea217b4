"""Keeps benchmarks/bench_adapter.py working: every step runs once on a tiny encoder, and the
benchmarked variants compute the same function where they should (no timing here)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_adapter import RATIOS, Shape, interleaved_times, make_steps, report  # noqa: E402


def test_adapter_benchmark_steps_run_and_agree():
    shape = Shape(layers=2, hidden=16, heads=2, intermediate=32, batch=2, seq=4, rank=2)
    steps = make_steps(shape)
    outs = {name: step() for name, step in steps.items() if name.startswith("infer/")}
    # merged MetaTT == unmerged MetaTT; the random-init adapter really changes the output
    torch.testing.assert_close(outs["infer/metatt-merged"], outs["infer/metatt-4d"], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(outs["infer/metatt-4d"], outs["infer/base"])
    torch.testing.assert_close(outs["infer/peft-lora"], outs["infer/base"])  # peft's B starts at zero
    table = report(interleaved_times(steps, rounds=1, warmup=0))
    assert all(label in table for label, _, _ in RATIOS)
