"""Every user mistake ends with one line on stderr naming the problem, exit status 2, no traceback, no output dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import TINY, run_cli


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = _csv(tmp_path / "train.csv", [("good film", "pos"), ("bad film", "neg"), ("fine", "pos")])
    odd = _csv(tmp_path / "valid.csv", [("meh", "neutral"), ("ok", "pos")])
    broken = tmp_path / "notamodel"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')
    return {"train": good, "odd": odd, "broken": broken, "dir": tmp_path}


CASES = {
    "missing file": (
        ["--train", "{dir}/nope.csv", "--valid", "{dir}/nope.csv"],
        "--train: {dir}/nope.csv: no such file",
    ),
    "wrong column": (["--train", "{train}", "--valid", "{train}", "--text-col", "review"], "no column 'review'"),
    "unseen label": (["--train", "{train}", "--valid", "{odd}"], "label 'neutral' in column 'label' is not one of"),
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
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("tnadapt"), err
    assert "Traceback" not in err + out
    assert expected.format(**fmt) in err
    assert not (out_dir / "run_config.json").exists()


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
