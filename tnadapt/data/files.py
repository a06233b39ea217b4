"""Labelled text from ``.csv`` / ``.tsv`` / ``.jsonl`` files (optionally ``.gz`` / ``.bz2`` compressed).

>>> import tempfile, os
>>> with tempfile.TemporaryDirectory() as d:
...     path = os.path.join(d, "train.csv")
...     with open(path, "w") as fh:
...         _ = fh.write("sentence,label\\ngreat film,pos\\ndull,neg\\n")
...     ds = load_table(path, text_col="sentence", label_col="label")
>>> ds.texts, ds.labels, ds.label_names
(['great film', 'dull'], [1, 0], ('neg', 'pos'))
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .dataset import DataError, TextDataset

__all__ = ["TABLE_SUFFIXES", "load_table"]

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open}


def _open(path: Path) -> tuple[IO[str], str]:
    suffixes = [s.lower() for s in path.suffixes]
    opener: Any = open
    if suffixes and suffixes[-1] in _COMPRESSED:
        opener = _COMPRESSED[suffixes.pop()]
    kind = suffixes[-1] if suffixes else ""
    if kind not in TABLE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {kind or '(none)'!r}; expected one of {TABLE_SUFFIXES}")
    return opener(path, "rt", encoding="utf-8", newline=""), kind


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` pairs; records are dicts column -> value."""
    fh, kind = _open(path)
    with fh:
        if kind in (".csv", ".tsv"):
            reader = csv.DictReader(fh, delimiter="\t" if kind == ".tsv" else ",")
            for row in reader:
                yield reader.line_num, row
            return
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not a JSON object per line ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(rec).__name__}")
            yield lineno, rec


def _label_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def load_table(
    path: str | os.PathLike[str],
    *,
    text_col: str = "text",
    label_col: str = "label",
    pair_col: str | None = None,
    label_names: Sequence[str] | None = None,
    name: str | None = None,
) -> TextDataset:
    """Read a labelled text file.

    ``text_col`` (and ``pair_col`` for text-pair tasks) hold the texts, ``label_col`` the class.
    Without ``label_names`` the classes are the distinct labels — ``0..K-1`` when every label is
    an integer, else the sorted label strings; pass the training set's ``label_names`` when
    reading its validation file so the indices agree (an unseen label is then an error).
    Every problem raises :class:`~tnadapt.data.DataError` naming the file, line and column.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    wanted = [c for c in (text_col, pair_col, label_col) if c is not None]
    texts: list[str] = []
    pairs: list[str] = []
    raw: list[str] = []
    try:
        for lineno, rec in _records(path):
            missing = [c for c in wanted if c not in rec]
            if missing:
                where = f"{path}" if not texts else f"{path}:{lineno}"
                raise DataError(f"{where}: no column {missing[0]!r}; its columns are {sorted(map(str, rec))}")
            values = {c: rec[c] for c in wanted}
            for c in wanted:
                if values[c] is None or (isinstance(values[c], str) and not values[c].strip()):
                    raise DataError(f"{path}:{lineno}: empty value in column {c!r}")
            texts.append(str(values[text_col]))
            if pair_col is not None:
                pairs.append(str(values[pair_col]))
            raw.append(_label_text(values[label_col]))
    except (UnicodeDecodeError, csv.Error, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not texts:
        raise DataError(f"{path}: no examples")
    if label_names is None:
        distinct = sorted(set(raw))
        if all(v.lstrip("-").isdigit() for v in distinct):
            ints = sorted({int(v) for v in distinct})
            if ints[0] < 0:
                raise DataError(f"{path}: integer labels must be >= 0, got {ints[0]} in column {label_col!r}")
            label_names = [str(i) for i in range(ints[-1] + 1)]
        else:
            label_names = distinct
        if len(set(raw)) < 2:
            raise DataError(f"{path}: column {label_col!r} has a single label {raw[0]!r}; need at least two classes")
    index = {n: i for i, n in enumerate(label_names)}
    labels: list[int] = []
    for v in raw:
        if v not in index:
            raise DataError(f"{path}: label {v!r} in column {label_col!r} is not one of {list(label_names)}")
        labels.append(index[v])
    return TextDataset(
        texts,
        labels,
        tuple(label_names),
        pairs=pairs if pair_col is not None else None,
        name=name or path.name,
        source={"file": str(path)},
    )
