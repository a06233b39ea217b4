"""``tnadapt finetune``: resumable checkpoints, file datasets with text pairs, multi-task (4+1)D, frozen heads."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY, one_line_error, read_json, run_cli, save_tiny_model
from safetensors.torch import load_file

from tnadapt.data import load_embedded
from tnadapt.finetune.model import TextClassifier, load_encoder
from tnadapt.nn import get_adapters, load_adapter


def test_resume_continues_exactly_like_the_uninterrupted_run(
    dmrg_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = read_json(dmrg_run / "metrics.json")
    assert [h["ranks"] for h in full["history"]] == [[[1, 4, 4, 4, 1]]] * 2
    assert full["history"][0]["sweep"]["ranks_before"] == [[1, 6, 6, 6, 1]]
    # simulate a run killed during epoch 2: only the epoch-1 checkpoint survives
    cut = tmp_path / "run"
    shutil.copytree(dmrg_run, cut)
    shutil.rmtree(cut / "checkpoints" / "epoch-002")
    shutil.rmtree(cut / "adapter")
    (cut / "metrics.json").unlink()
    argv = ["finetune", *TINY, "--epochs", "2", "--rank", "6", "--dmrg", "1:4", "--out", str(cut), "--resume"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "resumed from" in out and "epoch 1/2" not in out.split("resumed from")[1]
    resumed = read_json(cut / "metrics.json")
    for a, b in zip(full["history"], resumed["history"], strict=True):
        assert (a["train_loss"], a["valid_acc"], a["ranks"]) == (b["train_loss"], b["valid_acc"], b["ranks"])
    before = load_file(str(dmrg_run / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(cut / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_refuses_changed_flags(dmrg_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["finetune", *TINY, "--epochs", "2", "--rank", "6", "--dmrg", "1:4", "--lr", "0.1", "--out", str(dmrg_run)]
    code, _, err = run_cli(capsys, *argv, "--resume")
    assert code == 2 and "differs from the saved run" in err and err.count("\n") == 1


def _write_pairs(path: Path, n: int, offset: int) -> None:
    ds = load_embedded("rt-polarity", "valid").sample(2 * n + offset, seed=1)
    rows = [
        {"premise": ds.texts[i], "hypothesis": ds.texts[i + n], "gold": ds.label_names[ds.labels[i]]}
        for i in range(offset, offset + n)
    ]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["premise", "hypothesis", "gold"])
        writer.writeheader()
        writer.writerows(rows)


def test_two_file_tasks_with_text_pairs_metatt_4plus1d_and_frozen_heads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.jsonl"
    _write_pairs(a, 12, 0)
    _write_pairs(b, 12, 5)
    out = tmp_path / "run"
    argv = [
        "finetune", "--train", str(a), str(b), "--valid", str(a), str(b),
        "--text-col", "premise", "--pair-col", "hypothesis", "--label-col", "gold",
        "--adapter", "metatt-4+1d", "--rank", "4", "--epochs", "1", "--freeze-head",
        "--max-length", "40", "--batch-size", "8", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "(a 0." in stdout and ", b 0." in stdout  # per-task accuracies in the epoch line
    metrics = read_json(out / "metrics.json")
    assert metrics["task_names"] == ["a", "b"]
    assert len(metrics["history"][0]["valid_acc_tasks"]) == 2
    config = read_json(out / "adapter" / "adapter_config.json")
    owner = next(iter(config["groups"].values()))["owner"]
    assert owner["modes"] == {"layer": 6, "task": 2, "matrix": 2}
    # 4D count + the task core (2 slices of r x r)
    assert metrics["adapter_params"] == 384 * 4 + 6 * 16 + 2 * 16 + 2 * 16 + 4 * 384
    # --freeze-head: the saved heads are exactly their seeded initialisation
    encoder, _, _ = load_encoder()
    init = TextClassifier(encoder, [2, 2], seed=0).heads.state_dict()
    saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    for k, v in init.items():
        assert torch.equal(saved[f"modules_to_save.heads.{k}"], v)


def test_tera_adapter_through_the_same_wrap_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tera"
    argv = ["finetune", "--adapter", "tera", "--epochs", "1", "--train-size", "8", "--valid-size", "8"]
    code, _, err = run_cli(capsys, *argv, "--max-length", "16", "--no-progress", "--out", str(out))
    assert code == 0, err
    config = read_json(out / "adapter" / "adapter_config.json")
    assert config["family"] == "tera"
    encoder, _, _ = load_encoder()
    model = load_adapter(TextClassifier(encoder, [2]), out / "adapter")
    assert read_json(out / "metrics.json")["adapter_params"] == sum(a.num_parameters() for a in get_adapters(model))


def test_default_targets_follow_the_models_naming(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A local DistilBERT (attention Linears q_lin/v_lin) needs no --targets: the q/v projections are found."""
    from transformers import DistilBertConfig

    dims = {"dim": 32, "hidden_dim": 64, "n_layers": 2, "n_heads": 4}
    model_dir = save_tiny_model(tmp_path / "distilbert", DistilBertConfig, **dims)
    for adapter in ("metatt-4d", "lora"):
        out = tmp_path / adapter
        argv = ["finetune", "--model", str(model_dir), "--adapter", adapter, "--epochs", "1", *TINY]
        code, _, err = run_cli(capsys, *argv, "--out", str(out))
        assert code == 0, err
        metrics = read_json(out / "metrics.json")
        assert metrics["lora_r8_params"] == 2 * 2 * 8 * (32 + 32)  # q_lin and v_lin of 2 layers at rank 8
    lora_saved = read_json(tmp_path / "lora" / "adapter" / "lora_config.json")
    assert lora_saved["spec"]["targets"] == ["q_lin", "v_lin"]  # the resolved names, for inspect and reloading
    saved = read_json(tmp_path / "metatt-4d" / "adapter" / "adapter_config.json")
    assert saved["config"]["target_modules"] == ["q_lin", "v_lin"]
    (group,) = saved["groups"].values()
    assert sorted({t.rsplit(".", 1)[-1] for t in group["targets"]}) == ["q_lin", "v_lin"]


def test_sparse_integer_labels_are_renumbered_and_resume_checks_file_contents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Labels 0/100000 give a 2-class head (with a notice); a changed file at the same path cannot be resumed."""
    ds = load_embedded("rt-polarity", "valid").sample(16, seed=2)
    data = tmp_path / "sparse.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows([t, 100_000 * y] for t, y in zip(ds.texts, ds.labels))
    out = tmp_path / "run"
    argv = ["finetune", *TINY, "--train", str(data), "--valid", str(data), "--epochs", "1", "--rank", "2"]
    code, stdout, err = run_cli(capsys, *argv, "--out", str(out))
    assert code == 0, err
    notice = "integer labels 0, 100000 are not 0..1: class i is the i-th smallest (0 -> 0, 100000 -> 1)"
    assert f"--train {data}: {notice}" in stdout
    assert read_json(out / "metrics.json")["head_params"] == 2 * 384 + 2
    original = data.read_bytes()
    saved = read_json(out / "run_config.json")["data"][0]
    assert saved["train_sha256"] == saved["valid_sha256"] == hashlib.sha256(original).hexdigest()
    data.write_bytes(original + b"one more review,0\r\n")  # same path, same flags, other content
    err = one_line_error(*run_cli(capsys, *argv, "--out", str(out), "--resume"))
    assert f"--resume: --train file {str(data)!r} has changed since the run started (sha256 " in err
    data.write_bytes(original)
    code, stdout, err = run_cli(capsys, *argv, "--out", str(out), "--resume")
    assert code == 0 and "resumed from" in stdout, err


def test_resume_reads_the_saved_flags_and_extends_a_finished_run(
    dmrg_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--resume`` alone continues bit-exactly; ``--epochs 3`` continues a finished 2-epoch run by one epoch."""
    full = read_json(dmrg_run / "metrics.json")
    cut = shutil.copytree(dmrg_run, tmp_path / "cut")
    shutil.rmtree(cut / "checkpoints" / "epoch-002")
    code, out, err = run_cli(capsys, "finetune", "--out", str(cut), "--resume", "--no-progress")
    assert code == 0 and "resumed from" in out, err
    assert read_json(cut / "metrics.json")["history"] == [
        {**h, "seconds": r["seconds"]} for h, r in zip(full["history"], read_json(cut / "metrics.json")["history"])
    ]
    err = one_line_error(*run_cli(capsys, "finetune", "--out", str(cut), "--resume", "--epochs", "1"))
    assert "--epochs 1: the saved run has 2 epochs; --resume can extend a run, not shorten it" in err
    longer = shutil.copytree(dmrg_run, tmp_path / "longer")
    code, out, err = run_cli(capsys, "finetune", "--out", str(longer), "--resume", "--epochs", "3", "--no-progress")
    assert code == 0, err
    assert "epoch 3/3" in out and "epoch 2/" not in out.split("resumed from")[1]
    history = read_json(longer / "metrics.json")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["train_loss"] for h in history[:2]] == [h["train_loss"] for h in full["history"]]
    assert read_json(longer / "run_config.json")["train"]["epochs"] == 3
    before = load_file(str(dmrg_run / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(longer / "adapter" / "adapter_model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)  # epoch 3 trained (the LR is not 0 there)


def test_help_text_shows_defaults_and_no_markup(capsys: pytest.CaptureFixture[str]) -> None:
    code, top, _ = run_cli(capsys, "--help")
    assert code == 0 and "``" not in top and "predict" in top
    _, finetune, _ = run_cli(capsys, "finetune", "--help")
    flat = " ".join(finetune.split())
    for flag, default in (("--epochs", "3"), ("--batch-size", "16"), ("--seed", "0"), ("--device", "auto")):
        assert re.search(rf"{flag} \S+ (?:(?! --).)*\(default: {default}\)", flat), flag
    _, count, _ = run_cli(capsys, "count", "--help")
    assert "one method to count (default: lora, metatt-4d" in " ".join(count.split())


def test_summary_labels_the_ratio_and_a_clipped_rank_is_one_warning(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 2: the ratio to LoRA r=8 is named as such, next to LoRA at rank 2; MetaTT-5D rank 32 on 32-wide layers
    split into 4 heads of 8 is capped by the library, which the CLI reports on one warning line."""
    argv = ["finetune", "--model", str(tiny_bert), *TINY, "--epochs", "1"]
    code, out, err = run_cli(capsys, *argv, "--rank", "2", "--out", str(tmp_path / "r2"))
    assert code == 0, err
    lora8 = 2 * 2 * 8 * (32 + 32)
    assert f"× LoRA r=8 on the same layers ({lora8:,d}), " in out and f"× LoRA r=2 ({lora8 // 4:,d})" in out
    code, out, err = run_cli(capsys, *argv, "--adapter", "metatt-5d", "--rank", "32", "--out", str(tmp_path / "r32"))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("tnadapt: warning: ")]
    assert len(warnings) >= 1 and "Traceback" not in err, err
