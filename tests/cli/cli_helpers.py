"""Helpers shared by the command-line tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tnadapt.cli import main

#: Flags of a tiny finetune run on the embedded data.
TINY = ["--train-size", "16", "--valid-size", "16", "--max-length", "24", "--batch-size", "8", "--no-progress"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` -> ``(exit status, stdout, stderr)``."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors (unknown choice, bad number)
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def one_line_error(code: int, out: str, err: str) -> str:
    """Assert the CLI's rule for mistakes (exit status 2, one ``tnadapt[ COMMAND]: error:`` line, no traceback);
    returns the line."""
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and err.startswith("tnadapt") and ": error: " in err, err
    assert "Traceback" not in err + out
    return err


def save_tiny_model(directory: Path, config_cls: Any, **dims: Any) -> Path:
    """A randomly initialised ``transformers`` encoder (``config_cls(**dims)``, safetensors weights) with the
    embedded model's tokenizer and vocabulary size, saved to ``directory``."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tnadapt.finetune.model import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    torch.manual_seed(0)
    with quiet_progress():
        AutoModel.from_config(config_cls(vocab_size=tokenizer.vocab_size, **dims)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No ``transformers`` progress bars (e.g. "Writing model shards" on stderr, which a test would read as the
    CLI's output) inside the block."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
