"""Helpers shared by the command-line tests."""

from __future__ import annotations

import json
from pathlib import Path

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
