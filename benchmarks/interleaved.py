"""Interleaved timing of the benchmark cases: the numbers of ``docs/benchmarks.md``.

pytest-benchmark (``test_tt_kernels.py``) times one implementation after the other, so on
a machine shared with other jobs a burst of load can hit one implementation and not the
next, and the ratios drift.  This runner times the same cases round-robin — every round
runs each implementation once, in a fresh random order — so all implementations of a
group see the same load, and it reports the same table (via :mod:`benchmarks.report`)::

    python -m benchmarks.interleaved [--rounds 20] [--only round] [--json out.json]

In-place implementations get a fresh copy before each timed call (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmarks.cases import Case, benchmark_cases, prepared
from benchmarks.report import table

#: torch's intra-op thread count when the runner started (the "default" setting).
DEFAULT_THREADS = torch.get_num_threads()


def time_group(case: Case, threads: int, rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of every supported implementation of ``case``, ``rounds`` samples each.

    A case with ``max_rounds`` (calls of seconds) gets at most that many rounds and no warm-up.
    """
    inputs = case.make()
    impls = {name: impl for name, impl in case.impls.items() if impl.unsupported is None}
    states = {name: prepared(impl, inputs) for name, impl in impls.items()}
    samples: dict[str, list[float]] = {name: [] for name in impls}
    order = list(impls)
    rng = random.Random(seed)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    warmup = 1 if case.max_rounds is None else 0
    if case.max_rounds is not None:
        rounds = min(rounds, case.max_rounds)
    try:
        for rnd in range(1 - warmup, rounds + 1):  # round 0 is the warm-up
            rng.shuffle(order)
            for name in order:
                impl = impls[name]
                assert impl.run is not None
                state = impl.copy(states[name]) if impl.mutates and impl.copy is not None else states[name]
                start = time.perf_counter()
                impl.run(state)
                elapsed = time.perf_counter() - start
                if rnd:
                    samples[name].append(elapsed)
    finally:
        torch.set_num_threads(previous)
    return samples


def run(rounds: int, only: str | None) -> dict[str, Any]:
    """Time every case (optionally those whose group contains ``only``) at 1 and default threads."""
    out: list[dict[str, Any]] = []
    load_start = os.getloadavg()
    for case in benchmark_cases():
        if only and only not in case.group:
            continue
        for label, threads in (("1", 1), ("default", DEFAULT_THREADS)):
            for name, values in time_group(case, threads, rounds).items():
                stats = {"min": min(values), "median": statistics.median(values), "mean": statistics.fmean(values)}
                params = {"group": case.group, "threads": label, "impl_name": name}
                out.append({"params": params, "stats": stats, "rounds": len(values)})
            print(f"done: {case.group} | threads={label}", flush=True)
    return {
        "benchmarks": out,
        "default_threads": DEFAULT_THREADS,
        "torch": torch.__version__,
        "loadavg": {"start": load_start, "end": os.getloadavg()},  # 1/5/15-minute load averages
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds per implementation (after 1 warm-up)")
    parser.add_argument("--only", default=None, help="run only cases whose group contains this text")
    parser.add_argument("--json", type=Path, default=None, help="also write the samples' statistics here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning, module="torchtt")  # "C++ implementation not available"
    data = run(args.rounds, args.only)
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=1))
    print(f"\nload average (1, 5, 15 min): start {data['loadavg']['start']}, end {data['loadavg']['end']}")
    for stat in ("median", "min"):
        print(f"\n{stat} of {args.rounds} interleaved rounds (ms):\n")
        print(table(data, stat))


if __name__ == "__main__":
    main()
