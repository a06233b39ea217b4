"""``examples/frontier.py`` (the frontier of docs/results.md) runs its phases end to end on tiny sizes."""

from __future__ import annotations

import argparse
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


def _record(example, cfg, task: str, seed: int, lr: float, acc: float, train_size: int) -> dict:
    args = argparse.Namespace(epochs=3, batch_size=16, train_size=train_size, valid_size=50, max_length=32)
    config = example.config_for(cfg, task, seed, lr, args, 2.0).to_dict()
    return {"name": cfg.name, "task": task, "seed": seed, "lr": lr, "config": config, "final_valid_acc": acc}


def test_levers_are_runs_of_their_own_and_sweep_rates_can_be_overridden(load_script) -> None:
    example = load_script("examples/frontier.py")
    base = example._by_name("MetaTT-4D r=8 alpha=2")
    levers = [c for c in example.OTHER_LEVERS if c.core_lr or c.gauge]
    assert {bool(c.core_lr) for c in levers} == {True, False}  # both kinds are in the grid
    ids = {example.run_id(_record(example, c, "rt-polarity", 0, 1e-2, 0.5, 64)["config"]) for c in [base, *levers]}
    assert len(ids) == 1 + len(levers)  # a per-core rate or a gauge fix makes another run
    rows = [_record(example, c, "rt-polarity", 0, 1e-2, 0.5, 64) for c in [base, *levers]]
    assert [r["name"] for r in example._runs_of(base, rows, {"metatt": 1e-2}, 2.0)] == [base.name]
    for cfg in levers:
        assert [r["name"] for r in example._runs_of(cfg, rows, {"metatt": 1e-2}, 2.0)] == [cfg.name]
    grid = example.sweep_grid(["lora=2e-3,5e-4"])
    assert grid["lora"] == ("LoRA r=8", (5e-4, 2e-3)) and grid["metatt"] == example.SWEEP["metatt"]
    for bad in ("lora", "nope=1e-3", "lora=x", "lora=2"):
        with pytest.raises(example.UserError, match="--sweep-rates"):
            example.sweep_grid([bad])


def test_rate_study_fits_the_best_rate_of_each_length(tmp_path: Path, load_script) -> None:
    example = load_script("examples/frontier.py")
    cfg = example._by_name("MetaTT-4D r=8 alpha=2")
    # best rate 1e-2 at 48 steps (256 examples), 1e-3 at 480 steps (2560 examples): lr = c * steps^-1
    for size, best in ((256, 1e-2), (2560, 1e-3)):
        d = tmp_path / f"n{size}"
        d.mkdir()
        lines = [
            json.dumps(_record(example, cfg, task, 0, lr, 0.9 if lr == best else 0.6, size))
            for task in example.TUNING_TASKS
            for lr in (best / 2, best, best * 2)
        ]
        (d / "sweep.jsonl").write_text("\n".join(lines) + "\n")
    table = example.rate_study([tmp_path / "n256", tmp_path / "n2560"])
    assert "| metatt | 256 | 48 | 0.005: 0.600, 0.01: 0.900, 0.02: 0.600 | 0.01 |" in table
    assert "| metatt | 2560 | 480 |" in table
    c, p = example.fit_power_law([(48, 1e-2), (480, 1e-3)])
    assert p == pytest.approx(1.0) and c * 48**-p == pytest.approx(1e-2)
    assert "| 1.00 |" in table
