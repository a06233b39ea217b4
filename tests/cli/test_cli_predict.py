"""``tnadapt predict`` and the label map: a finished run labels new texts with everything read from its directory."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from cli_helpers import one_line_error, read_json, run_cli

from tnadapt.data import load_embedded


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """A CSV of 16 review snippets with string labels in a ``review`` column: (path, texts, labels)."""
    ds = load_embedded("rt-polarity", "valid").sample(16, seed=3)
    texts, labels = ds.texts, [("neg", "pos")[y] for y in ds.labels]
    path = tmp_path_factory.mktemp("predict") / "reviews.jsonl"
    path.write_text("".join(json.dumps({"review": t, "gold": y}) + "\n" for t, y in zip(texts, labels)))
    return path, texts, labels


def _train(capsys: pytest.CaptureFixture[str], model: Path, data: Path, out: Path, *extra: str) -> None:
    argv = ["finetune", "--model", str(model), "--train", str(data), "--valid", str(data), "--text-col", "review"]
    argv += ["--label-col", "gold", "--epochs", "1", "--rank", "2", "--max-length", "24", "--no-progress", *extra]
    code, _, err = run_cli(capsys, *argv, "--out", str(out))
    assert code == 0, err


def test_predict_labels_a_file_and_stdin_with_the_saved_label_map(
    labelled: tuple[Path, list[str], list[str]],
    tiny_bert: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, texts, gold = labelled
    run = tmp_path / "run"
    _train(capsys, tiny_bert, data, run)
    assert read_json(run / "run_info.json")["tasks"] == [{"name": "reviews", "labels": ["neg", "pos"]}]
    code, report, _ = run_cli(capsys, "inspect", str(run))
    assert code == 0 and "labels (reviews): 0 neg, 1 pos" in report
    monkeypatch.chdir(tmp_path)  # the run directory alone is enough (the model path is saved resolved)
    code, out, err = run_cli(capsys, "predict", "run", "--input", str(data), "--no-progress", "--batch-size", "5")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == texts  # input order, although batched by length
    assert all(set(r["probabilities"]) == {"neg", "pos"} for r in rows)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    assert all(r["label"] == max(r["probabilities"], key=r["probabilities"].get) for r in rows)
    accuracy = sum(r["label"] == y for r, y in zip(rows, gold)) / len(gold)
    assert accuracy == read_json(run / "metrics.json")["final_valid_acc"]  # the trained adapter, not a fresh one
    stdin = "review\n" + "".join(f'"{t}"\n' for t in texts[:3])
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code, out, err = run_cli(capsys, "predict", "run", "--input", "-", "--output", "p.csv", "--no-progress")
    assert code == 0 and out == "", err
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "text,label,p(neg),p(pos)" and len(lines) == 4
    assert [line.split(",")[-3] for line in lines[1:]] == [r["label"] for r in rows[:3]]


def test_renumbered_integer_labels_come_back_as_written(
    labelled: tuple[Path, list[str], list[str]], tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, texts, gold = labelled
    data = tmp_path / "sparse.jsonl"
    data.write_text(
        "".join(json.dumps({"review": t, "gold": 100_000 * (y == "pos")}) + "\n" for t, y in zip(texts, gold))
    )
    _train(capsys, tiny_bert, data, tmp_path / "run")
    assert read_json(tmp_path / "run" / "run_info.json")["tasks"][0]["labels"] == ["0", "100000"]
    code, out, err = run_cli(capsys, "predict", str(tmp_path / "run"), "--input", str(data), "--no-progress")
    assert code == 0, err
    assert {json.loads(line)["label"] for line in out.splitlines()} <= {"0", "100000"}


def test_predict_mistakes_are_one_line(
    labelled: tuple[Path, list[str], list[str]], tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _, _ = labelled
    run = tmp_path / "run"
    _train(capsys, tiny_bert, data, run)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("text\nfine\n")
    output = tmp_path / "out.jsonl"
    cases = [
        (["--input", str(wrong)], f"--input: {wrong}:2: no column 'review'; its columns are ['text']"),
        (["--input", str(tmp_path / "nope.csv")], "no such file"),
        (["--input", str(data), "--task", "other"], "--task: the run has no task 'other'; its tasks are ['reviews']"),
    ]
    for argv, expected in cases:
        err = one_line_error(*run_cli(capsys, "predict", str(run), *argv, "--output", str(output), "--no-progress"))
        assert expected in err
        assert not output.exists()
    err = one_line_error(*run_cli(capsys, "predict", str(tmp_path), "--input", str(data)))
    assert "is not a finished tnadapt run" in err


def test_a_vera_run_predicts_with_the_same_frozen_projections(
    labelled: tuple[Path, list[str], list[str]], tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """peft VeRA through finetune: only the scaling vectors train and are saved; predict rebuilds the frozen random
    projections (fixed PRNG key) and reproduces the run's final accuracy."""
    data, _, gold = labelled
    run = tmp_path / "vera"
    _train(capsys, tiny_bert, data, run, "--adapter", "vera", "--rank", "4", "--lr", "3e-2")
    metrics = read_json(run / "metrics.json")
    assert metrics["adapter_params"] == 2 * 2 * (32 + 4)  # q and v of 2 layers: lambda_b (out) + lambda_d (r)
    code, report, _ = run_cli(capsys, "inspect", str(run))
    assert code == 0 and "adapter parameters: 144;" in report
    code, out, err = run_cli(capsys, "predict", str(run), "--input", str(data), "--no-progress")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert sum(r["label"] == y for r, y in zip(rows, gold)) / len(gold) == metrics["final_valid_acc"]
