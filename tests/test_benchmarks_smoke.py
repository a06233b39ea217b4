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

from benchmarks.cases import EXTRAS, IMPLS, execute, prepared, smoke_cases  # noqa: E402
from benchmarks.cross_compare import FUNCTIONS, RUNNERS  # noqa: E402
from benchmarks.interleaved import time_group  # noqa: E402
from benchmarks.report import table  # noqa: E402

CASES = {case.group: case for case in smoke_cases()}


@pytest.mark.filterwarnings("ignore::UserWarning:torchtt.*")
@pytest.mark.filterwarnings("ignore::UserWarning:cotengra.*")
@pytest.mark.parametrize("group", list(CASES))
def test_benchmark_case_runs_and_agrees(group: str) -> None:
    case = CASES[group]
    inputs = case.make()
    assert set(IMPLS) <= set(case.impls) <= set(IMPLS) | set(EXTRAS)
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


@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_cross_anchors_agree_with_tnadapt(function: str) -> None:
    """Every library of ``benchmarks.cross_compare`` approximates the same function on a tiny grid:
    each result, on every grid entry, is within 10x the 1e-6 target of the function and of tnadapt's."""
    shape = [5] * 4
    f = FUNCTIONS[function]
    grid = torch.cartesian_prod(*(torch.arange(n) for n in shape))

    def g(i: torch.Tensor) -> torch.Tensor:  # the 6-mode functions with the last two indices at 0
        return f(torch.cat([i, torch.zeros(i.shape[0], 2, dtype=i.dtype)], dim=1))

    ref = g(grid)
    results = {lib: runner(g, shape) for lib, runner in RUNNERS.items()}
    ours = results["tnadapt"].values(grid)
    for lib, res in results.items():
        got = res.values(grid).to(torch.float64).reshape(-1)
        assert res.evaluations > 0 and res.rank >= 1
        assert float(torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref)) < 1e-5, lib
        assert float(torch.linalg.vector_norm(got - ours) / torch.linalg.vector_norm(ours)) < 1e-5, lib


@pytest.mark.filterwarnings("ignore::UserWarning:torchtt.*")
@pytest.mark.filterwarnings("ignore::UserWarning:tenpy.*")
def test_solver_benchmarks_run_and_agree() -> None:
    """``benchmarks/test_tt_solvers.py`` on tiny sizes: every AMEn solution and DMRG energy agrees with the dense one."""
    from benchmarks import test_tt_solvers as bench
    from tnadapt.tt.solvers import relative_residual

    A, b = bench.poisson(6)
    dense = torch.linalg.solve(A.full(), b.full().reshape(-1))
    for name, make in bench.AMEN_IMPLS.items():
        x = make(6, 1e-8)()
        assert relative_residual(A, x, b) <= 1e-8, name
        assert float(torch.linalg.norm(x.full().reshape(-1) - dense) / torch.linalg.norm(dense)) < 1e-6, name
    exact = float(torch.linalg.eigvalsh(bench.tt.heisenberg_mpo(8, dtype=torch.float64).full())[0])
    for name, make in bench.DMRG_IMPLS.items():
        assert abs(make(8, 16)() - exact) < 1e-8, name


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_operator_benchmark_impls_agree() -> None:
    """Every implementation of ``benchmarks/test_tt_operators.py`` on tiny inputs, with a rank cap above the
    product's ranks (no truncation): all equal the dense ``full(A) @ x``."""
    pytest.importorskip("torchtt")
    from benchmarks.test_tt_operators import EXACT, ROUNDED, make_inputs

    a, x = make_inputs(4, 2, 3, 3)
    expected = a.full() @ x.full().reshape(-1)
    for name, (make, run, back) in {**EXACT, **ROUNDED}.items():
        y = back(run(make(a, x), 64)).full().reshape(-1)
        err = float(torch.linalg.vector_norm(y - expected) / torch.linalg.vector_norm(expected))
        assert err < 1e-10, f"{name}: relative difference {err:.2e} from full(A) @ x"
