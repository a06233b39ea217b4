"""Tiny causal LMs for the ``--task lm`` tests: config-built GPT-2 / Llama with an offline word-level tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cli_helpers import quiet_progress

#: A short text a tiny model can learn in a few epochs: 4 sentence patterns, one example per line.
SENTENCES = [
    f"the {a} sat on the {b} and the {a} slept"
    for a in ("cat", "dog", "bird", "fox")
    for b in ("mat", "rug", "bed", "box")
]


def word_tokenizer(words: list[str], *, pad: bool = False) -> Any:
    """A ``PreTrainedTokenizerFast`` over ``words`` (whitespace-split, ``<unk>``, ``<eos>``; ``<pad>`` only when
    ``pad``), built with the ``tokenizers`` package: no hub, no files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<eos>", *(["<pad>"] if pad else [])]
    vocab = {w: i for i, w in enumerate([*specials, *sorted(set(words))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    extra = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", **extra)


def save_tiny_lm(directory: Path, kind: str, *, positions: int = 64) -> Path:
    """A randomly initialised 2-layer GPT-2 (``kind="gpt2"``) or Llama (``"llama"``), hidden 32, saved with
    safetensors weights and a word-level tokenizer over :data:`SENTENCES` (GPT-2's has no padding token)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    tokenizer = word_tokenizer([*" ".join(SENTENCES).split(), "unseen"], pad=kind == "llama")
    vocab = len(tokenizer)
    ids = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if kind == "gpt2":
        config: Any = GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=32, n_layer=2, n_head=4, **ids)
    else:
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=positions,
            **ids,
        )
    torch.manual_seed(0)
    with quiet_progress():
        AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
