"""The in-memory dataset type and group-level splitting."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["DataError", "TextDataset", "split_by_group"]


class DataError(ValueError):
    """Bad user data (missing file, unknown column, empty or inconsistent labels); the message is one line."""


@dataclass
class TextDataset:
    """Labelled texts for sequence classification.

    Attributes
    ----------
    texts:
        The (first) text of each example.
    labels:
        Class index of each example, in ``range(len(label_names))``.
    label_names:
        Name of each class (index ``i`` is label ``i``).
    pairs:
        Second text of each example for pair tasks (paraphrase, NLI), or ``None``.
    groups:
        Group of each example (e.g. the movie) — held-out splits never share a group — or ``None``.
    name:
        A short name used in logs and metrics.
    """

    texts: list[str]
    labels: list[int]
    label_names: tuple[str, ...]
    pairs: list[str] | None = None
    groups: list[str] | None = None
    name: str = "data"
    source: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.texts)
        if len(self.labels) != n:
            raise DataError(f"{self.name}: {n} texts but {len(self.labels)} labels")
        for what, values in (("pairs", self.pairs), ("groups", self.groups)):
            if values is not None and len(values) != n:
                raise DataError(f"{self.name}: {n} texts but {len(values)} {what}")
        self.label_names = tuple(str(x) for x in self.label_names)
        bad = [y for y in self.labels if not 0 <= int(y) < len(self.label_names)]
        if bad:
            raise DataError(f"{self.name}: label {bad[0]} is outside range({len(self.label_names)})")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def subset(self, indices: Sequence[int]) -> TextDataset:
        """The examples at ``indices`` (in that order), same label names and name."""
        idx = list(indices)
        return TextDataset(
            [self.texts[i] for i in idx],
            [self.labels[i] for i in idx],
            self.label_names,
            pairs=None if self.pairs is None else [self.pairs[i] for i in idx],
            groups=None if self.groups is None else [self.groups[i] for i in idx],
            name=self.name,
            source=dict(self.source),
        )

    def sample(self, n: int | None, seed: int = 0) -> TextDataset:
        """``n`` examples drawn without replacement by a seeded shuffle (all of them, shuffled, if ``n`` is None
        or at least ``len(self)``).  The same ``(n, seed)`` always gives the same examples.

        >>> ds = TextDataset(list("abcdef"), [0, 1, 0, 1, 0, 1], ("x", "y"))
        >>> ds.sample(3, seed=1).texts == ds.sample(3, seed=1).texts, len(ds.sample(10))
        (True, 6)
        """
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        if n is not None:
            if n < 1:
                raise DataError(f"{self.name}: sample size must be >= 1, got {n}")
            order = order[:n]
        return self.subset(order)

    def label_counts(self) -> dict[str, int]:
        """``label name -> count``."""
        counts = Counter(self.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.label_names)}


def _unit_interval(seed: int, group: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_by_group(groups: Sequence[str], valid_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices ``(train, valid)`` such that no group has examples on both sides.

    A group goes to validation when a hash of ``(seed, group)`` falls below ``valid_fraction``,
    so the split depends only on the group names (not on row order or on which other rows
    exist): the same movie is held out for every task built from the same corpus.

    >>> tr, va = split_by_group(["m1", "m1", "m2", "m3", "m3"], 0.5, seed=0)
    >>> sorted(tr + va) == list(range(5))
    True
    >>> groups = ["m1", "m1", "m2", "m3", "m3"]
    >>> not ({groups[i] for i in tr} & {groups[i] for i in va})
    True
    """
    if not 0.0 < valid_fraction < 1.0:
        raise DataError(f"valid_fraction: expected a float in (0, 1), got {valid_fraction!r}")
    cache: dict[str, bool] = {}
    train: list[int] = []
    valid: list[int] = []
    for i, g in enumerate(groups):
        held = cache.get(g)
        if held is None:
            held = cache[g] = _unit_interval(seed, g) < valid_fraction
        (valid if held else train).append(i)
    return train, valid
