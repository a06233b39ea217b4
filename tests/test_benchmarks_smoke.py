"""Keeps ``benchmarks/`` working: every case runs once on tiny, exactly low-rank inputs.

No timing here.  Each implementation (tnadapt, the LAPACK floor, every anchor library)
runs once, and every result that has a dense form must equal tnadapt's: the inputs are
built so that truncation is exact, hence all correct implementations agree.  This also
proves that the benchmarks compare the same operation on the same inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cases import IMPLS, execute, prepared, smoke_cases  # noqa: E402
from benchmarks.interleaved import time_group  # noqa: E402
from benchmarks.report import table  # noqa: E402

CASES = {case.group: case for case in smoke_cases()}


@pytest.mark.filterwarnings("ignore::UserWarning:torchtt.*")
@pytest.mark.parametrize("group", list(CASES))
def test_benchmark_case_runs_and_agrees(group: str) -> None:
    case = CASES[group]
    inputs = case.make()
    assert set(case.impls) == set(IMPLS)
    ours = case.impls["tnadapt"]
    assert ours.dense is not None
    expected = ours.dense(execute(ours, prepared(ours, inputs))).to(torch.float64)
    scale = max(float(expected.abs().max()), 1e-300)
    checked = 0
    for name, impl in case.impls.items():
        if impl.unsupported is not None:
            assert impl.run is None and len(impl.unsupported) > 20, f"{name}: unsupported needs a reason"
            continue
        result = execute(impl, prepared(impl, inputs))
        if impl.dense is None:
            continue
        got = torch.as_tensor(impl.dense(result)).to(torch.float64).reshape(expected.shape)
        err = float((got - expected).abs().max()) / scale
        assert err < 1e-8, f"{group}: {name} disagrees with tnadapt (max relative difference {err:.2e})"
        checked += 1
    assert checked >= 1


@pytest.mark.filterwarnings("ignore::UserWarning:torchtt.*")
def test_interleaved_runner_and_report_run() -> None:
    case = smoke_cases()[0]
    samples = time_group(case, threads=1, rounds=2)
    supported = {name for name, impl in case.impls.items() if impl.unsupported is None}
    assert set(samples) == supported and all(len(v) == 2 and min(v) > 0 for v in samples.values())
    data = {
        "benchmarks": [
            {"params": {"group": case.group, "threads": "1", "impl_name": name}, "stats": {"median": min(v)}}
            for name, v in samples.items()
        ]
    }
    text = table(data)
    assert case.group in text and text.count("\n") == 2  # header, rule, one row
