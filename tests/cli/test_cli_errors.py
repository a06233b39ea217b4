"""Every user mistake ends with one line on stderr naming the problem, exit status 2, no traceback, no output dir."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY, one_line_error, run_cli
from safetensors.torch import load_file

from tnadapt.finetune.errors import UserError


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path, tiny_bert: Path) -> dict[str, Path]:
    good = _csv(tmp_path / "train.csv", [("good film", "pos"), ("bad film", "neg"), ("fine", "pos")])
    odd = _csv(tmp_path / "valid.csv", [("meh", "pos"), ("meh", "neutral"), ("ok", "pos")])
    sup = _csv(tmp_path / "sup.csv", [("a", "0"), ("b", "1"), ("c", "²")])
    long = _csv(tmp_path / "long.csv", [(" ".join(["word"] * 300), "1"), ("short", "0"), ("brief", "1")])
    broken = tmp_path / "notamodel"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')
    pickled = tmp_path / "pickle-only"
    shutil.copytree(tiny_bert, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(load_file(str(tiny_bert / "model.safetensors")), pickled / "pytorch_model.bin")
    return {
        "train": good,
        "odd": odd,
        "sup": sup,
        "long": long,
        "broken": broken,
        "pickled": pickled,
        "bert128": tiny_bert,
        "dir": tmp_path,
    }


CASES = {
    "missing file": (
        ["--train", "{dir}/nope.csv", "--valid", "{dir}/nope.csv"],
        "--train: {dir}/nope.csv: no such file",
    ),
    "wrong column": (["--train", "{train}", "--valid", "{train}", "--text-col", "review"], "no column 'review'"),
    "unseen label": (
        ["--train", "{train}", "--valid", "{odd}"],
        "--valid: {odd}:3: label 'neutral' in column 'label' is not one of the training labels ['neg', 'pos']",
    ),
    "superscript label": (
        ["--train", "{sup}", "--valid", "{sup}"],
        "--train: {sup}:4: label '²' in column 'label' is not an integer, but the label '0' on line 2 is",
    ),
    "max length beyond the model's positions": (
        ["--model", "{bert128}", "--train", "{long}", "--valid", "{long}", "--max-length", "512"],
        "--max-length 512: the model '{bert128}' accepts at most 128 tokens (max_position_embeddings 128",
    ),
    "pickle-only model": (["--model", "{pickled}"], "has its weights only as pickle files (pytorch_model.bin)"),
    "label column is the text column": (
        ["--train", "{train}", "--valid", "{train}", "--label-col", "text"],
        "--label-col text: is also the --text-col",
    ),
    "loss diverging in the first epoch": (["--alpha", "1e300"], "epoch 1: the loss became nan; lower --lr or --alpha"),
    "seed out of range": (["--seed", "99999999999999999999"], "--seed: expected an integer in 0..4294967295"),
    "tera rank beyond the modes": (
        ["--adapter", "tera", "--rank", "1000"],
        "--rank 1000: a TeRA Tucker rank cannot exceed the smallest mode size 16",
    ),
    "unknown adapter": (["--adapter", "dora"], "argument --adapter: invalid choice: 'dora'"),
    "rank cannot fit": (["--rank", "1000"], "--rank 1000: cannot exceed 384"),
    "model not a directory": (["--model", "{dir}/missing-model"], "--model: no such directory"),
    "model without config": (["--model", "{dir}"], "is not a Hugging Face model directory (no config.json)"),
    "model that does not load": (["--model", "{broken}"], "could not be loaded as a Hugging Face model"),
    "bad dmrg": (["--dmrg", "10->4"], "--dmrg: expected EPOCH:RANK"),
    "dmrg beyond epochs": (["--dmrg", "5:4", "--epochs", "2"], "--dmrg: epoch 5 is outside 1..2"),
    "dmrg without tt": (["--adapter", "lora", "--dmrg", "1:4"], "rank schedules need a MetaTT adapter"),
    "4+1d on one task": (["--adapter", "metatt-4+1d"], "needs at least two tasks"),
    "unknown dataset": (["--dataset", "imdb"], "--dataset: unknown embedded dataset 'imdb'"),
    "resume nothing": (["--resume"], "holds no run to resume"),
    "negative lr": (["--lr", "-1"], "argument --lr: expected a positive number"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_finetune_mistakes_give_one_line(case: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv, expected = CASES[case]
    out_dir = files["dir"] / f"out-{case.replace(' ', '-')}"
    fmt = {k: str(v) for k, v in files.items()}
    code, out, err = run_cli(capsys, "finetune", *TINY, *[a.format(**fmt) for a in argv], "--out", str(out_dir))
    assert expected.format(**fmt) in one_line_error(code, out, err)
    assert not out_dir.exists()


def test_out_inside_a_file_gives_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("")
    code, out, err = run_cli(capsys, "finetune", *TINY, "--out", str(tmp_path / "a-file" / "run"))
    assert f"--out: cannot create '{tmp_path}/a-file/run': '{tmp_path}/a-file' is not a directory" in one_line_error(
        code, out, err
    )


def test_a_failed_fresh_run_removes_only_what_it_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A UserError after the run directory appeared: what this run wrote goes, what was there before stays."""
    from tnadapt.finetune.checkpoint import checkpoint_dir
    from tnadapt.finetune.trainer import Trainer

    def failing_fit(self: Trainer, *, resume: bool = False) -> None:
        assert self.out is not None
        (checkpoint_dir(self.out, 1) / "adapter").mkdir(parents=True)
        (checkpoint_dir(self.out, 1) / "adapter" / "weights").write_text("partial")
        raise UserError("data: a mistake found during training")

    monkeypatch.setattr(Trainer, "fit", failing_fit)
    fresh = tmp_path / "fresh"
    code, out, err = run_cli(capsys, "finetune", *TINY, "--out", str(fresh))
    assert "a mistake found during training" in one_line_error(code, out, err)
    assert not fresh.exists()
    kept = tmp_path / "kept"
    (checkpoint_dir(kept, 1)).mkdir(parents=True)  # an interrupted earlier run: no COMPLETE marker
    (checkpoint_dir(kept, 1) / "old.txt").write_text("old")
    (kept / "notes.txt").write_text("mine")
    code, out, err = run_cli(capsys, "finetune", *TINY, "--out", str(kept))
    one_line_error(code, out, err)
    remaining = sorted(str(p.relative_to(kept)) for p in kept.rglob("*"))
    assert remaining == ["checkpoints", "checkpoints/epoch-001", "checkpoints/epoch-001/old.txt", "notes.txt"]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _bad_history(path: Path) -> None:
    doc = json.loads(path.read_text())
    doc["extra"]["history"] = [{"epoch": 1, "not_a_field": 0}]
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("damaged", "damage"),
    [
        ("optimizer.safetensors", _truncate),
        ("adapter/adapter_model.safetensors", _truncate),
        ("training_state.json", _truncate),
        ("training_state.json", _bad_history),
    ],
    ids=["truncated optimizer", "truncated adapter", "truncated state", "malformed history"],
)
def test_resume_from_a_damaged_checkpoint_gives_one_line(
    damaged: str,
    damage: Callable[[Path], None],
    dmrg_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(dmrg_run, run)
    latest = run / "checkpoints" / "epoch-002"
    damage(latest / damaged)
    argv = ["finetune", *TINY, "--epochs", "2", "--rank", "6", "--dmrg", "1:4", "--out", str(run), "--resume"]
    err = one_line_error(*run_cli(capsys, *argv))
    assert f"--resume: the latest checkpoint {latest} cannot be loaded" in err
    assert f"delete {latest} to resume from the checkpoint before it" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [("{oops", "run_config.json is unreadable"), ("[1, 2]", "does not hold a run configuration")],
)
def test_resume_with_a_damaged_run_config_gives_one_line(
    content: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "run_config.json").write_text(content)
    code, out, err = run_cli(capsys, "finetune", *TINY, "--out", str(tmp_path), "--resume")
    assert f"--resume: {tmp_path}/" in one_line_error(code, out, err) and expected in err


def test_existing_run_needs_resume(dmrg_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "finetune", *TINY, "--out", str(dmrg_run))
    assert code == 2 and "already holds a run; pass --resume" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["inspect", "/no/such/dir"], "inspect: no such directory"),
        (["inspect", "."], "is not a tnadapt run or adapter directory"),
        (["count", "--model", "gpt-17"], "neither a paper model"),
        (["count", "--rank", "8"], "--model: give a model"),
        (["count", "--model", "roberta-base", "--targets", "nonexistent"], "--targets:"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_other_commands_give_one_line(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and expected in err, err


def _groups_as_list(config: dict) -> None:
    config["groups"] = list(config["groups"].values())


def _owner_not_a_dict(config: dict) -> None:
    next(iter(config["groups"].values()))["owner"] = "384x384"


def _ranks_not_a_list(config: dict) -> None:
    next(iter(config["groups"].values()))["owner"]["ranks"] = 4


@pytest.mark.parametrize(
    ("damage", "field"),
    [(_groups_as_list, "groups"), (_owner_not_a_dict, "owner"), (_ranks_not_a_list, "ranks")],
    ids=["groups as a list", "owner not a dict", "ranks not a list"],
)
def test_inspect_a_malformed_adapter_config_gives_one_line(
    damage: Callable[[dict], None], field: str, dmrg_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = shutil.copytree(dmrg_run / "adapter", tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    damage(config)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    err = one_line_error(*run_cli(capsys, "inspect", str(adapter)))
    assert err.startswith("tnadapt: error: inspect: ") and "adapter_config.json" in err and field in err


def test_inspect_damaged_weights_and_metrics(
    dmrg_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated safetensors file is one line; an unreadable metrics.json is reported, not a traceback."""
    run = shutil.copytree(dmrg_run, tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["history"] = [{"epoch": 1, "train_loss": "high"}]
    (run / "metrics.json").write_text(json.dumps(metrics))
    code, out, err = run_cli(capsys, "inspect", str(run))
    assert code == 0 and err == "" and f"metrics: {run / 'metrics.json'} is unreadable" in out
    _truncate(run / "adapter" / "adapter_model.safetensors")
    err = one_line_error(*run_cli(capsys, "inspect", str(run)))
    assert "adapter_model.safetensors" in err and "not a valid safetensors file" in err


def test_inspect_a_malformed_lora_config_gives_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    save_file({"heads.0.weight": torch.zeros(2, 4)}, str(tmp_path / "lora_model.safetensors"))
    for content, expected in (("[1, 2]", "expected a JSON object, got a list"), ('{"spec": 8}', "field 'spec'")):
        (tmp_path / "lora_config.json").write_text(content)
        err = one_line_error(*run_cli(capsys, "inspect", str(tmp_path)))
        assert "lora_config.json" in err and expected in err
