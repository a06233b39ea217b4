"""``tnadapt predict``: use a finished run — labels and class probabilities for new texts.

Everything comes from the run directory: ``run_config.json`` (method, rank, targets, max length, text columns),
``run_info.json`` (the resolved base-model path and each task's label map) and ``adapter/`` (the trained adapter
and heads).  Texts are read from a CSV/TSV/JSONL file or stdin, batched by length, and the rows come back in input
order as JSONL or CSV.  A ``--task lm`` run generates a greedy continuation of each prompt instead
(:func:`generate`: batched, left-padded, ``{"prompt": ..., "continuation": ...}`` rows).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from ..data import DataError, load_texts
from .batching import Encoded, collate, make_batches, pad_id, tokenize
from .checkpoint import read_run_config
from .errors import UserError
from .methods import Attached, attach
from .model import CausalLM, TextClassifier, load_causal_lm, load_encoder, max_input_length
from .run import ADAPTER_DIR, RUN_INFO, RunConfig
from .trainer import _progress, to_device

__all__ = ["FORMATS", "LoadedRun", "format_rows", "generate", "load_run", "predict_labels", "read_inputs"]

#: Output formats of ``tnadapt predict``.
FORMATS = ("jsonl", "csv")


@dataclass
class LoadedRun:
    """A trained run ready to predict: its configuration, the model with the adapter loaded, the tokenizer."""

    directory: Path
    config: RunConfig
    attached: Attached
    tokenizer: Any
    tasks: list[dict[str, Any]]  # [{"name": ..., "labels": [...]}] in head order
    device: torch.device

    def task_index(self, name: str | None) -> int:
        """The head of task ``name`` (default: the first); an unknown name is a :class:`UserError`."""
        names = [t["name"] for t in self.tasks]
        if name is None:
            return 0
        if name not in names:
            raise UserError(f"--task: the run has no task {name!r}; its tasks are {names}")
        return names.index(name)


def _run_info(directory: Path) -> dict[str, Any]:
    path = directory / RUN_INFO
    if not path.is_file() or not (directory / ADAPTER_DIR).is_dir():
        raise UserError(
            f"predict: {str(directory)!r} is not a finished tnadapt run (it needs run_config.json, {RUN_INFO} and "
            f"{ADAPTER_DIR}/: the --out of a finished tnadapt finetune)"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        tasks = info["tasks"]
        if not isinstance(info["model_path"], str) or not all(isinstance(t["labels"], list) for t in tasks):
            raise TypeError("fields of the wrong type")
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"predict: {path} is damaged ({type(exc).__name__}: {exc})") from None
    return dict(info)


def load_run(directory: str | os.PathLike[str], *, device: str = "auto") -> LoadedRun:
    """Rebuild the model of the run in ``directory`` (its base model, method and trained adapter) on ``device``."""
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"predict: no such run directory {str(root)!r}")
    info = _run_info(root)
    saved = read_run_config(root, flag="predict")
    if saved is None:
        raise UserError(f"predict: {str(root)!r} has no run_config.json; it is not a tnadapt run")
    config = RunConfig.from_record(saved, device=device)
    model: TextClassifier | CausalLM
    if config.task == "lm":
        lm, tokenizer, _ = load_causal_lm(info["model_path"])
        model = CausalLM(lm)
    else:
        encoder, tokenizer, _ = load_encoder(info["model_path"])
        model = TextClassifier(encoder, [len(t["labels"]) for t in info["tasks"]], seed=config.method.seed)
    attached = attach(model, config.method)
    try:
        attached.restore(root / ADAPTER_DIR)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise UserError(f"predict: the adapter in {root / ADAPTER_DIR} cannot be loaded ({exc})") from None
    target = config.device
    model.to(target).eval()
    return LoadedRun(root, config, attached, tokenizer, info["tasks"], target)


def read_inputs(
    source: str, text_col: str, pair_col: str | None, stdin: IO[str] | None = None, *, plain_stdin: bool = False
) -> tuple[list[str], list[str] | None]:
    """``(texts, pairs)`` of ``--input`` (a file, or ``-`` for stdin); a wrong column is one :class:`UserError`.

    Stdin is JSONL when its first line starts with ``{``, else CSV, or with ``plain_stdin`` (LM prompts) plain
    lines, one text each."""
    try:
        if source == "-":
            stream = stdin or sys.stdin
            if plain_stdin:
                text = stream.read()
                first = next((line for line in text.splitlines() if line.strip()), "")
                kind = ".jsonl" if first.lstrip().startswith("{") else ".txt"
                return load_texts("<stdin>", text_col=text_col, stream=io.StringIO(text), kind=kind)
            return load_texts("<stdin>", text_col=text_col, pair_col=pair_col, stream=stream)
        return load_texts(source, text_col=text_col, pair_col=pair_col)
    except DataError as exc:
        hint = " (pass --text-col/--pair-col to read other columns)" if "no column" in str(exc) else ""
        raise UserError(f"--input: {exc}{hint}") from None


@torch.no_grad()
def predict_labels(
    run: LoadedRun,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    task: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One ``{"text", ("pair"), "label", "probabilities"}`` per text, in input order (batched by length)."""
    t = run.task_index(task)
    names = [str(n) for n in run.tasks[t]["labels"]]
    ids, types = tokenize(run.tokenizer, texts, pairs, run.config.max_length)
    data = Encoded(ids, types, [0] * len(ids), [t] * len(ids), pad_id(run.tokenizer))
    probs: list[list[float]] = [[] for _ in ids]
    batches = make_batches(data.lengths, batch_size, shuffle=False)
    for rows in _progress(batches, enabled=progress, desc="predict", total=len(batches)):
        batch = to_device(collate(data, rows), run.device)
        logits = run.attached.model(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["task_ids"]
        )
        for i, p in zip(rows, torch.softmax(logits[:, : len(names)].float(), -1).cpu().tolist()):
            probs[i] = p
    out = []
    for i, p in enumerate(probs):
        row: dict[str, Any] = {"text": texts[i]}
        if pairs is not None:
            row["pair"] = pairs[i]
        row["label"] = names[max(range(len(p)), key=p.__getitem__)]
        row["probabilities"] = {n: round(v, 6) for n, v in zip(names, p)}
        out.append(row)
    return out


@torch.no_grad()
def generate(
    run: LoadedRun,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One ``{"prompt", "continuation"}`` per prompt, in input order: greedy decoding of the run's LM with its
    adapter, ``max_new_tokens`` at most (stopping at the end-of-text token), prompts batched by length and padded
    on the left.  A prompt longer than ``--max-length`` (or than the model's positions less ``max_new_tokens``)
    keeps its last tokens."""
    if run.config.task != "lm":
        raise UserError("predict: this run is a classifier; continuations need a --task lm run")
    lm: Any = run.attached.model.encoder
    tok = run.tokenizer
    keep = run.config.max_length
    limit = max_input_length(lm, tok)
    if limit is not None:
        if max_new_tokens >= limit[0]:
            raise UserError(
                f"--max-new-tokens {max_new_tokens}: the model accepts at most {limit[0]} tokens ({limit[1]}), "
                "prompt included; ask for fewer"
            )
        keep = min(keep, limit[0] - max_new_tokens)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids = [row[-keep:] if row else [int(start)] for row in tok(list(prompts), add_special_tokens=True)["input_ids"]]
    pad, eos = pad_id(tok), tok.eos_token_id
    out: list[str] = [""] * len(ids)
    batches = make_batches([len(r) for r in ids], batch_size, shuffle=False)
    for rows in _progress(batches, enabled=progress, desc="generate", total=len(batches)):
        width = max(len(ids[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(rows):
            input_ids[j, width - len(ids[i]) :] = torch.tensor(ids[i], dtype=torch.long)
            mask[j, width - len(ids[i]) :] = 1
        generated = lm.generate(
            input_ids=input_ids.to(run.device),
            attention_mask=mask.to(run.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        for j, i in enumerate(rows):
            new = generated[j, width:].tolist()
            if eos is not None and eos in new:
                new = new[: new.index(eos)]
            out[i] = tok.decode(new, skip_special_tokens=True).strip()
    return [{"prompt": p, "continuation": c} for p, c in zip(prompts, out)]


def format_rows(rows: Sequence[dict[str, Any]], fmt: str) -> str:
    """``rows`` as JSONL (one object per line) or CSV (nested ``probabilities`` as ``p(NAME)`` columns)."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    flat = [
        {
            **{k: v for k, v in r.items() if k != "probabilities"},
            **{f"p({n})": v for n, v in r.get("probabilities", {}).items()},
        }
        for r in rows
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]) if flat else ["text"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()
