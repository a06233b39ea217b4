"""Keeps benchmarks/bench_named_adapters.py working: every step runs once on a tiny encoder, and the mixed steps
compute what one adapter at a time computes (no timing here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest.importorskip("peft")

from benchmarks.bench_adapter import build_encoder, interleaved_times, report  # noqa: E402
from benchmarks.bench_named_adapters import (  # noqa: E402
    RATIOS,
    Shape,
    adapter_names,
    make_steps,
    overhead_report,
    with_tnadapt,
)
from tnadapt.nn import set_adapter  # noqa: E402


def test_named_adapter_benchmark_steps_run_and_agree():
    shape = Shape(layers=2, hidden=16, heads=2, intermediate=32, batch=6, seq=4, rank=2, adapters=3)
    steps = make_steps(shape)
    outs = {name: step() for name, step in steps.items()}
    assert not torch.allclose(outs["infer/tnadapt-one"], outs["infer/base"])
    assert not torch.allclose(outs["infer/peft-one"], outs["infer/base"])
    # the mixed batch == each sample through its own adapter
    model = with_tnadapt(build_encoder(shape.encoder()), shape).eval()
    x = torch.randn(shape.batch, shape.seq, shape.hidden, generator=torch.Generator().manual_seed(1))
    rows = {}
    for name in set(adapter_names(shape)):
        set_adapter(model, name)
        rows[name] = model(inputs_embeds=x).last_hidden_state.detach()
    want = torch.stack([rows[n][b] for b, n in enumerate(adapter_names(shape))])
    torch.testing.assert_close(outs["infer/tnadapt-mixed8"], want, atol=1e-5, rtol=1e-4)
    times = interleaved_times(steps, rounds=1, warmup=0)
    table = report(times, RATIOS)
    assert all(label in table for label, _, _ in RATIOS)
    assert "overhead ratio" in overhead_report(times)
