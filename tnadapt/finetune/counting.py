"""Trainable-parameter counts from model *shapes* only (no weights): the paper's parameter columns.

A model's adaptable Linears are rebuilt as a weightless skeleton on the ``meta`` device: from a
``config.json`` the real architecture itself (``transformers.AutoModel.from_config``, so every
module has its real name and shape and the default targets are found by
:func:`tnadapt.nn.default_target_modules`), and for the paper's models (or a config transformers
cannot build) from the dimensions (hidden size, layers, heads, key/value heads, MLP size) with
BERT or Llama module names; the MetaTT/LoTR counts then come from :func:`tnadapt.nn.wrap`
itself, and LoRA / VeRA from their definitions (LoRA: ``r (in + out)`` per matrix, VeRA:
``r + out`` per matrix).

>>> count_parameters(PAPER_MODELS["roberta-base"], "metatt-4d", 8)
13184
>>> count_parameters(PAPER_MODELS["roberta-base"], "lora", 8)
294912
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError

__all__ = [
    "COUNT_METHODS",
    "PAPER_MODELS",
    "PAPER_ROWS",
    "ModelShape",
    "PaperRow",
    "count_parameters",
    "model_shape_from_config",
    "skeleton",
]

COUNT_METHODS = ("lora", "vera", "lotr", "metatt-4d", "metatt-5d", "metatt-4+1d")


@dataclass(frozen=True)
class ModelShape:
    """The dimensions that fix every adaptable Linear of a transformer."""

    name: str
    style: str  # "encoder" (BERT/RoBERTa names) or "decoder" (Llama names)
    hidden: int
    layers: int
    heads: int
    intermediate: int
    kv_heads: int | None = None
    #: A config.json transformers can build: :func:`skeleton` then builds the real architecture.
    config_path: str | None = None
    #: The default targets found in that architecture (``None``: by ``style``).
    targets: tuple[str, ...] | None = None

    @property
    def default_targets(self) -> tuple[str, ...]:
        if self.targets is not None:
            return self.targets
        return ("query", "value") if self.style == "encoder" else ("q_proj", "v_proj")


#: The paper's models (their published configs).
PAPER_MODELS: dict[str, ModelShape] = {
    "roberta-base": ModelShape("roberta-base", "encoder", 768, 12, 12, 3072),
    "roberta-large": ModelShape("roberta-large", "encoder", 1024, 24, 16, 4096),
    "llama-2-7b": ModelShape("llama-2-7b", "decoder", 4096, 32, 32, 11008),
    "llama-2-13b": ModelShape("llama-2-13b", "decoder", 5120, 40, 40, 13824),
}


@dataclass(frozen=True)
class PaperRow:
    """One parameter entry printed in the paper: model, method, rank, value and the unit it is printed in."""

    model: str
    method: str
    rank: int
    printed: float
    unit: int
    table: str


#: Parameter columns of the paper's Table 2 (×10³, RoBERTa, targets query/value) and Table 1 (×10⁵, Llama-2, q/v).
PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("roberta-base", "lora", 8, 295, 1000, "Table 2"),
    PaperRow("roberta-base", "vera", 1024, 43, 1000, "Table 2"),
    PaperRow("roberta-base", "lotr", 32, 74, 1000, "Table 2"),
    PaperRow("roberta-base", "lotr", 40, 100, 1000, "Table 2"),
    PaperRow("roberta-base", "lotr", 80, 276, 1000, "Table 2"),
    PaperRow("roberta-base", "lotr", 88, 321, 1000, "Table 2"),
    PaperRow("roberta-base", "metatt-4d", 8, 13, 1000, "Table 2"),
    PaperRow("roberta-base", "metatt-4d", 24, 45, 1000, "Table 2"),
    PaperRow("roberta-base", "metatt-4d", 64, 156, 1000, "Table 2"),
    PaperRow("roberta-base", "metatt-5d", 16, 20, 1000, "Table 2"),
    PaperRow("roberta-large", "lora", 8, 786, 1000, "Table 2"),
    PaperRow("roberta-large", "vera", 256, 61, 1000, "Table 2"),
    PaperRow("roberta-large", "lotr", 64, 328, 1000, "Table 2"),
    PaperRow("roberta-large", "metatt-4d", 16, 39, 1000, "Table 2"),
    PaperRow("roberta-large", "metatt-5d", 32, 92, 1000, "Table 2"),
    PaperRow("llama-2-7b", "lora", 8, 41.9, 100_000, "Table 1"),
    PaperRow("llama-2-7b", "lora", 16, 83.9, 100_000, "Table 1"),
    PaperRow("llama-2-7b", "vera", 1024, 3.27, 100_000, "Table 1"),
    PaperRow("llama-2-7b", "lotr", 16, 1.47, 100_000, "Table 1"),
    PaperRow("llama-2-7b", "metatt-4d", 16, 1.40, 100_000, "Table 1"),
    PaperRow("llama-2-7b", "metatt-4d", 256, 43.2, 100_000, "Table 1"),
    PaperRow("llama-2-13b", "lora", 8, 65.5, 100_000, "Table 1"),
    PaperRow("llama-2-13b", "lora", 32, 262.1, 100_000, "Table 1"),
    PaperRow("llama-2-13b", "vera", 256, 4.3, 100_000, "Table 1"),
    PaperRow("llama-2-13b", "lotr", 64, 9.83, 100_000, "Table 1"),
    PaperRow("llama-2-13b", "metatt-4d", 16, 1.75, 100_000, "Table 1"),
    PaperRow("llama-2-13b", "metatt-4d", 64, 8.3, 100_000, "Table 1"),
)


def model_shape_from_config(path: str | os.PathLike[str]) -> ModelShape:
    """Read the dimensions from a Hugging Face ``config.json`` (a file or a model directory)."""
    p = Path(path)
    cfg_path = p / "config.json" if p.is_dir() else p
    if not cfg_path.is_file():
        raise UserError(
            f"--model: {str(path)!r} is neither a paper model ({', '.join(PAPER_MODELS)}) nor a config.json"
        )
    built = _shape_from_transformers(cfg_path)
    if built is not None:
        return built
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        hidden = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"--model: {cfg_path} is not a transformer config ({type(exc).__name__}: {exc})") from None
    decoder = str(cfg.get("model_type", "")) in {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"}
    try:
        intermediate = int(cfg.get("intermediate_size", 4 * hidden))
        kv_heads = int(cfg["num_key_value_heads"]) if cfg.get("num_key_value_heads") else None
    except (TypeError, ValueError) as exc:
        raise UserError(f"--model: {cfg_path} is not a transformer config ({type(exc).__name__}: {exc})") from None
    sizes = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads}
    sizes |= {"intermediate_size": intermediate, "num_key_value_heads": kv_heads or heads}
    for key, value in sizes.items():
        if value < 1:
            raise UserError(f"--model: {cfg_path}: {key} must be a positive integer, got {value}")
    return ModelShape(
        name=str(cfg.get("_name_or_path") or cfg_path.parent.name),
        style="decoder" if decoder else "encoder",
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        kv_heads=kv_heads,
    )


def _meta_model(config_path: str) -> nn.Module:
    """The architecture of ``config_path`` built by transformers on the ``meta`` device (no weights, no download)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(config_path)
    with torch.device("meta"):
        return AutoModel.from_config(config)


def _shape_from_transformers(cfg_path: Path) -> ModelShape | None:
    """A :class:`ModelShape` backed by the real architecture, or ``None`` if transformers cannot build it."""
    from ..nn import default_target_modules

    try:
        model = _meta_model(str(cfg_path))
        config: Any = getattr(model, "config")  # noqa: B009 (nn.Module.__getattr__ is typed Tensor | Module)
        hidden = int(config.hidden_size)
        heads = int(config.num_attention_heads)
        layers = int(config.num_hidden_layers)
    except Exception:  # any failure (unknown model_type, missing key, no transformers): the raw-JSON route
        return None
    try:
        targets: tuple[str, ...] | None = tuple(default_target_modules(model))
    except ValueError:
        targets = None
    decoder = any(n.endswith("q_proj") for n, _ in model.named_modules())
    kv = getattr(config, "num_key_value_heads", None)
    try:
        recorded = json.loads(cfg_path.read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return ModelShape(
        name=str(recorded or cfg_path.parent.name or config.model_type),
        style="decoder" if decoder else "encoder",
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=int(getattr(config, "intermediate_size", None) or 4 * hidden),
        kv_heads=int(kv) if kv else None,
        config_path=str(cfg_path),
        targets=targets,
    )


def skeleton(shape: ModelShape) -> nn.Module:
    """Weightless (``meta``) module tree with the architecture's adaptable Linears under their real names."""
    if shape.config_path is not None:
        return _meta_model(shape.config_path)
    d, f = shape.hidden, shape.intermediate
    kv = (shape.kv_heads or shape.heads) * (d // shape.heads)

    def lin(i: int, o: int) -> nn.Linear:
        return nn.Linear(i, o, bias=False, device="meta")

    layers = []
    for _ in range(shape.layers):
        if shape.style == "encoder":
            attn = nn.ModuleDict({"self": nn.ModuleDict({"query": lin(d, d), "key": lin(d, d), "value": lin(d, d)})})
            attn["output"] = nn.ModuleDict({"dense": lin(d, d)})
            block = nn.ModuleDict(
                {"attention": attn, "intermediate": nn.ModuleDict({"dense": lin(d, f)}), "output": lin(f, d)}
            )
        else:
            attn = nn.ModuleDict({"q_proj": lin(d, d), "k_proj": lin(d, kv), "v_proj": lin(d, kv), "o_proj": lin(d, d)})
            mlp = nn.ModuleDict({"gate_proj": lin(d, f), "up_proj": lin(d, f), "down_proj": lin(f, d)})
            block = nn.ModuleDict({"self_attn": attn, "mlp": mlp})
        layers.append(block)
    return nn.ModuleDict({"layers": nn.ModuleList(layers)})


def count_parameters(
    shape: ModelShape, method: str, rank: int, targets: Sequence[str] | None = None, *, tasks: int = 3
) -> int:
    """Trainable adapter parameters of ``method`` at ``rank`` on ``targets`` (default: the paper's q/v)."""
    from ..nn import MetaTTConfig, get_container, match_targets, wrap

    if method not in COUNT_METHODS:
        raise UserError(f"--adapter: expected one of {', '.join(COUNT_METHODS)}, got {method!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserError(f"--rank: expected a positive integer, got {rank!r}")
    model = skeleton(shape)
    names = list(targets or shape.default_targets)
    try:
        found = match_targets(model, names)
    except ValueError as exc:
        raise UserError(f"--targets: {exc}") from None
    if method == "lora":
        return sum(rank * (t.in_features + t.out_features) for t in found)
    if method == "vera":
        return sum(rank + t.out_features for t in found)
    extra: dict[str, object] = {}
    if method == "metatt-5d":
        extra["heads"] = shape.heads
    if method == "metatt-4+1d":
        extra["mode_sizes"] = {"task": tasks}
    try:
        config = MetaTTConfig(target_modules=names, preset=method, rank=rank, init="zeros", **extra)  # type: ignore[arg-type]
        with torch.no_grad():
            wrap(model, config)
    except ValueError as exc:
        raise UserError(f"--adapter {method} --rank {rank}: {exc}") from None
    return sum(int(a.num_parameters()) for a in get_container(model).owners().values())
