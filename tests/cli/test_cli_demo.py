"""``tnadapt demo --quick`` end to end: outputs, consistent metrics, saved adapters that reproduce the metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import read_json, run_cli

from tnadapt.data import load_embedded
from tnadapt.finetune.batching import encode
from tnadapt.finetune.demo import DEMO_SIZES
from tnadapt.finetune.model import TextClassifier, load_encoder
from tnadapt.finetune.trainer import evaluate
from tnadapt.nn import get_adapters, load_adapter

SIZE = DEMO_SIZES["quick"]
RUNS = ("head-only", "metatt-4d", "metatt-4d-dmrg", "lora-r8")


def test_demo_writes_every_output(demo_dir: Path) -> None:
    assert (demo_dir / "metrics.json").is_file()
    png = (demo_dir / "valid_acc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for name in RUNS:
        run = demo_dir / name
        assert (run / "metrics.json").is_file(), name
        assert (run / "checkpoints" / f"epoch-{1:03d}" / "COMPLETE").is_file(), name
        adapter = run / "adapter"
        assert (adapter / "adapter_config.json").is_file() or (adapter / "lora_config.json").is_file(), name


def test_demo_metrics_are_consistent(demo_dir: Path) -> None:
    metrics = read_json(demo_dir / "metrics.json")
    runs = {r["method"] + ("-dmrg" if r["config"]["train"]["dmrg"] else ""): r for r in metrics["runs"]}
    assert set(runs) == {"head", "metatt-4d", "metatt-4d-dmrg", "lora"}
    for r in runs.values():
        for h in r["history"]:
            # accuracy is a count over the validation set
            correct = h["valid_acc"] * SIZE.valid_size
            assert abs(correct - round(correct)) < 1e-6 and 0 <= correct <= SIZE.valid_size
            assert h["train_loss"] > 0
    # parameter counts: MetaTT-4D on MiniLM (D=384, L=6, M=2) and peft LoRA r=8 on query/value
    r, d = SIZE.rank, 384
    assert runs["metatt-4d"]["adapter_params"] == d * r + 6 * r * r + 2 * r * r + r * d
    assert runs["lora"]["adapter_params"] == 8 * (d + d) * 12
    assert runs["head"]["adapter_params"] == 0
    # the DMRG run ends at the scheduled rank, with the same count as the fixed-rank run
    dmrg = runs["metatt-4d-dmrg"]
    final_rank = list(SIZE.dmrg.values())[-1]
    assert dmrg["history"][-1]["ranks"] == [[1, final_rank, final_rank, final_rank, 1]]
    assert dmrg["history"][0]["sweep"]["ranks_before"] == [[1, SIZE.dmrg_start, SIZE.dmrg_start, SIZE.dmrg_start, 1]]
    assert dmrg["adapter_params"] == runs["metatt-4d"]["adapter_params"]
    assert runs["metatt-4d"]["ratio_to_lora_r8"] == pytest.approx(
        runs["metatt-4d"]["adapter_params"] / runs["lora"]["adapter_params"]
    )
    assert len(metrics["table"]) == 2 + len(RUNS)


def test_saved_metatt_adapter_reproduces_the_reported_accuracy(demo_dir: Path) -> None:
    run = demo_dir / "metatt-4d-dmrg"
    metrics = read_json(run / "metrics.json")
    encoder, tokenizer, _ = load_encoder()
    model = TextClassifier(encoder, [2], seed=12345)  # a different head init: the saved head must win
    load_adapter(model, run / "adapter")
    assert [a.ranks for a in get_adapters(model)] == [tuple(r) for r in metrics["history"][-1]["ranks"]]
    valid = load_embedded("rt-polarity", "valid").sample(SIZE.valid_size, seed=0)
    acc, _ = evaluate(model, encode(tokenizer, [valid], SIZE.max_length))
    assert acc == pytest.approx(metrics["final_valid_acc"])
    assert all(not p.requires_grad for p in model.parameters())


def test_inspect_on_the_demo_lists_every_run(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "inspect", str(demo_dir))
    assert code == 0 and err == ""
    assert out.count("run: ") == len(RUNS)
    assert "TT ranks: (1, 4, 4, 4, 1)" in out
    assert "method: lora" in out


def test_demo_table_has_the_issue_columns(demo_dir: Path) -> None:
    metrics = read_json(demo_dir / "metrics.json")
    header = metrics["table"][0]
    for column in ("method", "trainable params", "ratio to LoRA", "valid acc", "wall time"):
        assert column in header
    assert torch.tensor([r["final_valid_acc"] for r in metrics["runs"]]).le(1).all()
