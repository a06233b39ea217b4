"""Smoke test of ``examples/dmrg_vs_fixed.py`` at tiny sizes: runs, follows the schedule, is reproducible."""

from __future__ import annotations


def test_tiny_experiment_runs_and_is_reproducible(load_script) -> None:
    ex = load_script("examples/dmrg_vs_fixed.py")
    cfg = ex.Config(
        dim=8,
        layers=2,
        n_train=32,
        n_val=64,
        epochs=3,
        batch=16,
        high_rank=4,
        low_rank=2,
        sweep_epochs=(1, 2),
        teacher_rank=3,
    )
    out = ex.run_experiment(cfg, [0], log=lambda _: None)
    runs = {r["method"]: r for r in out["runs"]}
    assert runs["dmrg-10to4"]["ranks"] == [3, 2, 2]  # linear 4 -> 2 after epochs 1 and 2
    assert runs["fixed-r4"]["ranks"] == [2, 2, 2] and runs["fixed-r10"]["ranks"] == [4, 4, 4]
    assert runs["dmrg-10to4"]["params"][-1] == runs["fixed-r4"]["params"][-1]
    assert set(out["summary"]) == {"fixed-r4", "dmrg-10to4", "fixed-r10"}
    assert out["paired_dmrg_minus_fixed"]["best"]["n"] == 1
    only_dmrg = ex.Config(**{**cfg.__dict__, "methods": ("dmrg-10to4",)})
    again = ex.run_experiment(only_dmrg, [0], log=lambda _: None)
    assert again["runs"][0]["val_acc"] == runs["dmrg-10to4"]["val_acc"]
    distill = ex.run_experiment(
        ex.Config(**{**cfg.__dict__, "task": "distill", "methods": ("dmrg-10to4",)}), [1], log=lambda _: None
    )
    assert all(0.0 <= a <= 1.0 for a in distill["runs"][0]["val_acc"])
