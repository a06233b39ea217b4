"""``examples/frontier.py`` (the frontier of docs/results.md) runs its phases end to end on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_frontier_sweeps_reuses_runs_resumes_summarises_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, load_script
) -> None:
    example = load_script("examples/frontier.py")
    monkeypatch.setattr(example, "SWEEP", {"metatt": ("MetaTT-4D r=8", (5e-3, 1e-2))})
    monkeypatch.setattr(example, "LEVERS", example.LEVERS[:1])  # fewer runs: a fast test
    argv = ["--out", str(tmp_path), "--seeds", "0", "--train-size", "8", "--valid-size", "8", "--max-length", "16"]
    argv += ["--epochs", "1", "--match", "MetaTT-4D r=8", "--phases", "sweep", "levers", "frontier", "heldout"]
    assert example.main([*argv, "--plot", str(tmp_path / "f.png")]) == 0
    rows = {p: [json.loads(x) for x in (tmp_path / f"{p}.jsonl").read_text().splitlines()] for p in example.PHASES}
    assert len(rows["sweep"]) == 2 * 2  # the two rates on both tuning tasks
    (rate,) = example.chosen_rates(rows["sweep"]).values()
    assert {r["lr"] for r in rows["levers"] + rows["frontier"] + rows["heldout"]} == {rate}
    keys = [(r["name"], r["task"], r["seed"], r["lr"]) for p in example.PHASES for r in rows[p]]
    assert len(keys) == len(set(keys))  # the sweep's seed-0 run at the chosen rate is not run again
    assert {r["name"] for r in rows["levers"]} == {c.name for c in example.LEVERS}
    assert {r["task"] for r in rows["heldout"]} == {example.HELD_OUT_TASK}
    alllinear = next(r for r in rows["frontier"] if "all-linear" in r["name"])
    assert alllinear["config"]["method"]["targets"] == list(example.ALL_LINEAR)
    assert (tmp_path / "f.png").stat().st_size > 0
    capsys.readouterr()
    assert example.main([*argv, "--summary"]) == 0  # finished runs are skipped; the tables are printed
    out = capsys.readouterr().out
    assert "== " not in out and "| MetaTT-4D r=8 all-linear | " in out and "**(chosen)**" in out
    assert sum(1 for line in out.splitlines() if line.startswith("| MetaTT-4D r=8 |")) == 1
