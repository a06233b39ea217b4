"""Turn a pytest-benchmark JSON file into the markdown table of ``docs/benchmarks.md``.

Usage::

    python -m benchmarks.report .benchmarks/latest.json [more.json ...] [--stat median]

One row per (case, thread setting): tnadapt's time, the floor's time and their ratio,
then each anchor's (and each extra implementation's, e.g. the straight torch loop) time with its
ratio to tnadapt (``>1`` means tnadapt is faster).
Times are milliseconds of the chosen statistic (median by default; ``min`` is the
least disturbed by other processes on a shared machine).  With several files, later
files override earlier ones entry by entry (e.g. a re-run of one case).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from benchmarks.cases import ANCHORS, EXTRAS


def _fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def table(data: dict, stat: str = "median") -> str:
    """Markdown table from a loaded pytest-benchmark JSON document."""
    times: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        params = bench.get("params") or {}
        if not {"group", "threads", "impl_name"} <= set(params):
            continue  # another benchmark module's entry
        times[(params["group"], params["threads"])][params["impl_name"]] = bench["stats"][stat]
    present = {name for row in times.values() for name in row}
    others = [*ANCHORS, *(e for e in EXTRAS if e in present)]  # extras only where some case has them
    header = ["case", "threads", "tnadapt ms", "floor ms", "tnadapt/floor", *(f"{a} ms (x tnadapt)" for a in others)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (group, threads), row in times.items():
        ours, floor = row.get("tnadapt"), row.get("floor")
        cells = [group, threads, _fmt_ms(ours) if ours else "–", _fmt_ms(floor) if floor else "–"]
        cells.append(f"{ours / floor:.2f}" if ours and floor else "–")
        for anchor in others:
            t = row.get(anchor)
            cells.append("n/a" if t is None else f"{_fmt_ms(t)} ({t / ours:.1f}x)" if ours else _fmt_ms(t))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_paths", type=Path, nargs="+", help="files written by pytest --benchmark-json")
    parser.add_argument("--stat", default="median", choices=["min", "median", "mean"], help="statistic to report")
    args = parser.parse_args(argv)
    merged: dict = {"benchmarks": []}
    for path in args.json_paths:
        merged["benchmarks"] += json.loads(path.read_text())["benchmarks"]
    print(table(merged, args.stat))


if __name__ == "__main__":
    main()
