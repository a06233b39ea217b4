"""Session fixtures for the command-line tests: tiny runs on the embedded model and data (offline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cli_helpers import TINY, save_tiny_model

from tnadapt.cli import main


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tnadapt demo --quick`` run once for the session."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def dmrg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch MetaTT-4D run (rank 6, DMRG sweep to 4 after epoch 1) with checkpoints."""
    out = tmp_path_factory.mktemp("ft") / "run"
    argv = ["finetune", *TINY, "--epochs", "2", "--rank", "6", "--dmrg", "1:4", "--out", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local 2-layer BERT (hidden 32) with only 128 positions and the embedded model's tokenizer."""
    from transformers import BertConfig

    dims = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    return save_tiny_model(
        tmp_path_factory.mktemp("models") / "bert128", BertConfig, max_position_embeddings=128, **dims
    )
