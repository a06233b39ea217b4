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
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .dataset import DataError, TextDataset

__all__ = [
    "TABLE_SUFFIXES",
    "TEXT_SUFFIXES",
    "file_sha256",
    "integer_label_notice",
    "is_integer_label",
    "load_table",
    "load_texts",
]

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
#: ASCII digits only (``str.isdigit`` also accepts ``'²'``, which ``int`` refuses), at most 4000 of them (``int``
#: refuses longer decimal strings by default).
_INTEGER = re.compile(r"[+-]?[0-9]{1,4000}")
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
        yield from _stream_records(fh, kind, path)


def _stream_records(fh: IO[str], kind: str, path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """The records of an open text stream of type ``kind`` (``.csv``, ``.tsv``, ``.jsonl``/``.json``)."""
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
    """The label as text; an integer label (``1``, ``1.0``, ``True``, ``" 01 "``) in its canonical form ``"1"``."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return str(int(text)) if is_integer_label(text) else text


def is_integer_label(text: str) -> bool:
    """Whether ``text`` is an integer label: ASCII digits with an optional sign (``'²'.isdigit()`` is true, but it
    is not a number).

    >>> is_integer_label("-3"), is_integer_label("007"), is_integer_label("²"), is_integer_label("1.5")
    (True, True, False, False)
    """
    return _INTEGER.fullmatch(text) is not None


def integer_label_notice(label_names: Sequence[str]) -> str | None:
    """A one-line notice when integer labels were renumbered (they are not ``0..K-1``), else ``None``.

    >>> integer_label_notice(("1", "2", "5"))
    'integer labels 1, 2, 5 are not 0..2: class i is the i-th smallest (1 -> 0, 2 -> 1, 5 -> 2)'
    >>> integer_label_notice(("0", "1")) is None, integer_label_notice(("neg", "pos")) is None
    (True, True)
    """
    names = list(label_names)
    if not names or not all(is_integer_label(n) for n in names) or names == [str(i) for i in range(len(names))]:
        return None
    shown = ", ".join(names) if len(names) <= 6 else ", ".join(names[:3]) + f", ..., {names[-1]}"
    pairs = [f"{n} -> {i}" for i, n in enumerate(names)]
    mapping = ", ".join(pairs) if len(pairs) <= 6 else ", ".join(pairs[:3]) + f", ..., {pairs[-1]}"
    return f"integer labels {shown} are not 0..{len(names) - 1}: class i is the i-th smallest ({mapping})"


def _label_names(path: Path, label_col: str, raw: Sequence[str], lines: Sequence[int]) -> tuple[str, ...]:
    """The classes of a training file: its distinct labels, integers in numeric order, names in sorted order.

    Integer labels are their own class indices when they are exactly ``0..K-1``; any other set of integers
    (``1..5``, ``-1/1``, ``0/100000``) is renumbered in numeric order (:func:`integer_label_notice` says so), so a
    head never gets classes that no example has.  A column mixing integers and names is refused.
    """
    distinct = set(raw)
    if len(distinct) < 2:
        raise DataError(f"{path}: column {label_col!r} has a single label {raw[0]!r}; need at least two classes")
    integers = {v for v in distinct if is_integer_label(v)}
    if integers and integers != distinct:
        num = next(i for i, v in enumerate(raw) if v in integers)
        name = next(i for i, v in enumerate(raw) if v not in integers)
        raise DataError(
            f"{path}:{lines[name]}: label {raw[name]!r} in column {label_col!r} is not an integer, but the label "
            f"{raw[num]!r} on line {lines[num]} is; use integer labels or label names throughout"
        )
    if integers:
        return tuple(str(v) for v in sorted(int(v) for v in integers))
    return tuple(sorted(distinct))


def _shown(names: Sequence[str], limit: int = 10) -> str:
    """``names`` for an error message: all of them, or the first ``limit`` and how many more."""
    return repr(list(names)) if len(names) <= limit else f"{list(names[:limit])} (and {len(names) - limit} more)"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the bytes of ``path`` (as stored: a compressed file is hashed compressed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    Without ``label_names`` the classes are the distinct labels: integer labels (ASCII digits)
    in numeric order — their own indices when they are ``0..K-1``, renumbered otherwise (see
    :func:`integer_label_notice`) — or the sorted label names; a column mixing both is refused.
    Pass the training set's ``label_names`` when reading its validation file so the indices
    agree (an unseen label is then an error).  Every problem raises
    :class:`~tnadapt.data.DataError` naming the file, line and column.
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
    lines: list[int] = []
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
            lines.append(lineno)
    except (UnicodeDecodeError, csv.Error, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not texts:
        raise DataError(f"{path}: no examples")
    if label_names is None:
        label_names = _label_names(path, label_col, raw, lines)
    index = {n: i for i, n in enumerate(label_names)}
    labels: list[int] = []
    for v, lineno in zip(raw, lines):
        if v not in index:
            raise DataError(
                f"{path}:{lineno}: label {v!r} in column {label_col!r} is not one of the training labels "
                f"{_shown(label_names)}"
            )
        labels.append(index[v])
    return TextDataset(
        texts,
        labels,
        tuple(label_names),
        pairs=pairs if pair_col is not None else None,
        name=name or path.name,
        source={"file": str(path)},
    )


#: Formats :func:`load_texts` reads: the table formats and plain text (one example per non-empty line).
TEXT_SUFFIXES = (*TABLE_SUFFIXES, ".txt")


def load_texts(
    path: str | os.PathLike[str],
    *,
    text_col: str = "text",
    pair_col: str | None = None,
    stream: IO[str] | None = None,
    kind: str | None = None,
) -> tuple[list[str], list[str] | None]:
    """``(texts, pairs)`` of an unlabelled file: a table's ``text_col`` (and ``pair_col``), or for ``.txt`` every
    non-empty line (no columns).  With ``stream`` (e.g. stdin, ``path`` only names it in messages) the format is
    ``kind`` (``.csv``, ``.tsv``, ``.jsonl``, ``.txt``), or sniffed: a first line starting with ``{`` is JSONL,
    anything else CSV.  A missing column is a :class:`~tnadapt.data.DataError` listing the columns there are.
    """
    if stream is None:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
        suffixes = [x.lower() for x in p.suffixes if x.lower() not in _COMPRESSED]
        if suffixes and suffixes[-1] == ".txt":
            opener: Any = _COMPRESSED.get(p.suffix.lower(), open)
            with opener(p, "rt", encoding="utf-8") as fh:
                return _text_lines(fh, p), None
        fh, found = _open(p)
        with fh:
            return _columns(_stream_records(fh, found, p), p, text_col, pair_col)
    text = stream.read()
    if kind is None:
        first = next((line for line in text.splitlines() if line.strip()), "")
        kind = ".jsonl" if first.lstrip().startswith("{") else ".csv"
    if kind == ".txt":
        return _text_lines(io.StringIO(text), path), None
    return _columns(_stream_records(io.StringIO(text, newline=None), kind, path), path, text_col, pair_col)


def _text_lines(fh: IO[str], path: str | os.PathLike[str]) -> list[str]:
    """The non-empty lines of a plain-text file, whitespace-normalised."""
    try:
        lines = [" ".join(line.split()) for line in fh if line.strip()]
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not lines:
        raise DataError(f"{path}: no examples (no non-empty lines)")
    return lines


def _columns(
    records: Iterator[tuple[int, dict[str, Any]]], path: str | os.PathLike[str], text_col: str, pair_col: str | None
) -> tuple[list[str], list[str] | None]:
    """The text (and pair) column of ``records``; every row must have them, non-empty."""
    wanted = [c for c in (text_col, pair_col) if c is not None]
    texts: list[str] = []
    pairs: list[str] = []
    try:
        for lineno, rec in records:
            missing = [c for c in wanted if c not in rec]
            if missing:
                raise DataError(f"{path}:{lineno}: no column {missing[0]!r}; its columns are {sorted(map(str, rec))}")
            for c in wanted:
                if rec[c] is None or not str(rec[c]).strip():
                    raise DataError(f"{path}:{lineno}: empty value in column {c!r}")
            texts.append(str(rec[text_col]))
            if pair_col is not None:
                pairs.append(str(rec[pair_col]))
    except (UnicodeDecodeError, csv.Error, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not texts:
        raise DataError(f"{path}: no examples")
    return texts, pairs if pair_col is not None else None
