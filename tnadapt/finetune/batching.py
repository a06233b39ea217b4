"""Tokenisation and length-bucketed batching (dynamic padding: each batch is padded to its longest row).

>>> order = make_batches([5, 1, 3, 2, 4, 6], batch_size=2, shuffle=False)
>>> order                                     # evaluation order: sorted by length
[[1, 3], [2, 4], [0, 5]]
>>> sorted(i for b in make_batches([5, 1, 3, 2, 4, 6], 2, shuffle=True, seed=0) for i in b)
[0, 1, 2, 3, 4, 5]
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..data import TextDataset

__all__ = [
    "IGNORE_INDEX",
    "Encoded",
    "collate",
    "encode",
    "encode_lm",
    "lm_labels",
    "make_batches",
    "pad_id",
    "tokenize",
]

#: Label of a position the next-token loss skips (padding): the ``ignore_index`` of cross-entropy.
IGNORE_INDEX = -100
#: Shuffled rows are sorted by length inside windows of this many batches ("sortish" batching).
SORT_WINDOW = 50


@dataclass
class Encoded:
    """Token ids of one or more datasets, concatenated; ``task_ids[i]`` says which dataset row ``i`` came from."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int]
    task_ids: list[int]
    pad_id: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def tokenize(
    tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int
) -> tuple[list[list[int]], list[list[int]] | None]:
    """``(input_ids, token_type_ids or None)`` of ``texts`` (with ``pairs``), truncated to ``max_length`` tokens."""
    enc = tokenizer(
        list(texts),
        None if pairs is None else list(pairs),
        truncation=True,
        max_length=int(max_length),
        padding=False,
        return_attention_mask=False,
    )
    types = list(map(list, enc["token_type_ids"])) if "token_type_ids" in enc else None
    return list(map(list, enc["input_ids"])), types


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's padding id (0 when it has none: padded positions are masked anyway)."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


def encode(tokenizer: Any, datasets: Sequence[TextDataset], max_length: int) -> Encoded:
    """Tokenise every dataset (task ``t`` = ``datasets[t]``), truncating to ``max_length`` tokens."""
    ids: list[list[int]] = []
    types: list[list[int]] | None = []
    labels: list[int] = []
    tasks: list[int] = []
    for t, ds in enumerate(datasets):
        rows, row_types = tokenize(tokenizer, ds.texts, ds.pairs, max_length)
        ids.extend(rows)
        if types is not None and row_types is not None:
            types.extend(row_types)
        else:
            types = None
        labels.extend(int(y) for y in ds.labels)
        tasks.extend([t] * len(ds))
    return Encoded(ids, types, labels, tasks, pad_id(tokenizer))


def encode_lm(tokenizer: Any, texts: Sequence[str], max_length: int) -> Encoded:
    """Token ids of language-modelling ``texts`` (one example each), truncated to ``max_length`` tokens.

    An example that fits gets the tokenizer's end-of-text token appended (so the model learns where a text ends,
    and generation can stop there); a truncated one does not (its text goes on).
    """
    rows, _ = tokenize(tokenizer, texts, None, max_length)
    eos = tokenizer.eos_token_id
    if eos is not None:
        rows = [[*row, int(eos)] if len(row) < max_length and (not row or row[-1] != eos) else row for row in rows]
    return Encoded(rows, None, [0] * len(rows), [0] * len(rows), pad_id(tokenizer))


def lm_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token targets of a collated LM batch: the input ids with padding set to :data:`IGNORE_INDEX`."""
    return batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)


def make_batches(lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """Row indices grouped into batches.

    ``shuffle=False``: rows sorted by length (least padding; evaluation).  ``shuffle=True``: a
    seeded shuffle, rows sorted by length inside windows of :data:`SORT_WINDOW` batches, then
    the batches themselves shuffled — random batches with little padding.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    order = list(range(len(lengths)))
    if not shuffle:
        order.sort(key=lambda i: (lengths[i], i))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    window = batch_size * SORT_WINDOW
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(data: Encoded, rows: Sequence[int]) -> dict[str, torch.Tensor]:
    """Padded tensors for ``rows``: ``input_ids``, ``attention_mask``, (``token_type_ids``), ``labels``, ``task_ids``."""
    width = max(len(data.input_ids[i]) for i in rows)
    n = len(rows)
    input_ids = torch.full((n, width), data.pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long) if data.token_type_ids is not None else None
    for j, i in enumerate(rows):
        row = data.input_ids[i]
        input_ids[j, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[j, : len(row)] = 1
        if types is not None and data.token_type_ids is not None:
            types[j, : len(row)] = torch.tensor(data.token_type_ids[i], dtype=torch.long)
    out = {
        "input_ids": input_ids,
        "attention_mask": mask,
        "labels": torch.tensor([data.labels[i] for i in rows], dtype=torch.long),
        "task_ids": torch.tensor([data.task_ids[i] for i in rows], dtype=torch.long),
    }
    if types is not None:
        out["token_type_ids"] = types
    return out
