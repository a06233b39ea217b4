"""``examples/frontier.py`` (the frontier of docs/results.md) runs its phases end to end on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_frontier_sweeps_reuses_runs_resumes_summarises_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, load_script
) -> None:
    example = load_script("examples/frontier.py")
    monkeypatch.setattr(example, "SWEEP", {"metatt": ("MetaTT-4D r=8 alpha=2", (5e-3, 1e-2))})  # a fast test
    monkeypatch.setattr(example, "OTHER_LEVERS", ())
    argv = ["--out", str(tmp_path), "--seeds", "0", "--train-size", "8", "--valid-size", "8", "--max-length", "16"]
    argv += ["--epochs", "1", "--match", "MetaTT-4D r=8", "--phases", "sweep", "levers", "frontier", "heldout"]
    assert example.main([*argv, "--plot", str(tmp_path / "f.png")]) == 0
    rows = {p: [json.loads(x) for x in (tmp_path / f"{p}.jsonl").read_text().splitlines()] for p in example.PHASES}
    assert len(rows["sweep"]) == 2 * 2  # the two rates on both tuning tasks
    (rate,) = example.chosen_rates(rows["sweep"]).values()
    assert {r["lr"] for r in rows["levers"] + rows["frontier"] + rows["heldout"]} == {rate}
    keys = [example.run_id(r["config"]) for p in example.PHASES for r in rows[p]]
    assert len(keys) == len(set(keys))  # a run listed twice (sweep, lever, frontier point) is run once
    lever_names = {r["name"] for r in rows["levers"]} | {r["name"] for r in rows["sweep"] if r["lr"] == rate}
    assert lever_names == {c.name for c in example.LEVERS}  # alpha=2 at seed 0: the sweep's run
    alpha = example.chosen_alpha(rows["sweep"] + rows["levers"], {"metatt": rate})
    assert alpha in (2.0, 8.0)
    frontier_alphas = {r["config"]["method"]["alpha"] for r in rows["frontier"] + rows["heldout"]}
    assert frontier_alphas == {alpha}  # the MetaTT points take the better lever's alpha
    assert {r["task"] for r in rows["heldout"]} == {example.HELD_OUT_TASK}
    alllinear = next(r for r in rows["frontier"] if "all-linear" in r["name"])
    assert alllinear["config"]["method"]["targets"] == list(example.ALL_LINEAR)
    assert (tmp_path / "f.png").stat().st_size > 0
    capsys.readouterr()
    assert example.main([*argv, "--summary"]) == 0  # finished runs are skipped; the tables are printed
    out = capsys.readouterr().out
    assert "== " not in out and "| MetaTT-4D r=8 all-linear | " in out and "**(chosen)**" in out
    assert sum(1 for line in out.splitlines() if line.startswith("| MetaTT-4D r=8 |")) == 1
