"""``examples/reproduce_miniature.py`` (the script behind docs/results.md) runs end to end on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_reproduce_miniature_records_runs_resumes_and_summarises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], load_script
) -> None:
    example = load_script("examples/reproduce_miniature.py")
    argv = ["--out", str(tmp_path), "--seeds", "0", "--train-size", "8", "--valid-size", "8", "--max-length", "16"]
    argv += ["--match", "MetaTT-4D r=4", "DMRG r=10"]
    assert example.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    names = sorted({r["experiment"] for r in rows})
    assert names == ["MetaTT-4D DMRG r=10->7->4", "MetaTT-4D r=4"]
    dmrg = next(r for r in rows if "DMRG" in r["experiment"])
    assert [max(max(rk) for rk in h["ranks"]) for h in dmrg["history"]] == [7, 4, 4]  # swept after epochs 1 and 2
    assert dmrg["adapter_params"] == next(r for r in rows if r["experiment"] == "MetaTT-4D r=4")["adapter_params"]
    capsys.readouterr()
    assert example.main(argv) == 0  # finished runs are skipped, the tables are printed again
    out = capsys.readouterr().out
    assert "== " not in out and "| MetaTT-4D DMRG r=10->7->4 | 3,200 |" in out
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(rows)
