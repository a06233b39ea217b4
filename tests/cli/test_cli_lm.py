"""``tnadapt finetune --task lm`` and ``tnadapt predict`` on LM runs: tiny config-built GPT-2 and Llama, offline."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import one_line_error, read_json, run_cli
from lm_helpers import SENTENCES, save_tiny_lm
from safetensors.torch import load_file

#: Flags of a tiny LM run (seconds on 2 cores).
LM = ["--task", "lm", "--max-length", "16", "--batch-size", "2", "--lr", "0.03", "--no-progress"]


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(train.txt, valid.jsonl)``: the 16 sentences one per line, and every third of them in a ``text`` column."""
    root = tmp_path_factory.mktemp("lmdata")
    (root / "train.txt").write_text("\n".join(SENTENCES) + "\n")
    (root / "valid.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in SENTENCES[::3]))
    return root / "train.txt", root / "valid.jsonl"


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("models") / "gpt2", "gpt2")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("models") / "llama", "llama")


def _data(lm_data: tuple[Path, Path]) -> list[str]:
    return ["--train", str(lm_data[0]), "--valid", str(lm_data[1])]


@pytest.fixture(scope="module")
def gpt2_run(
    gpt2: Path, lm_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, list[str]]:
    """A 3-epoch MetaTT-4D run (rank 4, DMRG sweep to 2 after epoch 2) on GPT-2's ``c_attn``: (out, stdout, argv)."""
    out = tmp_path_factory.mktemp("lmrun") / "run"
    argv = ["finetune", "--model", str(gpt2), *_data(lm_data), *LM, "--epochs", "3", "--rank", "4", "--dmrg", "2:2"]
    capture = io.StringIO()
    from contextlib import redirect_stdout

    from tnadapt.cli import main

    with redirect_stdout(capture):
        assert main([*argv, "--out", str(out)]) == 0
    return out, capture.getvalue(), argv


def _perplexities(stdout: str) -> list[float]:
    return [float(x) for x in re.findall(r"\| valid ppl ([0-9.]+) \|", stdout)]


def test_gpt2_perplexity_falls_and_the_run_records_the_task(gpt2_run: tuple[Path, str, list[str]]) -> None:
    out, stdout, _ = gpt2_run
    ppl = _perplexities(stdout)
    assert len(ppl) == 3 and ppl[0] > ppl[1] > ppl[2], stdout
    assert "valid next-token acc" in stdout and "DMRG sweep rank 4->2" in stdout
    assert "done: final valid perplexity" in stdout
    assert read_json(out / "run_config.json")["task"] == "lm"
    metrics = read_json(out / "metrics.json")
    assert [round(h["valid_ppl"], 2) for h in metrics["history"]] == ppl
    assert metrics["final_valid_ppl"] == metrics["history"][-1]["valid_ppl"]
    config = read_json(out / "adapter" / "adapter_config.json")
    assert "c_attn" in json.dumps(config) and "heads" not in json.dumps(config.get("modules_to_save"))
    assert read_json(out / "run_info.json")["task"] == "lm"


def test_inspect_shows_perplexity_and_old_run_configs_resume_as_classifiers(
    gpt2_run: tuple[Path, str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report, err = run_cli(capsys, "inspect", str(gpt2_run[0]))
    assert code == 0, err
    assert "(language model) — 3 epochs, final valid perplexity" in report and "targets: ['c_attn']" in report
    assert re.search(r"epoch 3: loss [0-9.]+  valid ppl [0-9.]+  next-token acc", report), report
    from tnadapt.finetune.checkpoint import check_run_config
    from tnadapt.finetune.run import RunConfig

    record = RunConfig().to_dict()
    old = {k: v for k, v in record.items() if k != "task"}  # written before --task existed
    (tmp_path / "run_config.json").write_text(json.dumps(old))
    check_run_config(tmp_path, record, resume=True, write=False)  # no "task" saved: a classifier, as it was
    lm = {**record, "task": "lm"}
    with pytest.raises(ValueError, match="setting 'task' differs"):
        check_run_config(tmp_path, lm, resume=True, write=False)


def test_lm_resume_continues_exactly_like_the_uninterrupted_run(
    gpt2_run: tuple[Path, str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full, _, _ = gpt2_run
    cut = tmp_path / "run"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "epoch-003")
    shutil.rmtree(cut / "adapter")
    (cut / "metrics.json").unlink()
    code, out, err = run_cli(capsys, "finetune", "--out", str(cut), "--resume", "--no-progress")
    assert code == 0 and "resumed from" in out and "epoch 3/3" in out, err
    a, b = read_json(full / "metrics.json")["history"], read_json(cut / "metrics.json")["history"]
    keys = ("train_loss", "valid_loss", "valid_ppl", "valid_acc", "ranks")
    assert [[h[k] for k in keys] for h in a] == [[h[k] for k in keys] for h in b]
    before = load_file(str(full / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(cut / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    err = one_line_error(*run_cli(capsys, "finetune", "--out", str(cut), "--resume", "--task", "classification"))
    assert "setting 'task' differs from the saved run ('lm' saved, 'classification' now)" in err


def test_predict_generates_continuations_in_input_order(
    gpt2_run: tuple[Path, str, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = gpt2_run[0]
    prompts = ["the cat sat on the", "the dog", "the fox sat on the rug and the"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    argv = ["predict", str(run), "--input", str(tmp_path / "prompts.txt"), "--no-progress", "--batch-size", "2"]
    code, out, err = run_cli(capsys, *argv, "--max-new-tokens", "6")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in rows] == prompts  # input order, although batched by length
    assert all(set(r) == {"prompt", "continuation"} and 0 < len(r["continuation"].split()) <= 6 for r in rows)
    # one prompt alone (no left padding) continues the same as in a padded batch
    monkeypatch.setattr("sys.stdin", io.StringIO(prompts[1] + "\n"))
    code, alone, err = run_cli(capsys, "predict", str(run), "--input", "-", "--no-progress", "--max-new-tokens", "6")
    assert code == 0 and json.loads(alone) == rows[1], err
    code, csv_out, err = run_cli(capsys, *argv, "--max-new-tokens", "6", "--format", "csv")
    assert code == 0 and csv_out.splitlines()[0] == "prompt,continuation" and len(csv_out.splitlines()) == 4, err
    output = tmp_path / "out.jsonl"
    for extra, expected in (
        (["--max-new-tokens", "64"], "--max-new-tokens 64: the model accepts at most 64 tokens"),
        (["--task", "reviews"], "--task: a language-model run has no tasks to choose from"),
        (["--text-col", "body"], "no column 'body'"),
    ):
        bad = ["predict", str(run), "--input", str(tmp_path / "p.jsonl"), "--output", str(output), *extra]
        (tmp_path / "p.jsonl").write_text(json.dumps({"text": "the cat"}) + "\n")
        assert expected in one_line_error(*run_cli(capsys, *bad))
        assert not output.exists()


def test_llama_default_targets_lora_and_tera(
    llama: Path, lm_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for adapter, extra in (("metatt-4d", ["--rank", "2"]), ("lora", ["--rank", "2"]), ("tera", [])):
        out = tmp_path / adapter
        argv = ["finetune", "--model", str(llama), *_data(lm_data), *LM, "--epochs", "2", "--adapter", adapter]
        code, stdout, err = run_cli(capsys, *argv, *extra, "--out", str(out))
        assert code == 0, err
        ppl = _perplexities(stdout)
        assert len(ppl) == 2 and ppl[1] < ppl[0], stdout
        saved = read_json(out / "run_config.json")["method"]
        assert saved["targets"] is None and read_json(out / "metrics.json")["head_params"] == 0
        files = json.dumps([str(p) for p in (out / "adapter").iterdir()])
        config = (out / "adapter" / ("lora_config.json" if adapter == "lora" else "adapter_config.json")).read_text()
        assert "q_proj" in config and "v_proj" in config, (files, config)
    code, out_text, err = run_cli(
        capsys, "predict", str(tmp_path / "lora"), "--input", str(lm_data[1]), "--no-progress", "--max-new-tokens", "3"
    )
    assert code == 0 and len(out_text.splitlines()) == len(SENTENCES[::3]), err


def test_lm_mistakes_are_one_line_and_leave_nothing(
    gpt2: Path, lm_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_helpers import save_tiny_model
    from transformers import BertConfig

    bert = save_tiny_model(
        tmp_path / "bert", BertConfig, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    )
    out = tmp_path / "out"
    cases = [
        (["--model", str(bert), *_data(lm_data)], "is not a causal language model"),
        (["--model", str(gpt2), *_data(lm_data), "--adapter", "head"], "--adapter head: a causal language model has no head"),
        (["--model", str(gpt2), "--dataset", "rt-polarity"], "--task lm: needs --train/--valid text files"),
        (["--model", str(gpt2), "--train", str(lm_data[0]), "--valid", str(lm_data[1]), "--text-col", "body"],
         "--valid: "),
        (["--model", str(gpt2), *_data(lm_data), "--max-length", "100"], "--max-length 100: the model"),
    ]  # fmt: skip
    for argv, expected in cases:
        err = one_line_error(*run_cli(capsys, "finetune", *LM[:2], *argv, "--no-progress", "--out", str(out)))
        assert expected in err
        assert not out.exists()
    assert "no column 'body'" in one_line_error(
        *run_cli(capsys, "finetune", *LM[:2], "--model", str(gpt2), "--train", str(lm_data[1]), "--valid",
                 str(lm_data[1]), "--text-col", "body", "--out", str(out))
    )  # fmt: skip
    assert not out.exists()


def test_a_text_column_named_label_is_fine_for_lm_but_not_for_classification() -> None:
    """The label-column clash only matters when there are labels: an LM reads one text column, whatever its name."""
    from tnadapt.finetune.errors import UserError
    from tnadapt.finetune.run import DataSpec, RunConfig

    spec = {"train": "t.jsonl", "valid": "v.jsonl", "text_col": "label"}
    assert RunConfig(task="lm", data=[DataSpec(**spec)]).data[0].text_col == "label"
    with pytest.raises(UserError, match="--label-col label: is also the --text-col"):
        RunConfig(task="classification", data=[DataSpec(**spec)], model="m")
